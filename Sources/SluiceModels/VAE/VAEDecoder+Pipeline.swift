import SluiceBackends
import SluiceCore
import SluiceWeights
import SluiceMemory

/// What a pipeline needs of the decoder beyond `decode`: its latent geometry and scaling, its weight
/// groups, and its memory formula.
extension VAEDecoder {
    /// Latents along a side of `pixels` pixels.
    public func latentSide(_ pixels: Int) -> Int { pixels / config.scale }

    /// The denoiser's latents as the decoder takes them: z / scaling_factor + shift_factor
    /// (diffusers' pipelines do this before `vae.decode`).
    public func unscale(_ latents: Tensor) throws(SluiceError) -> Tensor {
        let src = try latents.dtype == .f32 ? latents.contiguous() : latents.converted(to: .f32)
        let z = Tensor(uninitialized: latents.shape, dtype: .f32)
        let scale = config.scalingFactor, shift = config.shiftFactor
        for j in 0..<z.count { z.f32[j] = src.f32[j] / scale + shift }
        return z
    }

    /// The decoder is one group: small, resident whole when it goes to the device.
    public var groupNames: [String] { ["vae"] }

    /// The group of a checkpoint key (the encoder's weights are not needed to decode).
    public func group(of key: String) -> String? {
        key.hasPrefix("decoder.") || key.hasPrefix("post_quant_conv.") ? "vae" : nil
    }

    /// The tensors every decoder has: a broken download fails at load, naming what is missing.
    public func checkWeights(_ keys: [String], file: String) throws(SluiceError) {
        for key in ["decoder.conv_in.weight", "decoder.conv_out.weight", "decoder.mid_block.resnets.0.conv1.weight"] where !keys.contains(key) {
            throw .missingTensor(key: key, file: file)
        }
    }

    /// Peak activation bytes of decoding `pixels` output pixels: the last upsampler's conv reads and
    /// writes blockOutChannels[1] channels at full resolution (the last block then narrows to [0]), with
    /// the residual and a norm's output beside them — four f32 tensors of the wider count.
    public func activationBytes(pixels: Int) -> Int {
        let c = config.blockOutChannels
        return 4 * 4 * max(c[0], c.count > 1 ? c[1] : c[0]) * pixels
    }

    /// Tiles for `decodeTiled`: from three quarters of the image's longer latent side down (each tile
    /// decoded alone, one image at a time). Its activations: one tile's decode, beside every decoded
    /// tile (they are blended once all are done, as diffusers does), the output and the image made
    /// from it (f32).
    public var tiling: Tiling {
        let decoder = self
        return Tiling(tiles: { w in Tiling.shrinking(fromLatentSide: max(decoder.latentSide(w.width), decoder.latentSide(w.height))) },
                      activationBytes: { t, w in decoder.tiledActivationBytes(tileLatent: t, width: w.width, height: w.height) })
    }

    public func tiledActivationBytes(tileLatent t: Int, width: Int, height: Int) -> Int {
        VAETiles.decodeActivationBytes(tileLatent: t, width: width, height: height, scale: config.scale, channels: config.outChannels,
                                       decodeBytes: activationBytes(pixels:))
    }
}
