import Foundation
import SluiceCore

/// The parts of a sentencepiece `ModelProto` (sentencepiece_model.proto; T5's `spiece.model`) a unigram
/// tokenizer needs: the pieces with their scores and types, the model type, and the normaliser spec.
struct SentencePieceModel {
    /// sentencepiece's piece types (ModelProto.SentencePiece.Type).
    enum PieceType: Int {
        case normal = 1, unknown = 2, control = 3, userDefined = 4, unused = 5, byte = 6
    }

    struct Piece {
        var text = ""
        var score: Float = 0
        var type = PieceType.normal
    }

    var pieces: [Piece] = []
    /// TrainerSpec.model_type: 1 unigram (the default), 2 BPE, 3 word, 4 char.
    var modelType = 1
    var unknownID: Int?
    var precompiledCharsmap: [UInt8] = []
    var addDummyPrefix = true
    var removeExtraWhitespaces = true

    init(path: String) throws(SluiceError) {
        try self.init(bytes: try TokenizerFiles.bytes(path), source: path)
    }

    init(bytes: [UInt8], source: String) throws(SluiceError) {
        var model = ProtobufReader(bytes[...], source: source)
        var trainerUnknownID: Int?
        while let (field, value) = try model.next() {
            switch (field, value) {
            case let (1, .bytes(b)): pieces.append(try Self.piece(b, source: source, index: pieces.count))
            case let (2, .bytes(b)):
                var spec = ProtobufReader(b, source: source)
                while let (f, v) = try spec.next() {
                    if case let .varint(n) = v {
                        if f == 3 { modelType = Int(truncatingIfNeeded: n) }
                        if f == 40 { trainerUnknownID = Int(Int32(truncatingIfNeeded: n)) }
                    }
                }
            case let (3, .bytes(b)):
                var spec = ProtobufReader(b, source: source)
                while let (f, v) = try spec.next() {
                    switch (f, v) {
                    case let (2, .bytes(c)): precompiledCharsmap = Array(c)
                    case let (3, .varint(n)): addDummyPrefix = n != 0
                    case let (4, .varint(n)): removeExtraWhitespaces = n != 0
                    default: break
                    }
                }
            case (1, _), (2, _), (3, _): throw model.bad("field \(field) is not a message")
            default: break
            }
        }
        guard !pieces.isEmpty else { throw model.bad("no pieces") }
        unknownID = pieces.firstIndex { $0.type == .unknown } ?? trainerUnknownID
    }

    private static func piece(_ bytes: ArraySlice<UInt8>, source: String, index: Int) throws(SluiceError) -> Piece {
        var reader = ProtobufReader(bytes, source: source)
        var p = Piece()
        while let (f, v) = try reader.next() {
            switch (f, v) {
            case let (1, .bytes(b)):
                guard let s = String(bytes: b, encoding: .utf8) else { throw reader.bad("piece \(index) is not UTF-8") }
                p.text = s
            case let (2, .fixed32(bits)): p.score = Float(bitPattern: bits)
            case let (3, .varint(n)):
                guard let t = PieceType(rawValue: Int(truncatingIfNeeded: n)) else { throw reader.bad("piece \(index) has type \(n)") }
                p.type = t
            default: break
            }
        }
        return p
    }
}
