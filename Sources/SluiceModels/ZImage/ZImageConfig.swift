import Foundation
import SluiceCore
import SluiceWeights

/// transformer/config.json of a ZImageTransformer2DModel.
public struct ZImageConfig: Sendable, Decodable {
    public var patchSize = 2
    public var framePatchSize = 1
    public var inChannels = 16
    public var dim = 3840
    public var nLayers = 30
    public var nRefinerLayers = 2
    public var nHeads = 30
    public var normEps: Float = 1e-5
    public var qkNorm = true
    public var capFeatDim = 2560
    public var ropeTheta: Double = 256
    public var tScale: Float = 1000
    public var axesDims = [32, 48, 48]
    public var axesLens = [1024, 512, 512]

    /// The adaLN input width: min(dim, 256) (diffusers' ADALN_EMBED_DIM).
    public var adaLNDim: Int { min(dim, 256) }
    public var headDim: Int { dim / nHeads }
    /// FeedForward hidden width: int(dim / 3 * 8).
    public var ffnDim: Int { Int(Double(dim) / 3 * 8) }
    /// Caption and image token runs are each padded to a multiple of this (diffusers' SEQ_MULTI_OF).
    public static let sequenceMultiple = 32

    enum CodingKeys: String, CodingKey {
        case allPatchSize = "all_patch_size", allFPatchSize = "all_f_patch_size", inChannels = "in_channels", dim
        case nLayers = "n_layers", nRefinerLayers = "n_refiner_layers", nHeads = "n_heads", nKVHeads = "n_kv_heads"
        case normEps = "norm_eps", qkNorm = "qk_norm", capFeatDim = "cap_feat_dim", ropeTheta = "rope_theta"
        case tScale = "t_scale", axesDims = "axes_dims", axesLens = "axes_lens", siglip = "siglip_feat_dim"
    }

    public init() {}

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        if let p = try c.decodeIfPresent([Int].self, forKey: .allPatchSize) { patchSize = p.first ?? 2 }
        if let p = try c.decodeIfPresent([Int].self, forKey: .allFPatchSize) { framePatchSize = p.first ?? 1 }
        inChannels = try c.decodeIfPresent(Int.self, forKey: .inChannels) ?? inChannels
        dim = try c.decodeIfPresent(Int.self, forKey: .dim) ?? dim
        nLayers = try c.decodeIfPresent(Int.self, forKey: .nLayers) ?? nLayers
        nRefinerLayers = try c.decodeIfPresent(Int.self, forKey: .nRefinerLayers) ?? nRefinerLayers
        nHeads = try c.decodeIfPresent(Int.self, forKey: .nHeads) ?? nHeads
        let kv = try c.decodeIfPresent(Int.self, forKey: .nKVHeads) ?? nHeads
        normEps = try c.decodeIfPresent(Float.self, forKey: .normEps) ?? normEps
        qkNorm = try c.decodeIfPresent(Bool.self, forKey: .qkNorm) ?? qkNorm
        capFeatDim = try c.decodeIfPresent(Int.self, forKey: .capFeatDim) ?? capFeatDim
        ropeTheta = try c.decodeIfPresent(Double.self, forKey: .ropeTheta) ?? ropeTheta
        tScale = try c.decodeIfPresent(Float.self, forKey: .tScale) ?? tScale
        axesDims = try c.decodeIfPresent([Int].self, forKey: .axesDims) ?? axesDims
        axesLens = try c.decodeIfPresent([Int].self, forKey: .axesLens) ?? axesLens
        // diffusers' attention uses n_heads for keys too (n_kv_heads is stored but unused).
        _ = kv
        guard dim % nHeads == 0, axesDims.reduce(0, +) == dim / nHeads, axesDims.count == 3 else {
            throw SluiceError.invalidArgument(name: "transformer/config.json",
                reason: "head dim \(dim)/\(nHeads) must equal the sum of axes_dims \(axesDims)")
        }
        guard patchSize == 2, framePatchSize == 1 else {
            throw SluiceError.invalidArgument(name: "transformer/config.json", reason: "only patch size 2×2×1 is supported")
        }
        if (try c.decodeIfPresent(Int.self, forKey: .siglip)) != nil {
            throw SluiceError.invalidArgument(name: "transformer/config.json", reason: "siglip_feat_dim (Z-Image Omni) is not supported")
        }
    }
}
