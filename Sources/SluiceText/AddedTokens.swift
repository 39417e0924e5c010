import SluiceCore

/// A token matched in the text before the model sees it (`added_tokens` of tokenizer.json; the special
/// tokens transformers registers). As in the tokenizers library: a `normalized` token is looked for in
/// the normalised text, any other in the raw text; `lstrip`/`rstrip` make it swallow the whitespace
/// beside it.
struct AddedToken: Sendable, Equatable {
    var content: String
    var id: Int
    var normalized: Bool = false
    var lstrip: Bool = false
    var rstrip: Bool = false

    init(content: String, id: Int, normalized: Bool = false, lstrip: Bool = false, rstrip: Bool = false) {
        self.content = content
        self.id = id
        self.normalized = normalized
        self.lstrip = lstrip
        self.rstrip = rstrip
    }

    /// One entry of tokenizer.json's `added_tokens`.
    init(json: Any, file: String, index: Int) throws(SluiceError) {
        guard let t = json as? [String: Any], let content = t["content"] as? String, !content.isEmpty,
              let id = TokenizerFiles.int(t["id"]), id >= 0 else {
            throw .invalidArgument(name: "\(file): added_tokens[\(index)]", reason: "needs a non-empty 'content' and an 'id' ≥ 0")
        }
        self.init(content: content, id: id, normalized: t["normalized"] as? Bool ?? false,
                  lstrip: t["lstrip"] as? Bool ?? false, rstrip: t["rstrip"] as? Bool ?? false)
    }
}

/// A stretch of text between added tokens, or one of them.
enum TextSegment: Equatable {
    case text(String)
    case token(Int)
}

/// Splits text on a set of added tokens, leftmost match first and the longest at that place (the
/// tokenizers library's leftmost-longest Aho–Corasick), on UTF-8 bytes.
struct AddedTokenMatcher: Sendable {
    /// Longest first, so the first that matches at a place is the longest.
    private let tokens: [(bytes: [UInt8], token: AddedToken)]
    private var firstBytes = Set<UInt8>()

    init(_ tokens: [AddedToken]) {
        self.tokens = tokens.map { (Array($0.content.utf8), $0) }.sorted { $0.bytes.count > $1.bytes.count }
        for t in self.tokens { firstBytes.insert(t.bytes[0]) }
    }

    var isEmpty: Bool { tokens.isEmpty }

    func split(_ text: String) -> [TextSegment] {
        if tokens.isEmpty || text.isEmpty { return text.isEmpty ? [] : [.text(text)] }
        let b = Array(text.utf8)
        var out: [TextSegment] = []
        var plainStart = 0, i = 0
        while i < b.count {
            guard firstBytes.contains(b[i]), let t = match(b, at: i) else { i += 1; continue }
            var start = i, end = i + t.bytes.count
            if t.token.lstrip { while start > plainStart, let w = whitespaceBefore(b, start) { start = w } }
            if t.token.rstrip { while end < b.count, let w = whitespaceAfter(b, end) { end = w } }
            if start > plainStart { out.append(.text(String(decoding: b[plainStart..<start], as: UTF8.self))) }
            out.append(.token(t.token.id))
            plainStart = end
            i = end
        }
        if plainStart < b.count { out.append(.text(String(decoding: b[plainStart...], as: UTF8.self))) }
        return out
    }

    private func match(_ b: [UInt8], at i: Int) -> (bytes: [UInt8], token: AddedToken)? {
        for t in tokens where i + t.bytes.count <= b.count {
            if b[i..<(i + t.bytes.count)].elementsEqual(t.bytes) { return t }
        }
        return nil
    }

    /// The start of the whitespace scalar that ends at `end`, if the scalar there is whitespace.
    private func whitespaceBefore(_ b: [UInt8], _ end: Int) -> Int? {
        var s = end - 1
        while s > 0 && b[s] & 0xC0 == 0x80 { s -= 1 }
        return Self.isWhitespace(b[s..<end]) ? s : nil
    }

    private func whitespaceAfter(_ b: [UInt8], _ start: Int) -> Int? {
        var e = start + 1
        while e < b.count && b[e] & 0xC0 == 0x80 { e += 1 }
        return Self.isWhitespace(b[start..<e]) ? e : nil
    }

    private static func isWhitespace(_ bytes: ArraySlice<UInt8>) -> Bool {
        guard let s = String(decoding: bytes, as: UTF8.self).unicodeScalars.first else { return false }
        return s.properties.isWhitespace
    }
}

/// All of a tokenizer's added tokens, and the split the tokenizers library makes with them before the
/// pre-tokenizer: raw-text tokens first, then each stretch between them is normalised and split on the
/// normalised-text tokens. Stretches that are (or normalise to) nothing are dropped there too.
struct AddedVocabulary: Sendable {
    let tokens: [AddedToken]
    private let raw: AddedTokenMatcher
    private let normalized: AddedTokenMatcher

    init(_ tokens: [AddedToken]) {
        self.tokens = tokens
        raw = AddedTokenMatcher(tokens.filter { !$0.normalized })
        normalized = AddedTokenMatcher(tokens.filter(\.normalized))
    }

    /// A normalised stretch of text, and whether it begins the input (Metaspace's "first" scheme asks).
    enum Segment: Equatable {
        case text(String, atStart: Bool)
        case token(Int)
    }

    func segments(_ text: String, normalize: (String) throws(SluiceError) -> String) throws(SluiceError) -> [Segment] {
        var out: [Segment] = []
        for (n, piece) in raw.split(text).enumerated() {
            switch piece {
            case let .token(id): out.append(.token(id))
            case let .text(s):
                let norm = try normalize(s)
                for (k, inner) in normalized.split(norm).enumerated() {
                    switch inner {
                    case let .token(id): out.append(.token(id))
                    case let .text(t): out.append(.text(t, atStart: n == 0 && k == 0))
                    }
                }
            }
        }
        return out
    }

    /// The id of the added token with this text.
    func id(of content: String) -> Int? { tokens.first { $0.content == content }?.id }
}
