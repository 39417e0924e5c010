import Foundation
import SluiceCore
import SluicePipelines
import SluiceTestSupport
import Testing

/// Image to image for the flow-matching families against diffusers' ZImageImg2ImgPipeline and
/// FluxImg2ImgPipeline on the tiny folders (tools/reference/make_flow_img2img_reference.py; the init image
/// of make_sd_reference.py): the VAE latents sampled with the run's generator, the schedule entered at
/// ⌊n − n·strength⌋, every step's latents and the image.
@Suite struct FlowImageToImageTests {
    struct Case: Sendable, CustomStringConvertible {
        let tag: String, model: String, steps: Int, seed: UInt64, guidance: Float, strength: Double
        var negative = ""
        var description: String { tag }
    }

    static let cases = [
        Case(tag: "zimage_", model: "z-image-tiny", steps: 5, seed: 11, guidance: 0, strength: 0.6),
        Case(tag: "zimage_cfg_", model: "z-image-tiny", steps: 4, seed: 12, guidance: 2.5, strength: 0.75, negative: "blurry"),
        Case(tag: "flux_", model: "flux-tiny-dev", steps: 5, seed: 13, guidance: 3.5, strength: 0.6),
    ]

    /// Tolerances as for each family's text-to-image tests: latents 1e-4 abs + 1e-4 rel, the image 2e-4.
    @Test(arguments: cases)
    func matchesDiffusers(_ c: Case) throws {
        let ref = try Fixtures.file("flow_img2img_reference.safetensors")
        let pipe = try PipelineRegistry.shared.load(model: Fixtures.directory + "/models/" + c.model, device: "cpu")
        #expect(pipe.supportsImageToImage)
        var r = GenerationRequest(prompt: "a red fox", negativePrompt: c.negative, seed: c.seed, steps: c.steps, width: 48, height: 32, guidance: c.guidance)
        r.initImage = StableDiffusionPipelineTests.initImage
        r.strength = c.strength
        if c.model.hasPrefix("flux") { r.maxSequenceLength = 24 }
        var steps: [[Float]] = []
        let out = try pipe.generate(r, memory: MemoryOptions(), progress: { _ in }, afterStep: { _, t in steps.append((try? t.toFloats()) ?? []) },
                                    isCancelled: { false })
        let want = Int(try ref.tensor("\(c.tag)steps").toFloats()[0])
        #expect(steps.count == want, "\(c.tag): \(steps.count) steps, diffusers ran \(want)")
        for i in 0..<min(steps.count, want) {
            let cmp = compare(steps[i], try ref.tensor("\(c.tag)latents_\(i)").toFloats(), atol: 1e-4, rtol: 1e-4)
            #expect(cmp.ok, "\(c.tag) step \(i): \(cmp)")
        }
        let cmp = compare(try out.image.toFloats(), try ref.tensor("\(c.tag)image").toFloats(), atol: 2e-4, rtol: 0)
        #expect(cmp.ok, "\(c.tag) image: \(cmp)")
    }
}
