import SluiceCore

/// How a single-file FLUX.1 transformer names its tensors.
public enum FluxCheckpointLayout: String, Sendable, CaseIterable {
    /// diffusers' FluxTransformer2DModel names (`transformer_blocks.0.attn.to_q.weight`).
    case diffusers
    /// diffusers' names under "transformer." (a pipeline's state saved whole).
    case diffusersTransformerPrefix
    /// Black Forest Labs' names (`double_blocks.0.img_attn.qkv.weight`), as flux1-dev.safetensors and
    /// finetunes such as majicflus ship them.
    case bfl
    /// BFL's names under ComfyUI's "model.diffusion_model.".
    case bflComfyPrefix

    /// What every key of this layout starts with.
    public var keyPrefix: String {
        switch self {
        case .diffusers, .bfl: return ""
        case .diffusersTransformerPrefix: return "transformer."
        case .bflComfyPrefix: return "model.diffusion_model."
        }
    }

    public var isBFL: Bool { self == .bfl || self == .bflComfyPrefix }

    /// The top-level modules of the transformer in this layout's names.
    var modules: Set<Substring> {
        isBFL ? ["img_in", "txt_in", "time_in", "vector_in", "guidance_in", "double_blocks", "single_blocks", "final_layer"]
              : ["x_embedder", "context_embedder", "time_text_embed", "transformer_blocks", "single_transformer_blocks", "norm_out", "proj_out"]
    }

    var names: FluxProbeNames { FluxProbeNames(isBFL: isBFL) }

    /// The layout most of `names` belong to; an error naming what the file holds when none does.
    static func detect(_ names: [String], file: String) throws(SluiceError) -> FluxCheckpointLayout {
        var best: (layout: FluxCheckpointLayout, count: Int)?
        for layout in allCases {
            let p = layout.keyPrefix, modules = layout.modules
            let count = names.filter { name in
                name.hasPrefix(p) && name.dropFirst(p.count).split(separator: ".", maxSplits: 1).first.map(modules.contains) == true
            }.count
            if count > (best?.count ?? 0) { best = (layout, count) }
        }
        if let best { return best.layout }
        let sample = names.sorted().prefix(5).map { "'\($0)'" }.joined(separator: ", ")
        throw .invalidCheckpoint(file: file, tensor: nil, reason: """
            not a FLUX.1 transformer in a known key layout (Black Forest Labs' 'double_blocks.0.img_attn.qkv.weight', \
            bare or under 'model.diffusion_model.', or diffusers' 'transformer_blocks.0.attn.to_q.weight', bare or under \
            'transformer.'): its \(names.count) tensors include \(sample.isEmpty ? "none" : sample)
            """)
    }
}

/// The names shape inference reads, in BFL's or diffusers' layout (without the prefix).
struct FluxProbeNames {
    let isBFL: Bool

    var doubleBlocks: String { isBFL ? "double_blocks." : "transformer_blocks." }
    var singleBlocks: String { isBFL ? "single_blocks." : "single_transformer_blocks." }
    var xEmbedder: String { isBFL ? "img_in.weight" : "x_embedder.weight" }
    var contextEmbedder: String { isBFL ? "txt_in.weight" : "context_embedder.weight" }
    var textEmbedder: String { isBFL ? "vector_in.in_layer.weight" : "time_text_embed.text_embedder.linear_1.weight" }
    var guidanceEmbedder: String { isBFL ? "guidance_in." : "time_text_embed.guidance_embedder." }
    var projOut: String { isBFL ? "final_layer.linear.weight" : "proj_out.weight" }

    func doubleQueryNorm(_ i: Int) -> String {
        doubleBlocks + "\(i)." + (isBFL ? "img_attn.norm.query_norm.scale" : "attn.norm_q.weight")
    }
    func doubleMLPIn(_ i: Int) -> String { doubleBlocks + "\(i)." + (isBFL ? "img_mlp.0.weight" : "ff.net.0.proj.weight") }
    func singleQueryNorm(_ i: Int) -> String {
        singleBlocks + "\(i)." + (isBFL ? "norm.query_norm.scale" : "attn.norm_q.weight")
    }
    /// BFL's linear1 (q, k, v and the MLP's input in one), or diffusers' proj_mlp.
    func singleMLPIn(_ i: Int) -> String { singleBlocks + "\(i)." + (isBFL ? "linear1.weight" : "proj_mlp.weight") }
}
