import Foundation
import SluiceBackends
import SluiceCore
import SluiceModels
import SluiceTestSupport
import SluiceWeights
import Testing

/// Z-Image's transformer against diffusers 0.42.1 (tools/reference/make_zimage_tiny.py).
@Suite struct ZImageTransformerTests {
    static func config(_ dir: String) throws -> ZImageConfig {
        try JSONDecoder().decode(ZImageConfig.self, from: Data(contentsOf: URL(fileURLWithPath: dir + "/config.json")))
    }

    /// Denoising calls of the tiny pipeline's transformer (dim 32, bf16 weights), fed diffusers' own
    /// inputs: the first (t = 0, pure noise) and the third (t ≠ 0, so a wrong timestep embedding shows).
    /// Tolerance 2e-5 abs + 1e-4 rel: f32 through 4 blocks whose sums torch orders differently.
    @Test(arguments: [0, 2])
    func tinyTransformerMatchesDiffusers(call: Int) throws {
        let dir = Fixtures.directory + "/models/z-image-tiny/transformer"
        let ckpt = try Checkpoint(path: dir + "/diffusion_pytorch_model.safetensors")
        let ref = try Fixtures.file("zimage_reference.safetensors")
        let model = ZImageTransformer(config: try Self.config(dir))
        let t = try ref.tensor("transformer_t_\(call)").toFloats()[0]
        #expect(call == 0 ? t == 0 : t > 0.1, "t = \(t)")
        let state = ZImageTransformer.State(latents: try ref.tensor("transformer_in_\(call)"), t: t, caption: try ref.tensor("prompt_embeds"))
        let backend = try CPUBackend()
        let out = try model.forward(state, ModuleWeights { k throws(SluiceError) in try ckpt.tensor(k) }, backend)
        let c = compare(try out.toFloats(), try ref.tensor("transformer_out_\(call)").toFloats(), atol: 2e-5, rtol: 1e-4)
        #expect(c.ok, "\(c)")
    }

    /// dim 264 > 256: the adaLN input is min(dim, 256) wide. fp8 weights, widened as used; 1 block.
    @Test func wideTransformerMatchesDiffusers() throws {
        let f = try Fixtures.file("zimage_wide.safetensors")
        let config = try JSONDecoder().decode(ZImageConfig.self, from: Data(f.header.metadata["config"]!.utf8))
        #expect(config.adaLNDim == 256 && config.dim == 264)
        let model = ZImageTransformer(config: config)
        let state = ZImageTransformer.State(latents: try f.tensor("input.x"), t: try f.tensor("input.t").toFloats()[0], caption: try f.tensor("input.cap"))
        let out = try model.forward(state, ModuleWeights { k throws(SluiceError) in try f.tensor(k) }, try CPUBackend())
        let c = compare(try out.toFloats(), try f.tensor("output").toFloats(), atol: 1e-4, rtol: 1e-4)
        #expect(c.ok, "\(c)")
    }
}
