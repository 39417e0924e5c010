import Foundation
import SluiceBackends
import SluiceCore
import SluiceWeights

/// The UNet's conditioning vector: the timestep's sinusoid through time_embedding, plus (SDXL) the
/// pooled text embedding and the size/crop ids through add_embedding.
///
///     emb = time_embedding(sinusoid(t, C₀))                                  linear_1 → SiLU → linear_2
///     emb += add_embedding([text_embeds, sinusoid(time_ids, d).flatten()])   SDXL's "text_time"
enum UNetEmbeddings {
    /// diffusers' `get_timestep_embedding` (embeddings.py): frequencies exp(−ln(10⁴)·i / (half − shift)),
    /// sin half then cos half (swapped with `flipSinToCos`), a zero column when `dim` is odd. Computed in
    /// f32 in the same order as torch, which computes it in f32 even for an f64 model.
    /// Z-Image's `TimestepEmbedder.sinusoid` is the case shift 0, flipped.
    static func sinusoid(_ values: [Float], dim: Int, flipSinToCos: Bool, freqShift: Float) -> Tensor {
        let half = dim / 2
        let scale = Float(-log(10000.0))
        var out = [Float](repeating: 0, count: values.count * dim)
        for (row, t) in values.enumerated() {
            for i in 0..<half {
                let freq = Foundation.exp(scale * Float(i) / (Float(half) - freqShift))
                let arg = t * freq
                let (first, second) = flipSinToCos ? (Foundation.cos(arg), Foundation.sin(arg)) : (Foundation.sin(arg), Foundation.cos(arg))
                out[row * dim + i] = first
                out[row * dim + half + i] = second
            }
        }
        return Tensor(out, shape: [values.count, dim])
    }

    /// diffusers' TimestepEmbedding: linear_1 → SiLU → linear_2.
    static func mlp(_ x: Tensor, _ w: ModuleWeights, _ b: any Backend) throws(SluiceError) -> Tensor {
        let h = try b.silu(b.linear(x, weight: w("linear_1.weight"), bias: w("linear_1.bias")))
        return try b.linear(h, weight: w("linear_2.weight"), bias: w("linear_2.bias"))
    }

    /// emb [1, timeEmbedDim] (UNet2DConditionModel.get_time_embed + get_aug_embed).
    static func forward(_ s: UNet2DCondition.State, config: UNetConfig, _ w: ModuleWeights, _ b: any Backend) throws(SluiceError) -> Tensor {
        let t = sinusoid([s.timestep], dim: config.blockOutChannels[0], flipSinToCos: config.flipSinToCos, freqShift: config.freqShift)
        var emb = try mlp(t, w.scoped("time_embedding"), b)
        guard config.textTimeConditioning else { return emb }
        let d = config.additionTimeEmbedDim, p = config.projectionClassEmbeddingsInputDim
        guard let text = s.textEmbeds, let ids = s.timeIds else {
            throw .invalidArgument(name: "text_embeds, time_ids", reason: "this UNet (addition_embed_type \"text_time\") needs both")
        }
        // SDXL base passes 6 ids (original size, crop, target size), the refiner 5 (with the aesthetic score).
        let idCount = ids.count
        guard text.shape.rank == 2, text.shape[0] == 1, ids.shape.dims.filter({ $0 != 1 }).count <= 1, text.count + idCount * d == p else {
            throw .shapeMismatch(operation: "UNet text_embeds and time_ids", expected: "text_embeds [1, P], time_ids [n] with P + \(d)·n = \(p)",
                                 found: "text_embeds \(text.shape), time_ids \(ids.shape)")
        }
        let timeFeatures = sinusoid(try ids.toFloats(), dim: d, flipSinToCos: config.flipSinToCos, freqShift: config.freqShift)
        let added = try b.concat([text.converted(to: .f32), timeFeatures.reshaped([1, idCount * d])], dim: 1)
        emb = try b.add(emb, mlp(added, w.scoped("add_embedding"), b))
        return emb
    }
}
