import Foundation
import SluiceBackends
import SluiceCore
import SluiceWeights

/// Stable Diffusion's denoiser (diffusers' UNet2DConditionModel, unet_2d_condition.py), run as a
/// sequence of weight groups so the memory manager can stream it; the skip connections travel in the
/// `State` from the down path to the up path:
///
///     embedders        emb = time_embedding(t) (+ add_embedding(text_embeds, time_ids): SDXL);
///                      h = conv_in(sample)                                             skip ← h
///     down_blocks.i.j  h = resnets.j(h, emb) → attentions.j(h, context)                skip ← h
///                      after the last layer of every block but the deepest:
///                      h = downsamplers.0(h) (3×3, stride 2)                           skip ← h
///     mid_block        resnets.0 → attentions.0 → resnets.1
///     up_blocks.i.j    h = resnets.j([h, skip → ]) → attentions.j(h, context)
///                      (layers_per_block + 1 layers; the up path consumes the skips last-in first-out)
///                      after the last layer of every block but the final one: upsamplers.0 (nearest 2×, 3×3)
///     out              conv_out(SiLU(conv_norm_out(h))) → the noise prediction
///
/// Group `down_blocks.i.j` holds the tensors of down_blocks.i.resnets.j and .attentions.j (and the
/// downsampler when j is the last layer); `up_blocks.i.j` likewise. Batch 1 (the pipeline runs the
/// conditional and unconditional predictions as two calls).
public struct UNet2DCondition: Sendable {
    public let config: UNetConfig

    public init(config: UNetConfig) { self.config = config }

    enum Step: Equatable {
        case embedders, down(Int, Int), mid, up(Int, Int), out

        var name: String {
            switch self {
            case .embedders: "embedders"
            case let .down(i, j): "down_blocks.\(i).\(j)"
            case .mid: "mid_block"
            case let .up(i, j): "up_blocks.\(i).\(j)"
            case .out: "out"
            }
        }
    }

    var steps: [Step] {
        let n = config.levels, l = config.layersPerBlock
        return [.embedders] + (0..<n).flatMap { i in (0..<l).map { Step.down(i, $0) } } + [.mid]
            + (0..<n).flatMap { i in (0...l).map { Step.up(i, $0) } } + [.out]
    }

    public var groupNames: [String] { steps.map(\.name) }

    /// The level of the U each group works at, in `groupNames` order (0: the latents' own resolution):
    /// a convolution or linear of group g runs once per position of its level.
    public var groupLevels: [Int] {
        steps.map { step in
            switch step {
            case .embedders, .out: 0
            case let .down(i, _): i
            case .mid: config.levels - 1
            case let .up(i, _): config.level(up: i)
            }
        }
    }

    /// The group a checkpoint tensor belongs to (nil: not part of this model).
    public func group(of key: String) -> String? {
        let p = key.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        let n = config.levels, l = config.layersPerBlock
        guard p.count >= 2 else { return nil }
        /// attentions.j.<rest>: a Transformer2DModel's own tensors, or one of its `layers` blocks.
        func inTransformer(_ rest: ArraySlice<String>, layers: Int) -> Bool {
            guard let first = rest.first else { return false }
            if first == "transformer_blocks" {
                guard rest.count >= 3, let k = Int(rest[rest.startIndex + 1]) else { return false }
                return k < layers
            }
            return ["norm", "proj_in", "proj_out"].contains(first) && rest.count == 2
        }
        switch p[0] {
        case "time_embedding", "conv_in": return "embedders"
        case "add_embedding": return config.textTimeConditioning ? "embedders" : nil
        case "conv_norm_out", "conv_out": return "out"
        case "mid_block":
            guard p.count >= 4, let j = Int(p[2]) else { return nil }
            if p[1] == "resnets", j < 2 { return "mid_block" }
            if p[1] == "attentions", j == 0, inTransformer(p[3...], layers: config.transformerLayers[n - 1]) { return "mid_block" }
            return nil
        case "down_blocks", "up_blocks":
            guard p.count >= 5, let i = Int(p[1]), i >= 0, i < n, let j = Int(p[3]), j >= 0 else { return nil }
            let up = p[0] == "up_blocks"
            let count = up ? l + 1 : l
            let level = up ? config.level(up: i) : i
            let attention = up ? config.upHasAttention[i] : config.downHasAttention[i]
            let layer: Int
            switch p[2] {
            case "resnets" where j < count: layer = j
            case "attentions" where attention && j < count && inTransformer(p[4...], layers: config.transformerLayers[level]): layer = j
            case (up ? "upsamplers" : "downsamplers") where j == 0 && i < n - 1: layer = count - 1
            default: return nil
            }
            return (up ? Step.up(i, layer) : Step.down(i, layer)).name
        default: return nil
        }
    }

    /// What flows between groups.
    public struct State: @unchecked Sendable {
        /// Latents [1, in_channels, h, w], h and w multiples of 2^(levels − 1).
        public var sample: Tensor
        /// The discrete scheduler's timestep (0…999), as diffusers passes it.
        public var timestep: Float
        /// encoder_hidden_states [L, cross_attention_dim].
        public var context: Tensor
        /// SDXL ("text_time"): the pooled text embedding [1, P] and the size/crop ids [6].
        public var textEmbeds: Tensor?
        public var timeIds: Tensor?
        var siluEmb: Tensor?
        /// The running feature map [1, C, h', w'] between groups (after mid_block: the bottom of the U).
        public internal(set) var hidden: Tensor?
        /// The down path's outputs, consumed from the end by the up path.
        var skips: [Tensor] = []
        /// The noise prediction [1, out_channels, h, w].
        public var output: Tensor?

        public init(sample: Tensor, timestep: Float, context: Tensor, textEmbeds: Tensor? = nil, timeIds: Tensor? = nil) {
            self.sample = sample; self.timestep = timestep; self.context = context
            self.textEmbeds = textEmbeds; self.timeIds = timeIds
        }
    }

    /// Peak f32 activation bytes of one call on latents of `height` × `width` (the sample's own size,
    /// the image's over 8), as this code allocates them. Counted, with Pₗ the positions at level ℓ:
    /// - every skip connection, all alive at the bottom of the U: conv_in's output, each down layer's
    ///   output and each downsampler's;
    /// - the worst step above that, over the levels: an up resnet holds the hidden state, its
    ///   concatenation with the skip, norm and SiLU copies and up to three outputs (2 + 3·Cin + 3·Cout);
    ///   a Transformer2DModel (at a level that has one) holds input, tokens, the residual stream and the
    ///   GEGLU feed-forward's projection (8C), halves, GELU and product (4C each): 30·C; an upsampler its input and two
    ///   tensors at the finer level;
    /// - the cross-attention keys and values (2 × C × 77 tokens, the CLIP context length), and the
    ///   pipeline's own tensors per latent position (sample, both predictions, their difference, the
    ///   step's output: 5 × in_channels).
    public static func activationBytes(config: UNetConfig, height: Int, width: Int) -> Int {
        let n = config.levels, c = config.blockOutChannels, l = config.layersPerBlock
        func positions(_ level: Int) -> Int {
            let s = 1 << level
            return ((height + s - 1) / s) * ((width + s - 1) / s)
        }
        var skips = c[0] * positions(0)
        for i in 0..<n {
            skips += l * c[i] * positions(i)
            if i < n - 1 { skips += c[i] * positions(i + 1) }
        }
        var work = 0
        for i in 0..<n {
            let level = config.level(up: i), out = c[level], p = positions(level)
            let prev = i == 0 ? c[n - 1] : c[config.level(up: i - 1)]
            // The widest concatenation at this level: the previous block's output with a skip.
            let widestIn = max(prev, out) + max(c[level], c[max(level - 1, 0)])
            work = max(work, p * (prev + 3 * widestIn + 3 * out))
            if config.upHasAttention[i] || config.downHasAttention[level] || level == n - 1 {
                work = max(work, p * 30 * out + 2 * out * 77)
            }
            if i < n - 1 { work = max(work, p * out + 2 * positions(level - 1) * out) }
        }
        let pipeline = 5 * config.inChannels * positions(0)
        return 4 * (skips + work + pipeline)
    }

    /// Runs group `index` (in `groupNames` order) with that group's weights.
    public func run(group index: Int, _ w: ModuleWeights, _ s: State, _ b: any Backend) throws(SluiceError) -> State {
        var s = s
        let n = config.levels, l = config.layersPerBlock
        switch steps[index] {
        case .embedders:
            try checkInputs(s)
            s.siluEmb = try b.silu(UNetEmbeddings.forward(s, config: config, w, b))
            let h = try unetConv(s.sample.converted(to: .f32), w.scoped("conv_in"), b)
            s.hidden = h
            s.skips = [h]
        case let .down(i, j):
            let block = w.scoped("down_blocks.\(i)")
            var h = try resnet.forward(s.hidden!, siluEmb: s.siluEmb!, block.scoped("resnets.\(j)"), b)
            if config.downHasAttention[i] {
                h = try transformer(level: i).forward(h, context: s.context, block.scoped("attentions.\(j)"), b)
            }
            s.skips.append(h)
            if j == l - 1 && i < n - 1 {
                h = try unetDownsample(h, block.scoped("downsamplers.0"), b)
                s.skips.append(h)
            }
            s.hidden = h
        case .mid:
            s.hidden = try midBlock(s.hidden!, siluEmb: s.siluEmb!, context: s.context, w, b)
        case let .up(i, j):
            let block = w.scoped("up_blocks.\(i)")
            let skip = s.skips.removeLast()
            var h = try b.concat([s.hidden!, skip], dim: 1)
            s.hidden = nil
            h = try resnet.forward(h, siluEmb: s.siluEmb!, block.scoped("resnets.\(j)"), b)
            if config.upHasAttention[i] {
                h = try transformer(level: config.level(up: i)).forward(h, context: s.context, block.scoped("attentions.\(j)"), b)
            }
            if j == l && i < n - 1 { h = try unetUpsample(h, block.scoped("upsamplers.0"), b) }
            s.hidden = h
        case .out:
            let h = try b.silu(b.groupNorm(s.hidden!, groups: config.normNumGroups, weight: w("conv_norm_out.weight"),
                                           bias: w("conv_norm_out.bias"), eps: config.normEps))
            s.hidden = nil
            s.output = try unetConv(h, w.scoped("conv_out"), b)
        }
        return s
    }

    /// The whole forward with weights from one source (no streaming).
    public func forward(_ s: State, _ w: ModuleWeights, _ b: any Backend) throws(SluiceError) -> Tensor {
        var s = s
        for i in steps.indices { s = try run(group: i, w, s, b) }
        return s.output!
    }

    var resnet: UNetResnet { UNetResnet(groups: config.normNumGroups, eps: config.normEps) }

    /// The mid block alone (resnet, Transformer2DModel, resnet) on the bottom of the U: `hidden`
    /// [1, C, h, w], `siluEmb` = SiLU(time embedding) [1, E], weights under "mid_block." in `w`. What
    /// `sluice bench block --family unet` times against diffusers' UNetMidBlock2DCrossAttn.
    public func midBlock(_ hidden: Tensor, siluEmb: Tensor, context: Tensor, _ w: ModuleWeights, _ b: any Backend) throws(SluiceError) -> Tensor {
        let mid = w.scoped("mid_block")
        var h = try resnet.forward(hidden, siluEmb: siluEmb, mid.scoped("resnets.0"), b)
        h = try transformer(level: config.levels - 1).forward(h, context: context, mid.scoped("attentions.0"), b)
        return try resnet.forward(h, siluEmb: siluEmb, mid.scoped("resnets.1"), b)
    }

    func transformer(level: Int) -> UNetTransformer {
        UNetTransformer(heads: config.attentionHeads[level], layers: config.transformerLayers[level], groups: config.normNumGroups,
                        linearProjection: config.useLinearProjection)
    }

    func checkInputs(_ s: State) throws(SluiceError) {
        let x = s.sample.shape, d = config.downscale
        guard x.rank == 4, x[0] == 1, x[1] == config.inChannels, x[2] > 0, x[3] > 0, x[2] % d == 0, x[3] % d == 0 else {
            throw .shapeMismatch(operation: "UNet sample", expected: "[1, \(config.inChannels), h, w] with h and w multiples of \(d)", found: "\(x)")
        }
        let c = s.context.shape
        guard c.rank == 2, c[0] > 0, c[1] == config.crossAttentionDim else {
            throw .shapeMismatch(operation: "UNet encoder_hidden_states", expected: "[L>0, \(config.crossAttentionDim)]", found: "\(c)")
        }
        if !config.textTimeConditioning && (s.textEmbeds != nil || s.timeIds != nil) {
            throw .invalidArgument(name: "text_embeds, time_ids", reason: "this UNet has no added conditioning (addition_embed_type null)")
        }
    }
}
