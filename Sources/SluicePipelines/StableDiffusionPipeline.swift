import Foundation
import SluiceBackends
import SluiceCore
import SluiceMemory
import SluiceModels
import SluiceText
import SluiceWeights

/// Stable Diffusion 1.5 and SDXL, text to image and image to image, as diffusers'
/// StableDiffusion(XL)Pipeline and StableDiffusion(XL)Img2ImgPipeline run them:
///
///     prompt ──CLIP-L (SD1.5: last hidden state; SDXL: penultimate)──────────┐
///            └─OpenCLIP bigG (SDXL: penultimate, and its projected pooled row)─┴─ context [77·chunks, D]
///     noise (or the init image's VAE latents noised to the first step) ─→ UNet ε-prediction with CFG
///            (uncond + g · (cond − uncond)) ─→ the sampler's step, one of AUTOMATIC1111's names ─→ VAE
///
/// Prompts are laid out as AUTOMATIC1111 does (`PromptChunker`: 75-token chunks, emphasis syntax); a
/// prompt of at most 75 tokens without brackets gives diffusers' embeddings exactly. SDXL adds the
/// pooled text embedding and the size/crop time ids (original = target = the image size, crop 0, 0),
/// and with no negative prompt uses zeros for the unconditional side (`force_zeros_for_empty_prompt`).
public final class StableDiffusionPipeline: TextToImagePipeline, @unchecked Sendable {
    public enum Variant: Sendable { case sd15, sdxl }

    public static let sd15Family = PipelineRegistry.Family(
        name: "Stable Diffusion", pipelineClasses: ["StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline"],
        load: { folder, device in try StableDiffusionPipeline(folder: folder, device: device) }, singleFileComponents: ["checkpoint"])
    public static let sdxlFamily = PipelineRegistry.Family(
        name: "SDXL", pipelineClasses: ["StableDiffusionXLPipeline", "StableDiffusionXLImg2ImgPipeline"],
        load: { folder, device in try StableDiffusionPipeline(folder: folder, device: device) }, singleFileComponents: ["checkpoint"])

    /// Where a single-file checkpoint's configs and tokenizers come from when none is named: the base
    /// model's diffusers repository in the Hugging Face cache (diffusers' from_single_file fetches the
    /// same configs; Sluice never downloads).
    public static let baseRepositories: [SingleFileFamily: [String]] = [
        .sd15: ["stable-diffusion-v1-5/stable-diffusion-v1-5", "runwayml/stable-diffusion-v1-5"],
        .sdxl: ["stabilityai/stable-diffusion-xl-base-1.0"],
    ]

    public static let chunkTokens = 77

    public let variant: Variant
    public var family: String { variant == .sdxl ? "SDXL" : "Stable Diffusion" }
    public let directory: String
    public let device: ComputeDevice
    public let tokenizers: [CLIPTokenizer]
    public let textEncoders: [CLIPTextEncoder]
    public let unet: UNet2DCondition
    public var vae: VAEDecoder { vaeComponent.decoder }
    public let schedulerConfig: DiscreteScheduleConfig
    /// The sampler the folder's scheduler config names (Euler where it names one Sluice does not run,
    /// such as SD1.5's PNDM).
    public let defaultSampler: Sampler
    /// SDXL's `force_zeros_for_empty_prompt` (model_index.json): no negative prompt → zero embeddings.
    public let forceZerosForEmptyPrompt: Bool
    /// The UNet's `sample_size`: the latent side it was trained at (64 for SD1.5, 128 for SDXL).
    public let nativeLatentSide: Int
    public private(set) var loadSeconds: [(component: String, seconds: Double)] = []
    public let components: PipelineComponents
    let textRunners: [ComponentRunner]
    let encoderComponent: VAEEncoderComponent
    let unetRunner: ComponentRunner
    let vaeComponent: VAEComponent

    public var defaults: PipelineDefaults {
        // The model's native side (unet sample_size latents); CFG 7 for SD1.5 and 5 for SDXL as their model
        // cards use; 30 steps (diffusers' 50 is more than these samplers need, AUTOMATIC1111's 20 a little less).
        let side = nativeLatentSide * vae.config.scale
        return PipelineDefaults(steps: 30, guidance: variant == .sdxl ? 5 : 7, width: side, height: side,
                                sizeMultiple: vae.config.scale * (1 << (unet.config.levels - 1)),
                                maxPromptTokens: PromptChunker.chunkLength * 20)
    }

    public var sampler: (name: String, schedule: String) { (defaultSampler.name, schedule(defaultSampler)) }
    public var samplerNames: [String] { [defaultSampler.name] + Sampler.allNames.filter { $0 != defaultSampler.name } }
    public var samplerAliases: Set<String> {
        Set(Sampler.allCases.flatMap { s in [s.name.lowercased(), s.rawValue.lowercased().replacingOccurrences(of: " ", with: "_")] }
            + ["", "default", "k_euler", "k_euler_a", "k_euler_ancestral", "euler_ancestral", "dpmpp_2m", "dpmpp_2m_karras"])
    }
    public func sampler(for r: GenerationRequest) -> (name: String, schedule: String) {
        let s = (try? resolveSampler(r)) ?? defaultSampler
        return (s.name, schedule(s))
    }
    public var supportsImageToImage: Bool { true }
    public func knowsSampler(_ name: String) -> Bool {
        Sampler(name: name) != nil || samplerAliases.contains(name.lowercased())
    }

    func schedule(_ s: Sampler) -> String { s == .dpmpp2MKarras ? "Karras" : "Automatic" }

    func resolveSampler(_ r: GenerationRequest) throws(SluiceError) -> Sampler {
        guard let name = r.sampler, !name.isEmpty, name.lowercased() != "default" else { return defaultSampler }
        guard let s = Sampler(name: name) else {
            throw .invalidParameter(.sampler, reason: "'\(name)' is not a sampler of \(family) (\(samplerNames.joined(separator: ", ")))")
        }
        return s
    }

    public convenience init(directory: String, device: String = "cpu") throws {
        try self.init(folder: try DiffusersFolder(path: directory), device: try ComputeDevice.select(device))
    }

    /// The single-file checkpoint (AUTOMATIC1111/ComfyUI layout) the weights came from, if any.
    public let checkpointFile: String?

    public init(folder: DiffusersFolder, device: ComputeDevice) throws {
        directory = folder.path
        self.device = device
        var clock = LoadClock()
        let xl = folder.pipelineClass?.contains("XL") ?? false
        variant = xl ? .sdxl : .sd15
        // A single file's components replace the folder's, presented under diffusers' names and checked
        // against the folder's configs; what the file lacks (often the text encoders or VAE) comes from
        // the folder.
        checkpointFile = folder.singleFiles["checkpoint"]
        var fromFile: [SingleFileComponent: SDPresentedComponent] = [:]
        if let path = checkpointFile {
            let single = try SDSingleFile.open(path: path)
            guard single.family == (xl ? .sdxl : .sd15) else {
                throw SluiceError.invalidParameter(.model, reason: "\(path) is \(single.family.rawValue), but its config folder \(folder.path) is \(xl ? "SDXL" : "SD1.5")")
            }
            fromFile = try single.components(configFolder: folder.path)
        }
        func runner(_ name: String, phase: Phase, groups: [String], groupOf: @escaping (String) -> String?) throws -> ComponentRunner {
            if let c = SingleFileComponent(rawValue: name), let presented = fromFile[c] {
                return try ComponentRunner(name: name, phase: phase, checkpoint: presented.checkpoint, groupNames: groups, groupOf: groupOf)
            }
            return try ComponentRunner(folder: folder, component: name, phase: phase, groupNames: groups, groupOf: groupOf)
        }
        let textNames = xl ? ["text_encoder", "text_encoder_2"] : ["text_encoder"]
        try folder.require(["scheduler", "tokenizer", "unet", "vae"] + textNames + (xl ? ["tokenizer_2"] : []))
        tokenizers = try (xl ? ["tokenizer", "tokenizer_2"] : ["tokenizer"]).map { try CLIPTokenizer(directory: try folder.folder($0)) }
        schedulerConfig = try folder.config(DiscreteScheduleConfig.self, "scheduler/scheduler_config.json")
        struct Index: Decodable { var force_zeros_for_empty_prompt: Bool? }
        let forceZeros = try folder.config(Index.self, "model_index.json").force_zeros_for_empty_prompt
        forceZerosForEmptyPrompt = xl && (forceZeros ?? true)
        // model_index.json names the scheduler's class beside the pipeline's.
        let schedulerClass = folder.components.first { $0.name == "scheduler" }?.className
        defaultSampler = Self.sampler(schedulerClass: schedulerClass, config: schedulerConfig)
        clock.lap("tokenizers + scheduler")

        var encoders: [CLIPTextEncoder] = [], runners: [ComponentRunner] = []
        for (k, name) in textNames.enumerated() {
            let config = try folder.config(CLIPTextConfig.self, name + "/config.json")
            // SD1.5 reads the last hidden state; SDXL the penultimate of both, and the second one's
            // projected pooled row.
            let e = xl ? try CLIPTextEncoder(config: config, skipLastLayers: 1, pooling: k == 1, projectsPooled: k == 1)
                       : try CLIPTextEncoder(config: config, skipLastLayers: 0, pooling: false)
            encoders.append(e)
            runners.append(try runner(name, phase: .text, groups: e.groupNames, groupOf: { e.group(of: $0) }))
            clock.lap(name)
        }
        textEncoders = encoders
        textRunners = runners

        let unetConfig = try folder.config(UNetConfig.self, "unet/config.json")
        struct SampleSize: Decodable { var sample_size: Int? }
        nativeLatentSide = (try folder.config(SampleSize.self, "unet/config.json").sample_size) ?? (xl ? 128 : 64)
        unet = UNet2DCondition(config: unetConfig)
        let u = unet
        unetRunner = try runner("unet", phase: .denoise, groups: u.groupNames, groupOf: { u.group(of: $0) })
        clock.lap("unet")
        let vaeCheckpoint = try fromFile[.vae]?.checkpoint ?? ModelLocator.checkpoint(component: folder.folder("vae"))
        vaeComponent = try VAEComponent(folder, checkpoint: vaeCheckpoint)
        encoderComponent = try VAEEncoderComponent(config: vaeComponent.decoder.config, checkpoint: vaeCheckpoint)
        clock.lap("vae")
        let width = encoders.map(\.config.hiddenSize).reduce(0, +)
        guard unetConfig.crossAttentionDim == width else {
            throw SluiceError.invalidArgument(name: folder.path + "/unet/config.json",
                reason: "cross_attention_dim \(unetConfig.crossAttentionDim) must equal the text encoders' width \(width)")
        }
        guard unetConfig.inChannels == vaeComponent.decoder.config.latentChannels else {
            throw SluiceError.invalidArgument(name: folder.path + "/unet/config.json",
                reason: "in_channels \(unetConfig.inChannels) must equal the VAE's latent_channels \(vaeComponent.decoder.config.latentChannels)")
        }
        components = PipelineComponents(runners + [encoderComponent.runner, unetRunner, vaeComponent.runner], device: device)
        loadSeconds = clock.laps
    }

    /// The sampler a scheduler class means; Euler for the ones Sluice does not run (PNDM, LMS, …).
    static func sampler(schedulerClass: String?, config: DiscreteScheduleConfig) -> Sampler {
        switch schedulerClass {
        case "EulerAncestralDiscreteScheduler": return .eulerAncestral
        case "DPMSolverMultistepScheduler": return config.useKarrasSigmas == true ? .dpmpp2MKarras : .dpmpp2M
        case "DDIMScheduler": return .ddim
        default: return .euler
        }
    }

    func cfg(_ r: GenerationRequest) -> Bool { r.guidance > 1 }

    public func validate(_ r: GenerationRequest) throws(SluiceError) {
        try validateCommon(r)
        _ = try resolveSampler(r)
    }

    public func warnings(_ r: GenerationRequest) -> [String] {
        var out: [String] = []
        if r.guidance <= 1 && !r.negativePrompt.isEmpty { out.append("guidance \(r.guidance) ≤ 1 runs without CFG: the negative prompt is not used") }
        if let n = try? PromptChunker.chunks(r.prompt, tokenizer: tokenizers[0]).count, n > 1 {
            out.append("the prompt is \(n) chunks of 75 tokens (AUTOMATIC1111's long prompts; diffusers would cut it at 75)")
        }
        return out
    }

    // MARK: - Planning

    func descriptions(_ r: GenerationRequest) throws(SluiceError) -> [ComponentDescription] {
        let v = vae, u = unet, config = unet.config
        var out: [ComponentDescription] = []
        for (k, runner) in textRunners.enumerated() {
            let c = textEncoders[k].config
            out.append(try runner.describe(activationBytes: { _ in CLIPTextEncoder.activationBytes(config: c, tokens: Self.chunkTokens) },
                                       rows: { _ in Double(Self.chunkTokens) }))
        }
        out.append(try encoderComponent.describe(r))
        let groups = try unetRunner.groupDescriptions(), levels = u.groupLevels
        // Convolutions and linears run once per position of their level: 2 × parameters × positions.
        let unetFlops: @Sendable (Workload) -> [Double] = { w in
            let lh = v.latentSide(w.height), lw = v.latentSide(w.width)
            return zip(groups, levels).map { g, level in 2 * Double(g.parameters) * Double((lh >> level) * (lw >> level)) }
        }
        out.append(ComponentDescription(name: "unet", phase: .denoise, groups: groups,
                                        activationBytes: { w in UNet2DCondition.activationBytes(config: config, height: v.latentSide(w.height), width: v.latentSide(w.width)) * w.batch },
                                        flops: unetFlops))
        out.append(try vaeComponent.runner.describe(activationBytes: { w in v.activationBytes(pixels: w.width * w.height) * w.batch },
                                                    rows: { w in Double(w.width * w.height) / 4 }, tiling: v.tiling))
        return out
    }

    public func componentDescriptions(_ r: GenerationRequest) throws(SluiceError) -> [ComponentDescription] { try descriptions(r) }

    public func plan(_ r: GenerationRequest, memory: MemoryOptions) throws(SluiceError) -> Plan? {
        try validate(r)
        return try components.plan(descriptions(r), workload: r.workload, memory: memory)
    }

    // MARK: - Generation

    /// The UNet's conditioning for one prompt: the context [77 · chunks, D] and, for SDXL, the projected
    /// pooled embedding [1, P] of the first chunk (AUTOMATIC1111 pools the first chunk too).
    public struct Conditioning: @unchecked Sendable {
        public var context: Tensor
        public var pooled: Tensor?
    }

    /// Each text through every encoder (all texts through the first before the second starts, so a
    /// swapped encoder leaves the device as soon as it is done); chunks emphasised, then joined.
    public func encodePrompts(_ texts: [String], run: PipelineRun? = nil) throws -> [Conditioning] {
        let be = device.backend
        var chunked = try texts.map { text in try tokenizers.map { tok in try PromptChunker.chunks(text, tokenizer: tok) } }
        // Cond and uncond must be as long as each other: the shorter gets the empty prompt's chunks (A1111).
        let longest = chunked.map { $0[0].count }.max() ?? 1
        for t in chunked.indices where chunked[t][0].count < longest {
            for k in tokenizers.indices {
                let empty = try PromptChunker.chunks("", tokenizer: tokenizers[k])[0]
                chunked[t][k] += Array(repeating: empty, count: longest - chunked[t][k].count)
            }
        }
        var hidden = [[Tensor]](repeating: [], count: texts.count)   // per text: per chunk, the encoders side by side
        var pooled = [Tensor?](repeating: nil, count: texts.count)
        for (k, encoder) in textEncoders.enumerated() {
            for t in texts.indices {
                for (c, chunk) in chunked[t][k].enumerated() {
                    let s = try textRunners[k].run(CLIPTextEncoder.State(ids: chunk.ids)) { i, w, s in try encoder.run(group: i, w, s, be) }
                    let h = try PromptChunker.emphasize(s.hidden!, multipliers: chunk.multipliers)
                    if k == 0 { hidden[t].append(h) } else { hidden[t][c] = try be.concat([hidden[t][c], h], dim: 1) }
                    if c == 0, encoder.pooling { pooled[t] = s.pooled }
                }
            }
            run?.finished(component: textRunners[k].name)
        }
        return try texts.indices.map { t in
            Conditioning(context: hidden[t].count == 1 ? hidden[t][0] : try be.concat(hidden[t], dim: 0), pooled: pooled[t])
        }
    }

    /// SDXL's time ids: original size, crop top-left, target size, in pixels (height first).
    func timeIds(_ r: GenerationRequest) -> Tensor {
        Tensor([Float(r.height), Float(r.width), 0, 0, Float(r.height), Float(r.width)], shape: [6])
    }

    public func generate(_ r: GenerationRequest, memory: MemoryOptions, progress: (GenerationProgress) -> Void,
                         afterStep: (Int, Tensor) -> Void, isCancelled: () -> Bool) throws -> GenerationResult {
        try validate(r)
        let sampler = try resolveSampler(r), guided = cfg(r)
        let run = try components.start(descriptions(r), workload: r.workload, memory: memory)
        defer { run.end() }
        let be = device.backend
        var scheduler = try sampler.scheduler(config: schedulerConfig, steps: r.steps)
        // (The samplers here all have order 1: the start is diffusers' get_timesteps', checked in validate.)
        let start = r.initImage == nil ? 0 : try scheduler.startIndex(strength: r.strength)
        let zeroUncond = guided && forceZerosForEmptyPrompt && r.negativePrompt.isEmpty
        var generator = TorchGenerator(seed: r.seed)
        let (positive, negative, imageLatents) = try run.phase(.text) { () throws -> (Conditioning, Conditioning?, Tensor?) in
            progress(run.withDevice(GenerationProgress(phase: .text, step: 0, total: guided ? 2 : 1, elapsed: 0)))
            let e = try encodePrompts(guided && !zeroUncond ? [r.prompt, r.negativePrompt] : [r.prompt], run: run)
            let negative: Conditioning? = !guided ? nil : !zeroUncond ? e[1]
                : Conditioning(context: Tensor(zeros: e[0].context.shape, dtype: .f32), pooled: e[0].pooled.map { Tensor(zeros: $0.shape, dtype: .f32) })
            // Image to image: the init image's latent distribution, sampled with the run's generator
            // before the noise is drawn (diffusers' retrieve_latents(sample_mode="sample")).
            var latents: Tensor?
            if let image = r.initImage {
                let z = try encoderComponent.sample(image, generator: &generator, run: run, on: be)
                let scale = vae.config.scalingFactor
                latents = Tensor(try z.toFloats().map { $0 * scale }, shape: z.shape)
            }
            return (e[0], negative, latents)
        }
        if isCancelled() { throw SluiceError.cancelled(stage: "after text encoding") }

        let shape: Shape = [1, vae.config.latentChannels, vae.latentSide(r.height), vae.latentSide(r.width)]
        var latents: Tensor
        if let imageLatents {
            latents = try scheduler.addNoise(imageLatents, noise: generator.randn(shape), stepIndex: start)
        } else {
            latents = try scheduler.initialLatents(shape, generator: &generator)
        }
        let u = unet, ids = variant == .sdxl ? timeIds(r) : nil
        try run.denoise(steps: scheduler.steps - start, progress: progress, afterStep: afterStep, isCancelled: isCancelled) { k in
            let i = start + k, t = scheduler.timesteps[i]
            let x = try scheduler.scaleModelInput(latents, stepIndex: i)
            func noise(_ c: Conditioning) throws -> Tensor {
                let state = UNet2DCondition.State(sample: x, timestep: t, context: c.context, textEmbeds: c.pooled, timeIds: ids)
                return try unetRunner.run(state) { g, w, s in try u.run(group: g, w, s, be) }.output!
            }
            var eps = try noise(positive)
            if let negative {
                let uncond = try noise(negative)
                eps = try be.axpy(uncond, be.sub(eps, uncond), scale: r.guidance)
            }
            latents = try scheduler.step(eps, stepIndex: i, sample: latents, generator: &generator)
            return latents
        }
        let image = try vaeComponent.decode(latents, run: run, on: be, progress: progress)
        return GenerationResult(image: image, latents: latents, report: run.complete())
    }
}
