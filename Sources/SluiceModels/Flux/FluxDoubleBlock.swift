import SluiceBackends
import SluiceCore
import SluiceWeights

/// A double-stream block (diffusers' FluxTransformerBlock): image and text tokens keep their own
/// weights and meet only in one joint attention.
///
///     img: shift, scale, gate (attn) · shift, scale, gate (mlp) = norm1.linear(SiLU(temb))
///     txt: the same from norm1_context.linear
///     q, k, v = [txt: add_*_proj(ñ_txt); img: to_*(ñ_img)]   q, k RMS-normed per head, then RoPE
///     img += gate · to_out(attn_img);        txt += gate · to_add_out(attn_txt)
///     img += gate · ff(LN(img)·(1+scale)+shift);  txt likewise with ff_context
///
/// Qwen-Image's QwenImageTransformerBlock is the same block under other names (`Keys.qwenImage`).
public struct FluxDoubleBlock: Sendable {
    /// Where the per-stream modulation linears and MLPs sit (the attention's names are shared).
    public struct Keys: Sendable {
        let imageModulation: (module: String, linear: String)
        let textModulation: (module: String, linear: String)
        let imageMLP: String
        let textMLP: String
        public static let flux = Keys(imageModulation: ("norm1", "linear"), textModulation: ("norm1_context", "linear"), imageMLP: "ff", textMLP: "ff_context")
        public static let qwenImage = Keys(imageModulation: ("img_mod", "1"), textModulation: ("txt_mod", "1"), imageMLP: "img_mlp", textMLP: "txt_mlp")
    }

    let dim: Int
    let heads: Int
    let headDim: Int
    let keys: Keys

    public init(config: FluxConfig) { self.init(dim: config.dim, heads: config.numAttentionHeads, headDim: config.headDim, keys: .flux) }

    public init(dim: Int, heads: Int, headDim: Int, keys: Keys) {
        self.dim = dim; self.heads = heads; self.headDim = headDim; self.keys = keys
    }

    /// img [Li, dim], txt [Lt, dim]; rope over [txt; img]; siluTemb [1, dim].
    public func forward(img: Tensor, txt: Tensor, siluTemb: Tensor, rope: (cos: Tensor, sin: Tensor), _ w: ModuleWeights,
                        _ b: any Backend) throws(SluiceError) -> (img: Tensor, txt: Tensor) {
        let H = heads, D = headDim
        let mi = try FluxModulation(siluTemb, w.scoped(keys.imageModulation.module), linear: keys.imageModulation.linear, count: 6, dim: dim, b)
        let mt = try FluxModulation(siluTemb, w.scoped(keys.textModulation.module), linear: keys.textModulation.linear, count: 6, dim: dim, b)
        let ni = try mi.norm(img, shift: 0, scale: 1, b), nt = try mt.norm(txt, shift: 0, scale: 1, b)

        let a = w.scoped("attn")
        func joint(_ txtName: String, _ txtNorm: String?, _ imgName: String, _ imgNorm: String?) throws(SluiceError) -> Tensor {
            try b.concat([fluxHeads(nt, a, txtName, norm: txtNorm, heads: H, headDim: D, b),
                          fluxHeads(ni, a, imgName, norm: imgNorm, heads: H, headDim: D, b)], dim: 0)
        }
        let o = try fluxAttention(q: joint("add_q_proj", "norm_added_q", "to_q", "norm_q"),
                                  k: joint("add_k_proj", "norm_added_k", "to_k", "norm_k"),
                                  v: joint("add_v_proj", nil, "to_v", nil), rope: rope, b)
        let Lt = txt.shape[0], L = o.shape[0]
        let attnTxt = try b.linear(o.sliced(dim: 0, 0..<Lt), weight: a("to_add_out.weight"), bias: a("to_add_out.bias"))
        let attnImg = try b.linear(o.sliced(dim: 0, Lt..<L), weight: a("to_out.0.weight"), bias: a("to_out.0.bias"))

        var img = try mi.gated(img, attnImg, gate: 2, b)
        img = try mi.gated(img, fluxFeedForward(mi.norm(img, shift: 3, scale: 4, b), w.scoped(keys.imageMLP), b), gate: 5, b)
        var txt = try mt.gated(txt, attnTxt, gate: 2, b)
        txt = try mt.gated(txt, fluxFeedForward(mt.norm(txt, shift: 3, scale: 4, b), w.scoped(keys.textMLP), b), gate: 5, b)
        return (img, txt)
    }
}
