import Foundation
import SluiceCore
import SluiceWeights

/// What the VAE's key table needs from vae/config.json (a diffusers AutoencoderKL, encoder and decoder).
public struct SDVAEShapes: Sendable, Equatable, Decodable {
    public var inChannels: Int
    public var outChannels: Int
    public var blockOutChannels: [Int]
    public var layersPerBlock: Int
    public var latentChannels: Int
    public var useQuantConv: Bool
    public var usePostQuantConv: Bool
    public var midBlockAddAttention: Bool

    enum CodingKeys: String, CodingKey {
        case inChannels = "in_channels", outChannels = "out_channels", blockOutChannels = "block_out_channels"
        case layersPerBlock = "layers_per_block", latentChannels = "latent_channels", useQuantConv = "use_quant_conv"
        case usePostQuantConv = "use_post_quant_conv", midBlockAddAttention = "mid_block_add_attention"
        case downBlockTypes = "down_block_types", upBlockTypes = "up_block_types"
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        inChannels = try c.decodeIfPresent(Int.self, forKey: .inChannels) ?? 3
        outChannels = try c.decodeIfPresent(Int.self, forKey: .outChannels) ?? 3
        blockOutChannels = try c.decodeIfPresent([Int].self, forKey: .blockOutChannels) ?? [64]
        guard !blockOutChannels.isEmpty else { throw unsupportedConfig(.vae, "block_out_channels", "is empty") }
        layersPerBlock = try c.decodeIfPresent(Int.self, forKey: .layersPerBlock) ?? 1
        latentChannels = try c.decodeIfPresent(Int.self, forKey: .latentChannels) ?? 4
        useQuantConv = try c.decodeIfPresent(Bool.self, forKey: .useQuantConv) ?? true
        usePostQuantConv = try c.decodeIfPresent(Bool.self, forKey: .usePostQuantConv) ?? true
        midBlockAddAttention = try c.decodeIfPresent(Bool.self, forKey: .midBlockAddAttention) ?? true
        for (key, kind) in [(CodingKeys.downBlockTypes, "DownEncoderBlock2D"), (.upBlockTypes, "UpDecoderBlock2D")] {
            guard let types = try c.decodeIfPresent([String].self, forKey: key) else { continue }
            guard types.count == blockOutChannels.count, types.allSatisfy({ $0 == kind }) else {
                throw unsupportedConfig(.vae, key.rawValue, "\(types): \(blockOutChannels.count) × \(kind) expected")
            }
        }
    }
}

/// Every tensor of an AutoencoderKL with `c`'s shapes, in diffusers' module order, with where LDM's
/// AutoencoderKL stores it. Mirrors diffusers' `convert_ldm_vae_checkpoint` (with
/// `update_vae_resnet_ldm_to_diffusers`, `update_vae_attentions_ldm_to_diffusers` and `conv_attn_to_linear`,
/// diffusers/loaders/single_file_utils.py):
///
///     encoder.down.l.block.j / .downsample.conv   encoder.down_blocks.l.resnets.j / .downsamplers.0.conv
///     decoder.up.{n-1-l}.block.j / .upsample.conv decoder.up_blocks.l.resnets.j / .upsamplers.0.conv (LDM
///                                                 numbers the decoder's levels from the image side)
///     *.mid.block_1 / attn_1 / block_2            *.mid_block.resnets.0 / attentions.0 / resnets.1
///     *.norm_out, nin_shortcut                    *.conv_norm_out, conv_shortcut
///     attn_1.norm, q, k, v, proj_out              attentions.0.group_norm, to_q, to_k, to_v, to_out.0
///
/// The mid attention's projections are 1×1 convolutions in LDM ([C, C, 1, 1]): read as linears [C, C], the same bytes.
enum SDVAEKeyTable {
    static func specs(for c: SDVAEShapes) -> [SDTensorSpec] {
        var t = SDKeyTableBuilder()
        let channels = c.blockOutChannels, levels = channels.count, last = channels[levels - 1]

        t.conv("encoder.conv_in", "encoder.conv_in", out: channels[0], in: c.inChannels, kernel: 3)
        var width = channels[0]
        for level in 0..<levels {
            let out = channels[level]
            for j in 0..<c.layersPerBlock {
                t.vaeResnet("encoder.down_blocks.\(level).resnets.\(j)", "encoder.down.\(level).block.\(j)", in: width, out: out)
                width = out
            }
            if level < levels - 1 {
                t.conv("encoder.down_blocks.\(level).downsamplers.0.conv", "encoder.down.\(level).downsample.conv", out: out, in: out, kernel: 3)
            }
        }
        t.vaeMid("encoder", width: last, attention: c.midBlockAddAttention)
        t.norm("encoder.conv_norm_out", "encoder.norm_out", width: last)
        t.conv("encoder.conv_out", "encoder.conv_out", out: 2 * c.latentChannels, in: last, kernel: 3)

        t.conv("decoder.conv_in", "decoder.conv_in", out: last, in: c.latentChannels, kernel: 3)
        t.vaeMid("decoder", width: last, attention: c.midBlockAddAttention)
        let reversed = Array(channels.reversed())
        var previous = reversed[0]
        for level in 0..<levels {
            let out = reversed[level], ldm = "decoder.up.\(levels - 1 - level)"
            for j in 0...c.layersPerBlock {
                t.vaeResnet("decoder.up_blocks.\(level).resnets.\(j)", ldm + ".block.\(j)", in: j == 0 ? previous : out, out: out)
            }
            if level < levels - 1 {
                t.conv("decoder.up_blocks.\(level).upsamplers.0.conv", ldm + ".upsample.conv", out: out, in: out, kernel: 3)
            }
            previous = out
        }
        t.norm("decoder.conv_norm_out", "decoder.norm_out", width: channels[0])
        t.conv("decoder.conv_out", "decoder.conv_out", out: c.outChannels, in: channels[0], kernel: 3)

        if c.useQuantConv { t.conv("quant_conv", "quant_conv", out: 2 * c.latentChannels, in: 2 * c.latentChannels, kernel: 1) }
        if c.usePostQuantConv { t.conv("post_quant_conv", "post_quant_conv", out: c.latentChannels, in: c.latentChannels, kernel: 1) }
        return t.specs
    }
}

extension SDKeyTableBuilder {
    /// diffusers' ResnetBlock2D without a time embedding, as LDM's ResnetBlock (nin_shortcut for conv_shortcut).
    mutating func vaeResnet(_ key: String, _ ldm: String, in width: Int, out: Int) {
        norm(key + ".norm1", ldm + ".norm1", width: width)
        conv(key + ".conv1", ldm + ".conv1", out: out, in: width, kernel: 3)
        norm(key + ".norm2", ldm + ".norm2", width: out)
        conv(key + ".conv2", ldm + ".conv2", out: out, in: out, kernel: 3)
        if width != out { conv(key + ".conv_shortcut", ldm + ".nin_shortcut", out: out, in: width, kernel: 1) }
    }

    /// The mid block of the encoder or decoder: resnet, single-head attention, resnet.
    mutating func vaeMid(_ part: String, width: Int, attention: Bool) {
        vaeResnet(part + ".mid_block.resnets.0", part + ".mid.block_1", in: width, out: width)
        if attention {
            let key = part + ".mid_block.attentions.0", ldm = part + ".mid.attn_1"
            norm(key + ".group_norm", ldm + ".norm", width: width)
            linearFromConv1x1(key + ".to_q", ldm + ".q", out: width, in: width)
            linearFromConv1x1(key + ".to_k", ldm + ".k", out: width, in: width)
            linearFromConv1x1(key + ".to_v", ldm + ".v", out: width, in: width)
            linearFromConv1x1(key + ".to_out.0", ldm + ".proj_out", out: width, in: width)
        }
        vaeResnet(part + ".mid_block.resnets.1", part + ".mid.block_2", in: width, out: width)
    }
}
