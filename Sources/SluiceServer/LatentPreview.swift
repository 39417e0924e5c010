import Foundation
import SluiceCore
import SluicePipelines

/// A cheap look at the latents while a job runs: a linear map from the latent channels to RGB, applied
/// per latent pixel (no VAE). The map is fitted once at warm-up, by least squares, from the warm-up's
/// final latents to its decoded image averaged over each latent pixel's patch — so it suits whatever
/// VAE the model has, with no table of factors to keep.
public struct LatentPreview: Sendable {
    /// rgb = weights · [latents; 1], rows r, g, b.
    public let weights: [[Float]]

    /// Fits the map from latents [1, C, h, w] and the image [3, h·s, w·s] in [0, 1].
    public static func fit(latents: Tensor, image: Tensor) throws -> LatentPreview {
        let C = latents.shape[1], h = latents.shape[2], w = latents.shape[3]
        let H = image.shape[1], W = image.shape[2], s = H / h
        let z = try latents.toFloats(), img = try image.toFloats()
        let n = C + 1
        var ata = [Double](repeating: 0, count: n * n)
        var atb = [[Double]](repeating: [Double](repeating: 0, count: n), count: 3)
        for y in 0..<h { for x in 0..<w {
            var row = (0..<C).map { Double(z[($0 * h + y) * w + x]) }
            row.append(1)
            for i in 0..<n { for j in 0..<n { ata[i * n + j] += row[i] * row[j] } }
            for c in 0..<3 {
                var mean = 0.0
                for dy in 0..<s { for dx in 0..<s { mean += Double(img[(c * H + y * s + dy) * W + x * s + dx]) } }
                mean /= Double(s * s)
                for i in 0..<n { atb[c][i] += row[i] * mean }
            }
        } }
        for i in 0..<n { ata[i * n + i] += 1e-3 }  // ridge: a tiny warm-up image may not pin every channel
        let solved = try (0..<3).map { try solve(ata, atb[$0], n).map(Float.init) }
        return LatentPreview(weights: solved)
    }

    /// Gaussian elimination with partial pivoting on the normal equations.
    static func solve(_ a: [Double], _ b: [Double], _ n: Int) throws -> [Double] {
        var m = a, v = b
        for col in 0..<n {
            let pivot = (col..<n).max { abs(m[$0 * n + col]) < abs(m[$1 * n + col]) }!
            guard abs(m[pivot * n + col]) > 1e-12 else { throw SluiceError.invalidArgument(name: "preview fit", reason: "singular") }
            if pivot != col {
                for k in 0..<n { m.swapAt(col * n + k, pivot * n + k) }
                v.swapAt(col, pivot)
            }
            for r in (col + 1)..<n {
                let f = m[r * n + col] / m[col * n + col]
                if f == 0 { continue }
                for k in col..<n { m[r * n + k] -= f * m[col * n + k] }
                v[r] -= f * v[col]
            }
        }
        var x = [Double](repeating: 0, count: n)
        for r in stride(from: n - 1, through: 0, by: -1) {
            var s = v[r]
            for k in (r + 1)..<n { s -= m[r * n + k] * x[k] }
            x[r] = s / m[r * n + r]
        }
        return x
    }

    /// latents [1, C, h, w] → a PNG of h×w pixels.
    public func png(_ latents: Tensor) throws -> [UInt8] {
        let C = latents.shape[1], h = latents.shape[2], w = latents.shape[3]
        let z = try latents.toFloats()
        var out = [Float](repeating: 0, count: 3 * h * w)
        for c in 0..<3 {
            let wt = weights[c]
            for p in 0..<(h * w) {
                var v = wt[C]
                for k in 0..<C { v += wt[k] * z[k * h * w + p] }
                out[c * h * w + p] = v
            }
        }
        let (px, pw, ph) = try PNGWriter.rgb8(Tensor(out, shape: [3, h, w]))
        return try PNGWriter.encode(pixels: px, width: pw, height: ph)
    }
}
