import SluiceBackends
import SluiceCore
import SluiceWeights

/// The adaLN pieces FLUX's blocks share. A block's `linear` maps SiLU(temb) to `count` rows of
/// [dim] (shift, scale, gate, …, in diffusers' chunk order); a modulated norm is LayerNorm without
/// affine, times (1 + scale), plus shift — which is LayerNorm with weight 1 + scale and bias shift,
/// one pass over the tokens.
struct FluxModulation {
    let rows: Tensor   // [count, dim]
    let dim: Int

    /// linear(SiLU(temb)) from `w` ("…\(linear).weight/bias": FLUX's norm1.linear, Qwen-Image's img_mod.1);
    /// `siluTemb` [1, dim] is computed once a call.
    init(_ siluTemb: Tensor, _ w: ModuleWeights, linear: String = "linear", count: Int, dim: Int, _ b: any Backend) throws(SluiceError) {
        rows = try b.linear(siluTemb, weight: w("\(linear).weight"), bias: w("\(linear).bias")).reshaped([count, dim])
        self.dim = dim
    }

    func chunk(_ i: Int) throws(SluiceError) -> Tensor { try rows.sliced(dim: 0, i..<(i + 1)).reshaped([dim]) }

    /// LayerNorm(x) · (1 + chunk(scale)) + chunk(shift).
    func norm(_ x: Tensor, shift: Int, scale: Int, _ b: any Backend) throws(SluiceError) -> Tensor {
        try b.layerNorm(x, weight: b.add(chunk(scale), Tensor([1], shape: [1])), bias: chunk(shift), eps: 1e-6)
    }

    /// x + chunk(gate) · y.
    func gated(_ x: Tensor, _ y: Tensor, gate: Int, _ b: any Backend) throws(SluiceError) -> Tensor {
        try b.add(x, b.mul(y, chunk(gate)))
    }
}

/// GELU (tanh) MLP: net.2(gelu(net.0.proj(x))), diffusers' FeedForward "gelu-approximate".
func fluxFeedForward(_ x: Tensor, _ w: ModuleWeights, _ b: any Backend) throws(SluiceError) -> Tensor {
    let h = try b.gelu(b.linear(x, weight: w("net.0.proj.weight"), bias: w("net.0.proj.bias")), approximateTanh: true)
    return try b.linear(h, weight: w("net.2.weight"), bias: w("net.2.bias"))
}

/// x [L, dim] → [L, H, D] by `name` (a biased linear), RMS-normed per head by `norm` when given.
func fluxHeads(_ x: Tensor, _ w: ModuleWeights, _ name: String, norm: String?, heads: Int, headDim: Int,
               _ b: any Backend) throws(SluiceError) -> Tensor {
    let t = try b.linear(x, weight: w("\(name).weight"), bias: w("\(name).bias")).reshaped([x.shape[0], heads, headDim])
    guard let norm else { return t }
    return try b.rmsNorm(t, weight: w("\(norm).weight"), eps: 1e-6)
}

/// Attention over q/k/v [L, H, D] with RoPE on q and k: [L, H·D].
func fluxAttention(q: Tensor, k: Tensor, v: Tensor, rope: (cos: Tensor, sin: Tensor), _ b: any Backend) throws(SluiceError) -> Tensor {
    let L = q.shape[0], H = q.shape[1], D = q.shape[2]
    func bhld(_ t: Tensor, rotate: Bool) throws(SluiceError) -> Tensor {
        let r = rotate ? try b.rotaryEmbedding(t, cos: rope.cos, sin: rope.sin, seqDim: 0, layout: .interleaved) : t
        return try r.reshaped([1, L, H, D]).permuted([0, 2, 1, 3])
    }
    let o = try b.attention(q: bhld(q, rotate: true), k: bhld(k, rotate: true), v: bhld(v, rotate: false), mask: nil, scale: nil)
    return try b.contiguous(o.permuted([0, 2, 1, 3])).reshaped([L, H * D])
}
