import Foundation
import SluiceCore

/// FLUX's rotary embedding (diffusers' FluxPosEmbed): each token has ids (axis 0, row, column); axis a
/// rotates `axesDims[a]` of the head's dimensions by id·θ^(−2i/d). Unlike Z-Image's, the angles and
/// their cos/sin are computed in f64 and only then rounded to f32, as diffusers computes them.
/// Pairs are interleaved. Text tokens sit at (0, 0, 0); image token (r, c) of the packed grid at (0, r, c).
public struct FluxRoPE: Sendable {
    public let axesDims: [Int]
    public let theta: Double

    public init(axesDims: [Int], theta: Double = FluxConfig.ropeTheta) {
        self.axesDims = axesDims
        self.theta = theta
    }

    /// cos and sin tables [ids.count, headDim/2].
    public func tables(_ ids: [(Int, Int, Int)]) -> (cos: Tensor, sin: Tensor) {
        let half = axesDims.reduce(0, +) / 2
        let inverse = axesDims.map { d in stride(from: 0, to: d, by: 2).map { 1.0 / pow(theta, Double($0) / Double(d)) } }
        var c = [Float](repeating: 0, count: ids.count * half), s = c
        for (row, id) in ids.enumerated() {
            let pos = [id.0, id.1, id.2]
            var col = row * half
            for a in 0..<3 {
                for f in inverse[a] {
                    let angle = Double(pos[a]) * f
                    c[col] = Float(Foundation.cos(angle))
                    s[col] = Float(Foundation.sin(angle))
                    col += 1
                }
            }
        }
        return (Tensor(c, shape: [ids.count, half]), Tensor(s, shape: [ids.count, half]))
    }

    /// The ids FluxPipeline gives `textTokens` text tokens followed by a rows × columns packed image.
    public static func ids(textTokens: Int, rows: Int, columns: Int) -> [(Int, Int, Int)] {
        var ids = [(Int, Int, Int)](repeating: (0, 0, 0), count: textTokens)
        for r in 0..<rows { for c in 0..<columns { ids.append((0, r, c)) } }
        return ids
    }
}
