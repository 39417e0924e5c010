import SluiceCore
import SluiceWeights

/// The transformer block a tensor belongs to, for messages ("single block 0 is absent").
enum FluxBlock: Equatable, Sendable, CustomStringConvertible {
    case double(Int)
    case single(Int)

    var description: String {
        switch self {
        case .double(let i): return "double block \(i)"
        case .single(let i): return "single block \(i)"
        }
    }
}

/// One tensor of a FluxTransformer2DModel: its diffusers name and shape, and where Black Forest Labs'
/// layout stores it (a whole tensor, rows of a fused one, or one with its halves swapped).
struct FluxTensorSpec: Sendable {
    let key: String
    let shape: Shape
    let bflSource: String
    let bflShape: Shape
    let form: TensorRecipe.Form
    let block: FluxBlock?
}

/// Every tensor of a FLUX.1 transformer of given shapes, in diffusers' order: embedders, double blocks,
/// single blocks, final layer. Mirrors diffusers' `convert_flux_transformer_checkpoint_to_diffusers`
/// (diffusers/loaders/single_file_utils.py) mapping for mapping; tools/reference/flux_bfl.py checks
/// its inverse against that function.
enum FluxKeyTable {
    static func specs(for s: FluxShapes) -> [FluxTensorSpec] {
        var t = Builder()
        let d = s.dim
        t.linear("time_text_embed.timestep_embedder.linear_1", "time_in.in_layer", out: d, in: FluxShapes.timestepChannels)
        t.linear("time_text_embed.timestep_embedder.linear_2", "time_in.out_layer", out: d, in: d)
        if s.guidanceEmbeds {
            t.linear("time_text_embed.guidance_embedder.linear_1", "guidance_in.in_layer", out: d, in: FluxShapes.timestepChannels)
            t.linear("time_text_embed.guidance_embedder.linear_2", "guidance_in.out_layer", out: d, in: d)
        }
        t.linear("time_text_embed.text_embedder.linear_1", "vector_in.in_layer", out: d, in: s.pooledProjectionDim)
        t.linear("time_text_embed.text_embedder.linear_2", "vector_in.out_layer", out: d, in: d)
        t.linear("context_embedder", "txt_in", out: d, in: s.jointAttentionDim)
        t.linear("x_embedder", "img_in", out: d, in: s.inChannels)

        for i in 0..<s.numLayers {
            let p = "transformer_blocks.\(i).", b = "double_blocks.\(i)."
            t.block = .double(i)
            // Six modulations per stream: shift, scale, gate for attention and for the MLP.
            t.linear(p + "norm1.linear", b + "img_mod.lin", out: 6 * d, in: d)
            t.linear(p + "norm1_context.linear", b + "txt_mod.lin", out: 6 * d, in: d)
            t.fused([p + "attn.to_q", p + "attn.to_k", p + "attn.to_v"], b + "img_attn.qkv", rows: [d, d, d], in: d)
            t.fused([p + "attn.add_q_proj", p + "attn.add_k_proj", p + "attn.add_v_proj"], b + "txt_attn.qkv", rows: [d, d, d], in: d)
            t.norm(p + "attn.norm_q", b + "img_attn.norm.query_norm", width: s.headDim)
            t.norm(p + "attn.norm_k", b + "img_attn.norm.key_norm", width: s.headDim)
            t.norm(p + "attn.norm_added_q", b + "txt_attn.norm.query_norm", width: s.headDim)
            t.norm(p + "attn.norm_added_k", b + "txt_attn.norm.key_norm", width: s.headDim)
            t.linear(p + "ff.net.0.proj", b + "img_mlp.0", out: s.mlpHidden, in: d)
            t.linear(p + "ff.net.2", b + "img_mlp.2", out: d, in: s.mlpHidden)
            t.linear(p + "ff_context.net.0.proj", b + "txt_mlp.0", out: s.mlpHidden, in: d)
            t.linear(p + "ff_context.net.2", b + "txt_mlp.2", out: d, in: s.mlpHidden)
            t.linear(p + "attn.to_out.0", b + "img_attn.proj", out: d, in: d)
            t.linear(p + "attn.to_add_out", b + "txt_attn.proj", out: d, in: d)
        }

        for i in 0..<s.numSingleLayers {
            let p = "single_transformer_blocks.\(i).", b = "single_blocks.\(i)."
            t.block = .single(i)
            t.linear(p + "norm.linear", b + "modulation.lin", out: 3 * d, in: d)
            // BFL runs q, k, v and the MLP's input as one matmul (linear1); diffusers splits it by
            // (dim, dim, dim, mlp_hidden_dim) in that order.
            t.fused([p + "attn.to_q", p + "attn.to_k", p + "attn.to_v", p + "proj_mlp"], b + "linear1",
                    rows: [d, d, d, s.mlpHidden], in: d)
            t.norm(p + "attn.norm_q", b + "norm.query_norm", width: s.headDim)
            t.norm(p + "attn.norm_k", b + "norm.key_norm", width: s.headDim)
            t.linear(p + "proj_out", b + "linear2", out: d, in: d + s.mlpHidden)
        }

        t.block = nil
        t.linear("proj_out", "final_layer.linear", out: s.outChannels, in: d)
        // BFL's final adaLN gives (shift, scale); diffusers' AdaLayerNormContinuous reads (scale, shift).
        t.swapped("norm_out.linear", "final_layer.adaLN_modulation.1", out: 2 * d, in: d)
        return t.specs
    }

    private struct Builder {
        var specs: [FluxTensorSpec] = []
        var block: FluxBlock?

        mutating func add(_ key: String, _ shape: Shape, _ source: String, _ sourceShape: Shape, _ form: TensorRecipe.Form) {
            specs.append(FluxTensorSpec(key: key, shape: shape, bflSource: source, bflShape: sourceShape, form: form, block: block))
        }

        /// A Linear's weight [out, in] and bias [out], stored whole.
        mutating func linear(_ key: String, _ bfl: String, out: Int, in width: Int) {
            add(key + ".weight", Shape([out, width]), bfl + ".weight", Shape([out, width]), .asStored)
            add(key + ".bias", Shape([out]), bfl + ".bias", Shape([out]), .asStored)
        }

        /// An RMSNorm's weight, which BFL calls `scale`.
        mutating func norm(_ key: String, _ bfl: String, width: Int) {
            add(key + ".weight", Shape([width]), bfl + ".scale", Shape([width]), .asStored)
        }

        /// Linears BFL stores as one, stacked along the output rows in `keys`' order.
        mutating func fused(_ keys: [String], _ bfl: String, rows: [Int], in width: Int) {
            let total = rows.reduce(0, +)
            var start = 0
            for (key, n) in zip(keys, rows) {
                add(key + ".weight", Shape([n, width]), bfl + ".weight", Shape([total, width]), .rows(start..<(start + n)))
                add(key + ".bias", Shape([n]), bfl + ".bias", Shape([total]), .rows(start..<(start + n)))
                start += n
            }
        }

        /// A Linear whose two output halves BFL stores in the other order.
        mutating func swapped(_ key: String, _ bfl: String, out: Int, in width: Int) {
            add(key + ".weight", Shape([out, width]), bfl + ".weight", Shape([out, width]), .halvesSwapped)
            add(key + ".bias", Shape([out]), bfl + ".bias", Shape([out]), .halvesSwapped)
        }
    }
}
