import Foundation
import SluiceBackends
import SluiceCore
import SluiceMemory
import SluicePipelines
import SluiceTestSupport
import Testing

/// `--device vulkan` on the tiny Z-Image (lavapipe in CI): linear layers, element-wise ops and SiLU
/// run as Vulkan kernels, the rest on the CPU.
@Suite(.enabled(if: Vulkan.unavailableReason == nil && ((try? Vulkan.devices().count) ?? 0) > 0, "no Vulkan device"))
struct VulkanPipelineTests {
    static let model = Fixtures.directory + "/models/z-image-tiny"
    static let request = GenerationRequest(prompt: "a red fox", seed: 7, steps: 4, width: 64, height: 64, guidance: 0)

    /// Within 1e-4 of the CPU image: the shader sums each dot product in its own order (f32). And with
    /// a budget that forces streaming, identical to the unbudgeted Vulkan run, peak device ≤ budget.
    @Test func vulkanMatchesCPUAndStreamingChangesNothing() throws {
        let cpu = try ZImagePipeline(directory: Self.model, device: "cpu").generate(Self.request).image.toFloats()
        let vk = try ZImagePipeline(directory: Self.model, device: "vulkan")
        #expect(vk.deviceNote == nil)
        let free = try vk.generate(Self.request)
        let c = compare(try free.image.toFloats(), cpu, atol: 1e-4, rtol: 0)
        #expect(c.ok, "\(c)")
        var streamedSomewhere = false
        for budget in [2_450_000, 2_440_000] {
            let streamed = try vk.generate(Self.request, memory: MemoryOptions(deviceBudget: budget, profile: .rtx3060))
            #expect(try streamed.latents.toFloats().map(\.bitPattern) == (try free.latents.toFloats().map(\.bitPattern)))
            #expect(streamed.report!.phases.allSatisfy { $0.peakDeviceBytes <= budget })
            streamedSomewhere = streamedSomewhere || !(streamed.report!.plan.component("transformer")?.streamed.isEmpty ?? true)
        }
        #expect(streamedSomewhere)
    }

    @Test func badDeviceSpecIsAnError() {
        #expect(throws: SluiceError.self) { try ZImagePipeline(directory: Self.model, device: "tpu") }
    }
}
