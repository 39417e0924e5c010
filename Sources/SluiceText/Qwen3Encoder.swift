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

/// The Qwen3 decoder used as a text encoder (Z-Image: Qwen3-4B). Each layer:
///
///     x = x + o_proj(Attention(RoPE(q_norm(q_proj(n))), RoPE(k_norm(k_proj(n))), v_proj(n)))   n = input_layernorm(x)
///     x = x + down_proj(silu(gate_proj(n)) · up_proj(n))                                       n = post_attention_layernorm(x)
///
/// with causal grouped-query attention and RoPE in the rotate-half layout. Z-Image takes
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
        if key.hasPrefix("layers.") {
            let rest = key.dropFirst("layers.".count)
            if let dot = rest.firstIndex(of: "."), let i = Int(rest[..<dot]) {
                return i < layerCount(hiddenStateFromEnd: 2) ? "layers.\(i)" : nil
            }
        }
        return nil   // final norm, last layer: not needed
    }

    public struct State: @unchecked Sendable {
        public var ids: [Int]
        public var hidden: Tensor?
        var rope: (cos: Tensor, sin: Tensor)?
        public init(ids: [Int]) { self.ids = ids }
    }

    /// Peak activation bytes of encoding `tokens` tokens (f32): the residual stream, the norm's output,
    /// q/k/v and the attention output (6 × hidden), the MLP's gate, up and product (3 × intermediate),
    /// and two heads × head_dim wide copies while heads are repeated for grouped-query attention.
    public static func activationBytes(config c: Qwen3Config, tokens: Int) -> Int {
        4 * tokens * (6 * c.hiddenSize + 3 * c.intermediateSize + 2 * c.numAttentionHeads * c.headDim)
    }

    public func run(group index: Int, _ w: ModuleWeights, _ s: State, _ b: any Backend) throws(SluiceError) -> State {
        var s = s
        if index == 0 {
            s.hidden = try HostMath.embed(w("embed_tokens.weight"), ids: s.ids, name: "embed_tokens", expectedShape: [config.vocabSize, config.hiddenSize])
            s.rope = ropeTables(count: s.ids.count)
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

    /// cos/sin [L, headDim/2] for positions 0..<L: inv_freq = θ^(−2i/d) in f32, angle = pos·inv_freq in f32.
    func ropeTables(count: Int) -> (cos: Tensor, sin: Tensor) {
        let d = config.headDim, half = d / 2
        let inv = (0..<half).map { Float(1.0 / pow(config.ropeTheta, Double(Float(2 * $0)) / Double(d))) }
        var c = [Float](repeating: 0, count: count * half), s = c
        for p in 0..<count {
            for i in 0..<half {
                let angle = Float(p) * inv[i]
                c[p * half + i] = Foundation.cos(angle)
                s[p * half + i] = Foundation.sin(angle)
            }
        }
        return (Tensor(c, shape: [count, half]), Tensor(s, shape: [count, half]))
    }

    func layer(_ x: Tensor, rope: (cos: Tensor, sin: Tensor), _ w: ModuleWeights, _ b: any Backend) throws(SluiceError) -> Tensor {
        let L = x.shape[0], H = config.numAttentionHeads, KV = config.numKeyValueHeads, D = config.headDim
        let eps = config.rmsNormEps
        let n = try b.rmsNorm(x, weight: w("input_layernorm.weight"), eps: eps)
        func project(_ name: String, heads: Int, norm: String?) throws(SluiceError) -> Tensor {
            var t = try b.linear(n, weight: w("self_attn.\(name).weight"), bias: nil).reshaped([L, heads, D])
            if let norm {
                t = try b.rmsNorm(t, weight: w("self_attn.\(norm).weight"), eps: eps)
                t = try b.rotaryEmbedding(t, cos: rope.cos, sin: rope.sin, seqDim: 0, layout: .halves)
            }
            return t
        }
        let q = try project("q_proj", heads: H, norm: "q_norm")
        let k = try repeatHeads(project("k_proj", heads: KV, norm: "k_norm"), times: H / KV, b)
        let v = try repeatHeads(project("v_proj", heads: KV, norm: nil), times: H / KV, b)
        func bhld(_ t: Tensor) throws(SluiceError) -> Tensor { try t.reshaped([1, L, H, D]).permuted([0, 2, 1, 3]) }
        let o = try b.attention(q: bhld(q), k: bhld(k), v: bhld(v), mask: Self.causalMask(L), scale: nil)
        let merged = try b.contiguous(o.permuted([0, 2, 1, 3])).reshaped([L, H * D])
        let x1 = try b.add(x, b.linear(merged, weight: w("self_attn.o_proj.weight"), bias: nil))

        let m = try b.rmsNorm(x1, weight: w("post_attention_layernorm.weight"), eps: eps)
        let gate = try b.linear(m, weight: w("mlp.gate_proj.weight"), bias: nil)
        let up = try b.linear(m, weight: w("mlp.up_proj.weight"), bias: nil)
        return try b.add(x1, b.linear(b.siluGated(gate, up), weight: w("mlp.down_proj.weight"), bias: nil))
    }

    /// [L, KV, D] → [L, KV·times, D]: key/value head j serves query heads j·times ..< (j+1)·times — a
    /// view repeating each head (stride 0) made contiguous on the backend.
    func repeatHeads(_ t: Tensor, times: Int, _ b: any Backend) throws(SluiceError) -> Tensor {
        if times == 1 { return t }
        let L = t.shape[0], KV = t.shape[1], D = t.shape[2]
        let src = try b.contiguous(t)
        let repeated = Tensor(storage: src.storage, dtype: src.dtype, shape: [L, KV, times, D], strides: [KV * D, D, 0, 1], offset: src.offset)
        return try b.contiguous(repeated).reshaped([L, KV * times, D])
    }

    static func causalMask(_ L: Int) -> Tensor {
        var m = [UInt8](repeating: 0, count: L * L)
        for i in 0..<L { for j in 0...i { m[i * L + j] = 1 } }
        return Tensor(bytes: m, dtype: .bool, shape: [L, L])
    }
}
