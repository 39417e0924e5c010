import Foundation
import SluiceBackends
import SluiceCore
import SluiceModels
import SluiceTestSupport
import SluiceWeights
import Testing

@Suite struct VAEDecoderTests {
    static func load() throws -> (VAEDecoder, ModuleWeights, SafetensorsFile) {
        let dir = Fixtures.directory + "/models/z-image-tiny/vae"
        let config = try JSONDecoder().decode(AutoencoderKLConfig.self, from: Data(contentsOf: URL(fileURLWithPath: dir + "/config.json")))
        let ckpt = try Checkpoint(path: dir + "/diffusion_pytorch_model.safetensors")
        return (VAEDecoder(config: config), ModuleWeights { k throws(SluiceError) in try ckpt.tensor(k) }, try Fixtures.file("zimage_reference.safetensors"))
    }

    /// diffusers' AutoencoderKL.decode (FLUX-style config: 16 latent channels, no post-quant conv) on the
    /// pipeline's final latents. Tolerance 1e-4 abs + 1e-4 rel: f32 through 8 convolutions and group norms.
    @Test func decodeMatchesDiffusers() throws {
        let (vae, w, ref) = try Self.load()
        let z = try ref.tensor("vae_in").reshaped([1, 16, 32, 32])
        let got = try vae.decode(z, w, CPUBackend())
        let c = compare(try got.toFloats(), try ref.tensor("vae_out").toFloats(), atol: 1e-4, rtol: 1e-4)
        #expect(c.ok, "\(c)")
    }

    /// diffusers' tiled_decode with 16-latent tiles (9 tiles over 32×32, blended over 8 pixels).
    @Test func tiledDecodeMatchesDiffusers() throws {
        let (vae, w, ref) = try Self.load()
        let z = try ref.tensor("vae_in").reshaped([1, 16, 32, 32])
        let got = try vae.decodeTiled(z, tileLatent: 16, w, CPUBackend())
        let c = compare(try got.toFloats(), try ref.tensor("vae_tiled_16_out").toFloats(), atol: 1e-4, rtol: 1e-4)
        #expect(c.ok, "\(c)")
        // Tiling is an approximation (group norm statistics are per tile): on average a close one even
        // for this random-weight VAE (mean |difference| measured 0.057 on outputs of standard deviation 0.57).
        let a = try got.toFloats(), b = try ref.tensor("vae_out").toFloats()
        let mean = zip(a, b).reduce(Float(0)) { $0 + abs($1.0 - $1.1) } / Float(a.count)
        #expect(mean < 0.1, "mean |tiled − whole| = \(mean)")
    }

    @Test func wrongLatentShapeIsAnError() throws {
        let (vae, w, _) = try Self.load()
        #expect(throws: SluiceError.self) { try vae.decode(Tensor(zeros: [1, 4, 8, 8]), w, CPUBackend()) }
    }
}

@Suite struct VAEEncoderTests {
    /// diffusers' AutoencoderKL.encode(x).latent_dist.mean on a random 64×64 image. 1e-4 abs + 1e-4 rel.
    @Test func encodeMatchesDiffusers() throws {
        let (dec, w, ref) = try VAEDecoderTests.load()
        let x = try ref.tensor("vae_encode_in").reshaped([1, 3, 64, 64])
        let got = try VAEEncoder(config: dec.config).encodeMean(x, w, CPUBackend())
        #expect(got.shape == [1, 16, 32, 32])
        let c = compare(try got.toFloats(), try ref.tensor("vae_encode_mean").toFloats(), atol: 1e-4, rtol: 1e-4)
        #expect(c.ok, "\(c)")
    }

    /// SD1.5's 4-channel VAE (with quant_conv) on the init image of tools/reference/make_sd_reference.py,
    /// whole and in tiles of 8 latents (diffusers' tiled_encode, tile_sample_min_size 16): mean and clamped
    /// log-variance within 1e-4 abs + 1e-4 rel; the tiled moments differ from the whole ones (the blend is
    /// really there).
    @Test func tiledEncodeMatchesDiffusers() throws {
        let dir = Fixtures.directory + "/models/sd15-tiny/vae"
        let config = try JSONDecoder().decode(AutoencoderKLConfig.self, from: Data(contentsOf: URL(fileURLWithPath: dir + "/config.json")))
        let ckpt = try Checkpoint(path: dir + "/diffusion_pytorch_model.safetensors")
        let w = ModuleWeights { k throws(SluiceError) in try ckpt.tensor(k) }
        let ref = try Fixtures.file("sd_reference.safetensors")
        let pixels = try ref.tensor("init_image").toFloats().map { $0 / 255 * 2 - 1 }
        let x = Tensor(pixels, shape: [1, 3, 32, 48]), enc = VAEEncoder(config: config), be = try CPUBackend()
        let whole = try enc.encodeMoments(x, w, be), tiled = try enc.encodeMomentsTiled(x, tileLatent: 8, w, be)
        for (got, key) in [(whole.mean, "vae_mean"), (whole.logvar, "vae_logvar"), (tiled.mean, "vae_tiled_mean"), (tiled.logvar, "vae_tiled_logvar")] {
            #expect(got.shape == [1, 4, 16, 24])
            let c = compare(try got.toFloats(), try ref.tensor(key).toFloats(), atol: 1e-4, rtol: 1e-4)
            #expect(c.ok, "\(key): \(c)")
        }
        #expect(try whole.mean.toFloats() != tiled.mean.toFloats())
    }
}
