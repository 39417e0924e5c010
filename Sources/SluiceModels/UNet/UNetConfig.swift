import Foundation
import SluiceCore

/// unet/config.json of a diffusers UNet2DConditionModel, for the two architectures it takes in Stable
/// Diffusion 1.x/2.x and SDXL: CrossAttnDownBlock2D / DownBlock2D levels, UNetMidBlock2DCrossAttn, their
/// mirrored up blocks, and SDXL's "text_time" added conditioning. Anything else is refused with the
/// field's name (diffusers' `UNet2DConditionModel.__init__` accepts far more).
public struct UNetConfig: Sendable, Decodable, Equatable {
    public var inChannels = 4
    public var outChannels = 4
    public var blockOutChannels = [320, 640, 1280, 1280]
    /// Per level, down order: whether the down block is a CrossAttnDownBlock2D (else DownBlock2D).
    public var downHasAttention = [true, true, true, false]
    /// Per up block (up order, deepest first): whether it is a CrossAttnUpBlock2D (else UpBlock2D).
    public var upHasAttention = [false, true, true, true]
    public var layersPerBlock = 2
    /// Attention heads per level, down order (diffusers' num_attention_heads, or attention_head_dim
    /// when that is null: the historic naming in SD's configs, where "head dim" 8 means 8 heads).
    public var attentionHeads = [8, 8, 8, 8]
    /// Transformer blocks per Transformer2DModel, per level in down order (the up blocks and the mid
    /// block use the same list reversed / its last entry, as diffusers does).
    public var transformerLayers = [1, 1, 1, 1]
    public var crossAttentionDim = 768
    /// false: proj_in/proj_out are 1×1 convolutions (SD1.5); true: linears (SD2, SDXL).
    public var useLinearProjection = false
    public var normNumGroups = 32
    public var normEps: Float = 1e-5
    public var flipSinToCos = true
    public var freqShift: Float = 0
    public var timeEmbeddingDim: Int?
    /// SDXL: text_embeds and the six size/crop ids are embedded and added to the time embedding.
    public var textTimeConditioning = false
    public var additionTimeEmbedDim = 0
    public var projectionClassEmbeddingsInputDim = 0
    /// Attention computed in f32 in diffusers; ours always is, so it changes nothing here.
    public var upcastAttention = false
    public var convInKernel = 3
    public var convOutKernel = 3

    public var levels: Int { blockOutChannels.count }
    /// The time embedding's width (4 × the first level's channels unless the config says).
    public var timeEmbedDim: Int { timeEmbeddingDim ?? 4 * blockOutChannels[0] }
    /// The latents' side must be a multiple of this (one 2× downsampler per level but the last).
    public var downscale: Int { 1 << (levels - 1) }

    /// Up block `i`'s level in down order.
    public func level(up i: Int) -> Int { levels - 1 - i }

    public init() {}

    enum CodingKeys: String, CodingKey, CaseIterable {
        case inChannels = "in_channels", outChannels = "out_channels", blockOutChannels = "block_out_channels"
        case downBlockTypes = "down_block_types", upBlockTypes = "up_block_types", midBlockType = "mid_block_type"
        case layersPerBlock = "layers_per_block", attentionHeadDim = "attention_head_dim", numAttentionHeads = "num_attention_heads"
        case transformerLayersPerBlock = "transformer_layers_per_block", crossAttentionDim = "cross_attention_dim"
        case useLinearProjection = "use_linear_projection", normNumGroups = "norm_num_groups", normEps = "norm_eps"
        case flipSinToCos = "flip_sin_to_cos", freqShift = "freq_shift", timeEmbeddingDim = "time_embedding_dim"
        case additionEmbedType = "addition_embed_type", additionTimeEmbedDim = "addition_time_embed_dim"
        case projectionClassEmbeddingsInputDim = "projection_class_embeddings_input_dim", upcastAttention = "upcast_attention"
        case convInKernel = "conv_in_kernel", convOutKernel = "conv_out_kernel"
        // Fields that must keep diffusers' default (SD and SDXL do).
        case classEmbedType = "class_embed_type", numClassEmbeds = "num_class_embeds", encoderHidDim = "encoder_hid_dim"
        case encoderHidDimType = "encoder_hid_dim_type", timeCondProjDim = "time_cond_proj_dim"
        case timeEmbeddingActFn = "time_embedding_act_fn", timestepPostAct = "timestep_post_act"
        case crossAttentionNorm = "cross_attention_norm", reverseTransformerLayersPerBlock = "reverse_transformer_layers_per_block"
        case actFn = "act_fn", timeEmbeddingType = "time_embedding_type", resnetTimeScaleShift = "resnet_time_scale_shift"
        case attentionType = "attention_type", centerInputSample = "center_input_sample"
        case dualCrossAttention = "dual_cross_attention", resnetSkipTimeAct = "resnet_skip_time_act"
        case classEmbeddingsConcat = "class_embeddings_concat", midBlockOnlyCrossAttention = "mid_block_only_cross_attention"
        case onlyCrossAttention = "only_cross_attention", downsamplePadding = "downsample_padding"
        case midBlockScaleFactor = "mid_block_scale_factor", resnetOutScaleFactor = "resnet_out_scale_factor"
    }

    static let file = "unet/config.json"

    static func invalid(_ key: CodingKeys, _ reason: String) -> SluiceError {
        .invalidArgument(name: "\(file): \(key.stringValue)", reason: reason)
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        func value<T: Decodable>(_ type: T.Type, _ key: CodingKeys) throws -> T? {
            do { return try c.decodeIfPresent(T.self, forKey: key) } catch let e as SluiceError { throw e } catch {
                throw Self.invalid(key, "expected \(T.self == Int.self ? "an integer" : "\(T.self)")")
            }
        }
        /// An integer, or one per level (diffusers accepts both for these fields).
        func perLevel(_ key: CodingKeys, count: Int) throws -> [Int]? {
            if (try? c.decodeNil(forKey: key)) ?? true { return nil }
            if let one = try? c.decode(Int.self, forKey: key) { return [Int](repeating: one, count: count) }
            guard let list = try? c.decode([Int].self, forKey: key) else {
                throw Self.invalid(key, "expected an integer or a list of integers, one per block")
            }
            guard list.count == count else { throw Self.invalid(key, "\(list.count) entries for \(count) blocks") }
            return list
        }

        inChannels = try value(Int.self, .inChannels) ?? inChannels
        outChannels = try value(Int.self, .outChannels) ?? outChannels
        blockOutChannels = try value([Int].self, .blockOutChannels) ?? blockOutChannels
        let n = blockOutChannels.count
        guard n > 0, blockOutChannels.allSatisfy({ $0 > 0 }) else { throw Self.invalid(.blockOutChannels, "must be positive widths, found \(blockOutChannels)") }

        func types(_ key: CodingKeys, cross: String, plain: String) throws -> [Bool]? {
            guard let t = try value([String].self, key) else { return nil }
            guard t.count == n else { throw Self.invalid(key, "\(t.count) blocks for \(n) block_out_channels") }
            return try t.map { s throws in
                guard s == cross || s == plain else { throw Self.invalid(key, "\(s) is not supported (only \(cross) and \(plain))") }
                return s == cross
            }
        }
        downHasAttention = try types(.downBlockTypes, cross: "CrossAttnDownBlock2D", plain: "DownBlock2D") ?? downHasAttention
        upHasAttention = try types(.upBlockTypes, cross: "CrossAttnUpBlock2D", plain: "UpBlock2D") ?? upHasAttention
        guard downHasAttention.count == n else { throw Self.invalid(.downBlockTypes, "\(downHasAttention.count) blocks for \(n) block_out_channels") }
        guard upHasAttention.count == n else { throw Self.invalid(.upBlockTypes, "\(upHasAttention.count) blocks for \(n) block_out_channels") }
        if c.contains(.midBlockType) {
            let mid = try value(String.self, .midBlockType)
            guard mid == "UNetMidBlock2DCrossAttn" else {
                throw Self.invalid(.midBlockType, "\(mid ?? "null") is not supported (only UNetMidBlock2DCrossAttn)")
            }
        }

        if let l = try perLevel(.layersPerBlock, count: n) {
            guard Set(l).count == 1, l[0] > 0 else { throw Self.invalid(.layersPerBlock, "must be one positive count for every block, found \(l)") }
            layersPerBlock = l[0]
        }
        // diffusers: num_attention_heads = num_attention_heads or attention_head_dim.
        attentionHeads = try perLevel(.numAttentionHeads, count: n) ?? perLevel(.attentionHeadDim, count: n) ?? [Int](repeating: 8, count: n)
        transformerLayers = try perLevel(.transformerLayersPerBlock, count: n) ?? [Int](repeating: 1, count: n)
        guard transformerLayers.allSatisfy({ $0 > 0 }) else { throw Self.invalid(.transformerLayersPerBlock, "must be positive, found \(transformerLayers)") }
        if let dims = try perLevel(.crossAttentionDim, count: n) {
            guard Set(dims).count == 1 else { throw Self.invalid(.crossAttentionDim, "one width per block (\(dims)) is not supported") }
            crossAttentionDim = dims[0]
        }
        useLinearProjection = try value(Bool.self, .useLinearProjection) ?? useLinearProjection
        normNumGroups = try value(Int.self, .normNumGroups) ?? normNumGroups
        normEps = try value(Float.self, .normEps) ?? normEps
        flipSinToCos = try value(Bool.self, .flipSinToCos) ?? flipSinToCos
        freqShift = try value(Float.self, .freqShift) ?? freqShift
        timeEmbeddingDim = try value(Int.self, .timeEmbeddingDim)
        upcastAttention = try value(Bool.self, .upcastAttention) ?? upcastAttention
        convInKernel = try value(Int.self, .convInKernel) ?? convInKernel
        convOutKernel = try value(Int.self, .convOutKernel) ?? convOutKernel

        switch try value(String.self, .additionEmbedType) {
        case nil: textTimeConditioning = false
        case "text_time": textTimeConditioning = true
        case let other?: throw Self.invalid(.additionEmbedType, "\(other) is not supported (only \"text_time\" or null)")
        }
        if textTimeConditioning {
            guard let d = try value(Int.self, .additionTimeEmbedDim), d > 0 else {
                throw Self.invalid(.additionTimeEmbedDim, "a positive width is needed with addition_embed_type \"text_time\"")
            }
            guard let p = try value(Int.self, .projectionClassEmbeddingsInputDim), p > 6 * d else {
                throw Self.invalid(.projectionClassEmbeddingsInputDim, "must exceed 6 × addition_time_embed_dim with addition_embed_type \"text_time\"")
            }
            additionTimeEmbedDim = d
            projectionClassEmbeddingsInputDim = p
        }

        // Fields this implementation does not model: each must be absent or keep diffusers' default.
        for key in [CodingKeys.classEmbedType, .numClassEmbeds, .encoderHidDim, .encoderHidDimType, .timeCondProjDim, .timeEmbeddingActFn,
                    .timestepPostAct, .crossAttentionNorm, .reverseTransformerLayersPerBlock, .midBlockOnlyCrossAttention] {
            guard c.contains(key), !(try c.decodeNil(forKey: key)) else { continue }
            if key == .midBlockOnlyCrossAttention, (try? c.decode(Bool.self, forKey: key)) == false { continue }
            throw Self.invalid(key, "is not supported (must be null)")
        }
        for (key, want) in [(CodingKeys.actFn, "silu"), (.timeEmbeddingType, "positional"), (.resnetTimeScaleShift, "default"), (.attentionType, "default")] {
            if let v = try value(String.self, key), v != want { throw Self.invalid(key, "\(v) is not supported (only \(want))") }
        }
        for key in [CodingKeys.centerInputSample, .dualCrossAttention, .resnetSkipTimeAct, .classEmbeddingsConcat] {
            if try value(Bool.self, key) == true { throw Self.invalid(key, "true is not supported") }
        }
        if c.contains(.onlyCrossAttention), !(try c.decodeNil(forKey: .onlyCrossAttention)) {
            let flags = (try? c.decode(Bool.self, forKey: .onlyCrossAttention)).map { [$0] } ?? (try? c.decode([Bool].self, forKey: .onlyCrossAttention))
            guard let flags, !flags.contains(true) else { throw Self.invalid(.onlyCrossAttention, "true is not supported") }
        }
        if let p = try value(Int.self, .downsamplePadding), p != 1 { throw Self.invalid(.downsamplePadding, "\(p) is not supported (only 1)") }
        for key in [CodingKeys.midBlockScaleFactor, .resnetOutScaleFactor] {
            if let s = try value(Double.self, key), s != 1 { throw Self.invalid(key, "\(s) is not supported (only 1)") }
        }
        try validate()
    }

    /// The shape rules the forward relies on.
    public func validate() throws(SluiceError) {
        let n = levels
        guard n > 0, downHasAttention.count == n, upHasAttention.count == n, attentionHeads.count == n, transformerLayers.count == n else {
            throw Self.invalid(.blockOutChannels, "every per-block list must have one entry per level (\(n))")
        }
        guard normNumGroups > 0, blockOutChannels.allSatisfy({ $0 % normNumGroups == 0 }) else {
            throw Self.invalid(.normNumGroups, "\(normNumGroups) must divide every block_out_channels \(blockOutChannels)")
        }
        for i in 0..<n where downHasAttention[i] || upHasAttention[n - 1 - i] || i == n - 1 {
            guard attentionHeads[i] > 0, blockOutChannels[i] % attentionHeads[i] == 0 else {
                throw Self.invalid(.attentionHeadDim, "\(attentionHeads[i]) heads do not divide \(blockOutChannels[i]) channels (block \(i))")
            }
        }
        guard inChannels > 0, outChannels > 0 else { throw Self.invalid(.inChannels, "must be positive") }
        guard crossAttentionDim > 0 else { throw Self.invalid(.crossAttentionDim, "must be positive") }
        guard timeEmbedDim > 0 else { throw Self.invalid(.timeEmbeddingDim, "must be positive") }
        guard convInKernel % 2 == 1 else { throw Self.invalid(.convInKernel, "\(convInKernel) must be odd") }
        guard convOutKernel % 2 == 1 else { throw Self.invalid(.convOutKernel, "\(convOutKernel) must be odd") }
    }
}
