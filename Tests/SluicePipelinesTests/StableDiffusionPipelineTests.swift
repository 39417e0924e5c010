import Foundation
import SluiceBackends
import SluiceCore
import SluiceMemory
import SluiceModels
import SluicePipelines
import SluiceTestSupport
import SluiceWeights
import Testing

/// Stable Diffusion 1.5 and SDXL on the tiny folders (tools/reference/make_sd_tiny.py) against diffusers'
/// StableDiffusion(XL)Pipeline and Img2Img pipelines (tools/reference/make_sd_reference.py; 32×48 pixels,
/// "a red fox"), with each sampler built from_config of the folder's scheduler: every step's latents and
/// the image.
@Suite struct StableDiffusionPipelineTests {
    static let sd15 = Fixtures.directory + "/models/sd15-tiny"
    static let sdxl = Fixtures.directory + "/models/sdxl-tiny"

    struct Case: Sendable, CustomStringConvertible {
        let tag: String, model: String, sampler: String, steps: Int, seed: UInt64, guidance: Float
        var negative = ""
        var strength: Double?
        var width = 48, height = 32
        var description: String { tag }

        var request: GenerationRequest {
            var r = GenerationRequest(prompt: "a red fox", negativePrompt: negative, seed: seed, steps: steps, width: width, height: height, guidance: guidance)
            r.sampler = sampler
            if let strength {
                r.strength = strength
                r.initImage = StableDiffusionPipelineTests.initImage
            }
            return r
        }
    }

    /// The init image the img2img references start from (uint8 RGB stored as floats, [3, H, W]).
    static let initImage: InitImage = {
        let t = try! Fixtures.file("sd_reference.safetensors").tensor("init_image").toFloats()
        let h = 32, w = 48
        var px = [UInt8](repeating: 0, count: h * w * 3)
        for c in 0..<3 { for i in 0..<(h * w) { px[i * 3 + c] = UInt8(t[c * h * w + i]) } }
        return InitImage(pixels: px, width: w, height: h)
    }()

    static let cases: [Case] = [
        Case(tag: "sd15_euler_", model: sd15, sampler: "Euler", steps: 5, seed: 7, guidance: 7),
        Case(tag: "sd15_euler_a_", model: sd15, sampler: "Euler a", steps: 5, seed: 7, guidance: 7),
        Case(tag: "sd15_dpmpp_2m_", model: sd15, sampler: "DPM++ 2M", steps: 5, seed: 7, guidance: 7),
        Case(tag: "sd15_dpmpp_2m_karras_", model: sd15, sampler: "DPM++ 2M Karras", steps: 5, seed: 7, guidance: 7),
        Case(tag: "sd15_ddim_", model: sd15, sampler: "DDIM", steps: 5, seed: 7, guidance: 7),
        Case(tag: "sd15_negative_", model: sd15, sampler: "Euler", steps: 3, seed: 9, guidance: 7, negative: "blurry"),
        Case(tag: "sd15_nocfg_", model: sd15, sampler: "Euler", steps: 3, seed: 9, guidance: 1),
        Case(tag: "sd15_img2img_euler_", model: sd15, sampler: "Euler", steps: 5, seed: 11, guidance: 7, strength: 0.6),
        Case(tag: "sd15_img2img_euler_a_", model: sd15, sampler: "Euler a", steps: 5, seed: 11, guidance: 7, strength: 0.6),
        Case(tag: "sd15_img2img_ddim_", model: sd15, sampler: "DDIM", steps: 5, seed: 11, guidance: 7, strength: 0.6),
        Case(tag: "sdxl_euler_", model: sdxl, sampler: "Euler", steps: 5, seed: 7, guidance: 5),
        Case(tag: "sdxl_euler_a_", model: sdxl, sampler: "Euler a", steps: 5, seed: 7, guidance: 5),
        Case(tag: "sdxl_dpmpp_2m_karras_", model: sdxl, sampler: "DPM++ 2M Karras", steps: 5, seed: 7, guidance: 5),
        Case(tag: "sdxl_negative_", model: sdxl, sampler: "Euler", steps: 3, seed: 9, guidance: 5, negative: "blurry"),
        Case(tag: "sdxl_img2img_euler_", model: sdxl, sampler: "Euler", steps: 5, seed: 11, guidance: 5, strength: 0.6),
    ]

    static func run(_ c: Case, device: String = "cpu", memory: MemoryOptions = MemoryOptions()) throws -> (GenerationResult, [[Float]]) {
        let pipe = try StableDiffusionPipeline(directory: c.model, device: device)
        var steps: [[Float]] = []
        let out = try pipe.generate(c.request, memory: memory, progress: { _ in }, afterStep: { _, t in steps.append((try? t.toFloats()) ?? []) },
                                    isCancelled: { false })
        return (out, steps)
    }

    /// Tolerances: latents 1e-3 abs + 1e-4 rel. The UNet agrees with diffusers to ~1.5e-6 relative
    /// (UNetTests; f32 sums in another order), CFG multiplies the cond − uncond difference by up to 7 and
    /// the Euler-type steps by Δσ up to ~10 at SD's σ_max 14.6, so latents of magnitude ~30 move by up to
    /// ~3e-4 (measured 2.7e-4) whatever their own size; the samplers' arithmetic adds 2e-6 (SamplerTests).
    /// A wrong schedule or conditioning moves them by 0.1–2. The image 2e-4, as for the other families.
    @Test(arguments: cases)
    func matchesDiffusers(_ c: Case) throws {
        let ref = try Fixtures.file("sd_reference.safetensors")
        let (out, steps) = try Self.run(c)
        let want = Int(try ref.tensor("\(c.tag)steps").toFloats()[0])
        #expect(steps.count == want, "\(c.tag): \(steps.count) steps, diffusers ran \(want)")
        for i in 0..<min(steps.count, want) {
            let cmp = compare(steps[i], try ref.tensor("\(c.tag)latents_\(i)").toFloats(), atol: 1e-3, rtol: 1e-4)
            #expect(cmp.ok, "\(c.tag) step \(i): \(cmp)")
        }
        let cmp = compare(try out.image.toFloats(), try ref.tensor("\(c.tag)image").toFloats(), atol: 2e-4, rtol: 0)
        #expect(cmp.ok, "\(c.tag) image: \(cmp)")
        #expect(out.image.shape == [3, 32, 48])
    }

    /// The text side alone: SD1.5's last hidden state; SDXL's two penultimate states side by side and the
    /// projected pooled row; SDXL's zeros for an empty negative prompt.
    @Test func promptEmbeddingsMatchDiffusers() throws {
        let ref = try Fixtures.file("sd_reference.safetensors")
        for (model, tag) in [(Self.sd15, "sd15"), (Self.sdxl, "sdxl")] {
            let pipe = try StableDiffusionPipeline(directory: model)
            let e = try pipe.encodePrompts(["a red fox", "blurry"])
            for (k, name) in [(0, "prompt_embeds"), (1, "negative_embeds")] {
                let cmp = compare(try e[k].context.toFloats(), try ref.tensor("\(tag)_\(name)").toFloats(), atol: 1e-5, rtol: 1e-4)
                #expect(cmp.ok, "\(tag) \(name): \(cmp)")
            }
            if tag == "sdxl" {
                for (k, name) in [(0, "pooled"), (1, "negative_pooled")] {
                    let cmp = compare(try #require(e[k].pooled).toFloats(), try ref.tensor("sdxl_\(name)").toFloats(), atol: 1e-5, rtol: 1e-4)
                    #expect(cmp.ok, "sdxl \(name): \(cmp)")
                }
            } else {
                #expect(e[0].pooled == nil)
            }
        }
    }

    /// Long prompts and emphasis follow AUTOMATIC1111: more than 75 tokens make more chunks of 77
    /// (the negative side padded to as many with the empty prompt's), and weights change the embedding.
    @Test func longPromptsAndEmphasis() throws {
        let pipe = try StableDiffusionPipeline(directory: Self.sd15)
        let long = Array(repeating: "a red fox", count: 30).joined(separator: " ")
        let e = try pipe.encodePrompts([long, ""])
        #expect(e[0].context.shape[0] == 77 * 2 && e[1].context.shape[0] == 77 * 2)
        let plain = try pipe.encodePrompts(["a red fox"])[0].context.toFloats()
        let weighted = try pipe.encodePrompts(["a (red:1.4) fox"])[0].context.toFloats()
        #expect(plain != weighted)
        let mean = { (v: [Float]) in v.reduce(0.0) { $0 + Double($1) } / Double(v.count) }
        #expect(abs(mean(plain) - mean(weighted)) < 1e-5, "A1111 restores the chunk's mean")
        #expect(!pipe.warnings(pipe.request(prompt: long)).isEmpty)
    }

    @Test func defaultsSamplersAndRefusals() throws {
        let sd = try StableDiffusionPipeline(directory: Self.sd15), xl = try StableDiffusionPipeline(directory: Self.sdxl)
        #expect(sd.family == "Stable Diffusion" && xl.family == "SDXL")
        #expect(sd.defaults.guidance == 7 && xl.defaults.guidance == 5)
        // SD1.5's folder names PNDM (not run here): Euler; SDXL's names Euler.
        #expect(sd.sampler.name == "Euler" && xl.sampler.name == "Euler")
        #expect(Set(sd.samplerNames) == Set(["Euler", "Euler a", "DPM++ 2M", "DPM++ 2M Karras", "DDIM"]))
        #expect(try PipelineRegistry.shared.load(model: Self.sdxl, device: "cpu").family == "SDXL")
        var r = sd.request(prompt: "x", width: 48, height: 32)
        r.sampler = "dpmpp_2m_karras"
        try sd.validate(r)
        #expect(sd.sampler(for: r).name == "DPM++ 2M Karras" && sd.sampler(for: r).schedule == "Karras")
        r.sampler = "LMS"
        #expect(throws: SluiceError.self) { try sd.validate(r) }
        r.sampler = nil
        r.width = 44   // not a multiple of the VAE scale (2 here, 8 real) × the UNet's 4
        #expect(throws: SluiceError.self) { try sd.validate(r) }
        r.width = 48
        r.initImage = InitImage(pixels: [UInt8](repeating: 0, count: 16 * 16 * 3), width: 16, height: 16)
        #expect(throws: SluiceError.self) { try sd.validate(r) }
        r.initImage = Self.initImage
        r.strength = 0
        #expect(throws: SluiceError.self) { try sd.validate(r) }
        // Strength so low no step runs: refused naming the parameter, not an empty run.
        r.strength = 0.1
        r.steps = 5
        do { _ = try sd.generate(r); Issue.record("no step to run, yet it ran") } catch let SluiceError.invalidParameter(p, _) { #expect(p == .strength) }
    }

    /// A budget that makes the UNet stream: latents bit-identical to the unbudgeted run, device peaks
    /// within the budget.
    @Test func streamingGivesTheSameLatents() throws {
        // 64² (the tiny UNet's activations 1.1 MiB, weights 1.3 MiB): 2.4 MiB streams 4 of its 18 groups, 2.3 MiB 8.
        let c = Case(tag: "stream", model: Self.sdxl, sampler: "Euler a", steps: 2, seed: 3, guidance: 5, width: 64, height: 64)
        let (free, _) = try Self.run(c)
        var streamed = false
        for budget in [2_516_582, 2_411_724] {
            var memory = MemoryOptions(deviceBudget: budget, profile: .rtx3060)
            memory.deviceCapBytes = 2 * budget
            let out = try Self.run(c, memory: memory).0
            #expect(try out.latents.toFloats().map(\.bitPattern) == (try free.latents.toFloats().map(\.bitPattern)), "budget \(budget)")
            for phase in out.report.phases { #expect(phase.peakDeviceBytes <= budget, "budget \(budget) \(phase.phase): \(phase.peakDeviceBytes)") }
            let plan = try #require(out.report.plan)
            if plan.components.contains(where: { $0.component == "unet" && !$0.streamed.isEmpty }) { streamed = true }
        }
        #expect(streamed, "no budget made the UNet stream")
    }

    /// The family battery: seeds, shapes, refusals, progress, cancelling, budgets.
    @Test func battery() throws {
        var r = Self.cases[0].request
        (r.steps, r.width, r.height) = (2, 64, 64)
        // 64²: 8 MiB holds everything, 2.6 MiB streams most of the UNet.
        try PipelineBattery(request: r, budgets: [8 << 20, 2_700_000]) { try StableDiffusionPipeline(directory: Self.sd15) }.runAll()
    }

    /// `--device vulkan` (lavapipe in CI): SDXL with Euler a within 1e-4 of the CPU image.
    @Test(.enabled(if: Vulkan.unavailableReason == nil && ((try? Vulkan.devices().count) ?? 0) > 0, "no Vulkan device"))
    func vulkanMatchesCPU() throws {
        let c = Self.cases[11]
        let cpu = try Self.run(c).0
        let (vk, _) = try Self.run(c, device: "vulkan")
        let cmp = compare(try vk.image.toFloats(), try cpu.image.toFloats(), atol: 1e-4, rtol: 0)
        #expect(cmp.ok, "\(cmp)")
    }
}

/// The tiny models as AUTOMATIC1111/ComfyUI single files (tools/reference/sd_single_file.py; diffusers'
/// from_single_file(config=<the folder>) gives back every tensor of the folder): loaded with the folder as
/// `--config`, they give the folder's run bit for bit — the same stored bf16 values through the same code.
@Suite struct StableDiffusionSingleFileTests {
    @Test(arguments: [("sd15_bf16.safetensors", StableDiffusionPipelineTests.sd15, "DPM++ 2M"),
                      ("sdxl_bf16.safetensors", StableDiffusionPipelineTests.sdxl, "Euler a")])
    func singleFileGivesTheFoldersImage(file: String, folder: String, sampler: String) throws {
        var r = GenerationRequest(prompt: "a red fox", negativePrompt: "blurry", seed: 5, steps: 3, width: 48, height: 32, guidance: 6)
        r.sampler = sampler
        let path = Fixtures.directory + "/sd-single-file/" + file
        let single = try PipelineRegistry.shared.load(model: path, device: "cpu", config: folder)
        #expect((single as? StableDiffusionPipeline)?.checkpointFile == path)
        let a = try single.generate(r), b = try StableDiffusionPipeline(directory: folder).generate(r)
        #expect(try a.latents.toFloats().map(\.bitPattern) == (try b.latents.toFloats().map(\.bitPattern)))
        #expect(try a.image.toFloats().map(\.bitPattern) == (try b.image.toFloats().map(\.bitPattern)))
    }

    /// A file that carries only some components (here the text encoder, in f16) takes the rest from the
    /// config folder; the wrong family's folder, a FLUX file as the model, or no config are named errors.
    @Test func partialFilesAndRefusals() throws {
        let dir = Fixtures.directory + "/sd-single-file/"
        let partial = try PipelineRegistry.shared.load(model: dir + "sd15_f16_text_only.safetensors", device: "cpu", config: StableDiffusionPipelineTests.sd15)
        var r = partial.request(prompt: "a red fox", steps: 2, width: 48, height: 32)
        r.sampler = "Euler"
        let a = try partial.generate(r), b = try StableDiffusionPipeline(directory: StableDiffusionPipelineTests.sd15).generate(r)
        let cmp = compare(try a.latents.toFloats(), try b.latents.toFloats(), atol: 1e-4, rtol: 1e-4)
        #expect(cmp.ok, "f16 text encoder: \(cmp)")
        func refusal(_ body: () throws -> Void) -> Parameter? {
            do { try body() } catch let SluiceError.invalidParameter(p, _) { return p } catch { Issue.record("\(error)") }
            return nil
        }
        #expect(refusal { _ = try PipelineRegistry.shared.load(model: dir + "sd15_bf16.safetensors", device: "cpu", config: StableDiffusionPipelineTests.sdxl) } == .model)
        #expect(refusal { _ = try PipelineRegistry.shared.load(model: Fixtures.directory + "/flux-single-file/tiny-dev-bfl-bf16.safetensors", device: "cpu") } == .model)
        #expect(refusal { _ = try PipelineRegistry.shared.load(model: StableDiffusionPipelineTests.sd15, device: "cpu", config: StableDiffusionPipelineTests.sd15) } == .config)
    }
}
