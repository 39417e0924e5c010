import Foundation
import SluiceBackends
import SluiceCore
import SluiceWeights

/// text_encoder/config.json of a Qwen3 model.
public struct Qwen3Config: Sendable, Decodable {
    public var hiddenSize: Int
    public var intermediateSize: Int
    public var numHiddenLayers: Int
    public var numAttentionHeads: Int
    public var numKeyValueHeads: Int
    public var headDim: Int
    public var vocabSize: Int
    public var rmsNormEps: Float
    public var ropeTheta: Double

    enum CodingKeys: String, CodingKey {
        case hiddenSize = "hidden_size", intermediateSize = "intermediate_size", numHiddenLayers = "num_hidden_layers"
        case numAttentionHeads = "num_attention_heads", numKeyValueHeads = "num_key_value_heads", headDim = "head_dim"
        case vocabSize = "vocab_size", rmsNormEps = "rms_norm_eps", ropeTheta = "rope_theta", ropeParameters = "rope_parameters"
        case ropeScaling = "rope_scaling"
    }

    struct RopeParameters: Decodable {
        var ropeTheta: Double?
        var ropeType: String?
        enum CodingKeys: String, CodingKey { case ropeTheta = "rope_theta", ropeType = "rope_type" }
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        hiddenSize = try c.decode(Int.self, forKey: .hiddenSize)
        intermediateSize = try c.decode(Int.self, forKey: .intermediateSize)
        numHiddenLayers = try c.decode(Int.self, forKey: .numHiddenLayers)
        numAttentionHeads = try c.decode(Int.self, forKey: .numAttentionHeads)
        numKeyValueHeads = try c.decodeIfPresent(Int.self, forKey: .numKeyValueHeads) ?? numAttentionHeads
        headDim = try c.decodeIfPresent(Int.self, forKey: .headDim) ?? hiddenSize / numAttentionHeads
        vocabSize = try c.decode(Int.self, forKey: .vocabSize)
        rmsNormEps = try c.decodeIfPresent(Float.self, forKey: .rmsNormEps) ?? 1e-6
        // transformers 4 writes rope_theta at the top level; 5 nests it in rope_parameters.
        let nested = try c.decodeIfPresent(RopeParameters.self, forKey: .ropeParameters)
        ropeTheta = try c.decodeIfPresent(Double.self, forKey: .ropeTheta) ?? nested?.ropeTheta ?? 1_000_000
        if let type = nested?.ropeType, type != "default" {
            throw SluiceError.invalidArgument(name: "text_encoder/config.json: rope_type", reason: "'\(type)' is not supported")
        }
        guard numAttentionHeads % numKeyValueHeads == 0 else {
            throw SluiceError.invalidArgument(name: "text_encoder/config.json", reason: "num_attention_heads must be a multiple of num_key_value_heads")
        }
    }
}

/// The Qwen3 decoder used as a text encoder (Z-Image: Qwen3-4B): `QwenDecoderLayer`s with q_norm and
/// k_norm, RoPE over positions 0..<L. Z-Image takes
/// `hidden_states[-2]`: the output of the second-to-last layer, so the last layer and the final norm
/// never run. Only the prompt's real tokens are computed: they are at the front and attention is
/// causal, so the padding diffusers appends cannot change them.
public struct Qwen3Encoder: Sendable {
    public let config: Qwen3Config
    public init(config: Qwen3Config) { self.config = config }

    /// Layers that `hidden_states[-skipFromEnd]` needs: hidden_states[0] is the embedding output.
    public func layerCount(hiddenStateFromEnd k: Int) -> Int { config.numHiddenLayers + 1 - k }

    public var groupNames: [String] { ["embed_tokens"] + (0..<layerCount(hiddenStateFromEnd: 2)).map { "layers.\($0)" } }

    public func group(of key: String) -> String? {
        if key.hasPrefix("embed_tokens.") { return "embed_tokens" }
        if let i = ModulePath.blockIndex(key, in: "layers") { return i < layerCount(hiddenStateFromEnd: 2) ? "layers.\(i)" : nil }
        return nil   // final norm, last layer: not needed
    }

    public struct State: @unchecked Sendable {
        public var ids: [Int]
        public var hidden: Tensor?
        var rope: (cos: Tensor, sin: Tensor)?
        public init(ids: [Int]) { self.ids = ids }
    }

    /// Peak activation bytes of encoding `tokens` tokens (f32): one layer's (`QwenDecoderLayer`).
    public static func activationBytes(config c: Qwen3Config, tokens: Int) -> Int {
        QwenDecoderLayer.activationBytes(hidden: c.hiddenSize, intermediate: c.intermediateSize, heads: c.numAttentionHeads, headDim: c.headDim, tokens: tokens)
    }

    public func run(group index: Int, _ w: ModuleWeights, _ s: State, _ b: any Backend) throws(SluiceError) -> State {
        var s = s
        if index == 0 {
            s.hidden = try w.embedding("embed_tokens.weight", ids: s.ids, shape: [config.vocabSize, config.hiddenSize])
            s.rope = QwenDecoderLayer.ropeTables(positions: [Array(0..<s.ids.count)], headDim: config.headDim, theta: config.ropeTheta)
        } else {
            s.hidden = try layer(s.hidden!, rope: s.rope!, w.scoped("layers.\(index - 1)"), b)
        }
        return s
    }

    /// hidden_states[-2] for `ids`: [ids.count, hidden].
    public func encode(ids: [Int], _ w: ModuleWeights, _ b: any Backend) throws(SluiceError) -> Tensor {
        var s = State(ids: ids)
        for i in groupNames.indices { s = try run(group: i, w, s, b) }
        return s.hidden!
    }

    var layer: QwenDecoderLayer {
        QwenDecoderLayer(heads: config.numAttentionHeads, keyValueHeads: config.numKeyValueHeads, headDim: config.headDim,
                         eps: config.rmsNormEps, normalisesQueryAndKey: true)
    }
}
