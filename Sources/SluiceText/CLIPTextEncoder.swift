import Foundation
import SluiceBackends
import SluiceCore
import SluiceWeights

/// text_encoder/config.json of a CLIP text model (transformers' CLIPTextConfig).
public struct CLIPTextConfig: Sendable, Decodable {
    public var hiddenSize: Int
    public var intermediateSize: Int
    public var numHiddenLayers: Int
    public var numAttentionHeads: Int
    public var maxPositionEmbeddings: Int
    public var hiddenAct: FeedForwardActivation
    public var layerNormEps: Float
    public var vocabSize: Int
    /// 2 in configs written before transformers#24773 (FLUX.1's and Stable Diffusion's): the pooled
    /// output is then taken at the largest id, which is the end-of-text token in CLIP's vocabulary.
    public var eosTokenId: Int

    public var headDim: Int { hiddenSize / numAttentionHeads }

    enum CodingKeys: String, CodingKey {
        case hiddenSize = "hidden_size", intermediateSize = "intermediate_size", numHiddenLayers = "num_hidden_layers"
        case numAttentionHeads = "num_attention_heads", maxPositionEmbeddings = "max_position_embeddings"
        case hiddenAct = "hidden_act", layerNormEps = "layer_norm_eps", vocabSize = "vocab_size", eosTokenId = "eos_token_id"
    }

    /// Absent fields take transformers' CLIPTextConfig defaults.
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        hiddenSize = try c.decode(Int.self, forKey: .hiddenSize)
        intermediateSize = try c.decode(Int.self, forKey: .intermediateSize)
        numHiddenLayers = try c.decode(Int.self, forKey: .numHiddenLayers)
        numAttentionHeads = try c.decode(Int.self, forKey: .numAttentionHeads)
        maxPositionEmbeddings = try c.decodeIfPresent(Int.self, forKey: .maxPositionEmbeddings) ?? 77
        let act = try c.decodeIfPresent(String.self, forKey: .hiddenAct) ?? "quick_gelu"
        guard let activation = FeedForwardActivation(transformersName: act) else {
            throw SluiceError.invalidArgument(name: "text_encoder/config.json: hidden_act", reason: "'\(act)' is not supported")
        }
        hiddenAct = activation
        layerNormEps = try c.decodeIfPresent(Float.self, forKey: .layerNormEps) ?? 1e-5
        vocabSize = try c.decodeIfPresent(Int.self, forKey: .vocabSize) ?? 49408
        eosTokenId = try c.decodeIfPresent(Int.self, forKey: .eosTokenId) ?? 49407
        guard hiddenSize > 0, numAttentionHeads > 0, hiddenSize % numAttentionHeads == 0 else {
            throw SluiceError.invalidArgument(name: "text_encoder/config.json", reason: "hidden_size must be a multiple of num_attention_heads")
        }
    }
}

/// transformers' CLIPTextModel (modeling_clip.py: CLIPTextModel.forward, CLIPEncoderLayer): FLUX.1's and
/// Stable Diffusion's text_encoder (CLIP-L). Token plus position embeddings, then pre-norm layers
///
///     x = x + out_proj(Attention(q_proj(n), k_proj(n), v_proj(n)))   n = layer_norm1(x)   causal, scale 1/√head_dim
///     x = x + fc2(act(fc1(n)))                                        n = layer_norm2(x)   act: quick_gelu for CLIP-L
///
/// and last_hidden_state = final_layer_norm(x). The pooled output is last_hidden_state's row at the
/// end-of-text token (FLUX.1 uses only that).
public struct CLIPTextEncoder: Sendable {
    public let config: CLIPTextConfig
    /// 0: `State.hidden` is last_hidden_state. k > 0: it is hidden_states[-(k + 1)], the output of layer
    /// N − k before any final norm (SDXL reads k = 1).
    public let skipLastLayers: Int
    /// Whether `State.pooled` is computed: it needs every layer and the final norm, even when `hidden`
    /// is an earlier layer's (SDXL's second encoder wants both).
    public let pooling: Bool
    /// CLIPTextModelWithProjection (SDXL's text_encoder_2): the pooled row goes through
    /// `text_projection` (a linear without bias) — SDXL's `text_embeds`.
    public let projectsPooled: Bool

    public init(config: CLIPTextConfig) {
        self.config = config
        skipLastLayers = 0
        pooling = true
        projectsPooled = false
    }

    public init(config: CLIPTextConfig, skipLastLayers: Int, pooling: Bool = true, projectsPooled: Bool = false) throws(SluiceError) {
        guard skipLastLayers >= 0 && skipLastLayers < config.numHiddenLayers else {
            throw .invalidArgument(name: "skipLastLayers", reason: "\(skipLastLayers) is outside 0..<\(config.numHiddenLayers) (the encoder's layers)")
        }
        self.config = config
        self.skipLastLayers = skipLastLayers
        self.pooling = pooling
        self.projectsPooled = projectsPooled && pooling
    }

    var runsFinalNorm: Bool { skipLastLayers == 0 || pooling }
    var layersRun: Int { runsFinalNorm ? config.numHiddenLayers : config.numHiddenLayers - skipLastLayers }

    public var groupNames: [String] {
        ["embeddings"] + (0..<layersRun).map { "layers.\($0)" } + (runsFinalNorm ? ["final"] : [])
    }

    /// Keys as CLIPTextModel's modules name them; checkpoints saved by transformers 4 (FLUX.1's) put
    /// them under "text_model.", which ComponentRunner finds and strips.
    public func group(of key: String) -> String? {
        if key.hasPrefix("embeddings.") { return key == "embeddings.position_ids" ? nil : "embeddings" }   // a buffer old checkpoints kept
        if let i = ModulePath.blockIndex(key, in: "encoder.layers") { return i < layersRun ? "layers.\(i)" : nil }
        if key.hasPrefix("final_layer_norm.") { return runsFinalNorm ? "final" : nil }
        if key.hasPrefix("text_projection.") { return projectsPooled ? "final" : nil }   // CLIPTextModelWithProjection's
        return nil
    }

    public struct State: @unchecked Sendable {
        public var ids: [Int]
        /// [L, hidden] f32: last_hidden_state, or hidden_states[-(skipLastLayers + 1)].
        public var hidden: Tensor?
        /// [1, hidden] f32: last_hidden_state's row at the end-of-text token (when `pooling`).
        public var pooled: Tensor?
        /// The residual stream between groups.
        var x: Tensor?
        var mask: Tensor?
        public init(ids: [Int]) { self.ids = ids }
    }

    /// Peak activation bytes of encoding `tokens` tokens (f32), bounded by all that one layer makes
    /// living until it returns: its input, the two norms, q/k/v, the attention output and its merged
    /// heads, the two projections, the two residual sums, a kept hidden state (13 × hidden); fc1's
    /// output and the activation's tensors (intermediate wide); the bool causal mask.
    public static func activationBytes(config c: CLIPTextConfig, tokens: Int) -> Int {
        4 * tokens * (13 * c.hiddenSize + (1 + c.hiddenAct.tensorsMade) * c.intermediateSize) + tokens * tokens
    }

    public func run(group index: Int, _ w: ModuleWeights, _ s: State, _ b: any Backend) throws(SluiceError) -> State {
        var s = s
        if index == 0 {
            s.x = try embeddings(s.ids, w.scoped("embeddings"), b)
            s.mask = QwenDecoderLayer.causalMask(s.ids.count)
        } else if index <= layersRun {
            s.x = try layer(s.x!, mask: s.mask!, w.scoped("encoder.layers.\(index - 1)"), b)
            if skipLastLayers > 0 && index == config.numHiddenLayers - skipLastLayers { s.hidden = s.x }
        } else {
            let D = config.hiddenSize
            let last = try b.layerNorm(s.x!, weight: w("final_layer_norm.weight", shape: [D]), bias: w("final_layer_norm.bias", shape: [D]),
                                       eps: config.layerNormEps)
            if skipLastLayers == 0 { s.hidden = last }
            if pooling {
                let p = poolingPosition(ids: s.ids)
                s.pooled = try b.contiguous(last.sliced(dim: 0, p..<(p + 1)))
                if projectsPooled { s.pooled = try b.linear(s.pooled!, weight: w("text_projection.weight"), bias: nil) }
            }
            s.x = nil
            s.mask = nil
        }
        return s
    }

    /// `hidden` ([ids.count, hidden]) and `pooled` ([1, hidden], nil unless `pooling`) for `ids`.
    public func encode(ids: [Int], _ w: ModuleWeights, _ b: any Backend) throws(SluiceError) -> (hidden: Tensor, pooled: Tensor?) {
        var s = State(ids: ids)
        for i in groupNames.indices { s = try run(group: i, w, s, b) }
        return (s.hidden!, s.pooled)
    }

    /// Where CLIPTextModel pools: the first largest id when eos_token_id is 2 (legacy configs), else the
    /// first eos_token_id (position 0 when there is none, as transformers' argmax over all-false gives).
    public func poolingPosition(ids: [Int]) -> Int {
        var best = 0
        if config.eosTokenId == 2 {
            for i in ids.indices where ids[i] > ids[best] { best = i }
        } else if let first = ids.firstIndex(of: config.eosTokenId) {
            best = first
        }
        return best
    }

    /// CLIPTextEmbeddings: token rows plus the rows of positions 0..<L.
    func embeddings(_ ids: [Int], _ w: ModuleWeights, _ b: any Backend) throws(SluiceError) -> Tensor {
        let L = ids.count, D = config.hiddenSize, P = config.maxPositionEmbeddings
        guard L > 0 && L <= P else {
            throw .invalidArgument(name: "token ids", reason: "\(L) tokens: this CLIP text encoder takes 1 to \(P) (max_position_embeddings)")
        }
        let tokens = try HostMath.embed(w("token_embedding.weight"), ids: ids, name: "embeddings.token_embedding",
                                        expectedShape: [config.vocabSize, D])
        return try b.add(tokens, w("position_embedding.weight", shape: [P, D]).sliced(dim: 0, 0..<L))
    }

    func layer(_ x: Tensor, mask: Tensor, _ w: ModuleWeights, _ b: any Backend) throws(SluiceError) -> Tensor {
        let L = x.shape[0], D = config.hiddenSize, I = config.intermediateSize, H = config.numAttentionHeads, hd = config.headDim
        func norm(_ name: String, _ t: Tensor) throws(SluiceError) -> Tensor {
            try b.layerNorm(t, weight: w("\(name).weight", shape: [D]), bias: w("\(name).bias", shape: [D]), eps: config.layerNormEps)
        }
        func linear(_ name: String, _ t: Tensor, out: Int, in: Int) throws(SluiceError) -> Tensor {
            try b.linear(t, weight: w("\(name).weight", shape: [out, `in`]), bias: w("\(name).bias", shape: [out]))
        }
        let n = try norm("layer_norm1", x)
        func heads(_ name: String) throws(SluiceError) -> Tensor {
            try linear("self_attn.\(name)", n, out: D, in: D).reshaped([1, L, H, hd]).permuted([0, 2, 1, 3])
        }
        // transformers' head_dim**-0.5, a double rounded to f32.
        let o = try b.attention(q: heads("q_proj"), k: heads("k_proj"), v: heads("v_proj"), mask: mask, scale: Float(pow(Double(hd), -0.5)))
        let merged = try b.contiguous(o.permuted([0, 2, 1, 3])).reshaped([L, D])
        let x1 = try b.add(x, linear("self_attn.out_proj", merged, out: D, in: D))
        let m = try norm("layer_norm2", x1)
        return try b.add(x1, linear("mlp.fc2", config.hiddenAct(linear("mlp.fc1", m, out: I, in: D), b), out: D, in: I))
    }
}
