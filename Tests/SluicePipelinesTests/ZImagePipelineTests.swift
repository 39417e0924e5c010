import Foundation
import SluiceBackends
import SluiceCore
import SluiceMemory
import SluiceModels
import SluiceWeights
import SluicePipelines
import SluiceTestSupport
import Testing

/// The whole pipeline on the tiny Z-Image against diffusers' ZImagePipeline ("a red fox", seed 7,
/// 4 steps, 64×64): every step's latents and the decoded image.
@Suite struct ZImagePipelineTests {
    static let model = Fixtures.directory + "/models/z-image-tiny"

    static func run(guidance: Float, memory: MemoryOptions = MemoryOptions()) throws -> (GenerationResult, [[Float]]) {
        let pipe = try ZImagePipeline(directory: model)
        var steps: [[Float]] = []
        let r = GenerationRequest(prompt: "a red fox", negativePrompt: guidance > 0 ? "blurry" : "", seed: 7, steps: 4,
                                  width: 64, height: 64, guidance: guidance)
        let out = try pipe.generate(r, memory: memory, afterStep: { _, t in steps.append((try? t.toFloats()) ?? []) })
        return (out, steps)
    }

    /// Tolerances: latents 1e-4 abs + 1e-4 rel — each step adds f32 differences from torch's summation
    /// order, through 4 transformer calls; image 2e-4 (then ±1/255 once quantised).
    @Test(arguments: [Float(0), 2.5])
    func matchesDiffusers(guidance: Float) throws {
        let ref = try Fixtures.file("zimage_reference.safetensors")
        let tag = guidance > 0 ? "cfg_" : ""
        let (out, steps) = try Self.run(guidance: guidance)
        #expect(steps.count == 4)
        for i in 0..<4 {
            let c = compare(steps[i], try ref.tensor("\(tag)latents_\(i)").toFloats(), atol: 1e-4, rtol: 1e-4)
            #expect(c.ok, "step \(i): \(c)")
        }
        let c = compare(try out.image.toFloats(), try ref.tensor("\(tag)image").toFloats(), atol: 2e-4, rtol: 0)
        #expect(c.ok, "image: \(c)")
    }

    /// The same run under device budgets that force streaming: bit-identical to the unbudgeted run,
    /// peak device bytes within the budget, and the text encoder swapped out when both do not fit.
    @Test func streamingGivesTheSameImage() throws {
        let (free, _) = try Self.run(guidance: 0)
        let want = try free.image.toFloats().map(\.bitPattern), wantLatents = try free.latents.toFloats().map(\.bitPattern)
        var tiled = false
        var streamed = false
        // 8 MiB holds everything; ~2.4 MiB is near the smallest plan (the activation estimate for
        // 768 tokens is most of it).
        for budget in [8 << 20, 2_600_000, 2_500_000, 2_450_000] {
            let (out, _) = try Self.run(guidance: 0, memory: MemoryOptions(deviceBudget: budget, profile: .rtx3060))
            #expect(try out.latents.toFloats().map(\.bitPattern) == wantLatents, "budget \(budget)")
            if let tile = out.vaeTileLatent {
                // A tiled decode is a different (approximate) image, exactly the one the tiled decoder
                // gives on the CPU for the same latents.
                tiled = true
                let pipe = try ZImagePipeline(directory: Self.model)
                let z = Tensor(uninitialized: free.latents.shape, dtype: .f32)
                for j in 0..<z.count { z.f32[j] = free.latents.f32[j] / pipe.vae.config.scalingFactor + pipe.vae.config.shiftFactor }
                let ckpt = try SluiceWeights.Checkpoint(path: Self.model + "/vae/diffusion_pytorch_model.safetensors")
                let cpu = try pipe.vae.decodeTiled(z, tileLatent: tile, ModuleWeights { k throws(SluiceError) in try ckpt.tensor(k) }, CPUBackend())
                let expected = try cpu.toFloats().map { min(max($0 / 2 + 0.5, 0), 1).bitPattern }
                #expect(try out.image.toFloats().map(\.bitPattern) == expected, "budget \(budget), tile \(tile)")
            } else {
                #expect(try out.image.toFloats().map(\.bitPattern) == want, "budget \(budget)")
            }
            let report = try #require(out.report)
            #expect(report.phases.allSatisfy { $0.peakDeviceBytes <= budget }, "budget \(budget): \(report.phases.map(\.peakDeviceBytes))")
            #expect(report.plan.peakDeviceBytes <= budget)
            streamed = streamed || !(report.plan.component("transformer")?.streamed.isEmpty ?? true)
            // Below all-fits the text encoder does not stay beside the transformer.
            if budget < 8 << 20 { #expect(report.plan.swappedBetweenPhases.contains("text_encoder"), "budget \(budget)") }
        }
        #expect(streamed, "no budget made the transformer stream")
        #expect(tiled, "no budget made the VAE tile")
    }

    @Test func badSizesAndBudgetsAreClearErrors() throws {
        let pipe = try ZImagePipeline(directory: Self.model)
        #expect(throws: SluiceError.self) { try pipe.generate(GenerationRequest(prompt: "x", steps: 2, width: 62, height: 64, guidance: 0)) }
        #expect(throws: SluiceError.self) {
            try pipe.generate(GenerationRequest(prompt: "x", steps: 2, width: 64, height: 64, guidance: 0), memory: MemoryOptions(deviceBudget: 1000))
        }
    }
}
