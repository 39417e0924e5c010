import Foundation
import SluiceCore

/// transformer/config.json of a QwenImageTransformer2DModel (Qwen-Image: 60 layers, 24 heads × 128,
/// text features 3584 wide from Qwen2.5-VL-7B). The edit and layered variants' switches
/// (`zero_cond_t`, `use_additional_t_cond`, `use_layer3d_rope`) are refused: text to image only.
public struct QwenImageConfig: Sendable, Decodable, Equatable {
    public var patchSize = 2
    /// Packed latent channels: 16 VAE channels × 2×2.
    public var inChannels = 64
    public var outChannels = 16
    public var numLayers = 60
    public var attentionHeadDim = 128
    public var numAttentionHeads = 24
    public var jointAttentionDim = 3584
    public var axesDimsRope = [16, 56, 56]

    public var dim: Int { attentionHeadDim * numAttentionHeads }
    /// RoPE's base (diffusers' QwenEmbedRope theta).
    public static let ropeTheta: Float = 10_000

    enum CodingKeys: String, CodingKey {
        case patchSize = "patch_size", inChannels = "in_channels", outChannels = "out_channels", numLayers = "num_layers"
        case attentionHeadDim = "attention_head_dim", numAttentionHeads = "num_attention_heads", jointAttentionDim = "joint_attention_dim"
        case axesDimsRope = "axes_dims_rope", guidanceEmbeds = "guidance_embeds", zeroCondT = "zero_cond_t"
        case additionalTCond = "use_additional_t_cond", layer3DRope = "use_layer3d_rope"
    }

    public init() {}

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        patchSize = try c.decodeIfPresent(Int.self, forKey: .patchSize) ?? patchSize
        inChannels = try c.decodeIfPresent(Int.self, forKey: .inChannels) ?? inChannels
        outChannels = try c.decodeIfPresent(Int.self, forKey: .outChannels) ?? outChannels
        numLayers = try c.decodeIfPresent(Int.self, forKey: .numLayers) ?? numLayers
        attentionHeadDim = try c.decodeIfPresent(Int.self, forKey: .attentionHeadDim) ?? attentionHeadDim
        numAttentionHeads = try c.decodeIfPresent(Int.self, forKey: .numAttentionHeads) ?? numAttentionHeads
        jointAttentionDim = try c.decodeIfPresent(Int.self, forKey: .jointAttentionDim) ?? jointAttentionDim
        axesDimsRope = try c.decodeIfPresent([Int].self, forKey: .axesDimsRope) ?? axesDimsRope
        let what = "transformer/config.json"
        for (key, name) in [(CodingKeys.guidanceEmbeds, "guidance_embeds"), (.zeroCondT, "zero_cond_t"), (.additionalTCond, "use_additional_t_cond"),
                            (.layer3DRope, "use_layer3d_rope")] where try c.decodeIfPresent(Bool.self, forKey: key) == true {
            throw SluiceError.invalidArgument(name: "\(what): \(name)", reason: "true belongs to Qwen-Image's edit or layered variants; this build runs text to image")
        }
        try validate(what: what)
    }

    public func validate(what: String) throws(SluiceError) {
        guard patchSize == 2 else { throw .invalidArgument(name: "\(what): patch_size", reason: "\(patchSize): only 2 (latents packed 2×2) is supported") }
        guard inChannels == outChannels * 4 else {
            throw .invalidArgument(name: "\(what): in_channels", reason: "\(inChannels) must be 4 × out_channels \(outChannels) (2×2 packed latents)")
        }
        guard axesDimsRope.count == 3, axesDimsRope.reduce(0, +) == attentionHeadDim, axesDimsRope.allSatisfy({ $0 % 2 == 0 && $0 > 0 }) else {
            throw .invalidArgument(name: "\(what): axes_dims_rope", reason: "\(axesDimsRope) must be three even numbers summing to attention_head_dim \(attentionHeadDim)")
        }
        guard numLayers >= 0, numAttentionHeads > 0, jointAttentionDim > 0 else {
            throw .invalidArgument(name: "\(what): num_attention_heads", reason: "layers, heads and joint_attention_dim must be positive")
        }
    }
}
