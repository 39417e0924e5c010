/// Qwen2's pre-tokenizer regex, written out as a scanner over Unicode scalars:
///
///     (?i:'s|'t|'re|'ve|'m|'ll|'d) | [^\r\n\p{L}\p{N}]?\p{L}+ | \p{N} | ?[^\s\p{L}\p{N}]+[\r\n]*
///     | \s*[\r\n]+ | \s+(?!\S) | \s+
///
/// At each position the first alternative that matches wins, with the regex's greedy/backtracking
/// lengths (checked against tokenizers/tiktoken on the real vocabulary).
public enum QwenPreTokenizer {
    static func isLetter(_ s: Unicode.Scalar) -> Bool {
        switch s.properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter: return true
        default: return false
        }
    }

    static func isNumber(_ s: Unicode.Scalar) -> Bool {
        switch s.properties.generalCategory {
        case .decimalNumber, .letterNumber, .otherNumber: return true
        default: return false
        }
    }

    static func isSpace(_ s: Unicode.Scalar) -> Bool { s.properties.isWhitespace }
    static func isNewline(_ s: Unicode.Scalar) -> Bool { s == "\r" || s == "\n" }

    /// The pieces of `text`, in order; concatenated they give `text` back.
    public static func split(_ text: String) -> [String] {
        let s = Array(text.unicodeScalars)
        var pieces: [String] = []
        var i = 0
        while i < s.count {
            let n = matchLength(s, i)
            var piece = String.UnicodeScalarView()
            piece.append(contentsOf: s[i..<(i + n)])
            pieces.append(String(piece))
            i += n
        }
        return pieces
    }

    static func matchLength(_ s: [Unicode.Scalar], _ i: Int) -> Int {
        let n = s.count
        // 's 't 're 've 'm 'll 'd, case-insensitive.
        if s[i] == "'" && i + 1 < n {
            let a = Character(s[i + 1]).lowercased()
            if a == "s" || a == "t" || a == "m" || a == "d" { return 2 }
            if i + 2 < n {
                let ab = a + Character(s[i + 2]).lowercased()
                if ab == "re" || ab == "ve" || ab == "ll" { return 3 }
            }
        }
        // [^\r\n\p{L}\p{N}]?\p{L}+
        do {
            var j = i
            if !isNewline(s[j]) && !isLetter(s[j]) && !isNumber(s[j]) { j += 1 }
            if j < n && isLetter(s[j]) {
                while j < n && isLetter(s[j]) { j += 1 }
                return j - i
            }
            if isLetter(s[i]) {  // the optional char was not taken
                var k = i
                while k < n && isLetter(s[k]) { k += 1 }
                return k - i
            }
        }
        // \p{N}
        if isNumber(s[i]) { return 1 }
        // ' ?[^\s\p{L}\p{N}]+[\r\n]*'
        do {
            var j = i
            if s[j] == " " { j += 1 }
            let start = j
            while j < n && !isSpace(s[j]) && !isLetter(s[j]) && !isNumber(s[j]) { j += 1 }
            if j > start {
                while j < n && isNewline(s[j]) { j += 1 }
                return j - i
            }
        }
        // Whitespace alternatives: all start with a whitespace run.
        var end = i
        while end < n && isSpace(s[end]) { end += 1 }
        guard end > i else { return 1 }  // nothing matched: one scalar on its own (the regex would skip it)
        // \s*[\r\n]+ : up to the last newline in the run.
        if let last = (i..<end).last(where: { isNewline(s[$0]) }) { return last + 1 - i }
        // \s+(?!\S) : the run, less its last char when a non-space follows.
        if end == n { return end - i }
        if end - i >= 2 { return end - i - 1 }
        // \s+
        return end - i
    }
}
