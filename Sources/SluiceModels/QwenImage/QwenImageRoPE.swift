import Foundation
import SluiceCore

/// Qwen-Image's rotary embedding (diffusers' QwenEmbedRope with scale_rope): each token has a position
/// on three axes (frame, row, column) and axis a rotates `axesDims[a]` of the head's dimensions by
/// position · θ^(−2i/d), pairs interleaved. Image positions are centred: a grid of h rows gets rows
/// −(h − h/2) … h/2 − 1 (columns likewise), frame 0. Text token j sits at max(h/2, w/2) + j on all three
/// axes, after the image's extent. Angles in f32, as diffusers builds its tables (torch.outer in f32).
public struct QwenImageRoPE: Sendable {
    public let axesDims: [Int]

    public init(axesDims: [Int]) { self.axesDims = axesDims }

    /// cos and sin [textTokens + rows·columns, headDim/2]: text tokens first, as the joint attention
    /// orders them.
    public func tables(textTokens: Int, rows: Int, columns: Int) -> (cos: Tensor, sin: Tensor) {
        let half = axesDims.reduce(0, +) / 2
        let inverse = axesDims.map { d in
            stride(from: 0, to: d, by: 2).map { 1 / Foundation.pow(QwenImageConfig.ropeTheta, Float($0) / Float(d)) }
        }
        let first = max(rows / 2, columns / 2)
        var positions: [(Int, Int, Int)] = (0..<textTokens).map { (first + $0, first + $0, first + $0) }
        for r in 0..<rows { for c in 0..<columns { positions.append((0, r - (rows - rows / 2), c - (columns - columns / 2))) } }
        var cosines = [Float](repeating: 0, count: positions.count * half), sines = cosines
        for (row, p) in positions.enumerated() {
            let axis = [p.0, p.1, p.2]
            var col = row * half
            for a in 0..<3 {
                for f in inverse[a] {
                    let angle = Float(axis[a]) * f
                    cosines[col] = Foundation.cos(angle)
                    sines[col] = Foundation.sin(angle)
                    col += 1
                }
            }
        }
        return (Tensor(cosines, shape: [positions.count, half]), Tensor(sines, shape: [positions.count, half]))
    }
}
