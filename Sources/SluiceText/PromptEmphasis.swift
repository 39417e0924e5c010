import Foundation

/// AUTOMATIC1111's prompt emphasis (modules/prompt_parser.py, `parse_prompt_attention`), as its users
/// write it:
///
///     (word)        weight × 1.1          ((word)) × 1.21, and so on
///     [word]        weight ÷ 1.1
///     (word:1.3)    weight × 1.3          the number replaces the 1.1 of that pair of brackets
///     \( \) \[ \]   literal brackets;  \\  a backslash
///     BREAK         starts a new 75-token chunk
///
/// An unclosed bracket applies to the end of the prompt; a stray closing one is text. Neighbouring
/// fragments of equal weight are merged. Weights are products of Doubles in the order A1111 multiplies
/// them (so "(((house:1.3))" weighs 1.3 · 1.1 · 1.1 = 1.5730000000000004, as there).
public enum PromptEmphasis {
    public struct Fragment: Equatable, Sendable {
        public var text: String
        public var weight: Double
        /// A `BREAK` between fragments (its text is "BREAK", its weight −1 in A1111's list).
        public var isBreak: Bool { weight == -1 && text == "BREAK" }
        public init(_ text: String, _ weight: Double) { self.text = text; self.weight = weight }
    }

    public static func parse(_ prompt: String) -> [Fragment] {
        var out: [Fragment] = []
        var round: [Int] = [], square: [Int] = []
        func multiply(from start: Int, _ factor: Double) {
            for i in start..<out.count { out[i].weight *= factor }
        }
        for token in tokens(prompt) {
            switch token {
            case let .literal(text): out.append(Fragment(text, 1))
            case .open("("): round.append(out.count)
            case .open(_): square.append(out.count)
            case let .weight(w, raw):
                if let start = round.popLast() { multiply(from: start, w) } else { appendText(raw, to: &out) }
            case .close(")"):
                if let start = round.popLast() { multiply(from: start, 1.1) } else { appendText(")", to: &out) }
            case .close(_):
                if let start = square.popLast() { multiply(from: start, 1 / 1.1) } else { appendText("]", to: &out) }
            case let .text(text): appendText(text, to: &out)
            }
        }
        for start in round { multiply(from: start, 1.1) }
        for start in square { multiply(from: start, 1 / 1.1) }
        if out.isEmpty { out = [Fragment("", 1)] }
        var i = 0
        while i + 1 < out.count {
            if out[i].weight == out[i + 1].weight {
                out[i].text += out[i + 1].text
                out.remove(at: i + 1)
            } else {
                i += 1
            }
        }
        return out
    }

    /// Plain text becomes fragments of weight 1, split at each BREAK (the word alone, with the
    /// whitespace around it swallowed).
    static func appendText(_ text: String, to out: inout [Fragment]) {
        for (i, part) in splitAtBreak(text).enumerated() {
            if i > 0 { out.append(Fragment("BREAK", -1)) }
            out.append(Fragment(part, 1))
        }
    }

    static func splitAtBreak(_ text: String) -> [String] {
        // \s*\bBREAK\b\s*: "BREAK" standing as a word of its own.
        let chars = Array(text)
        var parts: [String] = [], current = ""
        var i = 0
        func isWord(_ c: Character) -> Bool { c.isLetter || c.isNumber || c == "_" }
        while i < chars.count {
            if i + 5 <= chars.count, String(chars[i..<(i + 5)]) == "BREAK",
               i == 0 || !isWord(chars[i - 1]), i + 5 == chars.count || !isWord(chars[i + 5]) {
                while let last = current.last, last.isWhitespace { current.removeLast() }
                parts.append(current)
                current = ""
                i += 5
                while i < chars.count, chars[i].isWhitespace { i += 1 }
                continue
            }
            current.append(chars[i])
            i += 1
        }
        parts.append(current)
        return parts
    }

    enum Token: Equatable {
        case literal(String), open(Character), close(Character), weight(Double, raw: String), text(String)
    }

    /// The lexer of A1111's `re_attention`: escapes, brackets, `:number)` closing a round bracket with a
    /// weight, runs of other text, and a lone `:` as text.
    static func tokens(_ prompt: String) -> [Token] {
        let chars = Array(prompt)
        var out: [Token] = []
        var i = 0
        while i < chars.count {
            let c = chars[i]
            if c == "\\" {
                if i + 1 < chars.count, "()[]\\".contains(chars[i + 1]) {
                    out.append(.literal(String(chars[i + 1])))
                    i += 2
                } else {
                    out.append(.literal(""))   // a lone backslash is dropped, as A1111's `\\` alternative does
                    i += 1
                }
            } else if c == "(" || c == "[" {
                out.append(.open(c)); i += 1
            } else if c == ")" || c == "]" {
                out.append(.close(c)); i += 1
            } else if c == ":" {
                // :\s*([+-]?[.\d]+)\s*\)
                var j = i + 1
                while j < chars.count, chars[j].isWhitespace { j += 1 }
                var number = ""
                if j < chars.count, chars[j] == "+" || chars[j] == "-" { number.append(chars[j]); j += 1 }
                var digits = 0
                while j < chars.count, chars[j] == "." || chars[j].isASCII && chars[j].isNumber { number.append(chars[j]); j += 1; digits += 1 }
                while j < chars.count, chars[j].isWhitespace { j += 1 }
                if digits > 0, j < chars.count, chars[j] == ")" {
                    // A1111 would fail on "1.2.3"; here such a group is text.
                    if let w = Double(number) { out.append(.weight(w, raw: String(chars[i...j]))) } else { out.append(.text(String(chars[i...j]))) }
                    i = j + 1
                } else {
                    out.append(.text(":")); i += 1
                }
            } else {
                var j = i
                while j < chars.count, !"\\()[]:".contains(chars[j]) { j += 1 }
                out.append(.text(String(chars[i..<j])))
                i = j
            }
        }
        return out
    }
}
