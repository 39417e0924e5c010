import Foundation
import SluiceBackends
import SluiceCore
import SluiceWeights

/// One layer of the Qwen decoders the text encoders are (Qwen3 for Z-Image, Qwen2.5-VL's language model
/// for Qwen-Image):
///
///     x = x + o_proj(Attention(RoPE(q), RoPE(k), v))      q, k, v = {q,k,v}_proj(input_layernorm(x))
///     x = x + down_proj(silu(gate_proj(n)) · up_proj(n))  n = post_attention_layernorm(x)
///
/// with causal grouped-query attention and RoPE in the rotate-half layout. Qwen2 biases q/k/v; Qwen3
/// has none there but RMS-normalises each head of q and k before RoPE.
struct QwenDecoderLayer {
    let heads: Int
    let keyValueHeads: Int
    let headDim: Int
    let eps: Float
    /// Qwen3's q_norm/k_norm.
    let normalisesQueryAndKey: Bool

    /// `rope`: cos/sin [L, headDim/2] for the tokens' positions.
    func callAsFunction(_ x: Tensor, rope: (cos: Tensor, sin: Tensor), _ w: ModuleWeights, _ b: any Backend) throws(SluiceError) -> Tensor {
        let L = x.shape[0], H = heads, KV = keyValueHeads, D = headDim
        let n = try b.rmsNorm(x, weight: w("input_layernorm.weight"), eps: eps)
        func project(_ name: String, heads: Int, rotate: Bool) throws(SluiceError) -> Tensor {
            let bias = normalisesQueryAndKey ? nil : try w("self_attn.\(name).bias")
            var t = try b.linear(n, weight: w("self_attn.\(name).weight"), bias: bias).reshaped([L, heads, D])
            if rotate {
                if normalisesQueryAndKey {
                    t = try b.rmsNorm(t, weight: w("self_attn.\(name.prefix(1))_norm.weight"), eps: eps)
                }
                t = try b.rotaryEmbedding(t, cos: rope.cos, sin: rope.sin, seqDim: 0, layout: .halves)
            }
            return t
        }
        let q = try project("q_proj", heads: H, rotate: true)
        let k = try Self.repeatHeads(project("k_proj", heads: KV, rotate: true), times: H / KV, b)
        let v = try Self.repeatHeads(project("v_proj", heads: KV, rotate: false), times: H / KV, b)
        func bhld(_ t: Tensor) throws(SluiceError) -> Tensor { try t.reshaped([1, L, H, D]).permuted([0, 2, 1, 3]) }
        let o = try b.attention(q: bhld(q), k: bhld(k), v: bhld(v), mask: Self.causalMask(L), scale: nil)
        let merged = try b.contiguous(o.permuted([0, 2, 1, 3])).reshaped([L, H * D])
        let x1 = try b.add(x, b.linear(merged, weight: w("self_attn.o_proj.weight"), bias: nil))

        let m = try b.rmsNorm(x1, weight: w("post_attention_layernorm.weight"), eps: eps)
        let gate = try b.linear(m, weight: w("mlp.gate_proj.weight"), bias: nil)
        let up = try b.linear(m, weight: w("mlp.up_proj.weight"), bias: nil)
        return try b.add(x1, b.linear(b.siluGated(gate, up), weight: w("mlp.down_proj.weight"), bias: nil))
    }

    /// Peak activation bytes of a layer over `tokens` tokens (f32): the residual stream, the norm's
    /// output, q/k/v and the attention output (6 × hidden), the MLP's gate, up and product
    /// (3 × intermediate), and two heads × head_dim wide copies while heads are repeated.
    static func activationBytes(hidden: Int, intermediate: Int, heads: Int, headDim: Int, tokens: Int) -> Int {
        4 * tokens * (6 * hidden + 3 * intermediate + 2 * heads * headDim)
    }

    /// cos/sin [L, headDim/2] with inv_freq = θ^(−2i/d) and angle = position · inv_freq in f32, where
    /// frequency i takes its position from `positions[stream(i)]` (one stream for plain RoPE; Qwen2.5-VL's
    /// multimodal RoPE gives sections of the frequencies to its temporal, height and width streams).
    static func ropeTables(positions: [[Int]], headDim d: Int, theta: Double, stream: (Int) -> Int = { _ in 0 }) -> (cos: Tensor, sin: Tensor) {
        let half = d / 2, count = positions[0].count
        let inv = (0..<half).map { Float(1.0 / pow(theta, Double(Float(2 * $0)) / Double(d))) }
        var c = [Float](repeating: 0, count: count * half), s = c
        for p in 0..<count {
            for i in 0..<half {
                let angle = Float(positions[stream(i)][p]) * inv[i]
                c[p * half + i] = Foundation.cos(angle)
                s[p * half + i] = Foundation.sin(angle)
            }
        }
        return (Tensor(c, shape: [count, half]), Tensor(s, shape: [count, half]))
    }

    /// [L, KV, D] → [L, KV·times, D]: key/value head j serves query heads j·times ..< (j+1)·times — a
    /// view repeating each head (stride 0) made contiguous on the backend.
    static func repeatHeads(_ t: Tensor, times: Int, _ b: any Backend) throws(SluiceError) -> Tensor {
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
