/// CLIP's pre-tokenizer regex (transformers' CLIPTokenizer, from OpenAI's simple_tokenizer.py), written
/// out as a scanner over Unicode scalars:
///
///     <\|startoftext\|> | <\|endoftext\|> | 's|'t|'re|'ve|'m|'ll|'d | [\p{L}]+ | [\p{N}] | [^\s\p{L}\p{N}]+
///
/// The text between matches (whitespace) is dropped. The input is already lower-cased, so the
/// contractions are matched as written.
///
/// transformers follows the split with a ByteLevel pre-tokenizer that keeps GPT-2's regex on: it leaves
/// every other match whole, but cuts a special-token literal that reached it (an upper-case
/// `<|ENDOFTEXT|>`, lower-cased) into `<|`, `endoftext`, `|>`.
enum CLIPPreTokenizer {
    private static let specials: [[Unicode.Scalar]] = [Array("<|startoftext|>".unicodeScalars), Array("<|endoftext|>".unicodeScalars)]
    private static let contractions: [[Unicode.Scalar]] = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d"].map { Array($0.unicodeScalars) }

    /// The words of `text`, in order, whitespace left out.
    static func split(_ text: String) -> [String] {
        let s = Array(text.unicodeScalars)
        var words: [String] = []
        var i = 0
        while i < s.count {
            let n = matchLength(s, i)
            if n == 0 { i += 1; continue }
            var word = String.UnicodeScalarView()
            word.append(contentsOf: s[i..<(i + n)])
            if specials.contains(where: { $0.count == n && s[i..<(i + n)].elementsEqual($0) }) {
                words += ["<|", String(word.dropFirst(2).dropLast(2)), "|>"]
            } else {
                words.append(String(word))
            }
            i += n
        }
        return words
    }

    /// The length of the match starting at `i`, 0 where none does (whitespace).
    static func matchLength(_ s: [Unicode.Scalar], _ i: Int) -> Int {
        for lit in specials + contractions where s.count - i >= lit.count && s[i..<(i + lit.count)].elementsEqual(lit) {
            return lit.count
        }
        // \p{L} and \p{N} are the general categories L* and N*, as in Qwen's regex.
        if QwenPreTokenizer.isLetter(s[i]) {
            var j = i
            while j < s.count && QwenPreTokenizer.isLetter(s[j]) { j += 1 }
            return j - i
        }
        if QwenPreTokenizer.isNumber(s[i]) { return 1 }
        var j = i
        while j < s.count && !s[j].properties.isWhitespace && !QwenPreTokenizer.isLetter(s[j]) && !QwenPreTokenizer.isNumber(s[j]) {
            j += 1
        }
        return j - i
    }
}
