import Foundation
import SluiceCore

/// T5's SentencePiece unigram tokenizer as transformers 5 runs it (T5Tokenizer, which is
/// T5TokenizerFast there; FLUX.1's second text encoder): special tokens (`</s>`, `<pad>`, `<unk>`, the
/// `<extra_id_N>` sentinels) matched in the raw text, the precompiled charsmap normaliser, whitespace
/// split, "▁" put in front of each word, unigram segmentation, `</s>` appended.
///
/// Reads `tokenizer.json`, or `spiece.model` where there is none (then, as transformers does, the
/// vocabulary is the model's pieces followed by `extra_ids` sentinels, `<extra_id_{n-1}>` first, and
/// tokenizer_config.json names the special tokens).
///
/// transformers 5 keeps only the charsmap of tokenizer.json's normaliser and always uses the pipeline
/// above. Older files (FLUX's tokenizer_2 among them) declare `Replace(" {2,}", " ")` and a Metaspace
/// without WhitespaceSplit, which the tokenizers library (and transformers 4) honour: the ids then
/// differ on trailing whitespace and on spaces beside sentinels. `Pipeline.declared` reads those.
public struct T5Tokenizer: Sendable {
    public enum Pipeline: Sendable {
        /// transformers 5's T5 pipeline (the default; what FLUX's diffusers pipeline gives today).
        case transformers
        /// The normaliser and pre-tokenizer tokenizer.json declares, as the tokenizers library reads them.
        case declared
    }

    let model: UnigramModel
    let added: AddedVocabulary
    let pipeline: UnigramPipeline
    public let eosID: Int
    public let padID: Int
    public let unknownID: Int
    public let vocabularySize: Int

    public init(directory: String) throws(SluiceError) {
        try self.init(directory: directory, pipeline: .transformers)
    }

    public init(directory: String, pipeline kind: Pipeline) throws(SluiceError) {
        let names = try TokenizerConfig(directory: directory)
        let json = directory + "/tokenizer.json", spm = directory + "/spiece.model"
        var addedTokens: [AddedToken] = []
        let source: String
        if TokenizerFiles.exists(json) {
            source = json
            let root = try TokenizerFiles.jsonObject(json)
            guard let m = root["model"] as? [String: Any], m["type"] as? String == "Unigram" else {
                throw .invalidArgument(name: "\(json): model.type", reason: "a T5 tokenizer is a Unigram model")
            }
            guard let list = m["vocab"] as? [Any] else { throw .invalidArgument(name: "\(json): model.vocab", reason: "is not a list of [piece, score]") }
            var pieces: [(String, Double)] = []
            pieces.reserveCapacity(list.count)
            for (k, entry) in list.enumerated() {
                guard let pair = entry as? [Any], pair.count == 2, let piece = pair[0] as? String, let score = TokenizerFiles.double(pair[1]) else {
                    throw .invalidArgument(name: "\(json): model.vocab[\(k)]", reason: "is not [piece, score]")
                }
                pieces.append((piece, score))
            }
            guard let unk = TokenizerFiles.int(m["unk_id"]) else {
                throw .invalidArgument(name: "\(json): model.unk_id", reason: "is missing (characters outside the pieces need an unknown token)")
            }
            model = try UnigramModel(pieces: pieces, unknownID: unk, source: "\(json): model.vocab")
            for (k, t) in (root["added_tokens"] as? [Any] ?? []).enumerated() { addedTokens.append(try AddedToken(json: t, file: json, index: k)) }
            switch kind {
            case .transformers: pipeline = .transformersT5(charsmap: try UnigramPipeline.charsmap(in: root, file: json))
            case .declared: pipeline = try UnigramPipeline(declaredIn: root, file: json)
            }
        } else if TokenizerFiles.exists(spm) {
            source = spm
            guard kind == .transformers else {
                throw .invalidArgument(name: json, reason: "missing: the declared pipeline is tokenizer.json's (spiece.model alone gives transformers')")
            }
            let proto = try SentencePieceModel(path: spm)
            guard proto.modelType == 1 else {
                throw .invalidArgument(name: "\(spm): trainer_spec.model_type", reason: "is \(proto.modelType); only unigram (1) models are T5's")
            }
            guard let unk = proto.unknownID else { throw .invalidArgument(name: spm, reason: "has no unknown piece") }
            let extra = names.extraIDs ?? 100
            guard (0...10_000).contains(extra) else { throw .invalidArgument(name: "\(directory)/tokenizer_config.json: extra_ids", reason: "\(extra) is out of range") }
            var pieces = proto.pieces.map { ($0.text, Double($0.score)) }
            pieces += (0..<extra).reversed().map { ("<extra_id_\($0)>", 0.0) }
            model = try UnigramModel(pieces: pieces, unknownID: unk, source: spm)
            // sentencepiece's control and user-defined pieces are added tokens (transformers' converter),
            // and so are the sentinels and the named specials.
            for (id, p) in proto.pieces.enumerated() where p.type == .control || p.type == .userDefined || p.type == .unknown {
                addedTokens.append(AddedToken(content: p.text, id: id))
            }
            for k in 0..<extra { addedTokens.append(AddedToken(content: "<extra_id_\(k)>", id: proto.pieces.count + extra - 1 - k)) }
            for t in names.additional { if let id = model.pieceIDs[t] { addedTokens.append(AddedToken(content: t, id: id)) } }
            pipeline = .transformersT5(charsmap: proto.precompiledCharsmap.isEmpty ? nil
                : try PrecompiledCharsmap(bytes: proto.precompiledCharsmap, source: "\(spm): normalizer_spec.precompiled_charsmap"))
        } else {
            throw .io(path: json, reason: "missing (a T5 tokenizer folder needs tokenizer.json or spiece.model)")
        }
        let model = self.model
        func id(_ key: String, default text: String) throws(SluiceError) -> (String, Int) {
            let text = names[key] ?? text
            guard let id = (addedTokens + names.addedTokens).first(where: { $0.content == text })?.id ?? model.pieceIDs[text] else {
                throw .invalidArgument(name: "\(source): \(key)", reason: "'\(text)' is not in the vocabulary")
            }
            return (text, id)
        }
        let eos = try id("eos_token", default: "</s>"), pad = try id("pad_token", default: "<pad>"), unk = try id("unk_token", default: "<unk>")
        addedTokens = names.merging(addedTokens, specials: [eos, pad, unk])
        added = AddedVocabulary(addedTokens)
        (eosID, padID, unknownID) = (eos.1, pad.1, unk.1)
        vocabularySize = Set(0..<model.count).union(addedTokens.map(\.id)).count
    }

    /// Ids with `</s>` appended; no truncation or padding.
    public func encode(_ text: String) throws(SluiceError) -> [Int] {
        try contentIDs(text) + [eosID]
    }

    /// `tokenizer(text, padding="max_length", max_length=maxLength, truncation=True).input_ids`: the
    /// text's tokens cut to leave room for `</s>`, then `<pad>` up to `maxLength`.
    public func ids(_ text: String, maxLength: Int) throws(SluiceError) -> [Int] {
        guard maxLength >= 1 else { throw .invalidArgument(name: "maxLength", reason: "must hold </s> (≥ 1), got \(maxLength)") }
        let ids = try contentIDs(text).prefix(maxLength - 1) + [eosID]
        return ids + Array(repeating: padID, count: maxLength - ids.count)
    }

    func contentIDs(_ text: String) throws(SluiceError) -> [Int] {
        var ids: [Int] = []
        for segment in try added.segments(text, normalize: pipeline.normalize) {
            switch segment {
            case let .token(id): ids.append(id)
            case let .text(s, atStart):
                for piece in pipeline.preTokenize(s, atStart: atStart) { ids += model.encode(piece) }
            }
        }
        return ids
    }
}
