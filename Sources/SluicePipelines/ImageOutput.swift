import SluiceCore

/// The decoder's output as an image, as diffusers' image processor postprocesses it.
public enum ImageOutput {
    /// [1, 3, H, W] in about [−1, 1] → [3, H, W] in [0, 1]: (x / 2 + 0.5) clamped.
    public static func fromDecoder(_ decoded: Tensor) throws(SluiceError) -> Tensor {
        guard decoded.shape.rank == 4, decoded.shape[0] == 1 else {
            throw .shapeMismatch(operation: "decoded image", expected: "[1, C, H, W]", found: "\(decoded.shape)")
        }
        let d = try decoded.dtype == .f32 ? decoded.contiguous() : decoded.converted(to: .f32)
        let out = Tensor(uninitialized: [decoded.shape[1], decoded.shape[2], decoded.shape[3]], dtype: .f32)
        for j in 0..<out.count { out.f32[j] = min(max(d.f32[j] / 2 + 0.5, 0), 1) }
        return out
    }
}
