import Foundation
import SluiceBackends
import SluiceCore
import SluiceWeights

/// FLUX.1's MM-DiT (diffusers' FluxTransformer2DModel), run as a sequence of weight groups so the
/// memory manager can stream it:
///
///     embedders                    packed latents → img tokens; T5 features → txt tokens;
///                                  temb = timestep + guidance (dev) + pooled CLIP embeddings
///     transformer_blocks.i         double-stream blocks over (img, txt)
///     single_transformer_blocks.i  single-stream blocks over [txt; img]
///     norm_out                     LN · (1 + scale) + shift from temb → proj_out, image tokens only
///
/// Positions: every text token at (0, 0, 0), image token (r, c) of the packed grid at (0, r, c).
public struct FluxTransformer: Sendable {
    public let config: FluxConfig

    public init(config: FluxConfig) { self.config = config }

    public var groupNames: [String] {
        ["embedders"] + (0..<config.numLayers).map { "transformer_blocks.\($0)" }
            + (0..<config.numSingleLayers).map { "single_transformer_blocks.\($0)" } + ["norm_out"]
    }

    /// The group a checkpoint tensor belongs to (nil: not part of this model).
    public func group(of key: String) -> String? {
        for (stack, count) in [("transformer_blocks", config.numLayers), ("single_transformer_blocks", config.numSingleLayers)] where key.hasPrefix(stack + ".") {
            guard let i = ModulePath.blockIndex(key, in: stack) else { return nil }
            return i < count ? "\(stack).\(i)" : nil
        }
        if key.hasPrefix("norm_out.") || key.hasPrefix("proj_out.") { return "norm_out" }
        for e in ["x_embedder.", "context_embedder.", "time_text_embed."] where key.hasPrefix(e) {
            if key.hasPrefix("time_text_embed.guidance_embedder.") && !config.guidanceEmbeds { return nil }
            return "embedders"
        }
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
        /// Embedded guidance (dev); ignored by a model without a guidance embedder.
        public var guidance: Float
        /// T5 features [Lt, jointAttentionDim] and the pooled CLIP embedding [1, pooledProjectionDim].
        public var context: Tensor
        public var pooled: Tensor
        var siluTemb: Tensor?
        var img: Tensor?
        var txt: Tensor?
        var joint: Tensor?
        var textTokens = 0
        var rope: (cos: Tensor, sin: Tensor)?
        /// [rows·columns, out channels].
        public var output: Tensor?

        public init(latents: Tensor, rows: Int, columns: Int, t: Float, guidance: Float, context: Tensor, pooled: Tensor) {
            self.latents = latents; self.rows = rows; self.columns = columns; self.t = t; self.guidance = guidance
            self.context = context; self.pooled = pooled
        }
    }

    /// Peak f32 activation bytes of one call over `imageTokens` + `textTokens`: the joint stream, a
    /// norm, q/k/v, the attention output, the two modulated copies and a residual (~9 × dim), plus a
    /// single block's MLP (4 × dim) and its concatenation with the attention (5 × dim); and per image
    /// token the pipeline's own tensors that share the reservation on a device — the packed latents, a
    /// step's unpacked copy, the positive and negative predictions, their difference and the step's
    /// output (6 × in_channels, which a tiny model's dim may not dwarf).
    public static func activationBytes(config: FluxConfig, imageTokens: Int, textTokens: Int) -> Int {
        4 * (imageTokens + textTokens) * (9 * config.dim + 2 * config.mlpDim + config.dim) + 4 * imageTokens * 6 * config.inChannels
    }

    /// Runs group `index` (in `groupNames` order) with that group's weights.
    public func run(group index: Int, _ w: ModuleWeights, _ s: State, _ b: any Backend) throws(SluiceError) -> State {
        var s = s
        let name = groupNames[index]
        if name == "embedders" {
            try embed(&s, w, b)
        } else if name.hasPrefix("transformer_blocks.") {
            let out = try FluxDoubleBlock(config: config).forward(img: s.img!, txt: s.txt!, siluTemb: s.siluTemb!, rope: s.rope!, w.scoped(name), b)
            s.img = out.img
            s.txt = out.txt
        } else if name.hasPrefix("single_transformer_blocks.") {
            if s.joint == nil {
                // From here on the two streams are one: the separate ones go (device memory).
                s.textTokens = s.txt!.shape[0]
                s.joint = try b.concat([s.txt!, s.img!], dim: 0)
                s.txt = nil
                s.img = nil
            }
            s.joint = try FluxSingleBlock(config: config).forward(s.joint!, siluTemb: s.siluTemb!, rope: s.rope!, w.scoped(name), b)
        } else {
            try final(&s, w, b)
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
        try PackedInputs.check(model: "FLUX", latents: s.latents, rows: s.rows, columns: s.columns, inChannels: config.inChannels,
                               context: s.context, textWidth: config.jointAttentionDim)
        guard s.pooled.count == config.pooledProjectionDim else {
            throw .shapeMismatch(operation: "FLUX pooled text embedding", expected: "[1, \(config.pooledProjectionDim)]", found: "\(s.pooled.shape)")
        }
        // temb = timestep + guidance + pooled text, each through its own two-layer MLP; the sinusoids are
        // diffusers' Timesteps(256, flip_sin_to_cos) — cos half first, as Z-Image's. The model multiplies
        // the pipeline's t/1000 by 1000 in f32, as diffusers does.
        func mlp(_ x: Tensor, _ m: ModuleWeights) throws(SluiceError) -> Tensor {
            let h = try b.linear(x, weight: m("linear_1.weight"), bias: m("linear_1.bias"))
            return try b.linear(b.silu(h), weight: m("linear_2.weight"), bias: m("linear_2.bias"))
        }
        let e = w.scoped("time_text_embed")
        var temb = try mlp(TimestepEmbedder.sinusoid(s.t * 1000), e.scoped("timestep_embedder"))
        if config.guidanceEmbeds {
            temb = try b.add(temb, mlp(TimestepEmbedder.sinusoid(s.guidance * 1000), e.scoped("guidance_embedder")))
        }
        temb = try b.add(temb, mlp(b.contiguous(s.pooled.reshaped([1, config.pooledProjectionDim])), e.scoped("text_embedder")))
        s.siluTemb = try b.silu(temb)

        s.img = try b.linear(s.latents, weight: w("x_embedder.weight"), bias: w("x_embedder.bias"))
        s.txt = try b.linear(s.context, weight: w("context_embedder.weight"), bias: w("context_embedder.bias"))
        s.rope = FluxRoPE(axesDims: config.axesDimsRope).tables(FluxRoPE.ids(textTokens: s.context.shape[0], rows: s.rows, columns: s.columns))
        s.joint = nil
    }

    /// AdaLayerNormContinuous (its linear gives scale, then shift) and the output projection, over the
    /// image tokens.
    func final(_ s: inout State, _ w: ModuleWeights, _ b: any Backend) throws(SluiceError) {
        let lt = s.textTokens, n = s.rows * s.columns
        let img = try s.joint.map { j throws(SluiceError) in try j.sliced(dim: 0, lt..<(lt + n)) } ?? s.img!
        let m = try FluxModulation(s.siluTemb!, w.scoped("norm_out"), count: 2, dim: config.dim, b)
        let h = try m.norm(b.contiguous(img), shift: 1, scale: 0, b)
        s.output = try b.linear(h, weight: w("proj_out.weight"), bias: w("proj_out.bias"))
    }
}
