import SluiceBackends
import SluiceCore
import SluiceWeights

/// diffusers' Transformer2DModel over continuous input (transformer_2d.py), as the UNet's cross-attention
/// blocks build it, and its BasicTransformerBlocks (attention.py):
///
///     x [1, C, H, W] ─ GroupNorm (eps 1e-6) ─ proj_in ─→ tokens [H·W, C]      (1×1 conv before the
///                                                                              reshape, or a linear after)
///     per transformer_blocks.k:
///         t += attn1(norm1(t))                  self-attention over the H·W positions
///         t += attn2(norm2(t), context)         cross-attention to the text tokens
///         t += ff(norm3(t))                     GEGLU: net.0.proj → (hidden, gate) → hidden·GELU(gate) → net.2
///     tokens ─ proj_out ─→ [1, C, H, W]  + x
struct UNetTransformer {
    let heads: Int
    let layers: Int
    let groups: Int
    let linearProjection: Bool

    /// x [1, C, H, W], context [Lc, cross_attention_dim].
    func forward(_ x: Tensor, context: Tensor, _ w: ModuleWeights, _ b: any Backend) throws(SluiceError) -> Tensor {
        let C = x.shape[1], H = x.shape[2], W = x.shape[3], L = H * W
        let n = try b.groupNorm(x, groups: groups, weight: w("norm.weight"), bias: w("norm.bias"), eps: 1e-6)
        func tokens(_ t: Tensor) throws(SluiceError) -> Tensor {
            try b.contiguous(t.reshaped([t.shape[1], L]).permuted([1, 0]))
        }
        func image(_ t: Tensor) throws(SluiceError) -> Tensor {
            try b.contiguous(t.permuted([1, 0])).reshaped([1, t.shape[1], H, W])
        }
        var t: Tensor
        if linearProjection {
            t = try b.linear(tokens(n), weight: w("proj_in.weight"), bias: w("proj_in.bias"))
        } else {
            t = try tokens(unetConv(n, w.scoped("proj_in"), b))
        }
        for k in 0..<layers {
            t = try block(t, context: context, w.scoped("transformer_blocks.\(k)"), b)
        }
        let out: Tensor
        if linearProjection {
            out = try image(b.linear(t, weight: w("proj_out.weight"), bias: w("proj_out.bias")))
        } else {
            out = try unetConv(image(t), w.scoped("proj_out"), b)
        }
        guard out.shape[1] == C else {
            throw .shapeMismatch(operation: "\(w.prefix).proj_out", expected: "\(C) output channels", found: "\(out.shape[1])")
        }
        return try b.add(out, x)
    }

    /// BasicTransformerBlock (norm_type "layer_norm", no ada-norm, no positional embedding).
    func block(_ t: Tensor, context: Tensor, _ w: ModuleWeights, _ b: any Backend) throws(SluiceError) -> Tensor {
        func norm(_ name: String, _ x: Tensor) throws(SluiceError) -> Tensor {
            try b.layerNorm(x, weight: w("\(name).weight"), bias: w("\(name).bias"), eps: 1e-5)
        }
        let n1 = try norm("norm1", t)
        var t = try b.add(t, attention(n1, keysFrom: n1, w.scoped("attn1"), b))
        t = try b.add(t, attention(norm("norm2", t), keysFrom: context, w.scoped("attn2"), b))
        return try b.add(t, feedForward(norm("norm3", t), w.scoped("ff"), b))
    }

    /// diffusers' Attention with AttnProcessor2_0: q from x [Lq, C], k and v from `source` [Lk, Cs],
    /// heads of C / heads, softmax scale 1/√D; to_out.0 projects back.
    func attention(_ x: Tensor, keysFrom source: Tensor, _ w: ModuleWeights, _ b: any Backend) throws(SluiceError) -> Tensor {
        let Lq = x.shape[0], Lk = source.shape[0]
        func heads(_ input: Tensor, _ name: String, _ L: Int) throws(SluiceError) -> Tensor {
            let p = try b.linear(input, weight: w("\(name).weight"), bias: w.optional("\(name).bias"))
            return try p.reshaped([1, L, self.heads, p.shape[1] / self.heads]).permuted([0, 2, 1, 3])
        }
        let o = try b.attention(q: heads(x, "to_q", Lq), k: heads(source, "to_k", Lk), v: heads(source, "to_v", Lk), mask: nil, scale: nil)
        let merged = try b.contiguous(o.permuted([0, 2, 1, 3])).reshaped([Lq, o.shape[1] * o.shape[3]])
        return try b.linear(merged, weight: w("to_out.0.weight"), bias: w.optional("to_out.0.bias"))
    }

    /// FeedForward with GEGLU: net.0.proj gives [hidden | gate], each 4C wide; exact (erf) GELU.
    func feedForward(_ x: Tensor, _ w: ModuleWeights, _ b: any Backend) throws(SluiceError) -> Tensor {
        let p = try b.linear(x, weight: w("net.0.proj.weight"), bias: w("net.0.proj.bias"))
        let inner = p.shape[1] / 2
        let hidden = try b.contiguous(p.sliced(dim: 1, 0..<inner)), gate = try b.contiguous(p.sliced(dim: 1, inner..<(2 * inner)))
        let h = try b.mul(hidden, b.gelu(gate, approximateTanh: false))
        return try b.linear(h, weight: w("net.2.weight"), bias: w("net.2.bias"))
    }
}
