import SluiceCore

/// Just enough of the protobuf wire format to read a sentencepiece model: fields of a message in order,
/// varints, 32-bit values and length-delimited bytes; 64-bit values skipped. Every read is bounds-checked,
/// so a truncated or garbled file is an error naming `source`, never a crash.
struct ProtobufReader {
    enum Value {
        case varint(UInt64)
        case fixed32(UInt32)
        case fixed64
        case bytes(ArraySlice<UInt8>)
    }

    private let data: ArraySlice<UInt8>
    private var pos: Int
    let source: String

    init(_ data: ArraySlice<UInt8>, source: String) {
        self.data = data
        pos = data.startIndex
        self.source = source
    }

    /// The next field (number and value), nil at the end of the message.
    mutating func next() throws(SluiceError) -> (field: Int, value: Value)? {
        guard pos < data.endIndex else { return nil }
        let key = try varint()
        let field = Int(truncatingIfNeeded: key >> 3)
        guard field > 0 else { throw bad("field number 0") }
        switch key & 7 {
        case 0: return (field, .varint(try varint()))
        case 1:
            try need(8)
            pos += 8
            return (field, .fixed64)
        case 2:
            let n = try varint()
            guard n <= UInt64(data.endIndex - pos) else { throw bad("field \(field) claims \(n) bytes, \(data.endIndex - pos) are left") }
            let slice = data[pos..<(pos + Int(n))]
            pos += Int(n)
            return (field, .bytes(slice))
        case 5:
            try need(4)
            var v: UInt32 = 0
            for k in 0..<4 { v |= UInt32(data[pos + k]) << (8 * UInt32(k)) }
            pos += 4
            return (field, .fixed32(v))
        default:
            throw bad("field \(field) has wire type \(key & 7), which a sentencepiece model does not use")
        }
    }

    private mutating func varint() throws(SluiceError) -> UInt64 {
        var v: UInt64 = 0
        for shift in stride(from: 0, to: 70, by: 7) {
            guard pos < data.endIndex else { throw bad("a varint runs past the end") }
            let b = data[pos]
            pos += 1
            if shift < 64 { v |= UInt64(b & 0x7F) << UInt64(shift) }
            if b & 0x80 == 0 { return v }
        }
        throw bad("a varint is longer than 10 bytes")
    }

    private func need(_ n: Int) throws(SluiceError) {
        guard data.endIndex - pos >= n else { throw bad("a \(n)-byte value runs past the end") }
    }

    func bad(_ reason: String) -> SluiceError {
        .invalidArgument(name: source, reason: "is not a valid sentencepiece model (\(reason))")
    }
}
