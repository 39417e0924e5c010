import SluiceBackends
import SluiceCore
import SluiceMemory
import SluiceWeights

/// Tiled decode and encode: diffusers' AutoencoderKLQwenImage.tiled_decode and tiled_encode for one frame, and
/// their memory for the planner.
///
/// A tile of t latents steps on by ⌊3t/4⌋ and, in pixels (× s, the scale), blends over the
/// s·(t − ⌊3t/4⌋) rows and columns it shares with its neighbour, then keeps its first s·⌊3t/4⌋. That is
/// tiled_decode after `enable_tiling(tile_sample_min_height/width: s·t, tile_sample_stride_height/width:
/// s·⌊3t/4⌋)` at every t (the stride is a whole number of latents, so diffusers' crop and its tile
/// positions agree); the default t = 256 / s (32 latents) is `enable_tiling()`'s own 256 and 192 pixels,
/// so only there is the result what a diffusers user gets without choosing sizes. The planner's tiles
/// (`Tiling.shrinking`) are other sizes: each is diffusers' tiled_decode at its own t.
extension QwenImageVAE {
    /// The tile `enable_tiling()` gives: tile_sample_min_height/width 256 pixels.
    public var defaultTileLatent: Int { 256 / config.scale }

    /// Latents from one tile to the next for tiles of t: three quarters of a tile, rounded down (at the
    /// default, tile_sample_stride 192 of 256 pixels).
    public static func strideLatent(tile t: Int) -> Int { t * 3 / 4 }

    /// tiled_decode(z).sample (autoencoder_kl_qwenimage.py) for one frame, z as `decode` takes it, in tiles
    /// of `tileLatent` latents a side: each decoded alone (`decodeUnclamped`), blended with its top and left
    /// neighbours, cropped; → [1, 3, h·s, w·s] not clamped, as tiled_decode returns it (only _decode's whole
    /// frame is clamped; a pipeline's postprocessing clamps either). A latent no larger than one tile either
    /// way is decoded whole, clamped, as _decode does when tiling is on but not needed.
    public func decodeTiled(_ z: Tensor, tileLatent t: Int, _ w: ModuleWeights, _ b: any Backend) throws(SluiceError) -> Tensor {
        let x = try frame(z, channels: config.zDim, operation: "Qwen-Image VAE tiled decode")
        let h = x.shape[2], wd = x.shape[3], s = config.scale, stride = Self.strideLatent(tile: t)
        guard stride > 0 else { throw .invalidArgument(name: "tile size", reason: "\(t) latents is too small to tile") }
        guard h > t || wd > t else { return try decode(x, w, b) }
        let rows = try VAETiles.run(x, size: t, step: stride) { tile throws(SluiceError) in try decodeUnclamped(tile, w, b) }
        // diffusers concatenates each tile's first tile_sample_stride rows and columns, then crops to the frame.
        return VAETiles.assemble(rows, blend: s * (t - stride), keep: s * stride, step: s * stride, height: h * s, width: wd * s)
    }

    /// `encode(image).latent_dist` with tiling on (diffusers' tiled_encode for one frame): the image in tiles of
    /// s·t pixels every s·⌊3t/4⌋, each encoded alone (`encodeRaw`), the raw moments blended with their top and
    /// left neighbours over t − ⌊3t/4⌋ latents and cut to their first ⌊3t/4⌋, then split into mean and clamped
    /// log-variance as `encodeMoments` does. That is tiled_encode after `enable_tiling` with the same sizes as
    /// `decodeTiled`; an image no larger than one tile either way is encoded whole, as `_encode` does.
    public func encodeMomentsTiled(_ image: Tensor, tileLatent t: Int, _ w: ModuleWeights, _ b: any Backend) throws(SluiceError) -> (mean: Tensor, logvar: Tensor) {
        let x = try frame(image, channels: config.inputChannels, operation: "Qwen-Image VAE tiled encode")
        let s = config.scale, stride = Self.strideLatent(tile: t)
        guard stride > 0 else { throw .invalidArgument(name: "tile size", reason: "\(t) latents is too small to tile") }
        guard x.shape[2] % s == 0, x.shape[3] % s == 0 else {
            throw .shapeMismatch(operation: "Qwen-Image VAE tiled encode", expected: "height and width multiples of \(s)", found: "\(image.shape)")
        }
        guard x.shape[2] > s * t || x.shape[3] > s * t else { return try encodeMoments(x, w, b) }
        let rows = try VAETiles.run(x, size: s * t, step: s * stride) { tile throws(SluiceError) in try encodeRaw(tile, w, b) }
        let out = VAETiles.assemble(rows, blend: t - stride, keep: stride, step: stride, height: x.shape[2] / s, width: x.shape[3] / s)
        return try moments(out)
    }

    /// Tiles for `decodeTiled`, for the planner: from three quarters of the image's longer latent side down.
    public var tiling: Tiling {
        let vae = self
        return Tiling(tiles: { w in Tiling.shrinking(fromLatentSide: max(w.width, w.height) / vae.config.scale) },
                      activationBytes: { t, w in vae.tiledActivationBytes(tileLatent: t, width: w.width, height: w.height) })
    }

    /// Activation bytes of `decodeTiled` on a width × height image, one at a time: one tile's decode beside
    /// every decoded tile and the image (`VAETiles.decodeActivationBytes`).
    public func tiledActivationBytes(tileLatent t: Int, width: Int, height: Int) -> Int {
        VAETiles.decodeActivationBytes(tileLatent: t, width: width, height: height, scale: config.scale, channels: config.inputChannels,
                                       decodeBytes: config.decodeActivationBytes(pixels:))
    }
}
