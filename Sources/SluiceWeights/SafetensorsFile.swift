#if canImport(Glibc)
import Glibc
#endif
import SluiceCore

/// One tensor's entry in a safetensors header.
public struct TensorInfo: Equatable, Sendable {
    public let name: String
    public let dtype: DType
    public let shape: Shape
    /// Byte range inside the data area (which starts right after the header).
    public let dataRange: Range<Int>
}

/// A parsed and validated safetensors header.
public struct SafetensorsHeader: Sendable {
    /// Tensors in file order (by offset).
    public let tensors: [TensorInfo]
    public let metadata: [String: String]
    /// Offset of the data area from the start of the file: 8 + header length.
    public let dataStart: Int

    /// Headers larger than this are refused before anything is allocated (the reference
    /// implementation's limit is 100 MB; real headers are well under 10 MB).
    public static let maxHeaderBytes = 100_000_000

    /// Parses the first bytes of a file whose total length is `fileSize`. Every failure names
    /// `file` and, where it is one tensor's fault, the tensor.
    public static func parse(_ bytes: UnsafeRawBufferPointer, fileSize: Int, file: String) throws(SluiceError) -> SafetensorsHeader {
        func bad(_ reason: String, _ tensor: String? = nil) -> SluiceError { .invalidCheckpoint(file: file, tensor: tensor, reason: reason) }
        guard fileSize >= 8, bytes.count >= 8 else { throw bad("file is \(fileSize) bytes, shorter than the 8-byte header length") }
        var n64: UInt64 = 0
        for k in 0..<8 { n64 |= UInt64(bytes[k]) << (8 * UInt64(k)) }
        guard n64 <= UInt64(maxHeaderBytes) else { throw bad("header length \(n64) exceeds the \(maxHeaderBytes)-byte limit") }
        let n = Int(n64)
        guard n <= fileSize - 8 else { throw bad("header length \(n) runs past the end of the file (\(fileSize) bytes)") }
        guard bytes.count >= 8 + n else { throw bad("header truncated: \(bytes.count - 8) of \(n) bytes available") }
        let dataSize = fileSize - 8 - n
        let json: JSONValue
        do {
            json = try HeaderJSONParser.parse(UnsafeRawBufferPointer(rebasing: bytes[8..<(8 + n)]), maxDepth: 8)
        } catch {
            throw bad("header is not valid JSON at byte \(error.offset + 8): \(error.reason)")
        }
        guard case .object(let members) = json else { throw bad("header is not a JSON object") }
        var tensors: [TensorInfo] = []
        var metadata: [String: String] = [:]
        var seen = Set<String>()
        for (name, value) in members {
            guard seen.insert(name).inserted else { throw bad("appears twice in the header", name) }
            if name == "__metadata__" {
                guard case .object(let entries) = value else { throw bad("__metadata__ is not an object") }
                for (k, v) in entries {
                    guard case .string(let s) = v else { throw bad("__metadata__ value for '\(k)' is not a string") }
                    metadata[k] = s
                }
                continue
            }
            tensors.append(try tensorInfo(name: name, value: value, dataSize: dataSize, bad: bad))
        }
        tensors.sort { ($0.dataRange.lowerBound, $0.dataRange.upperBound) < ($1.dataRange.lowerBound, $1.dataRange.upperBound) }
        var previous: TensorInfo?
        for t in tensors where !t.dataRange.isEmpty {
            if let p = previous, t.dataRange.lowerBound < p.dataRange.upperBound {
                throw bad("bytes \(t.dataRange) overlap tensor '\(p.name)' at \(p.dataRange)", t.name)
            }
            previous = t
        }
        return SafetensorsHeader(tensors: tensors, metadata: metadata, dataStart: 8 + n)
    }

    private static func tensorInfo(name: String, value: JSONValue, dataSize: Int,
                                   bad: (String, String?) -> SluiceError) throws(SluiceError) -> TensorInfo {
        guard case .object(let fields) = value else { throw bad("entry is not an object", name) }
        var dtypeName: String?, dims: [Int]?, offsets: [Int]?
        for (key, v) in fields {
            switch key {
            case "dtype":
                guard case .string(let s) = v else { throw bad("dtype is not a string", name) }
                dtypeName = s
            case "shape":
                guard case .array(let items) = v else { throw bad("shape is not an array", name) }
                var d: [Int] = []
                for item in items {
                    guard case .integer(let x) = item, x >= 0 else { throw bad("shape \(JSONValue.array(items)) has a dimension that is not a non-negative integer", name) }
                    d.append(Int(x))
                }
                dims = d
            case "data_offsets":
                guard case .array(let items) = v, items.count == 2,
                      case .integer(let b) = items[0], case .integer(let e) = items[1], b >= 0, e >= 0 else {
                    throw bad("data_offsets is not a pair of non-negative integers", name)
                }
                offsets = [Int(b), Int(e)]
            default:
                throw bad("unknown field '\(key)'", name)
            }
        }
        guard let dtypeName else { throw bad("no dtype", name) }
        guard let dims else { throw bad("no shape", name) }
        guard let offsets else { throw bad("no data_offsets", name) }
        guard let dtype = DType(safetensorsName: dtypeName) else { throw bad("unknown dtype '\(dtypeName)'", name) }
        let shape = Shape(dims)
        guard let count = shape.checkedCount else { throw bad("shape \(shape) has more elements than fit in 64 bits", name) }
        let (bytes, overflow) = count.multipliedReportingOverflow(by: dtype.byteSize)
        guard !overflow else { throw bad("shape \(shape) × \(dtype.byteSize) bytes overflows 64 bits", name) }
        guard offsets[0] <= offsets[1] else { throw bad("data_offsets [\(offsets[0]), \(offsets[1])] end before they begin", name) }
        guard offsets[1] <= dataSize else {
            throw bad("data_offsets end at \(offsets[1]), past the \(dataSize)-byte data area (file truncated?)", name)
        }
        guard offsets[1] - offsets[0] == bytes else {
            throw bad("shape \(shape) of \(dtype.safetensorsName) needs \(bytes) bytes, data_offsets span \(offsets[1] - offsets[0])", name)
        }
        return TensorInfo(name: name, dtype: dtype, shape: shape, dataRange: offsets[0]..<offsets[1])
    }
}

/// A memory-mapped safetensors file. Opening reads and validates the header only; a tensor is a
/// zero-copy view into the mapping until something computes with it.
public final class SafetensorsFile: Sendable {
    public let path: String
    public let header: SafetensorsHeader
    /// The whole file, mapped read-only (tensors are views into it).
    public let mapping: HostStorage
    private let index: [String: Int]

    public init(path: String) throws(SluiceError) {
        self.path = path
        mapping = try HostStorage(mapping: path)
        let bytes = UnsafeRawBufferPointer(start: mapping.baseAddress, count: mapping.byteCount)
        header = try SafetensorsHeader.parse(bytes, fileSize: mapping.byteCount, file: path)
        var index: [String: Int] = [:]
        for (i, t) in header.tensors.enumerated() { index[t.name] = i }
        self.index = index
    }

    public var names: [String] { header.tensors.map(\.name) }
    public var metadata: [String: String] { header.metadata }

    public func info(_ name: String) -> TensorInfo? { index[name].map { header.tensors[$0] } }

    /// Asks the kernel to read these data-area byte ranges ahead (MADV_WILLNEED): the disk tier's
    /// prefetch of the next group while the current one computes.
    public func adviseWillNeed(_ ranges: [Range<Int>]) {
        #if os(Linux)
        let page = 4096
        for r in ranges where !r.isEmpty {
            let start = (header.dataStart + r.lowerBound) / page * page
            let end = min(mapping.byteCount, header.dataStart + r.upperBound)
            _ = madvise(mapping.baseAddress + start, end - start, MADV_WILLNEED)
        }
        #endif
    }

    /// A view of the named tensor's bytes in the mapping (no copy). The format does not promise that
    /// a tensor starts at a multiple of its element size (the header's length is free); a tensor that
    /// does not is copied into aligned memory, so no typed read is ever misaligned.
    public func tensor(_ name: String) throws(SluiceError) -> Tensor {
        guard let t = info(name) else { throw .missingTensor(key: name, file: path) }
        let offset = header.dataStart + t.dataRange.lowerBound
        let view = HostStorage(viewOf: mapping, offset: offset, byteCount: t.dataRange.count)
        let tensor = Tensor(storage: view, dtype: t.dtype, shape: t.shape)
        return Int(bitPattern: mapping.baseAddress + offset) % max(t.dtype.byteSize, 1) == 0 ? tensor : tensor.ownedCopy()
    }
}
