import Foundation
import SluiceCore
import SluiceTestSupport
import SluiceText
import Testing

/// AUTOMATIC1111's emphasis syntax and 75-token chunking. The parser's cases are the examples A1111's
/// `parse_prompt_attention` documents (its docstring, weights to the last bit of the Doubles it prints)
/// plus escapes, stray brackets, BREAK and weights that are not numbers; chunking is checked on the tiny
/// CLIP tokenizer, where "a" is one token and "," another, against boundaries worked out by hand from
/// A1111's rules (75 per chunk, a comma within 20 tokens of the end moves what follows it on, BREAK).
@Suite struct PromptEmphasisTests {
    typealias F = PromptEmphasis.Fragment

    @Test func a1111sDocumentedExamples() {
        #expect(PromptEmphasis.parse("normal text") == [F("normal text", 1)])
        #expect(PromptEmphasis.parse("an (important) word") == [F("an ", 1), F("important", 1.1), F(" word", 1)])
        #expect(PromptEmphasis.parse("(unbalanced") == [F("unbalanced", 1.1)])
        #expect(PromptEmphasis.parse("\\(literal\\]") == [F("(literal]", 1)])
        #expect(PromptEmphasis.parse("(unnecessary)(parens)") == [F("unnecessaryparens", 1.1)])
        #expect(PromptEmphasis.parse("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).") == [
            F("a ", 1), F("house", 1.5730000000000004), F(" ", 1.1), F("on", 1), F(" a ", 1.1), F("hill", 0.55),
            F(", sun, ", 1.1), F("sky", 1.4641000000000006), F(".", 1.1),
        ])
        #expect(PromptEmphasis.parse("") == [F("", 1)])
    }

    @Test func squareBracketsStrayClosersAndOddWeights() {
        #expect(PromptEmphasis.parse("[dim]") == [F("dim", 1 / 1.1)])
        #expect(PromptEmphasis.parse("[[dim]]") == [F("dim", 1 / 1.1 / 1.1)])
        // A closer without its opener, and a weight outside round brackets, stay text.
        #expect(PromptEmphasis.parse("a) b] c:1.5)") == [F("a) b] c:1.5)", 1)])
        #expect(PromptEmphasis.parse("(x: 0.5 )") == [F("x", 0.5)])
        // ":" not followed by a number and ")" is text; the last ":30)" weighs the whole bracket.
        #expect(PromptEmphasis.parse("(time: 12:30)") == [F("time: 12", 30)])
        #expect(PromptEmphasis.parse("(x:1.2.3)") == [F("x:1.2.3)", 1.1)])
        #expect(PromptEmphasis.parse("a \\\\ b") == [F("a \\ b", 1)])
        #expect(PromptEmphasis.parse("(a:-1)") == [F("a", -1)])
    }

    @Test func breakSplitsIntoSeparateFragments() {
        let parsed = PromptEmphasis.parse("a cat BREAK (a hat)")
        #expect(parsed == [F("a cat", 1), F("BREAK", -1), F("", 1), F("a hat", 1.1)])
        #expect(parsed[1].isBreak)
        #expect(PromptEmphasis.parse("BREAKFAST") == [F("BREAKFAST", 1)])
    }

    static func tokenizer() throws -> CLIPTokenizer { try CLIPTokenizer(directory: FluxTokenizerCases.folder("clip")) }

    @Test func shortPromptIsDiffusersPaddedSequence() throws {
        let tok = try Self.tokenizer()
        let chunks = try PromptChunker.chunks("a red fox", tokenizer: tok)
        #expect(chunks.count == 1)
        let want = try tok.ids("a red fox")
        #expect(chunks[0].ids == want)
        #expect(chunks[0].multipliers == Array(repeating: 1, count: 77))
        let empty = try PromptChunker.chunks("", tokenizer: tok)
        let wantEmpty = try tok.ids("")
        #expect(empty.count == 1 && empty[0].ids == wantEmpty)
    }

    @Test func longPromptsChunkAt75AndWeightsFollowTheirTokens() throws {
        let tok = try Self.tokenizer()
        let a = try tok.contentIDs("a")[0], b = try tok.contentIDs("b")[0]
        let prompt = Array(repeating: "a", count: 80).joined(separator: " ") + " (b:1.5)"
        let chunks = try PromptChunker.chunks(prompt, tokenizer: tok)
        #expect(chunks.count == 2)
        #expect(chunks[0].ids == [tok.bosID] + Array(repeating: a, count: 75) + [tok.eosID])
        #expect(chunks[1].ids == [tok.bosID] + Array(repeating: a, count: 5) + [b, tok.eosID] + Array(repeating: tok.padID, count: 69))
        #expect(chunks[1].multipliers[6] == 1.5 && chunks[1].multipliers.filter { $0 != 1 }.count == 1)
        for c in chunks { #expect(c.ids.count == 77 && c.multipliers.count == 77) }
    }

    @Test func aCommaNearTheEndMovesTheRestToTheNextChunk() throws {
        let tok = try Self.tokenizer()
        let a = try tok.contentIDs("a")[0], comma = try #require(tok.commaID)
        // 70 "a", a comma (token 71), then 10 more: the 76th token finds the comma 4 from the end.
        let prompt = Array(repeating: "a", count: 70).joined(separator: " ") + ", " + Array(repeating: "a", count: 10).joined(separator: " ")
        let chunks = try PromptChunker.chunks(prompt, tokenizer: tok)
        #expect(chunks.count == 2)
        #expect(chunks[0].ids == [tok.bosID] + Array(repeating: a, count: 70) + [comma, tok.eosID] + Array(repeating: tok.padID, count: 4))
        #expect(chunks[1].ids == [tok.bosID] + Array(repeating: a, count: 10) + [tok.eosID] + Array(repeating: tok.padID, count: 65))
        // Without backtracking the chunk is cut at 75 exactly.
        let hard = try PromptChunker.chunks(prompt, tokenizer: tok, commaBacktrack: 0)
        #expect(hard[0].ids[1...75].filter { $0 == a }.count == 74 && hard[1].ids[1...6] == ArraySlice(Array(repeating: a, count: 6)))
        // A comma further back than 20 tokens is not used.
        let far = Array(repeating: "a", count: 50).joined(separator: " ") + ", " + Array(repeating: "a", count: 30).joined(separator: " ")
        #expect(try PromptChunker.chunks(far, tokenizer: tok)[0].ids[1...75].contains(comma))
        #expect(try PromptChunker.chunks(far, tokenizer: tok)[1].ids[1...6] == ArraySlice(Array(repeating: a, count: 6)))
    }

    @Test func breakEndsAChunkAndPadsItsOwnTokenizersWay() throws {
        let tok = try Self.tokenizer()
        let chunks = try PromptChunker.chunks("a cat BREAK a hat", tokenizer: tok)
        #expect(chunks.count == 2)
        let cat = try tok.ids("a cat"), hat = try tok.ids("a hat")
        #expect(chunks[0].ids == cat && chunks[1].ids == hat)
        // SDXL's second tokenizer pads with "!" (id 0).
        let bang = try CLIPTokenizer(directory: Fixtures.directory + "/models/sdxl-tiny/tokenizer_2")
        #expect(bang.padID == 0)
        let padded = try bang.ids("a cat")
        #expect(try PromptChunker.chunks("a cat", tokenizer: bang)[0].ids == padded)
        #expect(padded.suffix(70) == ArraySlice(Array(repeating: 0, count: 70)))
    }

    /// The arithmetic on [77, D] rows: each row × its multiplier, then all × (mean before / mean after).
    @Test func emphasisScalesRowsAndRestoresTheMean() throws {
        let d = 3
        let values = (0..<(77 * d)).map { Float($0 % 7) * 0.25 - 0.5 }
        var m = [Float](repeating: 1, count: 77)
        m[3] = 1.5; m[4] = 0.5; m[10] = 1.21
        let out = try PromptChunker.emphasize(Tensor(values, shape: [77, d]), multipliers: m).toFloats()
        let scaled = values.enumerated().map { Double($0.element) * Double(m[$0.offset / d]) }
        let ratio = (values.reduce(0.0) { $0 + Double($1) }) / scaled.reduce(0, +)
        for i in 0..<values.count { #expect(abs(Double(out[i]) - scaled[i] * ratio) <= 1e-6) }
        let meanOut = out.reduce(0.0) { $0 + Double($1) } / Double(out.count), meanIn = values.reduce(0.0) { $0 + Double($1) } / Double(values.count)
        #expect(abs(meanOut - meanIn) <= 1e-6)
        #expect(try PromptChunker.emphasize(Tensor(values, shape: [77, d]), multipliers: .init(repeating: 1, count: 77)).toFloats() == values)
        #expect(throws: SluiceError.self) { try PromptChunker.emphasize(Tensor(values, shape: [77, d]), multipliers: [1]) }
    }
}
