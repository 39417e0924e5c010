import SluiceBackends
import SluiceTestSupport
import SluiceText
import Testing

/// Both encoders through the Vulkan backend (lavapipe in CI), against the same references: the shaders
/// sum each dot product and softmax in their own order (f32), so 1e-4 abs + 1e-4 rel (measured on
/// lavapipe: 8e-7 for CLIP, 2.8e-5 for T5's 300 tokens).
@Suite(.enabled(if: Vulkan.unavailableReason == nil && ((try? Vulkan.devices().count) ?? 0) > 0,
                "no Vulkan device: \(Vulkan.unavailableReason ?? "none found")"))
struct TextEncoderVulkanTests {
    @Test func clipAndT5MatchTransformersOnVulkan() throws {
        let ctx = try VulkanContext()
        let vk = try VulkanBackend(context: ctx)
        let ref = try Fixtures.file("flux_text_encoders.safetensors")
        func gemms() -> Int { ctx.dispatchCount(.gemm) + ctx.dispatchCount(.gemmTiled) }
        let attention = ctx.dispatchCount(.attention), products = gemms()
        let clip = try CLIPTextEncoder(config: CLIPTextEncoderTests.config())
            .encode(ids: textEncoderIds(ref.tensor("clip.flux.ids")), CLIPTextEncoderTests.weights(), vk)
        try T5EncoderTests.check(clip.hidden, ref.tensor("clip.flux.last_hidden_state"), atol: 1e-4, rtol: 1e-4)
        try T5EncoderTests.check(try #require(clip.pooled), ref.tensor("clip.flux.pooled"), atol: 1e-4, rtol: 1e-4)
        let t5 = try T5Encoder(config: T5EncoderTests.config())
            .encode(ids: textEncoderIds(ref.tensor("t5.long.ids")), T5EncoderTests.weights(), vk)
        try T5EncoderTests.check(t5, ref.tensor("t5.long.last_hidden_state"), atol: 1e-4, rtol: 1e-4)
        // 2 CLIP layers and 3 T5 blocks; 6 and 7 products each, and T5's bias gather.
        #expect(ctx.dispatchCount(.attention) >= attention + 5, "attention did not run on the device")
        #expect(gemms() >= products + 2 * 6 + 3 * 7 + 1, "the linear layers did not run on the device")
    }
}
