import Foundation
import SluiceCore
import SluiceTestSupport
import SluiceText
import Testing

/// The tiny CLIP tokenizer (Tests/Fixtures/tokenizers/clip-tiny: CLIP's first 1500 merges) against
/// transformers 5.23's CLIPTokenizer: English, punctuation, contractions, digits, case, accents (composed
/// and not), NFKC-looking characters (left alone by CLIP), spaces of all kinds, emoji, CJK, special
/// tokens in the text (FLUX's config makes them match case-insensitively), the empty string, text past 77
/// tokens.
@Suite struct CLIPTokenizerTests {
    static let folder = FluxTokenizerCases.folder("clip")

    /// The main cases, or as `variant` gives them.
    static func expectCases(_ tok: CLIPTokenizer, variant: String? = nil, sourceLocation: SourceLocation = #_sourceLocation) throws {
        try FluxTokenizerCases.expect("clip", variant: variant, sourceLocation: sourceLocation) { try tok.encode($0) }
    }

    @Test func idsMatchTransformersFromTheFolder() throws {
        let tok = try CLIPTokenizer(directory: Self.folder)
        try Self.expectCases(tok)
        #expect(tok.bosID == 2012 && tok.eosID == 2013 && tok.padID == 2013)
        #expect(tok.vocabularySize == 512 + 1500 + 2)
    }

    /// vocab.json + merges.txt (FLUX's tokenizer/ has only these) and tokenizer.json alone give the same ids.
    @Test func bothLoadPathsMatch() throws {
        let plain = try FluxTokenizerCases.scratchFolder(
            copying: ["vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"], from: Self.folder)
        defer { FluxTokenizerCases.cleanup(plain) }
        try Self.expectCases(try CLIPTokenizer(directory: plain))
        let json = try FluxTokenizerCases.scratchFolder(copying: ["tokenizer.json"], from: Self.folder)
        defer { FluxTokenizerCases.cleanup(json) }
        let tok = try CLIPTokenizer(directory: json)
        try Self.expectCases(tok)
        #expect(tok.padID == 2013)
    }

    @Test func paddedToMaxLengthAsTransformers() throws {
        let tok = try CLIPTokenizer(directory: Self.folder)
        let cases = FluxTokenizerCases.cases("clip", "padded")
        #expect(cases.count >= 5)
        for c in cases {
            let got = try tok.ids(c.text, maxLength: c.maxLength!)
            #expect(got == c.ids, "\(c.text.debugDescription) at \(c.maxLength!)")
            #expect(got.count == c.maxLength!)
        }
        #expect(try tok.ids("a photo of a cat").count == 77)
        #expect(throws: SluiceError.self) { try tok.ids("x", maxLength: 1) }
    }

    /// SD2's configs name "!" as pad: transformers pads with it and also takes every "!" of the text for it.
    @Test func padTokenComesFromTheConfig() throws {
        let dir = try FluxTokenizerCases.scratchFolder(
            copying: ["vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"], from: Self.folder)
        defer { FluxTokenizerCases.cleanup(dir) }
        for file in ["tokenizer_config.json", "special_tokens_map.json"] {
            try FluxTokenizerCases.editJSON(dir + "/" + file) { $0["pad_token"] = "!" }
        }
        let tok = try CLIPTokenizer(directory: dir)
        #expect(tok.padID == 0)
        for c in FluxTokenizerCases.cases("clip", "padded_pad_bang") {
            #expect(try tok.ids(c.text, maxLength: c.maxLength!) == c.ids, "\(c.text.debugDescription)")
        }
    }

    /// FLUX's config marks the specials `normalized`, so an upper-case <|ENDOFTEXT|> is one too; without
    /// a config, or with tokenizer.json's added tokens not normalised, it is only text.
    @Test func specialsAreMatchedInNormalizedTextOnlyWhenMarkedSo() throws {
        let bare = try FluxTokenizerCases.scratchFolder(copying: ["vocab.json", "merges.txt"], from: Self.folder)
        defer { FluxTokenizerCases.cleanup(bare) }
        try Self.expectCases(try CLIPTokenizer(directory: bare), variant: "no_config")
        let json = try FluxTokenizerCases.scratchFolder(copying: ["tokenizer.json"], from: Self.folder)
        defer { FluxTokenizerCases.cleanup(json) }
        try FluxTokenizerCases.editJSON(json + "/tokenizer.json") { root in
            root["added_tokens"] = (root["added_tokens"] as! [[String: Any]]).map { var t = $0; t["normalized"] = false; return t }
        }
        try Self.expectCases(try CLIPTokenizer(directory: json), variant: "raw_specials_json")
    }

    @Test func missingAndBrokenFilesAreNamedErrors() throws {
        #expect(throws: SluiceError.self) { try CLIPTokenizer(directory: "/nonexistent/tokenizer") }
        let dir = try FluxTokenizerCases.scratchFolder(copying: ["vocab.json"], from: Self.folder)
        defer { FluxTokenizerCases.cleanup(dir) }
        do {
            _ = try CLIPTokenizer(directory: dir)
            Issue.record("a folder without merges.txt loaded")
        } catch {
            #expect(error.description.contains("merges.txt"), "\(error)")
        }
        // A merge naming a token the vocabulary lacks, a line that is not a pair, a vocabulary that is not JSON.
        for (file, text) in [("merges.txt", "#version: 0.2\nq z\nxyz\n"), ("merges.txt", "#version: 0.2\nab\n"), ("vocab.json", "{\"a\": ")] {
            try FluxTokenizerCases.scratchCopy(Self.folder + "/merges.txt", to: dir + "/merges.txt")
            try text.write(toFile: dir + "/" + file, atomically: true, encoding: .utf8)
            do {
                _ = try CLIPTokenizer(directory: dir)
                Issue.record("\(file) with \(text.debugDescription) loaded")
            } catch {
                #expect(error.description.contains(file), "\(error)")
            }
            try FluxTokenizerCases.scratchCopy(Self.folder + "/vocab.json", to: dir + "/vocab.json")
        }
    }

    /// Truncated and garbled tokenizer.json files: an error, never a crash.
    @Test func garbledTokenizerJSONIsAnError() throws {
        let original = try Data(contentsOf: URL(fileURLWithPath: Self.folder + "/tokenizer.json"))
        let dir = try FluxTokenizerCases.scratchFolder(copying: [], from: Self.folder)
        defer { FluxTokenizerCases.cleanup(dir) }
        var rng = SplitMix(seed: 11)
        for k in 0..<12 {
            var bytes = [UInt8](original)
            if k < 6 { bytes = Array(bytes.prefix(rng.below(bytes.count))) } else {
                for _ in 0..<8 { bytes[rng.below(bytes.count)] = UInt8(rng.below(256)) }
            }
            try Data(bytes).write(to: URL(fileURLWithPath: dir + "/tokenizer.json"))
            do { _ = try CLIPTokenizer(directory: dir).encode("a photo of a cat, 东京 🦊!") } catch {}
        }
    }
}

/// CLIP's real vocabulary (49,408 tokens) from the PyPI package open-clip-torch, which ships its merges as
/// open_clip/bpe_simple_vocab_16e6.txt.gz; .ci/run installs it and names it in SLUICE_CLIP_BPE. 300 strings
/// against transformers' CLIPTokenizer on the same vocabulary (tools/reference/make_clip_vocab_ids.py).
@Suite struct CLIPVocabularyTests {
    static let mergesPath = Fixtures.pythonPackageFile("open_clip/bpe_simple_vocab_16e6.txt.gz", variable: "SLUICE_CLIP_BPE")

    /// In CI the vocabulary must be there: the test below would otherwise skip in silence.
    @Test func realVocabularyIsPresentInCI() {
        if Fixtures.inCI { #expect(Self.mergesPath != nil, "CI=true but open_clip's bpe_simple_vocab_16e6.txt.gz was not found (.ci/run installs open-clip-torch)") }
    }

    @Test(.enabled(if: mergesPath != nil, "open-clip-torch is not installed (pip install --no-deps open-clip-torch)"))
    func idsMatchTransformersOnTheRealVocabulary() throws {
        let tok = try CLIPTokenizer(openCLIPMerges: Self.mergesPath!)
        #expect(tok.vocabularySize == 49_408)
        #expect(tok.bosID == 49_406 && tok.eosID == 49_407 && tok.padID == 49_407)
        let data = try Data(contentsOf: URL(fileURLWithPath: Fixtures.directory + "/clip_vocab_ids.json"))
        let list = (try JSONSerialization.jsonObject(with: data) as! [String: Any])["cases"] as! [[String: Any]]
        #expect(list.count == 300)
        var wrong = 0
        for c in list {
            let text = c["text"] as! String, want = (c["ids"] as! [NSNumber]).map(\.intValue)
            let got = try tok.encode(text)
            if got != want { wrong += 1; Issue.record("\(text.debugDescription): got \(got), want \(want)") }
        }
        #expect(wrong == 0)
        #expect(try tok.ids("a red fox") == [49_406, 320, 736, 3240] + Array(repeating: 49_407, count: 73))
    }

    @Test func truncatedGzipIsAnError() throws {
        guard let path = Self.mergesPath else { return }
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        let dir = try FluxTokenizerCases.scratchFolder(copying: [], from: Fixtures.directory)
        defer { FluxTokenizerCases.cleanup(dir) }
        try Data(bytes.prefix(bytes.count / 2)).write(to: URL(fileURLWithPath: dir + "/merges.gz"))
        #expect(throws: SluiceError.self) { try CLIPTokenizer(openCLIPMerges: dir + "/merges.gz") }
    }
}
