#if canImport(Glibc)
import Glibc
#endif
import SluiceCore

/// Writes safetensors files (for tools and tests): tensors in name order, data 8-byte aligned by
/// padding the header with spaces, as the reference writer does. Written to a temporary file and
/// renamed, so a reader never sees half a file.
public enum SafetensorsWriter {
    public static func encode(_ tensors: [(String, Tensor)], metadata: [String: String] = [:]) throws(SluiceError) -> [UInt8] {
        let sorted = tensors.sorted { $0.0 < $1.0 }
        var entries: [String] = []
        if !metadata.isEmpty {
            let m = metadata.sorted { $0.key < $1.key }.map { "\(jsonString($0.key)):\(jsonString($0.value))" }
            entries.append("\"__metadata__\":{\(m.joined(separator: ","))}")
        }
        var offset = 0
        var seen = Set<String>()
        for (name, t) in sorted {
            guard seen.insert(name).inserted else { throw .invalidArgument(name: "tensor name", reason: "'\(name)' given twice") }
            let shape = t.shape.dims.map(String.init).joined(separator: ",")
            entries.append("\(jsonString(name)):{\"dtype\":\"\(t.dtype.safetensorsName)\",\"shape\":[\(shape)],\"data_offsets\":[\(offset),\(offset + t.byteCount)]}")
            offset += t.byteCount
        }
        var header = Array(("{" + entries.joined(separator: ",") + "}").utf8)
        while (8 + header.count) % 8 != 0 { header.append(0x20) }
        var out = [UInt8]()
        out.reserveCapacity(8 + header.count + offset)
        let n = UInt64(header.count)
        for k in 0..<8 { out.append(UInt8((n >> (8 * UInt64(k))) & 0xFF)) }
        out += header
        for (_, t) in sorted {
            let c = t.contiguous()
            out += UnsafeRawBufferPointer(start: c.rawPointer, count: c.byteCount)
        }
        return out
    }

    public static func write(_ tensors: [(String, Tensor)], metadata: [String: String] = [:], to path: String) throws(SluiceError) {
        try writeAtomically(try encode(tensors, metadata: metadata), to: path)
    }

    static func jsonString(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if u.value < 0x20 { out += "\\u" + String(repeating: "0", count: 4 - String(u.value, radix: 16).count) + String(u.value, radix: 16) }
                else { out.unicodeScalars.append(u) }
            }
        }
        return out + "\""
    }
}

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename.
public func writeAtomically(_ bytes: [UInt8], to path: String) throws(SluiceError) {
    let tmp = path + ".tmp-\(getpid())"
    let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
    guard fd >= 0 else { throw .io(path: tmp, reason: "cannot create (\(String(cString: strerror(errno))))") }
    var written = 0
    let ok = bytes.withUnsafeBytes { buf -> Bool in
        while written < buf.count {
            let r = Glibc.write(fd, buf.baseAddress! + written, buf.count - written)
            if r <= 0 { return false }
            written += r
        }
        return true
    }
    let synced = fsync(fd) == 0
    close(fd)
    guard ok && synced else {
        unlink(tmp)
        throw .io(path: path, reason: "write failed (\(String(cString: strerror(errno))))")
    }
    guard rename(tmp, path) == 0 else {
        unlink(tmp)
        throw .io(path: path, reason: "cannot rename into place (\(String(cString: strerror(errno))))")
    }
}
