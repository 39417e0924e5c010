import Foundation
import SluiceBackends
import SluiceCore
import SluiceMemory
import SluiceModels
import SluicePipelines
import SluiceTestSupport
import SluiceWeights
import Testing

/// The whole FLUX.1 pipeline on the tiny dev and schnell models against diffusers' FluxPipeline
/// (tools/reference/make_flux_tiny.py; 32×48 pixels, "a red fox"): every step's latents and the image.
@Suite struct FluxPipelineTests {
    static let dev = Fixtures.directory + "/models/flux-tiny-dev"
    static let schnell = Fixtures.directory + "/models/flux-tiny-schnell"

    struct Case: Sendable, CustomStringConvertible {
        let tag: String, model: String, steps: Int, seed: UInt64, guidance: Float, trueCFG: Float, negative: String, length: Int
        var width = 48, height = 32
        var description: String { tag }
        var request: GenerationRequest {
            var r = GenerationRequest(prompt: "a red fox", negativePrompt: negative, seed: seed, steps: steps, width: width, height: height, guidance: guidance)
            r.trueCFGScale = trueCFG
            r.maxSequenceLength = length
            return r
        }
    }

    static let cases = [
        // Embedded guidance 3.5 (dev's default), T5 padded to 24 tokens.
        Case(tag: "dev_", model: dev, steps: 4, seed: 7, guidance: 3.5, trueCFG: 1, negative: "", length: 24),
        // True CFG: the negative prompt through a second transformer call each step.
        Case(tag: "cfg_", model: dev, steps: 3, seed: 8, guidance: 3.5, trueCFG: 2, negative: "blurry", length: 24),
        // T5's padding is attended: the length changes the image.
        Case(tag: "len32_", model: dev, steps: 2, seed: 7, guidance: 3.5, trueCFG: 1, negative: "", length: 32),
        // schnell: no guidance embedder, static shift 1.
        Case(tag: "schnell_", model: schnell, steps: 2, seed: 5, guidance: 0, trueCFG: 1, negative: "", length: 16),
    ]

    /// 128² with true CFG: the transformer's activations (1,048 tokens) outgrow the VAE's smallest
    /// plan, so a budget between the two makes the transformer stream (4.2 MB: 4 of its 6 groups; 4.15 MB: 5).
    static let streamCase = Case(tag: "stream", model: dev, steps: 2, seed: 9, guidance: 3.5, trueCFG: 2, negative: "blurry", length: 24,
                                 width: 128, height: 128)
    static let streamBudgets = [8 << 20, 4_200_000, 4_150_000]

    static func run(_ c: Case, device: String = "cpu", memory: MemoryOptions = MemoryOptions()) throws -> (GenerationResult, [[Float]]) {
        let pipe = try FluxPipeline(directory: c.model, device: device)
        var steps: [[Float]] = []
        let out = try pipe.generate(c.request, memory: memory, progress: { _ in }, afterStep: { _, t in steps.append((try? t.toFloats()) ?? []) },
                                    isCancelled: { false })
        return (out, steps)
    }

    /// Tolerances: latents 1e-4 abs + 1e-4 rel (f32 sums in torch's order vs ours, through up to 6
    /// transformer calls), image 2e-4 — as for Z-Image.
    @Test(arguments: cases)
    func matchesDiffusers(_ c: Case) throws {
        let ref = try Fixtures.file("flux_reference.safetensors")
        let (out, steps) = try Self.run(c)
        #expect(steps.count == c.steps)
        for i in 0..<min(steps.count, c.steps) {
            let cmp = compare(steps[i], try ref.tensor("\(c.tag)latents_\(i)").toFloats(), atol: 1e-4, rtol: 1e-4)
            #expect(cmp.ok, "\(c.tag) step \(i): \(cmp)")
        }
        let cmp = compare(try out.image.toFloats(), try ref.tensor("\(c.tag)image").toFloats(), atol: 2e-4, rtol: 0)
        #expect(cmp.ok, "\(c.tag) image: \(cmp)")
        #expect(out.image.shape == [3, 32, 48])
        #expect(Int(try ref.tensor("\(c.tag)calls").toFloats()[0]) == c.steps * (c.trueCFG > 1 ? 2 : 1))
    }

    /// The text side alone: CLIP's pooled output and T5's states of the padded prompt (24 tokens).
    @Test func promptEmbeddingsMatchDiffusers() throws {
        let pipe = try FluxPipeline(directory: Self.dev)
        let ref = try Fixtures.file("flux_reference.safetensors")
        let e = try pipe.encodePrompts(["a red fox"], sequenceLength: 24)[0]
        #expect(e.hidden.shape == [24, pipe.transformer.config.jointAttentionDim])
        let p = compare(try e.pooled.toFloats(), try ref.tensor("dev_pooled").toFloats(), atol: 1e-5, rtol: 1e-4)
        let h = compare(try e.hidden.toFloats(), try ref.tensor("dev_prompt_embeds").toFloats(), atol: 1e-5, rtol: 1e-4)
        #expect(p.ok, "pooled: \(p)")
        #expect(h.ok, "T5: \(h)")
    }

    @Test func defaultsFollowTheModelCards() throws {
        let dev = try FluxPipeline(directory: Self.dev), schnell = try FluxPipeline(directory: Self.schnell)
        #expect(dev.isGuidanceDistilled && !schnell.isGuidanceDistilled)
        #expect(dev.defaults.steps == 28 && dev.defaults.guidance == 3.5 && dev.defaults.maxPromptTokens == 512)
        #expect(schnell.defaults.steps == 4 && schnell.defaults.guidance == 0 && schnell.defaults.maxPromptTokens == 256)
        // The registry picks FLUX by the folder's FluxPipeline class.
        #expect(try PipelineRegistry.shared.load(model: Self.dev, device: "cpu").family == "FLUX.1")
        var r = dev.request(prompt: "x", guidance: 2)
        #expect(dev.warnings(r).isEmpty)
        r.maxSequenceLength = 513
        #expect(throws: SluiceError.self) { try dev.validate(r) }
        #expect(!schnell.warnings(schnell.request(prompt: "x", guidance: 2)).isEmpty, "schnell ignores guidance: say so")
    }

    /// With true CFG, budgets that force streaming: latents bit-identical to the unbudgeted run; the
    /// image too unless the VAE tiles; every phase's device peak within the budget. T5 and CLIP are
    /// released before denoising where the plan swaps them.
    @Test func streamingGivesTheSameImage() throws {
        let c = Self.streamCase
        let (free, _) = try Self.run(c)
        var streamed = false
        for budget in Self.streamBudgets {
            var memory = MemoryOptions(deviceBudget: budget, profile: .rtx3060)
            memory.deviceCapBytes = 2 * budget
            let out: GenerationResult
            do { out = try Self.run(c, memory: memory).0 } catch let SluiceError.invalidParameter(p, reason) where p == .vramLimit {
                Issue.record("budget \(budget) refused: \(reason)")
                continue
            }
            #expect(try out.latents.toFloats().map(\.bitPattern) == (try free.latents.toFloats().map(\.bitPattern)), "budget \(budget)")
            if out.vaeTileLatent == nil {
                #expect(try out.image.toFloats().map(\.bitPattern) == (try free.image.toFloats().map(\.bitPattern)), "budget \(budget)")
            }
            let plan = try #require(out.report.plan)
            for phase in out.report.phases {
                #expect(phase.peakDeviceBytes <= budget, "budget \(budget) \(phase.phase): \(phase.peakDeviceBytes)")
                // What the CPU really allocated in the phase stays within what the plan reserved for it.
                let reserved = plan.components.filter { $0.phase == phase.phase }.map(\.activationBytes).max() ?? 0
                #expect(phase.peakHostBytes > 0 && phase.peakHostBytes <= reserved,
                        "budget \(budget) \(phase.phase): the compute allocated \(phase.peakHostBytes) bytes, the plan reserved \(reserved)")
            }
            if plan.components.contains(where: { !$0.streamed.isEmpty }) {
                streamed = true
                // T5 (and CLIP) leave the device before the transformer streams.
                #expect(plan.swappedBetweenPhases.contains("text_encoder_2") && plan.swappedBetweenPhases.contains("text_encoder"), "\(plan.swappedBetweenPhases)")
            }
        }
        #expect(streamed, "no budget made the transformer stream")
    }

    /// The family battery: seeds, shapes, refusals, progress, cancelling, budgets.
    @Test func battery() throws {
        var r = Self.cases[0].request
        r.steps = 2
        try PipelineBattery(request: r, budgets: [8 << 20, 1_900_000]) { try FluxPipeline(directory: Self.dev) }.runAll()
    }

    /// `--device vulkan` (lavapipe in CI): within 1e-4 of the CPU image; under a budget (real buffers,
    /// the VAE tiled) the latents are unchanged. (Streaming the transformer needs the 128² case, which
    /// lavapipe decodes too slowly for CI: the CPU test above proves it, Z-Image's Vulkan test streams.)
    @Test(.enabled(if: Vulkan.unavailableReason == nil && ((try? Vulkan.devices().count) ?? 0) > 0, "no Vulkan device"))
    func vulkanMatchesCPU() throws {
        let c = Self.cases[1]
        let cpu = try Self.run(c).0
        let (vk, _) = try Self.run(c, device: "vulkan")
        let cmp = compare(try vk.image.toFloats(), try cpu.image.toFloats(), atol: 1e-4, rtol: 0)
        #expect(cmp.ok, "\(cmp)")
        var memory = MemoryOptions(deviceBudget: 1_900_000, profile: .rtx3060)
        memory.deviceCapBytes = 3_800_000
        let (streamed, _) = try Self.run(c, device: "vulkan", memory: memory)
        #expect(streamed.vaeTileLatent != nil)
        #expect(try streamed.latents.toFloats().map(\.bitPattern) == (try vk.latents.toFloats().map(\.bitPattern)))
        // An fp8 single file in BFL's layout: e4m3fn weights widened on the device, q/k/v from row views.
        let file = Self.singleFiles + "/tiny-dev-bfl-fp8-comfy.safetensors"
        let fp8 = try FluxPipeline(directory: Self.dev, device: "vulkan", transformerFile: file).generate(c.request)
        let fp8CPU = try FluxPipeline(directory: Self.dev, transformerFile: file).generate(c.request)
        let f = compare(try fp8.image.toFloats(), try fp8CPU.image.toFloats(), atol: 1e-4, rtol: 0)
        #expect(f.ok, "fp8 single file: \(f)")
    }

    // MARK: - Single-file transformers

    static let singleFiles = Fixtures.directory + "/flux-single-file"

    static func run(_ c: Case, transformer file: String) throws -> (GenerationResult, [[Float]]) {
        let pipe = try FluxPipeline(directory: c.model, transformerFile: file)
        var steps: [[Float]] = []
        let out = try pipe.generate(c.request, memory: MemoryOptions(), progress: { _ in }, afterStep: { _, t in steps.append((try? t.toFloats()) ?? []) },
                                    isCancelled: { false })
        return (out, steps)
    }

    /// The dev transformer saved in Black Forest Labs' layout (tools/reference/flux_bfl.py inverts
    /// diffusers' converter), bf16: the folder's own run, bit for bit — q/k/v are row views of the fused
    /// tensors, the final modulation's halves swapped back.
    @Test func bflSingleFileGivesTheFoldersImage() throws {
        let c = Self.cases[0]
        let (folder, _) = try Self.run(c)
        let (single, _) = try Self.run(c, transformer: Self.singleFiles + "/tiny-dev-bfl-bf16.safetensors")
        #expect(try single.latents.toFloats().map(\.bitPattern) == (try folder.latents.toFloats().map(\.bitPattern)))
        #expect(try single.image.toFloats().map(\.bitPattern) == (try folder.image.toFloats().map(\.bitPattern)))
    }

    /// The same in float8_e4m3fn, with ComfyUI's `model.diffusion_model.` prefix and without it:
    /// diffusers' run with every transformer weight rounded through e4m3fn (tolerances as above), and the
    /// two files alike bit for bit.
    @Test func fp8SingleFilesGiveTheRoundedWeightsImage() throws {
        let c = Self.cases[0]
        let comfy = Self.singleFiles + "/tiny-dev-bfl-fp8-comfy.safetensors"
        let ref = try Fixtures.file("flux_reference.safetensors")
        let (out, steps) = try Self.run(c, transformer: comfy)
        for i in 0..<c.steps {
            let cmp = compare(steps[i], try ref.tensor("fp8_latents_\(i)").toFloats(), atol: 1e-4, rtol: 1e-4)
            #expect(cmp.ok, "fp8 step \(i): \(cmp)")
        }
        let img = compare(try out.image.toFloats(), try ref.tensor("fp8_image").toFloats(), atol: 2e-4, rtol: 0)
        #expect(img.ok, "fp8 image: \(img)")
        // Not the bf16 image: the rounding shows.
        #expect(compare(try out.image.toFloats(), try ref.tensor("dev_image").toFloats(), atol: 2e-4, rtol: 0).ok == false)

        // The unprefixed file: the same tensors under BFL's bare names.
        let file = try SafetensorsFile(path: comfy)
        let prefix = "model.diffusion_model."
        #expect(file.names.allSatisfy { $0.hasPrefix(prefix) })
        let bare = FileManager.default.temporaryDirectory.path + "/sluice-flux-fp8-\(getpid()).safetensors"
        defer { try? FileManager.default.removeItem(atPath: bare) }
        try SafetensorsWriter.write(try file.names.sorted().map { (String($0.dropFirst(prefix.count)), try file.tensor($0)) }, to: bare)
        let (plain, _) = try Self.run(c, transformer: bare)
        #expect(try plain.latents.toFloats().map(\.bitPattern) == (try out.latents.toFloats().map(\.bitPattern)))
    }

    /// `--transformer` through the registry; refused by a family that takes no single file, and a file
    /// for another transformer (schnell's folder: no guidance embedder) refused naming the tensor.
    @Test func singleFileOverridesAreCheckedAtLoad() throws {
        let file = Self.singleFiles + "/tiny-dev-bfl-bf16.safetensors"
        let pipe = try PipelineRegistry.shared.load(model: Self.dev, device: "cpu", transformer: file)
        #expect((pipe as? FluxPipeline)?.transformerFile == file)
        do {
            _ = try PipelineRegistry.shared.load(model: Fixtures.directory + "/models/z-image-tiny", device: "cpu", transformer: file)
            Issue.record("Z-Image took a single-file transformer")
        } catch let SluiceError.invalidParameter(p, _) { #expect(p == .transformer) }
        do {
            _ = try PipelineRegistry.shared.load(model: Self.schnell, device: "cpu", transformer: file)
            Issue.record("schnell's folder took dev's transformer")
        } catch let SluiceError.invalidCheckpoint(_, tensor, reason) {
            #expect(tensor?.contains("guidance") == true, "\(tensor ?? "nil"): \(reason)")
        }
        #expect(throws: SluiceError.self) { _ = try PipelineRegistry.shared.load(model: Self.dev, device: "cpu", transformer: "/nonexistent.safetensors") }
    }
}
