import SluiceBackends
import SluiceCore
import SluiceWeights

/// diffusers' AutoencoderKLQwenImage (autoencoder_kl_qwenimage.py) for images: one frame, T = 1, where every
/// causal 3-D convolution is a 2-D one (QwenImageVAEBlocks.swift says why). The decoder:
///
///     z → post_quant_conv → conv_in → mid(resnet, attention, resnet)
///       → up_blocks (resnet × (num_res_blocks + 1), then — except the last — nearest 2× and a 3×3 conv
///         halving the channels) → RMS norm → SiLU → conv_out → clamp to [−1, 1]
///
/// and the encoder:
///
///     x → conv_in → down_blocks (resnet × num_res_blocks, then — except the last — pad right/bottom by 1
///       and a stride-2 3×3 conv) → mid(resnet, attention, resnet) → RMS norm → SiLU → conv_out → quant_conv
///
/// Weights are read under the checkpoint's keys (`decoder.up_blocks.0.resnets.1.conv1.weight`, …) from one
/// ModuleWeights holding the whole VAE. A frame is [1, C, h, w]; [1, C, 1, h, w] (diffusers' layout, one
/// frame) is taken too. Tiled decode and encode: QwenImageVAE+Tiling.swift.
public struct QwenImageVAE: Sendable {
    public let config: QwenImageVAEConfig
    public init(config: QwenImageVAEConfig) { self.config = config }

    /// AutoencoderKLQwenImage.decode(z).sample for one frame: z [1, z_dim, h, w] (or [1, z_dim, 1, h, w]),
    /// already denormalized (`config.denormalize`), → image [1, 3, h·s, w·s] clamped to [−1, 1] as `_decode`
    /// clamps it (s = `config.scale`, 8 for Qwen-Image).
    public func decode(_ z: Tensor, _ w: ModuleWeights, _ b: any Backend) throws(SluiceError) -> Tensor {
        let x = try decodeUnclamped(z, w, b)
        let values = try x.toFloats().map { min(max($0, -1), 1) }
        return Tensor(values, shape: x.shape)
    }

    /// The decoder's output before `_decode`'s clamp (diffusers' `decoder(post_quant_conv(z))` for the first frame).
    public func decodeUnclamped(_ z: Tensor, _ w: ModuleWeights, _ b: any Backend) throws(SluiceError) -> Tensor {
        let levels = config.dimMult.count
        var x = try conv(frame(z, channels: config.zDim, operation: "Qwen-Image VAE decode"), w.scoped("post_quant_conv"), b)
        let d = w.scoped("decoder")
        x = try conv(x, d.scoped("conv_in"), b)
        x = try midBlock(x, d.scoped("mid_block"), b)
        for i in 0..<levels {
            let up = d.scoped("up_blocks.\(i)")
            for j in 0...config.numResBlocks { x = try resnet(x, up.scoped("resnets.\(j)"), b) }
            // upsample2d and upsample3d alike (QwenImageResample.forward): nearest-exact 2× (the same as nearest
            // at an integer factor), Conv2d dim → dim/2; upsample3d's time_conv is skipped for the first frame.
            if i < levels - 1 { x = try conv(b.upsampleNearest2x(x), up.scoped("upsamplers.0.resample.1"), b) }
        }
        x = try b.silu(norm(x, gamma: d("norm_out.gamma"), b))
        return try conv(x, d.scoped("conv_out"), b)
    }

    /// `encode(x).latent_dist` for one frame: image [1, 3, H, W] (or [1, 3, 1, H, W]) in [−1, 1], H and W
    /// multiples of `config.scale`, → mean and log-variance [1, z_dim, H/s, W/s], the log-variance clamped to
    /// [−30, 20] as DiagonalGaussianDistribution clamps it. A sample is mean + exp(logvar / 2) · noise;
    /// `latent_dist.mode()` is the mean. QwenImage's image-to-image then normalizes (`config.normalize`).
    ///
    /// A config with `attn_scales` is refused: its encoder would run attention inside down_blocks, which
    /// diffusers cannot (QwenImageAttentionBlock.forward takes no feature cache), so nothing defines the result.
    public func encodeMoments(_ image: Tensor, _ w: ModuleWeights, _ b: any Backend) throws(SluiceError) -> (mean: Tensor, logvar: Tensor) {
        try moments(encodeRaw(image, w, b))
    }

    /// The encoder and quant_conv on one frame: the moments as the network outputs them (2·z_dim channels).
    func encodeRaw(_ image: Tensor, _ w: ModuleWeights, _ b: any Backend) throws(SluiceError) -> Tensor {
        guard config.attnScales.isEmpty else {
            throw .invalidArgument(name: "vae/config.json: attn_scales", reason: "the encoder's down-block attention (\(config.attnScales)) is not supported: diffusers cannot run it either")
        }
        let s = config.scale, x0 = try frame(image, channels: config.inputChannels, operation: "Qwen-Image VAE encode")
        guard x0.shape[2] % s == 0, x0.shape[3] % s == 0 else {
            throw .shapeMismatch(operation: "Qwen-Image VAE encode", expected: "height and width multiples of \(s)", found: "\(image.shape)")
        }
        let e = w.scoped("encoder")
        var x = try conv(x0, e.scoped("conv_in"), b)
        // down_blocks is one flat list (QwenImageEncoder3d.__init__): each level's resnets, then its downsampler.
        var index = 0
        for i in 0..<config.dimMult.count {
            for _ in 0..<config.numResBlocks {
                x = try resnet(x, e.scoped("down_blocks.\(index)"), b)
                index += 1
            }
            if i < config.dimMult.count - 1 {
                // downsample2d and downsample3d alike: ZeroPad2d((0, 1, 0, 1)), Conv2d stride 2; downsample3d's
                // time_conv is skipped for the first chunk.
                x = try conv(VAEEncoder.padRightBottom(x), e.scoped("down_blocks.\(index).resample.1"), b, stride: 2, padding: 0)
                index += 1
            }
        }
        x = try midBlock(x, e.scoped("mid_block"), b)
        x = try b.silu(norm(x, gamma: e("norm_out.gamma"), b))
        return try conv(conv(x, e.scoped("conv_out"), b), w.scoped("quant_conv"), b)
    }

    /// DiagonalGaussianDistribution: mean and log-variance are the first and second halves of the channels.
    func moments(_ x: Tensor) throws(SluiceError) -> (mean: Tensor, logvar: Tensor) {
        let c = config.zDim
        guard x.shape[1] == 2 * c else {
            throw .shapeMismatch(operation: "Qwen-Image VAE encoder output", expected: "\(2 * c) channels (mean and log-variance)", found: "\(x.shape)")
        }
        let logvar = try x.sliced(dim: 1, c..<(2 * c)).toFloats().map { min(max($0, -30), 20) }
        return (try x.sliced(dim: 1, 0..<c).contiguous(), Tensor(logvar, shape: [1, c, x.shape[2], x.shape[3]]))
    }

    /// One frame as [1, C, h, w]: a 4-D tensor as it is, a 5-D one with T = 1 without its time axis.
    func frame(_ x: Tensor, channels: Int, operation: String) throws(SluiceError) -> Tensor {
        let d = x.shape.dims
        if d.count == 4, d[0] == 1, d[1] == channels { return x }
        if d.count == 5, d[0] == 1, d[1] == channels, d[2] == 1 { return try x.reshaped([1, channels, d[3], d[4]]) }
        throw .shapeMismatch(operation: operation, expected: "[1, \(channels), h, w] or [1, \(channels), 1, h, w] (one frame)", found: "\(x.shape)")
    }
}
