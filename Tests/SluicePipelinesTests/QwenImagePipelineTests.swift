import Foundation
import SluiceBackends
import SluiceCore
import SluiceMemory
import SluiceModels
import SluicePipelines
import SluiceText
import SluiceWeights
import SluiceTestSupport
import SluiceWeights
import Testing

/// The whole Qwen-Image pipeline on the tiny model against diffusers' QwenImagePipeline
/// (tools/reference/make_qwen_image_tiny.py; 64², 3 steps, "a red fox in the snow"): the prompt
/// embeddings, every step's latents and the image, with true CFG and without.
@Suite struct QwenImagePipelineTests {
    static let model = Fixtures.directory + "/models/qwen-image-tiny"

    static func request(negative: String) -> GenerationRequest {
        GenerationRequest(prompt: "a red fox in the snow", negativePrompt: negative, seed: 7, steps: 3, width: 64, height: 64, guidance: 4)
    }

    static func run(_ r: GenerationRequest, device: String = "cpu", memory: MemoryOptions = MemoryOptions()) throws -> (GenerationResult, [[Float]]) {
        let pipe = try QwenImagePipeline(directory: model, device: device)
        var steps: [[Float]] = []
        let out = try pipe.generate(r, memory: memory, progress: { _ in }, afterStep: { _, t in steps.append((try? t.toFloats()) ?? []) },
                                    isCancelled: { false })
        return (out, steps)
    }

    /// Embeddings 1e-5 abs + 1e-4 rel (f32 on both sides, 2 layers). Latents 1e-4 abs + 1e-4 rel: f32 sums
    /// in torch's order vs ours through up to 6 transformer calls, the CFG scale 4 and the norm rescale
    /// amplifying them (as FLUX's); the image 2e-4.
    @Test(arguments: [("cfg", "blurry, low quality"), ("plain", "")])
    func matchesDiffusers(_ tag: String, _ negative: String) throws {
        let ref = try Fixtures.file("qwen_image_reference.safetensors")
        let pipe = try QwenImagePipeline(directory: Self.model)
        for (name, text) in [("prompt", "a red fox in the snow"), ("negative", "blurry, low quality")] {
            let c = compare(try pipe.encodePrompt(text).toFloats(), try ref.tensor("\(name)_embeds").toFloats(), atol: 1e-5, rtol: 1e-4)
            #expect(c.ok, "\(name) embeddings: \(c)")
        }
        let (out, steps) = try Self.run(Self.request(negative: negative))
        let want = try ref.tensor("\(tag)_latents").toFloats()
        #expect(steps.count == 3)
        let per = want.count / 3
        for (i, got) in steps.enumerated() {
            let c = compare(got, Array(want[(i * per)..<((i + 1) * per)]), atol: 1e-4, rtol: 1e-4)
            #expect(c.ok, "\(tag) step \(i): \(c)")
        }
        let c = compare(try out.image.toFloats(), try ref.tensor("\(tag)_image").toFloats(), atol: 2e-4, rtol: 0)
        #expect(c.ok, "\(tag) image: \(c)")
    }

    /// Image to image as QwenImageImg2ImgPipeline (strength 0.6 of 3 steps: entered at step 1), true CFG:
    /// the VAE encoder's sample from the run's generator, normalised per channel, noised at that σ;
    /// every step's latents and the image within the tolerances above.
    @Test func imageToImageMatchesDiffusers() throws {
        let ref = try Fixtures.file("qwen_image_reference.safetensors")
        let picture = try ref.tensor("init_image").toFloats()
        let plane = 64 * 64
        var pixels = [UInt8](repeating: 0, count: 3 * plane)
        for i in 0..<plane { for c in 0..<3 { pixels[i * 3 + c] = UInt8((picture[c * plane + i] * 255).rounded()) } }
        var r = Self.request(negative: "blurry, low quality")
        r.initImage = InitImage(pixels: pixels, width: 64, height: 64)
        r.strength = 0.6
        let (out, steps) = try Self.run(r)
        let want = try ref.tensor("img2img_latents").toFloats()
        #expect(steps.count == 2)
        let per = want.count / 2
        for (i, got) in steps.enumerated() {
            let c = compare(got, Array(want[(i * per)..<((i + 1) * per)]), atol: 1e-4, rtol: 1e-4)
            #expect(c.ok, "img2img step \(i): \(c)")
        }
        let c = compare(try out.image.toFloats(), try ref.tensor("img2img_image").toFloats(), atol: 2e-4, rtol: 0)
        #expect(c.ok, "img2img image: \(c)")
    }

    /// The scheduler's σ (dynamic shift, then stretched to shift_terminal 0.02) bit for bit.
    @Test func sigmasMatchDiffusers() throws {
        let ref = try Fixtures.file("qwen_image_reference.safetensors").tensor("sigmas").toFloats()
        let pipe = try QwenImagePipeline(directory: Self.model)
        let s = try FlowMatchEulerScheduler(config: pipe.schedulerConfig, baseSigmas: FlowMatchEulerScheduler.numpyLinspace(1, 1.0 / 3, 3),
                                            mu: FlowMatchEulerScheduler.mu(imageSeqLen: 16, config: pipe.schedulerConfig))
        #expect(s.sigmas.map(\.bitPattern) == ref.map(\.bitPattern), "\(s.sigmas) vs \(ref)")
    }

    /// `--device vulkan` (lavapipe in CI): with true CFG (its norms read back to the host) within 1e-4
    /// of the CPU image.
    @Test(.enabled(if: Vulkan.unavailableReason == nil && ((try? Vulkan.devices().count) ?? 0) > 0, "no Vulkan device"))
    func vulkanMatchesCPU() throws {
        let r = Self.request(negative: "blurry")
        let cpu = try Self.run(r).0, vk = try Self.run(r, device: "vulkan").0
        let c = compare(try vk.image.toFloats(), try cpu.image.toFloats(), atol: 1e-4, rtol: 0)
        #expect(c.ok, "\(c)")
    }

    /// The token embedding stays in host memory under a budget: the plan never places it, and what the
    /// text phase moves to the device is the layers (first run only: they stay resident) plus exactly the
    /// rows the two prompts use — counted by the device, never the table.
    @Test func embeddingRowsCrossNotTheTable() throws {
        let pipe = try QwenImagePipeline(directory: Self.model)
        let r = Self.request(negative: "blurry, low quality")
        let memory = MemoryOptions(deviceBudget: 64 << 20, profile: .rtx3060)
        let hidden = pipe.encoder.config.hiddenSize
        let tokens = try [r.prompt, r.negativePrompt].map { try QwenImagePrompt.ids($0, tokenizer: pipe.tokenizer).count }.reduce(0, +)
        let rows = tokens * hidden * 4
        let table = pipe.encoder.config.vocabSize * hidden * 2  // bf16
        let layers = try pipe.components.runners[0].execGroups().reduce(0) { $0 + $1.bytes }
        #expect(rows < table)
        let first = try pipe.generate(r, memory: memory)
        let plan = try #require(first.report.plan?.component("text_encoder"))
        #expect(!(plan.resident + plan.streamed).contains("model.embed_tokens"), "\(plan.resident)")
        let text = { (g: GenerationResult) in g.report.phases.first { $0.phase == "text" }!.bytesHostToDevice }
        #expect(text(first) == layers + rows, "\(text(first)) vs layers \(layers) + rows \(rows)")
        let second = try pipe.generate(r, memory: memory)
        #expect(text(second) == rows)
        #expect(try second.latents.toFloats() == Self.run(r).0.latents.toFloats())
    }

    /// The real Qwen-Image (its table: 20.4B-parameter transformer, Qwen2.5-VL-7B, the VAE) with fp8
    /// weights at 1328² plans at 8, 12, 16 and 24 GiB (SIMULATION: the planner's sums, no run): every
    /// phase within the budget, the embedding table never on the device, the text encoder released
    /// before denoising, and the transformer streaming below 24 GiB and resident at 24.
    @Test func realModelPlansAtCardSizes() throws {
        let table = try ModelTable.resolve("qwen-image")
        let components = try PipelineRegistry.shared.describe(table)
        #expect(!components[0].groups.contains { $0.name.hasSuffix("embed_tokens") })
        for gib in [8, 12, 16, 24] {
            let budget = gib << 30
            let plan = try PipelinePlanner.plan(components, PlanRequest(deviceBudget: budget, storage: .f8e4m3fn, width: 1328, height: 1328, profile: .rtx4090))
            #expect(plan.peakDeviceBytes <= budget, "\(gib) GiB: \(plan.peakDeviceBytes)")
            #expect(plan.swappedBetweenPhases.contains("text_encoder"), "\(gib) GiB")
            let tr = try #require(plan.component("transformer"))
            #expect(tr.streamed.isEmpty == (gib == 24), "\(gib) GiB: \(tr.streamed.count) streamed")
        }
    }

    /// ComfyUI's single transformer files (`--transformer`): bf16 under "model.diffusion_model." gives the
    /// folder's run bit for bit; fp8_e4m3fn (2-D weights fp8, the rest bf16) matches diffusers run on the
    /// same fp8 values, within the pipeline's tolerances; a scaled-fp8 file and another model's file are
    /// refused naming the tensor (tools/reference/make_qwen_image_single_file.py).
    @Test func singleTransformerFiles() throws {
        let dir = Fixtures.directory + "/qwen-image-single-file"
        let r = Self.request(negative: "blurry, low quality")
        let folder = try Self.run(r).0
        let bf16 = try QwenImagePipeline(directory: Self.model, transformerFile: dir + "/comfy_bf16.safetensors").generate(r)
        #expect(try bf16.latents.toFloats().map(\.bitPattern) == folder.latents.toFloats().map(\.bitPattern))
        let fp8 = try QwenImagePipeline(directory: Self.model, transformerFile: dir + "/fp8_e4m3fn.safetensors").generate(r)
        let ref = try Fixtures.file("qwen-image-single-file/reference.safetensors")
        let want = try ref.tensor("fp8_latents").toFloats()
        let last = Array(want[(2 * want.count / 3)...])
        let c = compare(try fp8.latents.toFloats(), last, atol: 1e-4, rtol: 1e-4)
        #expect(c.ok, "fp8 latents: \(c)")
        let ci = compare(try fp8.image.toFloats(), try ref.tensor("fp8_image").toFloats(), atol: 2e-4, rtol: 0)
        #expect(ci.ok, "fp8 image: \(ci)")
        #expect(try fp8.latents.toFloats() != folder.latents.toFloats())

        let tmp = NSTemporaryDirectory() + "sluice-qwen-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: tmp, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: tmp) }
        let scaled = tmp + "/scaled.safetensors"
        let source = try SafetensorsFile(path: dir + "/fp8_e4m3fn.safetensors")
        var tensors = try source.names.map { ($0, try source.tensor($0)) }
        tensors.append(("transformer_blocks.0.attn.to_q.scale_weight", Tensor([1], shape: [1])))
        try SafetensorsWriter.write(tensors, to: scaled)
        for (file, words) in [(scaled, "scale_weight"), (Fixtures.directory + "/flux-single-file/bfl_fp8_comfy.safetensors", "img_in.weight")] {
            do {
                _ = try QwenImagePipeline(directory: Self.model, transformerFile: file)
                Issue.record("loaded \(file)")
            } catch {
                #expect("\(error)".contains(words) && "\(error)".contains(file), "\(error)")
            }
        }
    }

    /// A 128 × 96 image (at 64² the VAE has nothing to tile) under budgets too small for the VAE's whole frame:
    /// the planner tiles it, at 12 latents and then at 8, and the run keeps to the plan — latents bit-identical
    /// to the unbudgeted run, every phase's device peak within the budget (the simulated device holds twice
    /// the budget, so an overrun shows in the peak), the decode's real allocations within the activations the
    /// plan reserved, and the image the tiled decode at the planned tile (which QwenImageVAETests holds against
    /// diffusers' tiled_decode).
    @Test func tiledDecodeKeepsToTheBudget() throws {
        var r = Self.request(negative: "")
        r.width = 128; r.height = 96; r.steps = 2
        let pipe = try QwenImagePipeline(directory: Self.model)
        let free = try pipe.generate(r)
        let vae = pipe.vae, be = try CPUBackend()
        let weights = try Checkpoint(path: Self.model + "/vae/diffusion_pytorch_model.safetensors")
        let z = try vae.config.denormalize(free.latents, be)
        var tiles: [Int] = []
        // The VAE plans 4.34 MB on the device for the whole frame (weights and activations), 4.05 MB in tiles of
        // 12 latents (2 × 2 of them), 2.21 MB in tiles of 8 (2 × 3).
        for budget in [4_250_000, 2_500_000] {
            var memory = MemoryOptions(deviceBudget: budget, profile: .rtx3060)
            memory.deviceCapBytes = 2 * budget
            let out = try pipe.generate(r, memory: memory)
            let plan = try #require(out.report.plan)
            #expect(try pipe.plan(r, memory: memory) == plan, "budget \(budget): plan differs from the run's")
            #expect(try Self.bits(out.latents) == Self.bits(free.latents), "budget \(budget)")
            let tile = try #require(out.vaeTileLatent, "budget \(budget): the VAE did not tile")
            tiles.append(tile)
            #expect(plan.peakDeviceBytes <= budget)
            for phase in out.report.phases { #expect(phase.peakDeviceBytes <= budget, "budget \(budget) \(phase.phase): \(phase.peakDeviceBytes)") }
            let decode = try #require(out.report.phases.first { $0.phase == Phase.decode.rawValue })
            let reserved = try #require(plan.component("vae")).activationBytes
            #expect(decode.peakHostBytes > 0 && decode.peakHostBytes <= reserved, "budget \(budget): decode allocated \(decode.peakHostBytes), the plan reserved \(reserved)")
            let want = try ImageOutput.fromDecoder(vae.decodeTiled(z, tileLatent: tile, ModuleWeights { k throws(SluiceError) in try weights.tensor(k) }, be))
            #expect(try Self.bits(out.image) == Self.bits(want), "budget \(budget), tile \(tile)")
        }
        #expect(tiles == [12, 8])
    }

    static func bits(_ t: Tensor) throws -> [UInt32] { try t.toFloats().map(\.bitPattern) }

    /// Image to image at 128 × 96 under a budget too small for the VAE encoder's whole frame: the planner tiles
    /// the encoder as it tiles the decoder, and the run keeps to it — every phase's device peak within the budget
    /// (the simulated device holds twice the budget), the text phase's real allocations (the encode runs there)
    /// within what the plan reserved for it. Tiling changes the encode, so the image differs from the
    /// unbudgeted run's (QwenImageVAETests holds the tiled encode against diffusers' tiled_encode).
    @Test func tiledEncodeKeepsToTheBudget() throws {
        var r = Self.request(negative: "")
        r.width = 128; r.height = 96; r.steps = 2
        var pixels = [UInt8](repeating: 0, count: 3 * 128 * 96)
        var rng = SplitMix(seed: 5)
        for i in pixels.indices { pixels[i] = UInt8(rng.below(256)) }
        r.initImage = InitImage(pixels: pixels, width: 128, height: 96)
        r.strength = 0.75
        let pipe = try QwenImagePipeline(directory: Self.model)
        let free = try pipe.generate(r)
        let budget = 2_500_000
        var memory = MemoryOptions(deviceBudget: budget, profile: .rtx3060)
        memory.deviceCapBytes = 2 * budget
        let out = try pipe.generate(r, memory: memory)
        let plan = try #require(out.report.plan)
        let encoder = try #require(plan.component("vae_encoder"))
        #expect(encoder.tileLatent != nil, "the encoder did not tile: \(encoder)")
        #expect(plan.peakDeviceBytes <= budget)
        for phase in out.report.phases { #expect(phase.peakDeviceBytes <= budget, "\(phase.phase): \(phase.peakDeviceBytes)") }
        let text = try #require(out.report.phases.first { $0.phase == Phase.text.rawValue })
        let reserved = plan.components.filter { $0.phase == Phase.text.rawValue }.map(\.activationBytes).max() ?? 0
        #expect(text.peakHostBytes > 0 && text.peakHostBytes <= reserved, "text phase allocated \(text.peakHostBytes), the plan reserved \(reserved)")
        #expect(try Self.bits(out.image) != Self.bits(free.image))
        #expect(try out.image.toFloats().allSatisfy(\.isFinite))
    }

    /// The checks every family passes; budgets that stream the transformer change nothing.
    @Test func battery() throws {
        var r = Self.request(negative: "blurry")
        r.steps = 2
        // 2.0 MB streams 2 of the transformer's 4 groups, 1.98 MB 3 (its activations, planned for 1,024 text tokens, dwarf the tiny weights).
        try PipelineBattery(request: r, budgets: [64 << 20, 2_000_000, 1_980_000]) { try QwenImagePipeline(directory: Self.model) }.runAll()
    }
}
