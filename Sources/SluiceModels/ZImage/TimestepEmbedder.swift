import Foundation
import SluiceBackends
import SluiceCore
import SluiceWeights

/// t → sinusoidal features (256: cos half then sin half, max period 10⁴) → Linear → SiLU → Linear,
/// giving the adaLN input of width min(dim, 256).
public struct TimestepEmbedder: Sendable {
    public static let frequencyDim = 256

    public static func sinusoid(_ t: Float, dim: Int = frequencyDim) -> Tensor {
        let half = dim / 2
        let scale = Float(-log(10000.0))
        var out = [Float](repeating: 0, count: dim)
        for i in 0..<half {
            let freq = Foundation.exp(scale * Float(i) / Float(half))
            let arg = t * freq
            out[i] = Foundation.cos(arg)
            out[half + i] = Foundation.sin(arg)
        }
        return Tensor(out, shape: [1, dim])
    }

    public static func forward(_ t: Float, _ w: ModuleWeights, _ backend: any Backend) throws(SluiceError) -> Tensor {
        var h = try backend.linear(sinusoid(t), weight: w("mlp.0.weight"), bias: w("mlp.0.bias"))
        h = try backend.silu(h)
        return try backend.linear(h, weight: w("mlp.2.weight"), bias: w("mlp.2.bias"))
    }
}
