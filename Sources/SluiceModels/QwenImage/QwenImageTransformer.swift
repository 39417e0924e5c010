import Foundation
import SluiceBackends
import SluiceCore
import SluiceWeights

/// Qwen-Image's MMDiT (diffusers' QwenImageTransformer2DModel), run as a sequence of weight groups so
/// the memory manager can stream it:
///
///     embedders             packed latents → img tokens (img_in); Qwen2.5-VL features → RMSNorm → txt tokens
///                           (txt_norm, txt_in); temb = the timestep's sinusoids through a two-layer MLP
///     transformer_blocks.i  dual-stream blocks: per-stream modulation and MLP, one joint attention
///                           over [txt; img] with q/k RMS-normed per head (FluxDoubleBlock, Qwen's names)
///     norm_out              LN · (1 + scale) + shift from temb (AdaLayerNormContinuous) → proj_out
///
/// Positions: `QwenImageRoPE` (image centred, text after it).
public struct QwenImageTransformer: Sendable {
    public let config: QwenImageConfig

    public init(config: QwenImageConfig) { self.config = config }

    public var groupNames: [String] { ["embedders"] + (0..<config.numLayers).map { "transformer_blocks.\($0)" } + ["norm_out"] }

    /// The group a checkpoint tensor belongs to (nil: not part of this model).
    public func group(of key: String) -> String? {
        if key.hasPrefix("transformer_blocks.") {
            guard let i = ModulePath.blockIndex(key, in: "transformer_blocks"), i < config.numLayers else { return nil }
            return "transformer_blocks.\(i)"
        }
        if key.hasPrefix("norm_out.") || key.hasPrefix("proj_out.") { return "norm_out" }
        for e in ["img_in.", "txt_in.", "txt_norm.", "time_text_embed."] where key.hasPrefix(e) { return "embedders" }
        return nil
    }

    /// What flows between groups.
    public struct State: @unchecked Sendable {
        /// Packed latents [rows·columns, inChannels].
        public var latents: Tensor
        public var rows: Int
        public var columns: Int
        /// The timestep as the pipeline passes it: σ in [0, 1] (the model multiplies by 1000).
        public var t: Float
        /// Qwen2.5-VL features [Lt, jointAttentionDim] (the prompt's tokens only).
        public var context: Tensor
        var siluTemb: Tensor?
        var img: Tensor?
        var txt: Tensor?
        var rope: (cos: Tensor, sin: Tensor)?
        /// [rows·columns, inChannels]: the packed velocity.
        public var output: Tensor?

        public init(latents: Tensor, rows: Int, columns: Int, t: Float, context: Tensor) {
            self.latents = latents; self.rows = rows; self.columns = columns; self.t = t; self.context = context
        }
    }

    /// Peak f32 activation bytes of one call over `imageTokens` + `textTokens`: the joint q/k/v and
    /// attention output, the two streams, their modulated norms and residuals (~9 × dim), an MLP's
    /// hidden layer (4 × dim) and the RoPE tables; plus per image token the pipeline's own tensors that
    /// share the reservation on a device (packed latents, both predictions, their combination, the
    /// norms' ratio and the step's output: 6 × in_channels).
    public static func activationBytes(config: QwenImageConfig, imageTokens: Int, textTokens: Int) -> Int {
        4 * (imageTokens + textTokens) * (9 * config.dim + 4 * config.dim + config.attentionHeadDim) + 4 * imageTokens * 6 * config.inChannels
    }

    /// Runs group `index` (in `groupNames` order) with that group's weights.
    public func run(group index: Int, _ w: ModuleWeights, _ s: State, _ b: any Backend) throws(SluiceError) -> State {
        var s = s
        let name = groupNames[index]
        if name == "embedders" {
            try embed(&s, w, b)
        } else if name.hasPrefix("transformer_blocks.") {
            let block = FluxDoubleBlock(dim: config.dim, heads: config.numAttentionHeads, headDim: config.attentionHeadDim, keys: .qwenImage)
            let out = try block.forward(img: s.img!, txt: s.txt!, siluTemb: s.siluTemb!, rope: s.rope!, w.scoped(name), b)
            s.img = out.img
            s.txt = out.txt
        } else {
            // AdaLayerNormContinuous: its linear gives scale, then shift.
            let m = try FluxModulation(s.siluTemb!, w.scoped("norm_out"), count: 2, dim: config.dim, b)
            let h = try m.norm(s.img!, shift: 1, scale: 0, b)
            s.output = try b.linear(h, weight: w("proj_out.weight"), bias: w("proj_out.bias"))
            s.img = nil
            s.txt = nil
        }
        return s
    }

    /// The whole forward with weights from one source (no streaming).
    public func forward(_ s: State, _ w: ModuleWeights, _ b: any Backend) throws(SluiceError) -> Tensor {
        var s = s
        for i in groupNames.indices { s = try run(group: i, w, s, b) }
        return s.output!
    }

    func embed(_ s: inout State, _ w: ModuleWeights, _ b: any Backend) throws(SluiceError) {
        try PackedInputs.check(model: "Qwen-Image", latents: s.latents, rows: s.rows, columns: s.columns, inChannels: config.inChannels,
                               context: s.context, textWidth: config.jointAttentionDim)
        // Timesteps(256, flip_sin_to_cos, shift 0, scale 1000) → TimestepEmbedding: cos half first; the
        // model multiplies the pipeline's t/1000 by 1000 in f32, as diffusers does.
        let e = w.scoped("time_text_embed.timestep_embedder")
        let h = try b.linear(TimestepEmbedder.sinusoid(s.t * 1000), weight: e("linear_1.weight"), bias: e("linear_1.bias"))
        let temb = try b.linear(b.silu(h), weight: e("linear_2.weight"), bias: e("linear_2.bias"))
        s.siluTemb = try b.silu(temb)

        s.img = try b.linear(s.latents, weight: w("img_in.weight"), bias: w("img_in.bias"))
        let normed = try b.rmsNorm(s.context, weight: w("txt_norm.weight"), eps: 1e-6)
        s.txt = try b.linear(normed, weight: w("txt_in.weight"), bias: w("txt_in.bias"))
        s.rope = QwenImageRoPE(axesDims: config.axesDimsRope).tables(textTokens: s.context.shape[0], rows: s.rows, columns: s.columns)
    }
}
