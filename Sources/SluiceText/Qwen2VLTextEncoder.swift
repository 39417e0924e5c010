import Foundation
import SluiceBackends
import SluiceCore
import SluiceWeights

/// The language model's part of a Qwen2.5-VL text_encoder/config.json. Qwen-Image ships it flat
/// (transformers 4: `hidden_size` at the top, `rope_scaling: {type: mrope, mrope_section}`); transformers 5
/// nests it in `text_config` with `rope_parameters`. Both are read.
public struct Qwen2VLTextConfig: Sendable, Decodable {
    public var hiddenSize: Int
    public var intermediateSize: Int
    public var numHiddenLayers: Int
    public var numAttentionHeads: Int
    public var numKeyValueHeads: Int
    public var vocabSize: Int
    public var rmsNormEps: Float
    public var ropeTheta: Double
    /// Multimodal RoPE: how many of the head_dim/2 frequencies follow the temporal, height and width
    /// position streams, in turn.
    public var mropeSection: [Int]
    public var headDim: Int { hiddenSize / numAttentionHeads }

    enum Keys: String, CodingKey {
        case textConfig = "text_config"
        case hiddenSize = "hidden_size", intermediateSize = "intermediate_size", numHiddenLayers = "num_hidden_layers"
        case numAttentionHeads = "num_attention_heads", numKeyValueHeads = "num_key_value_heads"
        case vocabSize = "vocab_size", rmsNormEps = "rms_norm_eps", ropeTheta = "rope_theta"
        case ropeScaling = "rope_scaling", ropeParameters = "rope_parameters"
    }

    struct Rope: Decodable {
        var type: String?
        var ropeType: String?
        var mropeSection: [Int]?
        var ropeTheta: Double?
        enum CodingKeys: String, CodingKey { case type, ropeType = "rope_type", mropeSection = "mrope_section", ropeTheta = "rope_theta" }
    }

    public init(from decoder: Decoder) throws {
        let top = try decoder.container(keyedBy: Keys.self)
        let c = top.contains(.textConfig) ? try top.nestedContainer(keyedBy: Keys.self, forKey: .textConfig) : top
        func field<T: Decodable>(_ key: Keys, _ type: T.Type) throws -> T {
            guard let v = try c.decodeIfPresent(type, forKey: key) ?? top.decodeIfPresent(type, forKey: key) else {
                throw SluiceError.invalidArgument(name: "text_encoder/config.json: \(key.rawValue)", reason: "missing")
            }
            return v
        }
        hiddenSize = try field(.hiddenSize, Int.self)
        intermediateSize = try field(.intermediateSize, Int.self)
        numHiddenLayers = try field(.numHiddenLayers, Int.self)
        numAttentionHeads = try field(.numAttentionHeads, Int.self)
        numKeyValueHeads = try c.decodeIfPresent(Int.self, forKey: .numKeyValueHeads) ?? numAttentionHeads
        vocabSize = try field(.vocabSize, Int.self)
        rmsNormEps = try c.decodeIfPresent(Float.self, forKey: .rmsNormEps) ?? 1e-6
        let rope = try c.decodeIfPresent(Rope.self, forKey: .ropeParameters) ?? c.decodeIfPresent(Rope.self, forKey: .ropeScaling)
        ropeTheta = try c.decodeIfPresent(Double.self, forKey: .ropeTheta) ?? rope?.ropeTheta ?? 1_000_000
        if let kind = rope?.ropeType ?? rope?.type, !["default", "mrope"].contains(kind) {
            throw SluiceError.invalidArgument(name: "text_encoder/config.json: rope type", reason: "'\(kind)' is not supported (default or mrope)")
        }
        mropeSection = rope?.mropeSection ?? [16, 24, 24]
        guard numAttentionHeads > 0, hiddenSize % numAttentionHeads == 0, numKeyValueHeads > 0, numAttentionHeads % numKeyValueHeads == 0 else {
            throw SluiceError.invalidArgument(name: "text_encoder/config.json: num_attention_heads",
                                              reason: "\(numAttentionHeads) must divide hidden_size \(hiddenSize) and be a multiple of num_key_value_heads \(numKeyValueHeads)")
        }
        guard mropeSection.count == 3, mropeSection.allSatisfy({ $0 >= 0 }), mropeSection.reduce(0, +) == hiddenSize / numAttentionHeads / 2 else {
            throw SluiceError.invalidArgument(name: "text_encoder/config.json: mrope_section",
                                              reason: "\(mropeSection) must be three counts summing to head_dim / 2 = \(hiddenSize / numAttentionHeads / 2)")
        }
    }
}

/// Qwen2.5-VL's language model as Qwen-Image's text encoder: `QwenDecoderLayer`s with biased q/k/v,
/// multimodal RoPE, then the final RMSNorm — QwenImagePipeline takes `hidden_states[-1]`, which
/// transformers gives after that norm. The vision tower and lm_head are never loaded.
///
/// Positions: for text alone Qwen2.5-VL's three position streams (temporal, height, width) are all
/// 0..<L; the RoPE tables are still built section by section from the three streams, as the model does.
public struct Qwen2VLTextEncoder: Sendable {
    public let config: Qwen2VLTextConfig
    public init(config: Qwen2VLTextConfig) { self.config = config }

    public var groupNames: [String] { ["model.embed_tokens"] + (0..<config.numHiddenLayers).map { "model.layers.\($0)" } }

    /// The group a checkpoint key belongs to; the final norm runs with the last layer. Keys of the vision
    /// tower and the language-model head belong to none.
    public func group(of key: String) -> String? {
        if key.hasPrefix("model.embed_tokens.") { return "model.embed_tokens" }
        if key.hasPrefix("model.norm.") { return "model.layers.\(config.numHiddenLayers - 1)" }
        if let i = ModulePath.blockIndex(key, in: "model.layers"), i < config.numHiddenLayers { return "model.layers.\(i)" }
        return nil
    }

    public struct State: @unchecked Sendable {
        public var ids: [Int]
        public var hidden: Tensor?
        var rope: (cos: Tensor, sin: Tensor)?
        public init(ids: [Int]) { self.ids = ids }
    }

    public static func activationBytes(config c: Qwen2VLTextConfig, tokens: Int) -> Int {
        QwenDecoderLayer.activationBytes(hidden: c.hiddenSize, intermediate: c.intermediateSize, heads: c.numAttentionHeads, headDim: c.headDim, tokens: tokens)
    }

    var layer: QwenDecoderLayer {
        QwenDecoderLayer(heads: config.numAttentionHeads, keyValueHeads: config.numKeyValueHeads, headDim: config.headDim,
                         eps: config.rmsNormEps, normalisesQueryAndKey: false)
    }

    /// Which position stream frequency i follows: the first mrope_section[0] the temporal one, the next
    /// mrope_section[1] the height one, the rest the width one.
    func positionStream(ofFrequency i: Int) -> Int {
        var end = 0
        for (s, n) in config.mropeSection.enumerated() {
            end += n
            if i < end { return s }
        }
        return config.mropeSection.count - 1
    }

    public func run(group index: Int, _ w: ModuleWeights, _ s: State, _ b: any Backend) throws(SluiceError) -> State {
        var s = s
        if index == 0 {
            s.hidden = try w.embedding("model.embed_tokens.weight", ids: s.ids, shape: [config.vocabSize, config.hiddenSize])
            let text = Array(0..<s.ids.count)
            s.rope = QwenDecoderLayer.ropeTables(positions: [text, text, text], headDim: config.headDim, theta: config.ropeTheta,
                                                 stream: positionStream(ofFrequency:))
        } else {
            s.hidden = try layer(s.hidden!, rope: s.rope!, w.scoped("model.layers.\(index - 1)"), b)
            if index == config.numHiddenLayers {
                s.hidden = try b.rmsNorm(s.hidden!, weight: w("model.norm.weight"), eps: config.rmsNormEps)
            }
        }
        return s
    }

    /// The last hidden state (after the final norm) for `ids`: [ids.count, hidden].
    public func encode(ids: [Int], _ w: ModuleWeights, _ b: any Backend) throws(SluiceError) -> Tensor {
        var s = State(ids: ids)
        for i in groupNames.indices { s = try run(group: i, w, s, b) }
        return s.hidden!
    }
}

/// How QwenImagePipeline wraps a prompt for its text encoder: a system turn asking for a description,
/// the prompt as the user turn, the assistant's turn opened. The template's first 34 tokens (through
/// "<|im_start|>user\n") are dropped from the embeddings (`prompt_template_encode_start_idx`); prompts
/// are cut at 1,024 tokens after them (`tokenizer_max_length`).
public enum QwenImagePrompt {
    public static let prefix = "<|im_start|>system\nDescribe the image by detailing the color, shape, size, texture, quantity, text, spatial relationships of the objects and background:<|im_end|>\n<|im_start|>user\n"
    public static let suffix = "<|im_end|>\n<|im_start|>assistant\n"
    public static let droppedTokens = 34
    public static let maxTokens = 1024

    /// The ids the text encoder sees (the whole template, truncated as the pipeline's tokenizer call does).
    public static func ids(_ prompt: String, tokenizer: QwenTokenizer) throws(SluiceError) -> [Int] {
        try tokenizer.checkChatML()
        return Array(try tokenizer.encode(prefix + prompt + suffix).prefix(maxTokens + droppedTokens))
    }

    /// The rows of the encoder's output that are the prompt's embeddings: all but the template's prefix.
    public static func embeddings(_ hidden: Tensor) throws(SluiceError) -> Tensor {
        let L = hidden.shape[0]
        guard L > droppedTokens else {
            throw SluiceError.invalidArgument(name: "prompt", reason: "the encoded template has \(L) tokens, not more than the \(droppedTokens) dropped")
        }
        return try hidden.sliced(dim: 0, droppedTokens..<L)
    }
}
