import Foundation
import SluiceBackends
import SluiceCore
import SluiceModels
import SluiceTestSupport
import SluiceWeights
import Testing

/// FLUX.1's transformer against diffusers 0.42.1 (tools/reference/make_flux_tiny.py): the tiny dev
/// (guidance embedder) and schnell transformers — dim 32, heads 2×16 with RoPE axes (4, 6, 6), 2 double
/// and 2 single blocks, bf16 weights — called directly on random inputs (7 text tokens, a 4×6 packed
/// image, t = 0.6431, guidance 3.5).
@Suite struct FluxTransformerTests {
    static func load(_ variant: String) throws -> (FluxTransformer, Checkpoint) {
        let dir = Fixtures.directory + "/models/flux-tiny-\(variant)/transformer"
        let config = try JSONDecoder().decode(FluxConfig.self, from: Data(contentsOf: URL(fileURLWithPath: dir + "/config.json")))
        return (FluxTransformer(config: config), try Checkpoint(path: dir + "/diffusion_pytorch_model.safetensors"))
    }

    /// Tolerance 2e-5 abs + 1e-4 rel: f32 through 4 blocks whose sums torch orders differently (as for
    /// Z-Image's transformer).
    @Test(arguments: ["dev", "schnell"])
    func tinyTransformerMatchesDiffusers(variant: String) throws {
        try Self.check(variant, on: try CPUBackend())
    }

    /// The same on a Vulkan device (lavapipe in CI): every op of both block kinds as a kernel.
    @Test(.enabled(if: Vulkan.unavailableReason == nil && ((try? Vulkan.devices().count) ?? 0) > 0, "no Vulkan device"))
    func vulkanTransformerMatchesDiffusers() throws {
        try Self.check("dev", on: try ComputeDevice.select("vulkan").backend)
    }

    static func check(_ variant: String, on backend: any Backend) throws {
        let (model, ckpt) = try Self.load(variant)
        #expect(model.config.guidanceEmbeds == (variant == "dev"))
        let ref = try Fixtures.file("flux_transformer_reference.safetensors")
        let state = FluxTransformer.State(latents: try ref.tensor("x"), rows: 4, columns: 6, t: try ref.tensor("t").toFloats()[0],
                                          guidance: 3.5, context: try ref.tensor("context"), pooled: try ref.tensor("pooled"))
        let out = try model.forward(state, ModuleWeights { k throws(SluiceError) in try ckpt.tensor(k) }, backend)
        let c = compare(try out.toFloats(), try ref.tensor("\(variant)_out").toFloats(), atol: 2e-5, rtol: 1e-4)
        #expect(c.ok, "\(c)")
    }

    /// Every tensor of the checkpoint belongs to a group, and every group has tensors.
    @Test func groupsCoverTheCheckpoint() throws {
        for variant in ["dev", "schnell"] {
            let (model, ckpt) = try Self.load(variant)
            let groups = Set(ckpt.names.compactMap(model.group(of:)))
            #expect(ckpt.names.allSatisfy { model.group(of: $0) != nil }, "\(variant)")
            #expect(groups == Set(model.groupNames), "\(variant)")
        }
    }
}
