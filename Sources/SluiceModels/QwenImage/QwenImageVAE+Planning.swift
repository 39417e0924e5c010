import SluiceCore

extension QwenImageVAEConfig {
    /// Peak f32 activation bytes of decoding one `pixels`-pixel frame, for the planner: at full
    /// resolution the last upsampler's input (base · dim_mult[1] channels, nearest-upsampled) and its
    /// convolution's output, then the last level's residual blocks over base · dim_mult[0] channels — the
    /// block's input, its two normed/convolved intermediates, the shortcut and the RMS norm's
    /// channels-last copy — plus the 3-channel image. An estimate from the shapes (of the whole frame, or
    /// of one tile: QwenImageVAE+Tiling.swift).
    public func decodeActivationBytes(pixels: Int) -> Int {
        let top = baseDim * dimMult[0], below = baseDim * dimMult[min(1, dimMult.count - 1)]
        return 4 * pixels * (2 * below + 6 * top + inputChannels)
    }
}
