import Foundation
import SluiceCore
import SluiceWeights

/// What the UNet's key table needs from unet/config.json (a diffusers UNet2DConditionModel): the
/// levels, their block kinds and widths, the transformer depth per level, the embeddings. Fields absent
/// take diffusers' defaults.
public struct SDUNetShapes: Sendable, Equatable, Decodable {
    public var inChannels: Int
    public var outChannels: Int
    public var blockOutChannels: [Int]
    public var layersPerBlock: Int
    /// Per down level: whether it is a CrossAttnDownBlock2D (else DownBlock2D).
    public var downCrossAttention: [Bool]
    /// Per up level, in diffusers' order (widest level first).
    public var upCrossAttention: [Bool]
    /// Transformer layers per down level; the mid block takes the last level's.
    public var transformerLayersPerBlock: [Int]
    /// Transformer layers per up level, when the config gives them (else the down levels' reversed).
    public var reverseTransformerLayersPerBlock: [Int]?
    public var crossAttentionDim: [Int]
    public var useLinearProjection: Bool
    /// SDXL's "text_time" added conditioning: add_embedding.linear_1 reads this many inputs.
    public var textTimeEmbeddingInputs: Int?
    public var timeEmbeddingDim: Int?
    public var convInKernel: Int
    public var convOutKernel: Int
    /// "default": time_emb_proj gives one vector per channel; "scale_shift": two.
    public var resnetTimeScaleShift: Bool

    enum CodingKeys: String, CodingKey {
        case inChannels = "in_channels", outChannels = "out_channels", blockOutChannels = "block_out_channels"
        case layersPerBlock = "layers_per_block", downBlockTypes = "down_block_types", upBlockTypes = "up_block_types"
        case midBlockType = "mid_block_type", transformerLayersPerBlock = "transformer_layers_per_block"
        case reverseTransformerLayersPerBlock = "reverse_transformer_layers_per_block", crossAttentionDim = "cross_attention_dim"
        case useLinearProjection = "use_linear_projection", additionEmbedType = "addition_embed_type"
        case projectionClassEmbeddingsInputDim = "projection_class_embeddings_input_dim", timeEmbeddingDim = "time_embedding_dim"
        case convInKernel = "conv_in_kernel", convOutKernel = "conv_out_kernel", resnetTimeScaleShift = "resnet_time_scale_shift"
        case classEmbedType = "class_embed_type", timeEmbeddingType = "time_embedding_type", onlyCrossAttention = "only_cross_attention"
    }

    /// An int or a list of ints (diffusers accepts both for several fields), as one value per level.
    private static func perLevel(_ c: KeyedDecodingContainer<CodingKeys>, _ key: CodingKeys, levels: Int, default value: Int) throws -> [Int] {
        if let list = try? c.decode([Int].self, forKey: key) {
            guard list.count == levels else { throw unsupportedConfig(.unet, key.rawValue, "\(list) has \(list.count) entries for \(levels) levels") }
            return list
        }
        let one = (try c.decodeIfPresent(Int?.self, forKey: key) ?? nil) ?? value
        return Array(repeating: one, count: levels)
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        inChannels = try c.decodeIfPresent(Int.self, forKey: .inChannels) ?? 4
        outChannels = try c.decodeIfPresent(Int.self, forKey: .outChannels) ?? 4
        blockOutChannels = try c.decodeIfPresent([Int].self, forKey: .blockOutChannels) ?? [320, 640, 1280, 1280]
        let levels = blockOutChannels.count
        guard levels > 0 else { throw unsupportedConfig(.unet, "block_out_channels", "is empty") }
        guard let lpb = try? c.decodeIfPresent(Int.self, forKey: .layersPerBlock) ?? 2 else {
            throw unsupportedConfig(.unet, "layers_per_block", "one count for every level is supported, not a list")
        }
        layersPerBlock = lpb
        let down = try c.decodeIfPresent([String].self, forKey: .downBlockTypes)
            ?? ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"]
        let up = try c.decodeIfPresent([String].self, forKey: .upBlockTypes)
            ?? ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]
        guard down.count == levels, up.count == levels else {
            throw unsupportedConfig(.unet, "down_block_types", "\(down.count) down and \(up.count) up blocks for \(levels) levels")
        }
        downCrossAttention = try down.map { type in
            guard type == "CrossAttnDownBlock2D" || type == "DownBlock2D" else { throw unsupportedConfig(.unet, "down_block_types", "\(type) is not supported") }
            return type == "CrossAttnDownBlock2D"
        }
        upCrossAttention = try up.map { type in
            guard type == "CrossAttnUpBlock2D" || type == "UpBlock2D" else { throw unsupportedConfig(.unet, "up_block_types", "\(type) is not supported") }
            return type == "CrossAttnUpBlock2D"
        }
        let mid = (try c.decodeIfPresent(String?.self, forKey: .midBlockType) ?? nil) ?? "UNetMidBlock2DCrossAttn"
        guard mid == "UNetMidBlock2DCrossAttn" else { throw unsupportedConfig(.unet, "mid_block_type", "\(mid) is not supported") }
        transformerLayersPerBlock = try Self.perLevel(c, .transformerLayersPerBlock, levels: levels, default: 1)
        reverseTransformerLayersPerBlock = try c.decodeIfPresent([Int]?.self, forKey: .reverseTransformerLayersPerBlock) ?? nil
        if let r = reverseTransformerLayersPerBlock, r.count != levels {
            throw unsupportedConfig(.unet, "reverse_transformer_layers_per_block", "\(r) has \(r.count) entries for \(levels) levels")
        }
        crossAttentionDim = try Self.perLevel(c, .crossAttentionDim, levels: levels, default: 1280)
        useLinearProjection = try c.decodeIfPresent(Bool.self, forKey: .useLinearProjection) ?? false
        let addition = try c.decodeIfPresent(String?.self, forKey: .additionEmbedType) ?? nil
        switch addition {
        case nil: textTimeEmbeddingInputs = nil
        case "text_time":
            guard let n = try c.decodeIfPresent(Int?.self, forKey: .projectionClassEmbeddingsInputDim) ?? nil else {
                throw unsupportedConfig(.unet, "projection_class_embeddings_input_dim", "is needed with addition_embed_type \"text_time\"")
            }
            textTimeEmbeddingInputs = n
        case let other?: throw unsupportedConfig(.unet, "addition_embed_type", "\"\(other)\" is not supported")
        }
        if let classEmbed = try c.decodeIfPresent(String?.self, forKey: .classEmbedType) ?? nil {
            throw unsupportedConfig(.unet, "class_embed_type", "\"\(classEmbed)\" is not supported")
        }
        let timeType = (try c.decodeIfPresent(String?.self, forKey: .timeEmbeddingType) ?? nil) ?? "positional"
        guard timeType == "positional" else { throw unsupportedConfig(.unet, "time_embedding_type", "\"\(timeType)\" is not supported") }
        if let only = try? c.decodeIfPresent(Bool.self, forKey: .onlyCrossAttention), only {
            throw unsupportedConfig(.unet, "only_cross_attention", "true is not supported")
        }
        timeEmbeddingDim = try c.decodeIfPresent(Int?.self, forKey: .timeEmbeddingDim) ?? nil
        convInKernel = try c.decodeIfPresent(Int.self, forKey: .convInKernel) ?? 3
        convOutKernel = try c.decodeIfPresent(Int.self, forKey: .convOutKernel) ?? 3
        let shift = (try c.decodeIfPresent(String?.self, forKey: .resnetTimeScaleShift) ?? nil) ?? "default"
        guard shift == "default" || shift == "scale_shift" else {
            throw unsupportedConfig(.unet, "resnet_time_scale_shift", "\"\(shift)\" is not supported")
        }
        resnetTimeScaleShift = shift == "scale_shift"
    }

    /// The time embedding's width: time_embedding_dim, or four times the first level's.
    public var timeEmbedWidth: Int { timeEmbeddingDim ?? 4 * blockOutChannels[0] }

    /// Transformer layers per up level, in diffusers' up order.
    public var upTransformerLayers: [Int] { reverseTransformerLayersPerBlock ?? transformerLayersPerBlock.reversed() }
}

/// Every tensor of a UNet2DConditionModel with `c`'s shapes, in diffusers' module order, with where LDM's
/// UNetModel stores it. Mirrors diffusers' `convert_ldm_unet_checkpoint` (diffusers/loaders/single_file_utils.py,
/// with `update_unet_resnet_ldm_to_diffusers` and `update_unet_attention_ldm_to_diffusers`):
///
///     input_blocks.0.0                      conv_in
///     input_blocks.{1 + L(l+1) + j}.0 / .1  down_blocks.l.resnets.j / attentions.j   (j < layers_per_block)
///     input_blocks.{(l+1)(L+1)}.0.op        down_blocks.l.downsamplers.0.conv          (all but the last level)
///     middle_block.0 / .1 / .2              mid_block.resnets.0 / attentions.0 / resnets.1
///     output_blocks.{l(L+1) + j}.0 / .1     up_blocks.l.resnets.j / attentions.j       (j ≤ layers_per_block)
///     output_blocks.{…}.1 or .2 .conv       up_blocks.l.upsamplers.0.conv (after the attention, when there is one)
///     time_embed.0/.2, label_emb.0.0/.0.2   time_embedding.linear_1/2, add_embedding.linear_1/2
///     out.0 / out.2                         conv_norm_out / conv_out
///
/// (L = layers_per_block). The transformers' own names are the same in both layouts.
enum SDUNetKeyTable {
    static func specs(for c: SDUNetShapes) -> [SDTensorSpec] {
        var t = SDKeyTableBuilder()
        let channels = c.blockOutChannels, levels = channels.count, lpb = c.layersPerBlock
        let temb = c.timeEmbedWidth
        t.conv("conv_in", "input_blocks.0.0", out: channels[0], in: c.inChannels, kernel: c.convInKernel)
        t.linear("time_embedding.linear_1", "time_embed.0", out: temb, in: channels[0])
        t.linear("time_embedding.linear_2", "time_embed.2", out: temb, in: temb)
        if let inputs = c.textTimeEmbeddingInputs {
            t.linear("add_embedding.linear_1", "label_emb.0.0", out: temb, in: inputs)
            t.linear("add_embedding.linear_2", "label_emb.0.2", out: temb, in: temb)
        }

        var input = 1
        var width = channels[0]
        for level in 0..<levels {
            let out = channels[level]
            for j in 0..<lpb {
                t.resnet("down_blocks.\(level).resnets.\(j)", "input_blocks.\(input).0", in: width, out: out, temb: temb, c)
                width = out
                if c.downCrossAttention[level] {
                    t.transformer("down_blocks.\(level).attentions.\(j)", "input_blocks.\(input).1", width: out,
                                  depth: c.transformerLayersPerBlock[level], cross: c.crossAttentionDim[level], c)
                }
                input += 1
            }
            if level < levels - 1 {
                t.conv("down_blocks.\(level).downsamplers.0.conv", "input_blocks.\(input).0.op", out: out, in: out, kernel: 3)
                input += 1
            }
        }

        let last = channels[levels - 1]
        t.resnet("mid_block.resnets.0", "middle_block.0", in: last, out: last, temb: temb, c)
        t.transformer("mid_block.attentions.0", "middle_block.1", width: last, depth: c.transformerLayersPerBlock[levels - 1],
                      cross: c.crossAttentionDim[levels - 1], c)
        t.resnet("mid_block.resnets.1", "middle_block.2", in: last, out: last, temb: temb, c)

        // Up level l's resnets take the previous level's output (or their own), plus the skip from the
        // matching down resnet; the last one's skip comes from the level below (diffusers' UNet2DConditionModel).
        let reversed = Array(channels.reversed())
        let upCross = Array(c.crossAttentionDim.reversed())
        var output = 0
        var previous = reversed[0]
        for level in 0..<levels {
            let out = reversed[level]
            let below = reversed[min(level + 1, levels - 1)]
            for j in 0...lpb {
                let skip = j == lpb ? below : out
                let resnetIn = (j == 0 ? previous : out) + skip
                t.resnet("up_blocks.\(level).resnets.\(j)", "output_blocks.\(output).0", in: resnetIn, out: out, temb: temb, c)
                if c.upCrossAttention[level] {
                    t.transformer("up_blocks.\(level).attentions.\(j)", "output_blocks.\(output).1", width: out,
                                  depth: c.upTransformerLayers[level], cross: upCross[level], c)
                }
                if j == lpb && level < levels - 1 {
                    let slot = c.upCrossAttention[level] ? 2 : 1
                    t.conv("up_blocks.\(level).upsamplers.0.conv", "output_blocks.\(output).\(slot).conv", out: out, in: out, kernel: 3)
                }
                output += 1
            }
            previous = out
        }

        t.norm("conv_norm_out", "out.0", width: channels[0])
        t.conv("conv_out", "out.2", out: c.outChannels, in: channels[0], kernel: c.convOutKernel)
        return t.specs
    }
}

extension SDKeyTableBuilder {
    /// diffusers' ResnetBlock2D as LDM's ResBlock: in_layers (GroupNorm, SiLU, conv), emb_layers (SiLU,
    /// linear), out_layers (GroupNorm, SiLU, dropout, conv), skip_connection when the width changes.
    mutating func resnet(_ key: String, _ ldm: String, in width: Int, out: Int, temb: Int, _ c: SDUNetShapes) {
        norm(key + ".norm1", ldm + ".in_layers.0", width: width)
        conv(key + ".conv1", ldm + ".in_layers.2", out: out, in: width, kernel: 3)
        linear(key + ".time_emb_proj", ldm + ".emb_layers.1", out: c.resnetTimeScaleShift ? 2 * out : out, in: temb)
        norm(key + ".norm2", ldm + ".out_layers.0", width: out)
        conv(key + ".conv2", ldm + ".out_layers.3", out: out, in: out, kernel: 3)
        if width != out { conv(key + ".conv_shortcut", ldm + ".skip_connection", out: out, in: width, kernel: 1) }
    }

    /// diffusers' Transformer2DModel as LDM's SpatialTransformer (the same names below the block): GroupNorm,
    /// proj_in (a linear, or a 1×1 convolution), `depth` BasicTransformerBlocks (self-attention, cross-attention
    /// over `cross`-wide text, GEGLU feed-forward 4× wide), proj_out.
    mutating func transformer(_ key: String, _ ldm: String, width: Int, depth: Int, cross: Int, _ c: SDUNetShapes) {
        norm(key + ".norm", ldm + ".norm", width: width)
        projection(key + ".proj_in", ldm + ".proj_in", width: width, linear: c.useLinearProjection)
        for j in 0..<depth {
            let k = key + ".transformer_blocks.\(j)", l = ldm + ".transformer_blocks.\(j)"
            norm(k + ".norm1", l + ".norm1", width: width)
            attention(k + ".attn1", l + ".attn1", width: width, context: width)
            norm(k + ".norm2", l + ".norm2", width: width)
            attention(k + ".attn2", l + ".attn2", width: width, context: cross)
            norm(k + ".norm3", l + ".norm3", width: width)
            linear(k + ".ff.net.0.proj", l + ".ff.net.0.proj", out: 8 * width, in: width)
            linear(k + ".ff.net.2", l + ".ff.net.2", out: width, in: 4 * width)
        }
        projection(key + ".proj_out", ldm + ".proj_out", width: width, linear: c.useLinearProjection)
    }

    private mutating func projection(_ key: String, _ ldm: String, width: Int, linear isLinear: Bool) {
        if isLinear { linear(key, ldm, out: width, in: width) } else { conv(key, ldm, out: width, in: width, kernel: 1) }
    }

    /// q, k, v without bias (k and v read the context), the output projection with one.
    private mutating func attention(_ key: String, _ ldm: String, width: Int, context: Int) {
        linear(key + ".to_q", ldm + ".to_q", out: width, in: width, bias: false)
        linear(key + ".to_k", ldm + ".to_k", out: width, in: context, bias: false)
        linear(key + ".to_v", ldm + ".to_v", out: width, in: context, bias: false)
        linear(key + ".to_out.0", ldm + ".to_out.0", out: width, in: width)
    }
}
