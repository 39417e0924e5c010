import Foundation

/// A setting a caller chooses, named as the library names it. Errors name these; the command line
/// and the server map them to their own flags and fields (`vramLimit` is `--vram-limit` to the CLI).
public enum Parameter: String, Sendable, CaseIterable {
    case model, prompt, negativePrompt, seed, steps, width, height, guidance, count
    case trueCfgScale, maxSequenceLength, transformer, compute, sampler, initImage, strength, config
    case vramLimit, ramLimit, profile, device, storage, table, prefetchDepth, batch

    /// The name's words, lowercased (`vramLimit` → vram, limit): flags join them with "-", JSON
    /// fields with "_".
    public var words: [String] {
        rawValue.reduce(into: [""]) { w, c in if c.isUppercase { w.append("") }; w[w.count - 1] += c.lowercased() }
    }
}

/// A decoding failure in words: which field, and what was wrong with it — never a Swift type name.
public struct DecodingFailure: CustomStringConvertible, Sendable {
    public let description: String

    public init(_ error: any Error) {
        guard let e = error as? DecodingError else {
            description = "\(error)"
            return
        }
        func path(_ c: [any CodingKey], _ last: (any CodingKey)? = nil) -> String {
            let keys = (c + (last.map { [$0] } ?? [])).map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }
            return keys.isEmpty ? "the top level" : "'" + keys.joined(separator: ".").replacingOccurrences(of: ".[", with: "[") + "'"
        }
        func kind(_ t: Any.Type) -> String {
            switch t {
            case is Bool.Type: return "true or false"
            case is Int.Type, is Int64.Type, is UInt64.Type, is Int32.Type: return "an integer"
            case is Double.Type, is Float.Type: return "a number"
            case is String.Type: return "a string"
            default:
                let name = "\(t)"
                if name.hasPrefix("Array") { return "a list" }
                if name.hasPrefix("Dictionary") { return "an object" }
                return "a value of another kind"
            }
        }
        switch e {
        case let .keyNotFound(key, ctx): description = "\(path(ctx.codingPath, key)) is missing"
        case let .typeMismatch(type, ctx): description = "\(path(ctx.codingPath)) must be \(kind(type))"
        case let .valueNotFound(type, ctx): description = "\(path(ctx.codingPath)) is null; it must be \(kind(type))"
        case let .dataCorrupted(ctx):
            description = ctx.codingPath.isEmpty ? "not valid JSON" : "\(path(ctx.codingPath)) is malformed"
        @unknown default: description = "malformed"
        }
    }
}
