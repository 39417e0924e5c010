import Foundation
import SluiceCore
import SluiceWeights

/// transformer/config.json of a FluxTransformer2DModel (FLUX.1 dev and schnell share the shapes;
/// schnell has no guidance embedder).
public struct FluxConfig: Sendable, Decodable, Equatable {
    public var patchSize = 1
    /// Packed latent channels: 16 VAE channels × 2×2.
    public var inChannels = 64
    public var outChannels: Int?
    public var numLayers = 19
    public var numSingleLayers = 38
    public var attentionHeadDim = 128
    public var numAttentionHeads = 24
    /// T5's width.
    public var jointAttentionDim = 4096
    /// CLIP's pooled width.
    public var pooledProjectionDim = 768
    public var guidanceEmbeds = false
    public var axesDimsRope = [16, 56, 56]

    public var dim: Int { attentionHeadDim * numAttentionHeads }
    public var headDim: Int { attentionHeadDim }
    public var mlpDim: Int { dim * 4 }
    public var out: Int { outChannels ?? inChannels }
    /// RoPE's base (diffusers' FluxPosEmbed theta).
    public static let ropeTheta: Double = 10_000

    enum CodingKeys: String, CodingKey {
        case patchSize = "patch_size", inChannels = "in_channels", outChannels = "out_channels", numLayers = "num_layers"
        case numSingleLayers = "num_single_layers", attentionHeadDim = "attention_head_dim", numAttentionHeads = "num_attention_heads"
        case jointAttentionDim = "joint_attention_dim", pooledProjectionDim = "pooled_projection_dim"
        case guidanceEmbeds = "guidance_embeds", axesDimsRope = "axes_dims_rope"
    }

    public init() {}

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        patchSize = try c.decodeIfPresent(Int.self, forKey: .patchSize) ?? patchSize
        inChannels = try c.decodeIfPresent(Int.self, forKey: .inChannels) ?? inChannels
        outChannels = try c.decodeIfPresent(Int.self, forKey: .outChannels)
        numLayers = try c.decodeIfPresent(Int.self, forKey: .numLayers) ?? numLayers
        numSingleLayers = try c.decodeIfPresent(Int.self, forKey: .numSingleLayers) ?? numSingleLayers
        attentionHeadDim = try c.decodeIfPresent(Int.self, forKey: .attentionHeadDim) ?? attentionHeadDim
        numAttentionHeads = try c.decodeIfPresent(Int.self, forKey: .numAttentionHeads) ?? numAttentionHeads
        jointAttentionDim = try c.decodeIfPresent(Int.self, forKey: .jointAttentionDim) ?? jointAttentionDim
        pooledProjectionDim = try c.decodeIfPresent(Int.self, forKey: .pooledProjectionDim) ?? pooledProjectionDim
        guidanceEmbeds = try c.decodeIfPresent(Bool.self, forKey: .guidanceEmbeds) ?? guidanceEmbeds
        axesDimsRope = try c.decodeIfPresent([Int].self, forKey: .axesDimsRope) ?? axesDimsRope
        try validate(what: "transformer/config.json")
    }

    public func validate(what: String) throws(SluiceError) {
        guard patchSize == 1 else { throw .invalidArgument(name: what, reason: "patch_size \(patchSize): only 1 (latents packed 2×2 by the pipeline) is supported") }
        guard axesDimsRope.count == 3, axesDimsRope.reduce(0, +) == attentionHeadDim, axesDimsRope.allSatisfy({ $0 % 2 == 0 }) else {
            throw .invalidArgument(name: what, reason: "axes_dims_rope \(axesDimsRope) must be three even numbers summing to attention_head_dim \(attentionHeadDim)")
        }
        guard inChannels % 4 == 0, inChannels > 0, numLayers >= 0, numSingleLayers >= 0, numAttentionHeads > 0 else {
            throw .invalidArgument(name: what, reason: "in_channels must be a positive multiple of 4 (packed 2×2 latents)")
        }
    }
}
