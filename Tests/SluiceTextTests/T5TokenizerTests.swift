import Foundation
import SluiceCore
import SluiceTestSupport
import SluiceText
import Testing

/// The tiny T5 tokenizer (Tests/Fixtures/tokenizers/t5-tiny: a sentencepiece unigram model whose charsmap
/// is compiled from nmt_nfkc's rules, with 100 sentinels) against transformers 5.23's T5Tokenizer
/// (= T5TokenizerFast), read from tokenizer.json and from spiece.model.
@Suite struct T5TokenizerTests {
    static let folder = FluxTokenizerCases.folder("t5")

    /// The main cases, or as `variant` gives them.
    static func expectCases(_ tok: T5Tokenizer, variant: String? = nil, sourceLocation: SourceLocation = #_sourceLocation) throws {
        try FluxTokenizerCases.expect("t5", variant: variant, sourceLocation: sourceLocation) { try tok.encode($0) }
    }

    @Test func idsMatchTransformersFromTokenizerJSON() throws {
        let tok = try T5Tokenizer(directory: Self.folder)
        try Self.expectCases(tok)
        #expect(tok.padID == 0 && tok.eosID == 1 && tok.unknownID == 2)
        #expect(tok.vocabularySize == 600 + 100)
    }

    /// spiece.model alone (with the configs) gives what tokenizer.json gives.
    @Test func spieceModelGivesTheSameIDs() throws {
        let dir = try FluxTokenizerCases.scratchFolder(
            copying: ["spiece.model", "tokenizer_config.json", "special_tokens_map.json"], from: Self.folder)
        defer { FluxTokenizerCases.cleanup(dir) }
        let tok = try T5Tokenizer(directory: dir)
        try Self.expectCases(tok)
        #expect(tok.vocabularySize == 700 && tok.padID == 0 && tok.eosID == 1)
        #expect(throws: SluiceError.self) { try T5Tokenizer(directory: dir, pipeline: .declared) }
    }

    @Test func paddedToMaxLengthAsTransformers() throws {
        let tok = try T5Tokenizer(directory: Self.folder)
        let cases = FluxTokenizerCases.cases("t5", "padded")
        #expect(cases.count >= 5)
        for c in cases {
            let got = try tok.ids(c.text, maxLength: c.maxLength!)
            #expect(got == c.ids, "\(c.text.debugDescription) at \(c.maxLength!)")
            #expect(got.count == c.maxLength!)
        }
        #expect(throws: SluiceError.self) { try tok.ids("x", maxLength: 0) }
    }

    /// The pipelines older tokenizer.json files declare (FLUX's tokenizer_2: Replace " {2,}" after the
    /// charsmap, Metaspace without WhitespaceSplit; and prepend_scheme "first"), read as the tokenizers
    /// library reads them.
    @Test(arguments: ["flux_style", "prepend_first"])
    func declaredPipelinesMatchTheTokenizersLibrary(_ variant: String) throws {
        let dir = try FluxTokenizerCases.scratchFolder(copying: ["tokenizer.json", "tokenizer_config.json"], from: Self.folder)
        defer { FluxTokenizerCases.cleanup(dir) }
        try FluxTokenizerCases.editJSON(dir + "/tokenizer.json") { root in
            let charsmap = root["normalizer"]!
            root["normalizer"] = ["type": "Sequence", "normalizers": [
                charsmap, ["type": "Replace", "pattern": ["Regex": " {2,}"], "content": " "]]]
            root["pre_tokenizer"] = ["type": "Metaspace", "replacement": "▁", "split": true,
                                     "prepend_scheme": variant == "flux_style" ? "always" : "first"]
        }
        try Self.expectCases(try T5Tokenizer(directory: dir, pipeline: .declared), variant: variant)
        // transformers' own pipeline ignores what the file declares.
        try Self.expectCases(try T5Tokenizer(directory: dir))
    }

    /// nmt_nfkc's rules through the compiled charsmap: ligatures, circled and full-width forms, spaces.
    @Test func charsmapNormalizesLikeNFKC() throws {
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: Self.folder + "/tokenizer.json")))
        let root = try JSONSerialization.jsonObject(with: Data(bytes)) as! [String: Any]
        let b64 = (root["normalizer"] as! [String: Any])["precompiled_charsmap"] as! String
        let map = try PrecompiledCharsmap(bytes: [UInt8](Data(base64Encoded: b64)!), source: "t5-tiny")
        #expect(try map.normalize("ﬁne ①Ａ\u{00A0}x\tCafe\u{0301}") == "fine 1A x Café")
        #expect(try map.normalize("plain ascii") == "plain ascii")
    }

    @Test func missingFilesAreNamedErrors() throws {
        #expect(throws: SluiceError.self) { try T5Tokenizer(directory: "/nonexistent/tokenizer_2") }
        let dir = try FluxTokenizerCases.scratchFolder(copying: ["tokenizer_config.json"], from: Self.folder)
        defer { FluxTokenizerCases.cleanup(dir) }
        do {
            _ = try T5Tokenizer(directory: dir)
            Issue.record("a folder without tokenizer.json or spiece.model loaded")
        } catch {
            #expect(error.description.contains("tokenizer.json") && error.description.contains("spiece.model"), "\(error)")
        }
    }

    /// Truncated and garbled spiece.model and tokenizer.json files: an error naming the file, or a
    /// tokenizer that still encodes without crashing — never a crash.
    @Test(arguments: ["spiece.model", "tokenizer.json"])
    func garbledFilesAreErrorsNotCrashes(_ file: String) throws {
        let original = [UInt8](try Data(contentsOf: URL(fileURLWithPath: Self.folder + "/" + file)))
        let dir = try FluxTokenizerCases.scratchFolder(copying: ["tokenizer_config.json"], from: Self.folder)
        defer { FluxTokenizerCases.cleanup(dir) }
        var rng = SplitMix(seed: file == "spiece.model" ? 5 : 6)
        var refused = 0
        for k in 0..<40 {
            var bytes = original
            if k < 20 { bytes = Array(bytes.prefix(rng.below(bytes.count))) } else {
                for _ in 0..<(1 + rng.below(16)) { bytes[rng.below(bytes.count)] = UInt8(rng.below(256)) }
            }
            try Data(bytes).write(to: URL(fileURLWithPath: dir + "/" + file))
            do {
                let tok = try T5Tokenizer(directory: dir)
                _ = try tok.ids("ﬁne Ａ① a red fox <extra_id_3> 東京 🦊 \u{00A0}x", maxLength: 16)
            } catch {
                refused += 1
                #expect(error.description.contains(file), "\(error)")
            }
        }
        #expect(refused >= 20)
    }
}
