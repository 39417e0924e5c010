import SluiceBackends
import SluiceCore
import SluiceWeights

/// The AutoencoderKL encoder (for image-to-image):
///
///     x → conv_in → down_blocks (resnet × layers, then — except the last — pad right/bottom by 1 and a
///       stride-2 conv) → mid(resnet, attention, resnet) → GroupNorm → SiLU → conv_out → quant_conv?
///
/// giving the latent distribution's mean and log-variance; `encodeMean` returns the mean (what
/// `latent_dist.mode()` gives), before the pipeline's (z − shift) · scale.
public struct VAEEncoder: Sendable {
    public let config: AutoencoderKLConfig
    public init(config: AutoencoderKLConfig) { self.config = config }

    /// image [1, 3, H, W] in [−1, 1] (H, W multiples of the VAE's scale) → mean [1, latent, H/s, W/s].
    public func encodeMean(_ image: Tensor, _ w: ModuleWeights, _ b: any Backend) throws(SluiceError) -> Tensor {
        try encodeMoments(image, w, b).mean
    }

    /// The latent distribution: mean and log-variance [1, latent, H/s, W/s] each, the log-variance
    /// clamped to [−30, 20] as diffusers' DiagonalGaussianDistribution clamps it. A sample is
    /// mean + exp(logvar / 2) · noise.
    public func encodeMoments(_ image: Tensor, _ w: ModuleWeights, _ b: any Backend) throws(SluiceError) -> (mean: Tensor, logvar: Tensor) {
        try split(encodeRaw(image, w, b))
    }

    /// The same, tile by tile as diffusers' `_tiled_encode`: tiles of `tileLatent` latents (× the scale in
    /// pixels) stepping by three quarters of a tile, each encoded alone, then blended linearly over a
    /// quarter tile of latents (the raw moments, before the log-variance's clamp) and cut to the
    /// unblended part, so the peak activation memory is one tile's.
    public func encodeMomentsTiled(_ image: Tensor, tileLatent: Int, _ w: ModuleWeights, _ b: any Backend) throws(SluiceError) -> (mean: Tensor, logvar: Tensor) {
        let s = config.scale, tileSample = tileLatent * s
        let step = Int(Double(tileSample) * 0.75), blend = Int(Double(tileLatent) * 0.25), keep = tileLatent - blend
        guard step > 0, keep > 0 else { throw .invalidArgument(name: "tile size", reason: "\(tileLatent) latents is too small to tile") }
        let rows = try VAETiles.run(image, size: tileSample, step: step) { tile throws(SluiceError) in try encodeRaw(tile, w, b) }
        // Each tile's kept part follows the last (diffusers concatenates them): a tile starts `keep` latents on.
        let out = VAETiles.assemble(rows, blend: blend, keep: keep, step: keep, height: image.shape[2] / s, width: image.shape[3] / s)
        return try split(out)
    }

    /// Mean and clamped log-variance from the encoder's 2·latent channels.
    func split(_ x: Tensor) throws(SluiceError) -> (mean: Tensor, logvar: Tensor) {
        let c = config.latentChannels
        guard x.shape[1] == 2 * c else {
            throw .shapeMismatch(operation: "VAE encoder output", expected: "\(2 * c) channels (mean and log-variance)", found: "\(x.shape)")
        }
        let logvar = try x.sliced(dim: 1, c..<(2 * c)).contiguous().toFloats().map { min(max($0, -30), 20) }
        return (try x.sliced(dim: 1, 0..<c).contiguous(), Tensor(logvar, shape: [1, c, x.shape[2], x.shape[3]]))
    }

    /// The encoder and quant_conv: the moments as the network outputs them.
    func encodeRaw(_ image: Tensor, _ w: ModuleWeights, _ b: any Backend) throws(SluiceError) -> Tensor {
        let s = config.scale
        guard image.shape.rank == 4, image.shape[0] == 1, image.shape[2] % s == 0, image.shape[3] % s == 0 else {
            throw .shapeMismatch(operation: "VAE encode", expected: "[1, C, H, W] with H, W multiples of \(s)", found: "\(image.shape)")
        }
        let shared = VAEDecoder(config: config)   // resnet, attention and conv are the decoder's
        let e = w.scoped("encoder")
        var x = try shared.conv(image, e.scoped("conv_in"), b, padding: 1)
        for i in 0..<config.blockOutChannels.count {
            let down = e.scoped("down_blocks.\(i)")
            for j in 0..<config.layersPerBlock { x = try shared.resnet(x, down.scoped("resnets.\(j)"), b) }
            if i < config.blockOutChannels.count - 1 {
                let conv = down.scoped("downsamplers.0.conv")
                x = try b.conv2d(Self.padRightBottom(x), weight: conv("weight"), bias: conv.optional("bias"), stride: 2, padding: 0, groups: 1)
            }
        }
        x = try shared.resnet(x, e.scoped("mid_block.resnets.0"), b)
        if config.midBlockAddAttention { x = try shared.attention(x, e.scoped("mid_block.attentions.0"), b) }
        x = try shared.resnet(x, e.scoped("mid_block.resnets.1"), b)
        x = try b.silu(b.groupNorm(x, groups: config.normNumGroups, weight: e("conv_norm_out.weight"), bias: e("conv_norm_out.bias"), eps: 1e-6))
        x = try shared.conv(x, e.scoped("conv_out"), b, padding: 1)
        if let qw = w.optional("quant_conv.weight") {
            x = try b.conv2d(x, weight: qw, bias: w.optional("quant_conv.bias"), stride: 1, padding: 0, groups: 1)
        }
        return x
    }

    /// Zero padding of one row at the bottom and one column at the right (diffusers' Downsample2D
    /// with padding 0).
    static func padRightBottom(_ x: Tensor) throws(SluiceError) -> Tensor {
        let src = try x.dtype == .f32 ? x.contiguous() : x.converted(to: .f32)
        let n = src.shape[0], c = src.shape[1], h = src.shape[2], w = src.shape[3]
        let out = Tensor(zeros: [n, c, h + 1, w + 1], dtype: .f32)
        for plane in 0..<(n * c) { for y in 0..<h {
            (out.f32 + (plane * (h + 1) + y) * (w + 1)).update(from: src.f32 + (plane * h + y) * w, count: w)
        } }
        return out
    }
}
