import Foundation

/// Where `generate` writes, checked before anything is loaded (a real model takes minutes to reach the
/// point of writing): the folder must exist and take a new file — tried for real, since permission bits
/// say nothing about /proc or a read-only mount.
enum OutputPaths {
    static func checkWritable(_ path: String, flag: String) throws {
        let url = URL(fileURLWithPath: path)
        let folder = url.deletingLastPathComponent().path
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: folder, isDirectory: &isDir), isDir.boolValue else {
            throw CommandError(message: "\(flag) \(path): the folder \(folder) does not exist")
        }
        let probe = folder + "/.sluice-write-check-\(getpid())"
        let fd = open(probe, O_WRONLY | O_CREAT | O_EXCL, 0o600)
        guard fd >= 0 else {
            throw CommandError(message: "\(flag) \(path): cannot write in \(folder) (\(String(cString: strerror(errno))))")
        }
        close(fd)
        unlink(probe)
    }

    /// The first free `sluice-NNNNN.png` in the current folder.
    static func nextNumbered() -> String {
        let existing = Set((try? FileManager.default.contentsOfDirectory(atPath: ".")) ?? [])
        var n = 1
        while existing.contains(String(format: "sluice-%05d.png", n)) { n += 1 }
        return String(format: "sluice-%05d.png", n)
    }

    /// Image `i` of `count` (1-based): the path itself for one image, else `name-i.ext`.
    static func numbered(_ path: String, _ i: Int, of count: Int) -> String {
        guard count > 1 else { return path }
        let ext = (path as NSString).pathExtension
        return (path as NSString).deletingPathExtension + "-\(i)" + (ext.isEmpty ? "" : "." + ext)
    }
}
