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
        let out = try pipe.generate(r, memory: memory, progress: { _ in }, afterStep: { _, t in steps.append((try? t.toFloats()) ?? []) },
                                    isCancelled: { false })
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
        for i in 0..<min(steps.count, 4) {
            let c = compare(steps[i], try ref.tensor("\(tag)latents_\(i)").toFloats(), atol: 1e-4, rtol: 1e-4)
            #expect(c.ok, "step \(i): \(c)")
        }
        let c = compare(try out.image.toFloats(), try ref.tensor("\(tag)image").toFloats(), atol: 2e-4, rtol: 0)
        #expect(c.ok, "image: \(c)")
    }

    /// The same run (with guidance: two transformer calls a step) under device budgets that force
    /// streaming: latents bit-identical to the unbudgeted run; the image too, except where the VAE tiles —
    /// then it is diffusers' tiled decode at the tile size the planner chose, of diffusers' own final
    /// latents (2e-4, as the whole image in `matchesDiffusers`). The simulated device holds twice the
    /// budget, so the measured peak (not a refused allocation) shows whether the plan kept to its budget;
    /// the activations the CPU really allocated in each phase stay within what the plan reserved.
    @Test func streamingGivesTheSameImage() throws {
        let (free, _) = try Self.run(guidance: 2.5)
        let want = try free.image.toFloats().map(\.bitPattern), wantLatents = try free.latents.toFloats().map(\.bitPattern)
        let ref = try Fixtures.file("zimage_reference.safetensors")
        var tiled = false
        var streamed = false
        // 8 MiB holds everything; ~2.4 MiB is near the smallest plan (the activation estimate for
        // 768 tokens is most of it).
        for budget in [8 << 20, 2_600_000, 2_500_000, 2_450_000] {
            var memory = MemoryOptions(deviceBudget: budget, profile: .rtx3060)
            memory.deviceCapBytes = 2 * budget
            let (out, _) = try Self.run(guidance: 2.5, memory: memory)
            #expect(try out.latents.toFloats().map(\.bitPattern) == wantLatents, "budget \(budget)")
            if let tile = out.vaeTileLatent {
                // A tiled decode is a different (approximate) image: diffusers' tiled_decode at this tile
                // size, postprocessed as the pipeline does.
                tiled = true
                let reference = try ImageOutput.fromDecoder(try ref.tensor("vae_tiled_\(tile)_out").reshaped([1, 3, 64, 64]))
                let c = compare(try out.image.toFloats(), try reference.toFloats(), atol: 2e-4, rtol: 0)
                #expect(c.ok, "budget \(budget), tile \(tile): \(c)")
            } else {
                #expect(try out.image.toFloats().map(\.bitPattern) == want, "budget \(budget)")
            }
            let report = out.report
            let plan = try #require(report.plan)
            #expect(report.phases.count == 3)
            for phase in report.phases {
                #expect(phase.peakDeviceBytes <= budget, "budget \(budget) \(phase.phase): peak \(phase.peakDeviceBytes)")
                let reserved = try #require(plan.components.first { $0.phase == phase.phase }).activationBytes
                #expect(phase.peakHostBytes > 0 && phase.peakHostBytes <= reserved,
                        "budget \(budget) \(phase.phase): the compute allocated \(phase.peakHostBytes) bytes, the plan reserved \(reserved)")
            }
            #expect(plan.peakDeviceBytes <= budget)
            streamed = streamed || !(plan.component("transformer")?.streamed.isEmpty ?? true)
            // Below all-fits the text encoder does not stay beside the transformer.
            if budget < 8 << 20 { #expect(plan.swappedBetweenPhases.contains("text_encoder"), "budget \(budget)") }
        }
        #expect(streamed, "no budget made the transformer stream")
        #expect(tiled, "no budget made the VAE tile")
    }

    /// `sluice plan --model` prints what `generate` runs: the plan a pipeline gives for a request is the
    /// one its run reports, at every budget (and none without one).
    @Test func planIsWhatGenerateRuns() throws {
        let pipe = try ZImagePipeline(directory: Self.model)
        let r = GenerationRequest(prompt: "a red fox", seed: 7, steps: 2, width: 64, height: 64, guidance: 0)
        #expect(try pipe.plan(r, memory: MemoryOptions()) == nil)
        #expect(try pipe.generate(r).report.plan == nil)
        for budget in [3 << 20, 2_600_000, 2_450_000, 8 << 20] {
            for profile in [DeviceProfile.rtx3060, .h100pcie] {
                let memory = MemoryOptions(deviceBudget: budget, profile: profile)
                let planned = try #require(try pipe.plan(r, memory: memory))
                #expect(planned == (try pipe.generate(r, memory: memory).report.plan), "budget \(budget) \(profile.name)")
            }
        }
    }

    @Test func badSizesAndBudgetsAreClearErrors() throws {
        let pipe = try ZImagePipeline(directory: Self.model)
        let width = #expect(throws: SluiceError.self) { try pipe.generate(GenerationRequest(prompt: "x", steps: 2, width: 62, height: 64, guidance: 0)) }
        #expect(width == .invalidParameter(.width, reason: "62 must be a positive multiple of 4"))  // the tiny VAE scales by 2
        let budget = #expect(throws: SluiceError.self) {
            try pipe.generate(GenerationRequest(prompt: "x", steps: 2, width: 64, height: 64, guidance: 0), memory: MemoryOptions(deviceBudget: 1000))
        }
        guard case .invalidParameter(.vramLimit, let reason)? = budget else { Issue.record("\(String(describing: budget))"); return }
        #expect(reason.contains("smallest that works"), "\(reason)")
    }

    /// The battery every family runs (`PipelineBattery`), on the tiny Z-Image: 8 MiB holds it all,
    /// 2.45 MB streams the transformer and tiles the VAE.
    @Test func sharedPipelineBattery() throws {
        let r = GenerationRequest(prompt: "a red fox", seed: 7, steps: 2, width: 64, height: 64, guidance: 0)
        try PipelineBattery(request: r, budgets: [8 << 20, 2_450_000]) { try ZImagePipeline(directory: Self.model) }.runAll()
    }

    /// `--ram-limit` through the whole pipeline, measured by a real allocation counter (apart from the
    /// executor's own bookkeeping, which decides what to cache): the host copies of weights never
    /// exceed the limit, some are made, and the image is the same as without a limit. (What stays
    /// resident of the memory-mapped files is measured in StreamingExecutorTests, on a checkpoint large
    /// enough that the kernel's mapping granularity does not hide it.)
    @Test func ramLimitBoundsTheHostCopiesOfWeights() throws {
        let r = GenerationRequest(prompt: "a red fox", seed: 7, steps: 3, width: 64, height: 64, guidance: 0)
        var images: [[UInt32]] = []
        for ramLimit in [256 << 10, nil] as [Int?] {
            let pipe = try ZImagePipeline(directory: Self.model)
            var memory = MemoryOptions(deviceBudget: 2_450_000, hostBudget: ramLimit, profile: .rtx3060)
            memory.deviceCapBytes = 2 * 2_450_000
            let out = try pipe.generate(r, memory: memory)
            #expect(!(out.report.plan?.component("transformer")?.streamed.isEmpty ?? true), "the transformer must stream")
            images.append(try out.image.toFloats().map(\.bitPattern))
            let held = pipe.device.hostWeights.peakBytes
            if let ramLimit { #expect(held > 0 && held <= ramLimit, "host copies of weights: \(held) bytes under a \(ramLimit)-byte limit") }
            else { #expect(held == 0) }
        }
        #expect(images[0] == images[1])
    }

    /// Residency across runs (the server's jobs): when a plan holds everything at once, the next run
    /// with the same plan uploads no weights — only the prompt's embedding rows, gathered from the table
    /// that stays in host memory; a run of another size places again only what changed (the text
    /// encoder's placement does not depend on the image); a plan that swaps empties the device after
    /// each run. Images stay what a fresh pipeline gives.
    @Test func residentWeightsStayAcrossRuns() throws {
        let pipe = try ZImagePipeline(directory: Self.model)
        let r = GenerationRequest(prompt: "a red fox", seed: 7, steps: 2, width: 64, height: 64, guidance: 0)
        let rows = try pipe.tokenizer.zImagePromptIDs("a red fox").count * pipe.encoder.config.hiddenSize * 4
        let roomy = MemoryOptions(deviceBudget: 16 << 20, profile: .rtx3060)  // holds all three at once
        let first = try pipe.generate(r, memory: roomy)
        #expect(first.report.phases.allSatisfy { $0.bytesHostToDevice > 0 })
        #expect(pipe.components.keptOnDevice == ["text_encoder", "vae_encoder", "transformer", "vae"])
        let second = try pipe.generate(r, memory: roomy)
        #expect(second.report.phases.allSatisfy { $0.bytesHostToDevice == ($0.phase == "text" ? rows : 0) }, "\(second.report.phases.map(\.bytesHostToDevice))")
        #expect(try second.image.toFloats() == first.image.toFloats())
        // Another size: the transformer and VAE are placed again (their activations changed), the text
        // encoder stays.
        var tall = r
        tall.height = 96
        let third = try pipe.generate(tall, memory: roomy)
        let bytes = Dictionary(uniqueKeysWithValues: third.report.phases.map { ($0.phase, $0.bytesHostToDevice) })
        #expect(bytes["text"] == rows && (bytes["denoise"] ?? 0) > 0 && (bytes["decode"] ?? 0) > 0, "\(bytes)")
        #expect(try third.image.toFloats() == ZImagePipeline(directory: Self.model).generate(tall, memory: roomy).image.toFloats())
        // A plan that swaps between phases cannot keep anything across runs.
        let tight = MemoryOptions(deviceBudget: 2_450_000, profile: .rtx3060)
        _ = try pipe.generate(r, memory: tight)
        #expect(pipe.components.keptOnDevice.isEmpty)
        let again = try pipe.generate(r, memory: tight)
        #expect(again.report.phases.allSatisfy { $0.bytesHostToDevice > 0 })
        // No budget: the device is emptied.
        _ = try pipe.generate(r)
        #expect(pipe.components.keptOnDevice.isEmpty && pipe.components.runners.allSatisfy { $0.executor == nil })
    }
}
