import SluiceBackends
import SluiceCore

/// The per-channel latent statistics QwenImage's pipelines apply around the VAE (latents_mean, latents_std).
extension QwenImageVAEConfig {
    /// What QwenImagePipeline does before `vae.decode` (pipeline_qwenimage.py): latents / (1 / latents_std) +
    /// latents_mean per channel — z · std + mean, computed as diffusers does (dividing by the f32 reciprocal)
    /// so the result is the same to the bit. Channels on dim 1 ([1, z_dim, h, w] or [1, z_dim, 1, h, w]).
    public func denormalize(_ latents: Tensor, _ b: any Backend) throws(SluiceError) -> Tensor {
        let (invStd, mean) = try statistics(like: latents)
        return try b.add(b.div(latents, invStd), mean)
    }

    /// What QwenImageImg2ImgPipeline._encode_vae_image does after `vae.encode`: (latents − latents_mean) ·
    /// (1 / latents_std) per channel, the inverse of `denormalize`.
    public func normalize(_ latents: Tensor, _ b: any Backend) throws(SluiceError) -> Tensor {
        let (invStd, mean) = try statistics(like: latents)
        return try b.mul(b.sub(latents, mean), invStd)
    }

    /// 1 / latents_std and latents_mean shaped [1, z_dim, 1, …] to broadcast over `latents`.
    func statistics(like latents: Tensor) throws(SluiceError) -> (invStd: Tensor, mean: Tensor) {
        guard latents.shape.rank >= 2, latents.shape[1] == zDim else {
            throw .shapeMismatch(operation: "Qwen-Image latent statistics", expected: "[1, \(zDim), …]", found: "\(latents.shape)")
        }
        let shape = Shape([1, zDim] + Array(repeating: 1, count: latents.shape.rank - 2))
        return (Tensor(latentsStd.map { 1 / $0 }, shape: shape), Tensor(latentsMean, shape: shape))
    }
}
