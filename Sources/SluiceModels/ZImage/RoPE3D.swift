import Foundation
import SluiceCore
import SluiceWeights

/// Z-Image's 3-axis rotary embedding: each token has a position (frame/caption index, row, column);
/// axis a rotates `axesDims[a]` of the head's dimensions by pos·θ^(−2i/d) (angles as diffusers computes
/// them: f64 products rounded to f32, then cos/sin in f32). Pairs are interleaved (complex view).
public struct RoPE3D: Sendable {
    public let theta: Double
    public let axesDims: [Int]

    public init(theta: Double, axesDims: [Int]) {
        self.theta = theta
        self.axesDims = axesDims
    }

    /// cos and sin tables [positions.count, headDim/2] for tokens at `positions`.
    public func tables(_ positions: [(Int, Int, Int)]) -> (cos: Tensor, sin: Tensor) {
        let half = axesDims.reduce(0, +) / 2
        var c = [Float](repeating: 0, count: positions.count * half)
        var s = c
        var inverse: [[Double]] = []
        for d in axesDims {
            inverse.append(stride(from: 0, to: d, by: 2).map { 1.0 / pow(theta, Double($0) / Double(d)) })
        }
        for (row, p) in positions.enumerated() {
            let pos = [p.0, p.1, p.2]
            var col = row * half
            for a in 0..<3 {
                for f in inverse[a] {
                    let angle = Float(Double(pos[a]) * f)
                    c[col] = Foundation.cos(angle)
                    s[col] = Foundation.sin(angle)
                    col += 1
                }
            }
        }
        return (Tensor(c, shape: [positions.count, half]), Tensor(s, shape: [positions.count, half]))
    }
}
