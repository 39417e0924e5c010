import Foundation
import SluiceBackends
import SluiceCore
import SluiceWeights

/// vae/config.json of a diffusers AutoencoderKL (SD1.5, SDXL, FLUX, Z-Image share this family).
public struct AutoencoderKLConfig: Sendable, Decodable {
    public var blockOutChannels: [Int]
    public var layersPerBlock: Int
    public var latentChannels: Int
    public var outChannels: Int
    public var normNumGroups: Int
    public var sampleSize: Int
    public var scalingFactor: Float
    public var shiftFactor: Float
    public var usePostQuantConv: Bool
    public var midBlockAddAttention: Bool

    /// Pixels per latent: 2^(levels − 1).
    public var scale: Int { 1 << (blockOutChannels.count - 1) }

    enum CodingKeys: String, CodingKey {
        case blockOutChannels = "block_out_channels", layersPerBlock = "layers_per_block", latentChannels = "latent_channels"
        case outChannels = "out_channels", normNumGroups = "norm_num_groups", sampleSize = "sample_size"
        case scalingFactor = "scaling_factor", shiftFactor = "shift_factor", usePostQuantConv = "use_post_quant_conv"
        case midBlockAddAttention = "mid_block_add_attention", upBlockTypes = "up_block_types"
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        blockOutChannels = try c.decode([Int].self, forKey: .blockOutChannels)
        layersPerBlock = try c.decodeIfPresent(Int.self, forKey: .layersPerBlock) ?? 1
        latentChannels = try c.decodeIfPresent(Int.self, forKey: .latentChannels) ?? 4
        outChannels = try c.decodeIfPresent(Int.self, forKey: .outChannels) ?? 3
        normNumGroups = try c.decodeIfPresent(Int.self, forKey: .normNumGroups) ?? 32
        sampleSize = try c.decodeIfPresent(Int.self, forKey: .sampleSize) ?? 512
        scalingFactor = try c.decodeIfPresent(Float.self, forKey: .scalingFactor) ?? 0.18215
        shiftFactor = (try c.decodeIfPresent(Float?.self, forKey: .shiftFactor) ?? nil) ?? 0
        usePostQuantConv = try c.decodeIfPresent(Bool.self, forKey: .usePostQuantConv) ?? true
        midBlockAddAttention = try c.decodeIfPresent(Bool.self, forKey: .midBlockAddAttention) ?? true
        if let types = try c.decodeIfPresent([String].self, forKey: .upBlockTypes), types.contains(where: { $0 != "UpDecoderBlock2D" }) {
            throw SluiceError.invalidArgument(name: "vae/config.json: up_block_types", reason: "only UpDecoderBlock2D is supported, found \(types)")
        }
        guard !blockOutChannels.isEmpty, blockOutChannels.allSatisfy({ $0 % normNumGroups == 0 }) else {
            throw SluiceError.invalidArgument(name: "vae/config.json", reason: "block_out_channels \(blockOutChannels) must be multiples of norm_num_groups \(normNumGroups)")
        }
    }
}

/// The AutoencoderKL decoder:
///
///     z → post_quant_conv? → conv_in → mid(resnet, attention, resnet)
///       → up_blocks (resnet × (layers+1), nearest 2× + conv except the last) → GroupNorm → SiLU → conv_out
///
/// `decode` takes latents already unscaled (z / scaling_factor + shift_factor); `decodeTiled` runs it
/// tile by tile with diffusers' overlap (25%) and linear blending, so the peak activation memory is that
/// of one tile.
public struct VAEDecoder: Sendable {
    public let config: AutoencoderKLConfig
    public init(config: AutoencoderKLConfig) { self.config = config }

    /// z [1, latent, h, w] → image [1, out, h·s, w·s] in about [−1, 1].
    public func decode(_ z: Tensor, _ w: ModuleWeights, _ b: any Backend) throws(SluiceError) -> Tensor {
        guard z.shape.rank == 4, z.shape[0] == 1, z.shape[1] == config.latentChannels else {
            throw .shapeMismatch(operation: "VAE decode", expected: "[1, \(config.latentChannels), h, w]", found: "\(z.shape)")
        }
        var x = z
        if config.usePostQuantConv, let pw = w.optional("post_quant_conv.weight") {
            x = try b.conv2d(x, weight: pw, bias: w.optional("post_quant_conv.bias"), stride: 1, padding: 0, groups: 1)
        }
        let d = w.scoped("decoder")
        x = try conv(x, d.scoped("conv_in"), b, padding: 1)
        x = try resnet(x, d.scoped("mid_block.resnets.0"), b)
        if config.midBlockAddAttention { x = try attention(x, d.scoped("mid_block.attentions.0"), b) }
        x = try resnet(x, d.scoped("mid_block.resnets.1"), b)
        for i in 0..<config.blockOutChannels.count {
            let up = d.scoped("up_blocks.\(i)")
            for j in 0...config.layersPerBlock { x = try resnet(x, up.scoped("resnets.\(j)"), b) }
            if i < config.blockOutChannels.count - 1 {
                x = try conv(b.upsampleNearest2x(x), up.scoped("upsamplers.0.conv"), b, padding: 1)
            }
        }
        x = try b.silu(b.groupNorm(x, groups: config.normNumGroups, weight: d("conv_norm_out.weight"), bias: d("conv_norm_out.bias"), eps: 1e-6))
        return try conv(x, d.scoped("conv_out"), b, padding: 1)
    }

    /// Tiles of `tileLatent` latents overlapping by a quarter; each decoded alone, then blended
    /// linearly over the overlap (the top/left neighbour fades out as the tile fades in), as diffusers'
    /// `tiled_decode` does.
    public func decodeTiled(_ z: Tensor, tileLatent: Int, _ w: ModuleWeights, _ b: any Backend) throws(SluiceError) -> Tensor {
        let h = z.shape[2], wd = z.shape[3], s = config.scale
        let tileSample = tileLatent * s
        let step = Int(Double(tileLatent) * 0.75), blend = Int(Double(tileSample) * 0.25), keep = tileSample - blend
        guard step > 0 else { throw .invalidArgument(name: "tile size", reason: "\(tileLatent) latents is too small to tile") }
        let rows = try VAETiles.run(z, size: tileLatent, step: step) { tile throws(SluiceError) in try decode(tile, w, b) }
        // Each tile's kept part at its own place in the image.
        return VAETiles.assemble(rows, blend: blend, keep: keep, step: step * s, height: h * s, width: wd * s)
    }

    func conv(_ x: Tensor, _ w: ModuleWeights, _ b: any Backend, padding: Int) throws(SluiceError) -> Tensor {
        try b.conv2d(x, weight: w("weight"), bias: w.optional("bias"), stride: 1, padding: padding, groups: 1)
    }

    /// GroupNorm → SiLU → conv → GroupNorm → SiLU → conv, plus the input (1×1 conv when channels change).
    func resnet(_ x: Tensor, _ w: ModuleWeights, _ b: any Backend) throws(SluiceError) -> Tensor {
        let g = config.normNumGroups
        var h = try b.silu(b.groupNorm(x, groups: g, weight: w("norm1.weight"), bias: w("norm1.bias"), eps: 1e-6))
        h = try conv(h, w.scoped("conv1"), b, padding: 1)
        h = try b.silu(b.groupNorm(h, groups: g, weight: w("norm2.weight"), bias: w("norm2.bias"), eps: 1e-6))
        h = try conv(h, w.scoped("conv2"), b, padding: 1)
        let shortcut = w.optional("conv_shortcut.weight") != nil ? try conv(x, w.scoped("conv_shortcut"), b, padding: 0) : x
        return try b.add(shortcut, h)
    }

    /// Single-head self-attention over the h·w positions, on group-normed features, plus the input.
    func attention(_ x: Tensor, _ w: ModuleWeights, _ b: any Backend) throws(SluiceError) -> Tensor {
        let C = x.shape[1], H = x.shape[2], W = x.shape[3], L = H * W
        let n = try b.groupNorm(x, groups: config.normNumGroups, weight: w("group_norm.weight"), bias: w("group_norm.bias"), eps: 1e-6)
        let tokens = try b.contiguous(n.reshaped([C, L]).permuted([1, 0]))          // [L, C]
        func proj(_ name: String) throws(SluiceError) -> Tensor {
            try b.linear(tokens, weight: w("\(name).weight"), bias: w("\(name).bias")).reshaped([1, 1, L, C])
        }
        let o = try b.attention(q: proj("to_q"), k: proj("to_k"), v: proj("to_v"), mask: nil, scale: nil).reshaped([L, C])
        let out = try b.linear(o, weight: w("to_out.0.weight"), bias: w("to_out.0.bias"))
        let back = try b.contiguous(out.permuted([1, 0])).reshaped([1, C, H, W])
        return try b.add(x, back)
    }
}
