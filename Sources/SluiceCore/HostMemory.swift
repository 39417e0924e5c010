import Foundation

/// This process's host memory, read one way everywhere (status pages, summaries, tests of `--ram-limit`).
public enum HostMemory {
    /// Resident set now: /proc/self/statm's resident pages × the page size (0 where there is no /proc).
    public static func residentBytes() -> Int {
        guard let s = readWhole("/proc/self/statm") else { return 0 }
        let fields = s.split(separator: " ")
        guard fields.count > 1, let pages = Int(fields[1]) else { return 0 }
        return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
    }

    /// The machine's physical memory.
    public static func physicalBytes() -> Int {
        Int(sysconf(Int32(_SC_PHYS_PAGES))) * Int(sysconf(Int32(_SC_PAGESIZE)))
    }

    /// The largest resident set this process has had (getrusage's ru_maxrss, in KiB on Linux).
    public static func peakResidentBytes() -> Int {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        return usage.ru_maxrss * 1024
    }

    /// Bytes of the mapping that starts at `address` resident in this process (/proc/self/smaps' Rss of
    /// that mapping): how much of a memory-mapped checkpoint the process holds in RAM now. nil when
    /// there is no such mapping (or no /proc).
    public static func residentBytes(mappingAt address: UnsafeRawPointer) -> Int? {
        guard let smaps = readWhole("/proc/self/smaps") else { return nil }
        let start = String(UInt(bitPattern: address), radix: 16)
        var inMapping = false
        for line in smaps.split(separator: "\n") {
            if let dash = line.firstIndex(of: "-"), line[..<dash].allSatisfy(\.isHexDigit), line.contains(" ") {
                inMapping = line[..<dash].drop { $0 == "0" } == start.drop { $0 == "0" }
            } else if inMapping, line.hasPrefix("Rss:") {
                return line.split(separator: " ").dropFirst().first.flatMap { Int($0) }.map { $0 * 1024 }
            }
        }
        return nil
    }

    /// A /proc file in full: they report a size of 0, so read until the end rather than trust stat.
    static func readWhole(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n <= 0 { break }
            bytes += chunk[0..<n]
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
