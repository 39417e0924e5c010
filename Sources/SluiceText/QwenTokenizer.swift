import Foundation
import SluiceCore

/// Qwen's tokenizer: added tokens (<|im_start|>, …) matched first on the raw text, NFC normalisation,
/// Qwen2's pre-tokenizer, byte-level BPE. Reads `tokenizer/tokenizer.json` (+ `tokenizer_config.json`
/// and `chat_template.jinja` for the prompt template) or a tiktoken rank file.
public struct QwenTokenizer: Sendable {
    public let bpe: ByteLevelBPE
    /// Added tokens, longest first, so the leftmost-longest one wins.
    public let addedTokens: [(text: String, id: Int)]
    public let normalizeNFC: Bool
    public let padToken: String?
    /// The chat template as the model ships it: `chat_template.jinja` (transformers 5) or the
    /// `chat_template` field of `tokenizer_config.json` (older saves). Sluice renders Qwen's ChatML
    /// form itself and checks the template is of that family (`checkChatML`).
    public let chatTemplate: String?

    public init(bpe: ByteLevelBPE, addedTokens: [(String, Int)], normalizeNFC: Bool = true, padToken: String? = "<|endoftext|>",
                chatTemplate: String? = nil) {
        self.chatTemplate = chatTemplate
        self.bpe = bpe
        self.addedTokens = addedTokens.map { (text: $0.0, id: $0.1) }.sorted { $0.text.utf8.count > $1.text.utf8.count }
        self.normalizeNFC = normalizeNFC
        self.padToken = padToken
    }

    /// A `tokenizer/` folder: tokenizer.json, or (as Qwen-Image ships it, transformers' slow Qwen2Tokenizer
    /// files) vocab.json + merges.txt with the added tokens in tokenizer_config.json.
    public init(directory: String) throws(SluiceError) {
        let path = directory + "/tokenizer.json"
        guard let data = FileManager.default.contents(atPath: path) else {
            if FileManager.default.fileExists(atPath: directory + "/vocab.json") {
                try self.init(vocabularyFiles: directory)
                return
            }
            throw .io(path: path, reason: "missing (the tokenizer folder needs tokenizer.json, or vocab.json and merges.txt)")
        }
        guard let root = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw .invalidArgument(name: path, reason: "is not a JSON object")
        }
        guard let model = root["model"] as? [String: Any], (model["type"] as? String) == "BPE" else {
            throw .invalidArgument(name: "\(path): model.type", reason: "only byte-level BPE tokenizers are supported")
        }
        let bpe = try ByteLevelBPE.fromHuggingFace(model: model, file: path)
        var added: [(String, Int)] = []
        for case let t as [String: Any] in root["added_tokens"] as? [Any] ?? [] {
            if let content = t["content"] as? String, let id = (t["id"] as? NSNumber)?.intValue { added.append((content, id)) }
        }
        var nfc = false
        if let norm = root["normalizer"] as? [String: Any] {
            let type = norm["type"] as? String
            if type == "NFC" { nfc = true }
            else if type == "Sequence", let list = norm["normalizers"] as? [[String: Any]] {
                nfc = list.contains { ($0["type"] as? String) == "NFC" }
            } else {
                throw .invalidArgument(name: "\(path): normalizer", reason: "'\(type ?? "?")' is not supported (NFC is)")
            }
        }
        var pad: String? = "<|endoftext|>"
        var template = try? String(contentsOfFile: directory + "/chat_template.jinja", encoding: .utf8)
        if let cfg = FileManager.default.contents(atPath: directory + "/tokenizer_config.json"),
           let obj = try? JSONSerialization.jsonObject(with: cfg) as? [String: Any] {
            if let p = obj["pad_token"] as? String { pad = p }
            if template == nil, let t = obj["chat_template"] as? String { template = t }
        }
        self.init(bpe: bpe, addedTokens: added, normalizeNFC: nfc, padToken: pad, chatTemplate: template)
    }

    /// vocab.json ({token: id}) and merges.txt ("a b" per line after a "#version" header); added tokens
    /// from tokenizer_config.json's `added_tokens_decoder` ({id: {content}}) or added_tokens.json
    /// ({content: id}). Qwen2Tokenizer normalises to NFC.
    init(vocabularyFiles directory: String) throws(SluiceError) {
        let vocabPath = directory + "/vocab.json", mergesPath = directory + "/merges.txt"
        let vocab = try TokenizerFiles.jsonObject(vocabPath)
        let merges = try TokenizerFiles.text(mergesPath).split(separator: "\n", omittingEmptySubsequences: true)
            .map(String.init).filter { !$0.hasPrefix("#version") }
        let bpe = try ByteLevelBPE.fromHuggingFace(model: ["vocab": vocab, "merges": merges], file: mergesPath)
        var added: [(String, Int)] = []
        var pad: String? = "<|endoftext|>"
        var template = try? String(contentsOfFile: directory + "/chat_template.jinja", encoding: .utf8)
        if TokenizerFiles.exists(directory + "/tokenizer_config.json") {
            let config = try TokenizerFiles.jsonObject(directory + "/tokenizer_config.json")
            for case let (id, entry as [String: Any]) in config["added_tokens_decoder"] as? [String: Any] ?? [:] {
                if let n = Int(id), let content = entry["content"] as? String { added.append((content, n)) }
            }
            if let p = config["pad_token"] as? String { pad = p }
            if template == nil, let t = config["chat_template"] as? String { template = t }
        }
        if added.isEmpty, TokenizerFiles.exists(directory + "/added_tokens.json") {
            for case let (content, id as NSNumber) in try TokenizerFiles.jsonObject(directory + "/added_tokens.json") { added.append((content, id.intValue)) }
        }
        guard !added.isEmpty else {
            throw .invalidArgument(name: directory + "/tokenizer_config.json: added_tokens_decoder", reason: "no added tokens (<|im_start|>, …) found here or in added_tokens.json")
        }
        self.init(bpe: bpe, addedTokens: added, normalizeNFC: true, padToken: pad, chatTemplate: template)
    }

    public func encode(_ text: String) throws(SluiceError) -> [Int] {
        var ids: [Int] = []
        var rest = Substring(text)
        while !rest.isEmpty {
            // The earliest added token (longest at that position) splits the text.
            var found: (range: Range<Substring.Index>, id: Int)?
            for t in addedTokens {
                if let r = rest.range(of: t.text), found == nil || r.lowerBound < found!.range.lowerBound {
                    found = (r, t.id)
                }
            }
            let plainEnd = found?.range.lowerBound ?? rest.endIndex
            ids += try encodePlain(String(rest[..<plainEnd]))
            guard let f = found else { break }
            ids.append(f.id)
            rest = rest[f.range.upperBound...]
        }
        return ids
    }

    /// The template must be Qwen's ChatML (turns between <|im_start|> and <|im_end|>), whose rendering
    /// of one user turn plus the generation prompt Sluice reproduces; anything else is refused rather
    /// than guessed. A tokenizer without a template (a bare tokenizer.json) is taken as Qwen's.
    public func checkChatML() throws(SluiceError) {
        guard let t = chatTemplate else { return }
        guard t.contains("<|im_start|>"), t.contains("<|im_end|>"), addedTokens.contains(where: { $0.text == "<|im_start|>" }) else {
            throw .invalidArgument(name: "tokenizer chat template", reason: "is not Qwen's ChatML template; Sluice renders only that one")
        }
    }

    func encodePlain(_ text: String) throws(SluiceError) -> [Int] {
        if text.isEmpty { return [] }
        let normalized = normalizeNFC ? text.precomposedStringWithCanonicalMapping : text
        var ids: [Int] = []
        for piece in QwenPreTokenizer.split(normalized) { ids += try bpe.encode(piece: Array(piece.utf8)) }
        return ids
    }

    public func decode(_ ids: [Int]) -> String {
        var bytes: [UInt8] = []
        for id in ids {
            if let b = bpe.bytes(of: id) { bytes += b }
            else if let t = addedTokens.first(where: { $0.id == id }) { bytes += Array(t.text.utf8) }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// The prompt as diffusers' ZImagePipeline renders it through Qwen3's chat template (one user turn,
    /// generation prompt, enable_thinking=True — which adds no think block), truncated to `maxLength`
    /// tokens as the pipeline's tokenizer call does. The padding it then adds is masked out of the
    /// embeddings, so it is not produced here.
    public func zImagePromptIDs(_ prompt: String, maxLength: Int = 512) throws(SluiceError) -> [Int] {
        try checkChatML()
        let text = "<|im_start|>user\n" + prompt + "<|im_end|>\n<|im_start|>assistant\n"
        return Array(try encode(text).prefix(maxLength))
    }
}
