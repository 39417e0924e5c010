import Foundation
import SluiceBackends
import SluiceCore
import SluiceModels
import SluiceTestSupport
import SluiceWeights
import Testing

@Suite struct QwenImageTransformerTests {
    static func load() throws -> (QwenImageTransformer, SafetensorsFile) {
        let f = try Fixtures.file("qwen_image_transformer.safetensors")
        let config = try JSONDecoder().decode(QwenImageConfig.self, from: Data(f.header.metadata["config"]!.utf8))
        return (QwenImageTransformer(config: config), f)
    }

    static func check(on backend: any Backend) throws {
        let (model, f) = try load()
        let state = QwenImageTransformer.State(latents: try f.tensor("input.latents"), rows: 4, columns: 6, t: 0.7, context: try f.tensor("input.context"))
        let out = try model.forward(state, ModuleWeights { k throws(SluiceError) in try f.tensor(k) }, backend)
        // f32 on both sides through 2 blocks whose sums torch orders differently; RoPE angles up to ~14 rad
        // (text at positions 3…13). Tolerance 2e-5 abs + 1e-4 rel, as FLUX's.
        let c = compare(try out.toFloats(), try f.tensor("output").toFloats(), atol: 2e-5, rtol: 1e-4)
        #expect(c.ok, "\(c)")
    }

    /// diffusers' QwenImageTransformer2DModel (2 layers, 2 heads × 16, random norms, bf16 weights) on a
    /// 4 × 6 packed grid with 11 text tokens at t = 0.7.
    @Test func tinyTransformerMatchesDiffusers() throws {
        try Self.check(on: CPUBackend())
    }

    /// The same on a Vulkan device (lavapipe in CI).
    @Test(.enabled(if: Vulkan.unavailableReason == nil && ((try? Vulkan.devices().count) ?? 0) > 0, "no Vulkan device"))
    func vulkanTransformerMatchesDiffusers() throws {
        try Self.check(on: try ComputeDevice.select("vulkan").backend)
    }

    /// Every tensor of the checkpoint belongs to a group, and every group has tensors.
    @Test func groupsCoverTheCheckpoint() throws {
        let (model, f) = try Self.load()
        let names = f.header.tensors.map(\.name).filter { !$0.hasPrefix("input.") && $0 != "output" }
        let groups = names.map { model.group(of: $0) }
        #expect(groups.allSatisfy { $0 != nil }, "\(zip(names, groups).filter { $0.1 == nil }.map(\.0))")
        #expect(Set(groups.compactMap { $0 }) == Set(model.groupNames))
    }

    /// The edit/layered variants and bad shapes are refused naming the field.
    @Test func configErrorsNameTheField() throws {
        for (json, field) in [(#"{"zero_cond_t": true}"#, "zero_cond_t"), (#"{"use_layer3d_rope": true}"#, "use_layer3d_rope"),
                              (#"{"axes_dims_rope": [16, 56, 50]}"#, "axes_dims_rope"), (#"{"in_channels": 32}"#, "in_channels"),
                              (#"{"patch_size": 1}"#, "patch_size")] {
            do {
                _ = try JSONDecoder().decode(QwenImageConfig.self, from: Data(json.utf8))
                Issue.record("accepted \(json)")
            } catch {
                #expect("\(error)".contains(field), "\(error)")
            }
        }
        #expect(try JSONDecoder().decode(QwenImageConfig.self, from: Data("{}".utf8)).dim == 3072)
    }
}
