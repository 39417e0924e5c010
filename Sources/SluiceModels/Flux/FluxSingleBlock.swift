import SluiceBackends
import SluiceCore
import SluiceWeights

/// A single-stream block (diffusers' FluxSingleTransformerBlock): text and image tokens as one
/// sequence, attention and MLP side by side from the same modulated norm.
///
///     shift, scale, gate = norm.linear(SiLU(temb));  ñ = LN(x)·(1+scale)+shift
///     x += gate · proj_out([Attention(to_q/k/v(ñ)) , GELU(proj_mlp(ñ))])
public struct FluxSingleBlock: Sendable {
    public let config: FluxConfig

    public init(config: FluxConfig) { self.config = config }

    /// x [Lt + Li, dim]; rope over the same tokens.
    public func forward(_ x: Tensor, siluTemb: Tensor, rope: (cos: Tensor, sin: Tensor), _ w: ModuleWeights,
                        _ b: any Backend) throws(SluiceError) -> Tensor {
        let H = config.numAttentionHeads, D = config.headDim
        let m = try FluxModulation(siluTemb, w.scoped("norm"), count: 3, dim: config.dim, b)
        let n = try m.norm(x, shift: 0, scale: 1, b)
        let a = w.scoped("attn")
        let attn = try fluxAttention(q: fluxHeads(n, a, "to_q", norm: "norm_q", heads: H, headDim: D, b),
                                     k: fluxHeads(n, a, "to_k", norm: "norm_k", heads: H, headDim: D, b),
                                     v: fluxHeads(n, a, "to_v", norm: nil, heads: H, headDim: D, b), rope: rope, b)
        let mlp = try b.gelu(b.linear(n, weight: w("proj_mlp.weight"), bias: w("proj_mlp.bias")), approximateTanh: true)
        // proj_out reads [attention, MLP] concatenated; a backend that can never builds the concatenation.
        let out = try b.linear(concatenating: [attn, mlp], weight: w("proj_out.weight"), bias: w("proj_out.bias"))
        return try m.gated(x, out, gate: 2, b)
    }
}
