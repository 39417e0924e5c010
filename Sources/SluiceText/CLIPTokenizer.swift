import Foundation
import SluiceCore

/// CLIP's tokenizer as transformers 5 runs it (CLIPTokenizer, which is CLIPTokenizerFast there; FLUX.1's
/// and Stable Diffusion's first text encoder): special tokens matched in the raw text, then NFC,
/// whitespace runs → one space, lower case (transformers' normalizer; the slow tokenizer's ftfy-less
/// clean-up differs only on control characters and CJK), CLIP's pre-tokenizer regex, byte-level BPE with
/// `</w>` ending each word, and `<|startoftext|>` … `<|endoftext|>` around it all.
///
/// Reads a tokenizer folder: `tokenizer.json`, or `vocab.json` + `merges.txt`; the special tokens come
/// from `tokenizer_config.json` / `special_tokens_map.json` where present. transformers 5 rebuilds
/// CLIP's normaliser and pre-tokenizer whatever tokenizer.json declares, and so does this type.
public struct CLIPTokenizer: Sendable {
    let bpe: CLIPBPE
    let added: AddedVocabulary
    public let bosID: Int
    public let eosID: Int
    /// The token `ids(_:maxLength:)` pads with: `<|endoftext|>` for FLUX and SD1, `!` for SD2's configs.
    public let padID: Int
    public let vocabularySize: Int

    init(vocab: [String: Int], merges: [(String, String)], addedTokens: [AddedToken], names: TokenizerConfig,
         padFallback: String?, file: String) throws(SluiceError) {
        func id(_ key: String, default name: String) throws(SluiceError) -> (String, Int) {
            let text = names[key] ?? name
            guard let id = vocab[text] ?? (addedTokens + names.addedTokens).first(where: { $0.content == text })?.id else {
                throw .invalidArgument(name: "\(file): \(key)", reason: "'\(text)' is not in the vocabulary")
            }
            return (text, id)
        }
        let bos = try id("bos_token", default: "<|startoftext|>")
        let eos = try id("eos_token", default: "<|endoftext|>")
        let unk = try id("unk_token", default: "<|endoftext|>")
        let pad = try id("pad_token", default: padFallback ?? "<|endoftext|>")
        bpe = try CLIPBPE(vocab: vocab, merges: merges, unknownID: unk.1, file: file)
        // transformers registers the named special tokens as added tokens matched in the raw text (a
        // pad of "!" then turns every "!" of a prompt into that token, as it does for SD2).
        let tokens = names.merging(addedTokens, specials: [bos, eos, unk, pad])
        added = AddedVocabulary(tokens)
        (bosID, eosID, padID) = (bos.1, eos.1, pad.1)
        vocabularySize = Set(vocab.values).union(tokens.map(\.id)).count
    }

    /// A tokenizer folder (FLUX's `tokenizer/`): tokenizer.json, or vocab.json and merges.txt.
    public init(directory: String) throws(SluiceError) {
        let names = try TokenizerConfig(directory: directory)
        let json = directory + "/tokenizer.json"
        if TokenizerFiles.exists(json) {
            let root = try TokenizerFiles.jsonObject(json)
            guard let model = root["model"] as? [String: Any], (model["type"] as? String ?? "BPE") == "BPE" else {
                throw .invalidArgument(name: "\(json): model.type", reason: "a CLIP tokenizer is a BPE model")
            }
            if let suffix = model["end_of_word_suffix"] as? String, suffix != CLIPBPE.endOfWord {
                throw .invalidArgument(name: "\(json): model.end_of_word_suffix", reason: "is '\(suffix)', CLIP's is '</w>'")
            }
            let vocab = try Self.vocab(model["vocab"], file: "\(json): model.vocab")
            let merges = try Self.merges(model["merges"], file: "\(json): model.merges")
            var added: [AddedToken] = []
            for (k, t) in (root["added_tokens"] as? [Any] ?? []).enumerated() { added.append(try AddedToken(json: t, file: json, index: k)) }
            let padding = (root["padding"] as? [String: Any])?["pad_token"] as? String
            try self.init(vocab: vocab, merges: merges, addedTokens: added, names: names, padFallback: padding, file: json)
            return
        }
        let vocabPath = directory + "/vocab.json", mergesPath = directory + "/merges.txt"
        for p in [vocabPath, mergesPath] where !TokenizerFiles.exists(p) {
            throw .io(path: p, reason: "missing (a CLIP tokenizer folder needs tokenizer.json, or vocab.json and merges.txt)")
        }
        let vocab = try Self.vocab(try TokenizerFiles.jsonObject(vocabPath), file: vocabPath)
        let merges = try Self.mergesText(try TokenizerFiles.text(mergesPath), file: mergesPath)
        try self.init(vocab: vocab, merges: merges, addedTokens: [], names: names, padFallback: nil, file: vocabPath)
    }

    /// CLIP's real vocabulary from open_clip's `bpe_simple_vocab_16e6.txt.gz` (or the same list
    /// uncompressed), built as open_clip's SimpleTokenizer builds it: the 256 byte characters, the same
    /// with `</w>`, one token per merge (its first 48,894 lines after the header), then
    /// `<|startoftext|>` and `<|endoftext|>` — 49,408 tokens, the ids of openai/clip-vit-large-patch14.
    public init(openCLIPMerges path: String) throws(SluiceError) {
        var bytes = try TokenizerFiles.bytes(path)
        if Gzip.isGzip(bytes) { bytes = try Gzip.decompress(bytes, file: path) }
        guard let text = String(bytes: bytes, encoding: .utf8) else { throw .invalidArgument(name: path, reason: "is not UTF-8 text") }
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        let count = 49_152 - 256 - 2
        guard lines.count > count else {
            throw .invalidArgument(name: path, reason: "has \(lines.count) lines; CLIP's merges list has \(count) after its header")
        }
        let merges = try Self.mergesText(lines[1...count].joined(separator: "\n"), file: path, firstLine: 2)
        // open_clip lists bytes_to_unicode()'s values in its insertion order: printable bytes, then the
        // rest shifted past 255 — ascending code points either way.
        var tokens = ByteLevelBPE.byteToChar.sorted { $0.unicodeScalars.first!.value < $1.unicodeScalars.first!.value }.map { String($0) }
        tokens += tokens.map { $0 + CLIPBPE.endOfWord }
        tokens += merges.map { $0.0 + $0.1 }
        tokens += ["<|startoftext|>", "<|endoftext|>"]
        var vocab: [String: Int] = [:]
        for (id, t) in tokens.enumerated() where vocab[t] == nil { vocab[t] = id }
        try self.init(vocab: vocab, merges: merges, addedTokens: [], names: TokenizerConfig(), padFallback: nil, file: path)
    }

    /// Ids with `<|startoftext|>` first and `<|endoftext|>` last; no truncation or padding.
    public func encode(_ text: String) throws(SluiceError) -> [Int] {
        [bosID] + (try contentIDs(text)) + [eosID]
    }

    /// `tokenizer(text, padding="max_length", max_length=maxLength, truncation=True).input_ids`: the text's
    /// tokens cut to fit between the two specials, then padding to `maxLength`.
    public func ids(_ text: String, maxLength: Int = 77) throws(SluiceError) -> [Int] {
        guard maxLength >= 2 else { throw .invalidArgument(name: "maxLength", reason: "must hold <|startoftext|> and <|endoftext|> (≥ 2), got \(maxLength)") }
        let body = try contentIDs(text).prefix(maxLength - 2)
        let ids = [bosID] + body + [eosID]
        return ids + Array(repeating: padID, count: maxLength - ids.count)
    }

    /// The id of `,</w>` (a comma ending a word), where AUTOMATIC1111's chunking prefers to break.
    public var commaID: Int? { bpe.vocab[",</w>"] }

    /// The text's tokens without the two specials (what `tokenizer(text, add_special_tokens=False)` gives).
    public func contentIDs(_ text: String) throws(SluiceError) -> [Int] {
        var ids: [Int] = []
        for segment in try added.segments(text, normalize: Self.normalize) {
            switch segment {
            case let .token(id): ids.append(id)
            case let .text(s, _):
                for word in CLIPPreTokenizer.split(s) { ids += try bpe.encode(word: word) }
            }
        }
        return ids
    }

    /// transformers' normaliser for CLIP: NFC, `\s+` → " ", lower case one scalar at a time (Rust's
    /// char::to_lowercase: full mappings, no final-sigma context).
    static func normalize(_ text: String) -> String {
        var out = String.UnicodeScalarView()
        var inSpace = false
        for s in text.precomposedStringWithCanonicalMapping.unicodeScalars {
            if s.properties.isWhitespace {
                if !inSpace { out.append(" ") }
                inSpace = true
                continue
            }
            inSpace = false
            out.append(contentsOf: s.properties.lowercaseMapping.unicodeScalars)
        }
        return String(out)
    }

    static func vocab(_ value: Any?, file: String) throws(SluiceError) -> [String: Int] {
        guard let dict = value as? [String: Any], !dict.isEmpty else { throw .invalidArgument(name: file, reason: "is not a {token: id} object") }
        var vocab: [String: Int] = [:]
        vocab.reserveCapacity(dict.count)
        for (token, id) in dict {
            guard let id = TokenizerFiles.int(id), id >= 0 else { throw .invalidArgument(name: file, reason: "token '\(token)' has no id ≥ 0") }
            vocab[token] = id
        }
        return vocab
    }

    /// tokenizer.json's merges: ["a b", …] (older saves) or [["a", "b"], …].
    static func merges(_ value: Any?, file: String) throws(SluiceError) -> [(String, String)] {
        guard let list = value as? [Any] else { throw .invalidArgument(name: file, reason: "is not a list") }
        var out: [(String, String)] = []
        out.reserveCapacity(list.count)
        for (k, m) in list.enumerated() {
            if let s = m as? String {
                let parts = s.split(separator: " ", omittingEmptySubsequences: false)
                if parts.count == 2 { out.append((String(parts[0]), String(parts[1]))); continue }
            } else if let a = m as? [String], a.count == 2 {
                out.append((a[0], a[1]))
                continue
            }
            throw .invalidArgument(name: "\(file)[\(k)]", reason: "is neither \"a b\" nor [\"a\", \"b\"]")
        }
        return out
    }

    /// merges.txt: an optional `#version` header, then "a b" per line.
    static func mergesText(_ text: String, file: String, firstLine: Int = 1) throws(SluiceError) -> [(String, String)] {
        var out: [(String, String)] = []
        for (k, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = line.hasSuffix("\r") ? line.dropLast() : line
            if line.isEmpty || (k == 0 && line.hasPrefix("#version")) { continue }
            let parts = line.split(separator: " ", omittingEmptySubsequences: false)
            guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else {
                throw .invalidArgument(name: "\(file): line \(k + firstLine)", reason: "'\(line)' is not a pair 'a b'")
            }
            out.append((String(parts[0]), String(parts[1])))
        }
        return out
    }
}
