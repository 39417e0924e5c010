import Foundation
import SluiceBackends
import SluiceCore
import SluiceWeights

/// One single-stream block of the S3-DiT, as in diffusers' ZImageTransformerBlock:
///
///     scale_msa, gate_msa, scale_mlp, gate_mlp = adaLN(c)          (modulated blocks only)
///     (each scale and gate multiplies a norm's output per column: it is folded into that norm's weight)
///     x = x + tanh(gate_msa) · norm2(Attention(norm1(x) · (1 + scale_msa)))
///     x = x + tanh(gate_mlp) · ffn_norm2(FFN(ffn_norm1(x) · (1 + scale_mlp)))
///
/// The context refiner's blocks have no modulation: the same diagram with scale 1 and gate 1.
public struct ZImageBlock: Sendable {
    public let config: ZImageConfig

    public init(config: ZImageConfig) { self.config = config }

    /// x: [L, dim] tokens; rope: cos/sin [L, headDim/2]; adaLN: [1, min(dim,256)] or nil.
    public func forward(_ x: Tensor, rope: (cos: Tensor, sin: Tensor), adaLN: Tensor?, _ w: ModuleWeights,
                        _ b: any Backend) throws(SluiceError) -> Tensor {
        let dim = config.dim, eps = config.normEps
        var scaleMSA: Tensor?, gateMSA: Tensor?, scaleMLP: Tensor?, gateMLP: Tensor?
        if let adaLN {
            // On the backend: on a device the modulation never comes to the host.
            let mod = try b.linear(adaLN, weight: w("adaLN_modulation.0.weight"), bias: w("adaLN_modulation.0.bias")).reshaped([4, dim])
            func chunk(_ i: Int) throws(SluiceError) -> Tensor { try mod.sliced(dim: 0, i..<(i + 1)) }
            let one = Tensor([1], shape: [1])
            scaleMSA = try b.add(chunk(0), one)
            gateMSA = try b.tanh(chunk(1))
            scaleMLP = try b.add(chunk(2), one)
            gateMLP = try b.tanh(chunk(3))
        }
        // A modulation or gate multiplies the norm's output column by column: folded into the norm's own
        // weight (a [dim] product), it costs no pass over the tokens; the residual add rides in the
        // norm's pass too.
        func norm(_ t: Tensor, _ weight: String, times m: Tensor?, adding residual: Tensor? = nil) throws(SluiceError) -> Tensor {
            var g = try w(weight)
            if let m { g = try b.mul(g, m.reshaped([dim])) }
            guard let residual else { return try b.rmsNorm(t, weight: g, eps: eps) }
            return try b.rmsNorm(t, weight: g, eps: eps, adding: residual)
        }
        var h = try norm(x, "attention_norm1.weight", times: scaleMSA)
        h = try attention(h, rope: rope, w.scoped("attention"), b)
        let x1 = try norm(h, "attention_norm2.weight", times: gateMSA, adding: x)

        var f = try norm(x1, "ffn_norm1.weight", times: scaleMLP)
        f = try feedForward(f, w.scoped("feed_forward"), b)
        return try norm(f, "ffn_norm2.weight", times: gateMLP, adding: x1)
    }

    /// Self-attention over all tokens: q/k RMS-normed per head, rotated by the 3-axis RoPE.
    func attention(_ x: Tensor, rope: (cos: Tensor, sin: Tensor), _ w: ModuleWeights, _ b: any Backend) throws(SluiceError) -> Tensor {
        let L = x.shape[0], H = config.nHeads, D = config.headDim
        func heads(_ name: String, norm: String?) throws(SluiceError) -> Tensor {
            var t = try b.linear(x, weight: w("\(name).weight"), bias: nil).reshaped([L, H, D])
            if let norm, config.qkNorm { t = try b.rmsNorm(t, weight: w("\(norm).weight"), eps: 1e-5) }
            if norm != nil { t = try b.rotaryEmbedding(t, cos: rope.cos, sin: rope.sin, seqDim: 0, layout: .interleaved) }
            return try t.reshaped([1, L, H, D]).permuted([0, 2, 1, 3])
        }
        let q = try heads("to_q", norm: "norm_q"), k = try heads("to_k", norm: "norm_k"), v = try heads("to_v", norm: nil)
        let o = try b.attention(q: q, k: k, v: v, mask: nil, scale: nil)   // [1, H, L, D]
        let merged = try b.contiguous(o.permuted([0, 2, 1, 3])).reshaped([L, H * D])
        return try b.linear(merged, weight: w("to_out.0.weight"), bias: nil)
    }

    /// SwiGLU: w2(silu(w1 x) · w3 x).
    func feedForward(_ x: Tensor, _ w: ModuleWeights, _ b: any Backend) throws(SluiceError) -> Tensor {
        let gate = try b.linear(x, weight: w("w1.weight"), bias: nil)
        let up = try b.linear(x, weight: w("w3.weight"), bias: nil)
        return try b.linear(b.siluGated(gate, up), weight: w("w2.weight"), bias: nil)
    }
}
