import Foundation
import SluiceCore

/// What a unigram tokenizer does to text before the model: normalisers, then pre-tokenizers, each a
/// step of the tokenizers library named by its tokenizer.json `type`. Only the steps SentencePiece
/// tokenizers use are known; any other is refused by name rather than skipped.
struct UnigramPipeline: Sendable {
    enum ReplacePattern: Sendable, Equatable {
        case literal(String)
        /// Runs of at least `atLeast` ASCII spaces (` {2,}`, ` +`).
        case spaces(atLeast: Int)
        /// Runs of Unicode whitespace (`\s+`).
        case whitespace
    }

    enum Normalizer: Sendable {
        case precompiled(PrecompiledCharsmap)
        case replace(ReplacePattern, with: String)
        case strip(left: Bool, right: Bool)
        case prepend(String)
        case nfc, nfkc, lowercase
    }

    enum PrependScheme: String, Sendable { case always, first, never }

    enum PreTokenizer: Sendable {
        /// Splits on whitespace runs, dropping them.
        case whitespaceSplit
        /// " " → `replacement`, which is put in front per `prepend`, then (if `split`) each
        /// `replacement` starts a new piece.
        case metaspace(replacement: String, prepend: PrependScheme, split: Bool)
    }

    var normalizers: [Normalizer]
    var preTokenizers: [PreTokenizer]

    /// What transformers 5's T5Tokenizer builds, whatever tokenizer.json declares besides the charsmap:
    /// the charsmap, then WhitespaceSplit and Metaspace("▁", always, split).
    static func transformersT5(charsmap: PrecompiledCharsmap?) -> UnigramPipeline {
        UnigramPipeline(normalizers: charsmap.map { [.precompiled($0)] } ?? [],
                        preTokenizers: [.whitespaceSplit, .metaspace(replacement: "▁", prepend: .always, split: true)])
    }

    func normalize(_ text: String) throws(SluiceError) -> String {
        var s = text
        for step in normalizers {
            switch step {
            case let .precompiled(map): s = try map.normalize(s)
            case let .replace(pattern, content): s = Self.replace(s, pattern, content)
            case let .strip(left, right):
                var scalars = Substring(s).unicodeScalars
                if left { while let f = scalars.first, f.properties.isWhitespace { scalars.removeFirst() } }
                if right { while let l = scalars.last, l.properties.isWhitespace { scalars.removeLast() } }
                s = String(scalars)
            case let .prepend(p): if !s.isEmpty { s = p + s }
            case .nfc: s = s.precomposedStringWithCanonicalMapping
            case .nfkc: s = s.precomposedStringWithCompatibilityMapping
            case .lowercase:
                var out = String.UnicodeScalarView()
                for c in s.unicodeScalars { out.append(contentsOf: c.properties.lowercaseMapping.unicodeScalars) }
                s = String(out)
            }
        }
        return s
    }

    static func replace(_ s: String, _ pattern: ReplacePattern, _ content: String) -> String {
        switch pattern {
        case let .literal(l): return replaceLiteral(s, l, content)
        case let .spaces(atLeast):
            return replaceRuns(s, content) { $0 == " " } keep: { $0 < atLeast }
        case .whitespace:
            return replaceRuns(s, content) { $0.properties.isWhitespace } keep: { _ in false }
        }
    }

    /// Every occurrence of `literal`, left to right, becomes `content` — compared scalar by scalar
    /// (Foundation's search would match canonically equivalent text and whole grapheme clusters only).
    static func replaceLiteral(_ s: String, _ literal: String, _ content: String) -> String {
        let pattern = Array(literal.unicodeScalars)
        guard !pattern.isEmpty else { return s }
        let scalars = Array(s.unicodeScalars)
        var out = String.UnicodeScalarView()
        var i = 0
        while i < scalars.count {
            if scalars.count - i >= pattern.count && scalars[i..<(i + pattern.count)].elementsEqual(pattern) {
                out.append(contentsOf: content.unicodeScalars)
                i += pattern.count
            } else {
                out.append(scalars[i])
                i += 1
            }
        }
        return String(out)
    }

    /// Each maximal run of scalars in `run` becomes `content`, unless `keep(length)`.
    private static func replaceRuns(_ s: String, _ content: String, run: (Unicode.Scalar) -> Bool, keep: (Int) -> Bool) -> String {
        var out = String.UnicodeScalarView()
        let scalars = Array(s.unicodeScalars)
        var i = 0
        while i < scalars.count {
            guard run(scalars[i]) else { out.append(scalars[i]); i += 1; continue }
            var j = i
            while j < scalars.count && run(scalars[j]) { j += 1 }
            if keep(j - i) { out.append(contentsOf: scalars[i..<j]) } else { out.append(contentsOf: content.unicodeScalars) }
            i = j
        }
        return String(out)
    }

    /// The pieces the model encodes one by one. `atStart`: the text begins the input (not after an
    /// added token), which is where the "first" scheme puts its replacement.
    func preTokenize(_ text: String, atStart: Bool) -> [String] {
        var pieces: [(text: String, atStart: Bool)] = [(text, atStart)]
        for step in preTokenizers {
            var next: [(text: String, atStart: Bool)] = []
            for (piece, start) in pieces {
                switch step {
                case .whitespaceSplit:
                    // On scalars (Rust's char::is_whitespace), not grapheme clusters: a space that a
                    // combining mark follows is still a separator.
                    let scalars = piece.unicodeScalars
                    let words = scalars.split(whereSeparator: \.properties.isWhitespace)
                    for w in words { next.append((String(w), start && w.startIndex == scalars.startIndex)) }
                case let .metaspace(replacement, scheme, split):
                    var s = Self.replaceLiteral(piece, " ", replacement)
                    // Scalars, not Characters: "▁" with a combining mark after it still starts the piece.
                    let marked = s.unicodeScalars.first == replacement.unicodeScalars.first
                    if !marked && (scheme == .always || (scheme == .first && start)) { s = replacement + s }
                    guard split else { next.append((s, start)); continue }
                    // Each replacement begins a piece (tokenizers' MergedWithNext).
                    var current = ""
                    for ch in s.unicodeScalars {
                        if String(ch) == replacement && !current.isEmpty { next.append((current, false)); current = "" }
                        current.unicodeScalars.append(ch)
                    }
                    if !current.isEmpty { next.append((current, false)) }
                }
            }
            pieces = next.filter { !$0.text.isEmpty }
        }
        return pieces.map(\.text)
    }
}

extension UnigramPipeline {
    /// The normaliser and pre-tokenizer tokenizer.json declares, read as the tokenizers library reads them.
    init(declaredIn root: [String: Any], file: String) throws(SluiceError) {
        normalizers = try Self.normalizers(root["normalizer"], field: "\(file): normalizer")
        preTokenizers = try Self.preTokenizers(root["pre_tokenizer"], field: "\(file): pre_tokenizer")
    }

    /// The charsmap of tokenizer.json's `Precompiled` normaliser, alone or in a Sequence.
    static func charsmap(in root: [String: Any], file: String) throws(SluiceError) -> PrecompiledCharsmap? {
        for step in try normalizers(root["normalizer"], field: "\(file): normalizer", knownOnly: false) {
            if case let .precompiled(map) = step { return map }
        }
        return nil
    }

    private static func normalizers(_ value: Any?, field: String, knownOnly: Bool = true) throws(SluiceError) -> [Normalizer] {
        guard let value, !(value is NSNull) else { return [] }
        guard let obj = value as? [String: Any], let type = obj["type"] as? String else {
            throw .invalidArgument(name: field, reason: "is not an object with a 'type'")
        }
        switch type {
        case "Sequence":
            guard let list = obj["normalizers"] as? [Any] else { throw .invalidArgument(name: field, reason: "Sequence without 'normalizers'") }
            var out: [Normalizer] = []
            for (k, n) in list.enumerated() { out += try normalizers(n, field: "\(field).normalizers[\(k)]", knownOnly: knownOnly) }
            return out
        case "Precompiled":
            // An empty charsmap (a model trained with the identity rule) normalises nothing.
            guard let b64 = obj["precompiled_charsmap"] as? String else { return [] }
            guard let data = Data(base64Encoded: b64) else { throw .invalidArgument(name: "\(field).precompiled_charsmap", reason: "is not base64") }
            return data.isEmpty ? [] : [.precompiled(try PrecompiledCharsmap(bytes: [UInt8](data), source: "\(field).precompiled_charsmap"))]
        case "Replace":
            guard let content = obj["content"] as? String, let pattern = obj["pattern"] as? [String: Any] else {
                throw .invalidArgument(name: field, reason: "Replace needs 'pattern' and 'content'")
            }
            if let literal = pattern["String"] as? String { return [.replace(.literal(literal), with: content)] }
            switch pattern["Regex"] as? String {
            case " {2,}": return [.replace(.spaces(atLeast: 2), with: content)]
            case " +": return [.replace(.spaces(atLeast: 1), with: content)]
            case "\\s+": return [.replace(.whitespace, with: content)]
            case let other:
                if !knownOnly { return [] }
                throw .invalidArgument(name: "\(field).pattern", reason: "regex '\(other ?? "?")' is not one Sluice knows (' {2,}', ' +', '\\s+')")
            }
        case "Strip":
            return [.strip(left: obj["strip_left"] as? Bool ?? true, right: obj["strip_right"] as? Bool ?? true)]
        case "Prepend":
            guard let p = obj["prepend"] as? String else { throw .invalidArgument(name: field, reason: "Prepend needs 'prepend'") }
            return [.prepend(p)]
        case "NFC": return [.nfc]
        case "NFKC": return [.nfkc]
        case "Lowercase": return [.lowercase]
        default:
            if !knownOnly { return [] }
            throw .invalidArgument(name: field, reason: "normaliser '\(type)' is not supported for unigram tokenizers")
        }
    }

    private static func preTokenizers(_ value: Any?, field: String) throws(SluiceError) -> [PreTokenizer] {
        guard let value, !(value is NSNull) else { return [] }
        guard let obj = value as? [String: Any], let type = obj["type"] as? String else {
            throw .invalidArgument(name: field, reason: "is not an object with a 'type'")
        }
        switch type {
        case "Sequence":
            guard let list = obj["pretokenizers"] as? [Any] else { throw .invalidArgument(name: field, reason: "Sequence without 'pretokenizers'") }
            var out: [PreTokenizer] = []
            for (k, p) in list.enumerated() { out += try preTokenizers(p, field: "\(field).pretokenizers[\(k)]") }
            return out
        case "WhitespaceSplit": return [.whitespaceSplit]
        case "Metaspace":
            let replacement = obj["replacement"] as? String ?? "▁"
            guard replacement.unicodeScalars.count == 1 else { throw .invalidArgument(name: "\(field).replacement", reason: "must be one character") }
            // Files older than prepend_scheme say add_prefix_space (true meant always).
            let scheme: PrependScheme
            if let s = obj["prepend_scheme"] as? String {
                guard let p = PrependScheme(rawValue: s) else { throw .invalidArgument(name: "\(field).prepend_scheme", reason: "'\(s)' is not always, first or never") }
                scheme = p
            } else {
                scheme = (obj["add_prefix_space"] as? Bool ?? true) ? .always : .never
            }
            return [.metaspace(replacement: replacement, prepend: scheme, split: obj["split"] as? Bool ?? true)]
        default:
            throw .invalidArgument(name: field, reason: "pre-tokenizer '\(type)' is not supported for unigram tokenizers")
        }
    }
}
