import Foundation
import SluiceBackends
import SluiceCore
import SluiceMemory
import SluiceModels
import SluiceText
import SluiceWeights

/// Z-Image(-Turbo) text-to-image as diffusers' ZImagePipeline does it: Qwen3 prompt embeddings
/// (hidden_states[-2] of the chat-templated prompt), noise from torch's generator, flow-match Euler
/// over σ = shift(linspace(1, 1/n, n)), the transformer's output negated as the velocity, the FLUX VAE.
public final class ZImagePipeline: TextToImagePipeline, @unchecked Sendable {
    /// The registry's line for this family.
    public static let family = PipelineRegistry.Family(
        name: "Z-Image", pipelineClasses: ["ZImagePipeline"],
        load: { folder, device in try ZImagePipeline(folder: folder, device: device) },
        describeTable: { table throws(SluiceError) in try ZImagePipeline.describe(table: table) })

    /// The longest prompt the text encoder reads (diffusers' max_sequence_length).
    public static let maxPromptTokens = 512

    public let family = "Z-Image"
    public let directory: String
    public let tokenizer: QwenTokenizer
    public let encoder: Qwen3Encoder
    public let transformer: ZImageTransformer
    public var vae: VAEDecoder { vaeComponent.decoder }
    public let schedulerConfig: FlowMatchEulerScheduler.Config
    public let device: ComputeDevice
    public private(set) var loadSeconds: [(component: String, seconds: Double)] = []
    let textRunner: ComponentRunner
    let transformerRunner: ComponentRunner
    var vaeRunner: ComponentRunner { vaeComponent.runner }
    let vaeComponent: VAEComponent
    /// The VAE's encoder, for image to image (nil when the VAE file has none).
    let encoderComponent: VAEEncoderComponent?
    public var supportsImageToImage: Bool { encoderComponent != nil }
    public func imageToImageStart(steps: Int, strength: Double) -> Int { ImageToImageStart.flowMatching(steps: steps, strength: strength) }
    /// The components in phase order (their runners, the device).
    public let components: PipelineComponents

    public var defaults: PipelineDefaults {
        // Turbo's model card: 8 steps, guidance off, 1024².
        PipelineDefaults(steps: 8, guidance: 0, width: 1024, height: 1024, sizeMultiple: vae.config.scale * 2,
                         maxPromptTokens: Self.maxPromptTokens)
    }

    public var sampler: (name: String, schedule: String) { ("Euler", "Flow match (shift \(schedulerConfig.shift))") }
    public var samplerAliases: Set<String> { ["", "euler", "euler a", "flow match euler", "flowmatch euler", "flowmatcheuler", "default"] }

    /// The model in `directory` (a diffusers folder), computing on `device` ("cpu", "vulkan", "vulkan:N").
    public convenience init(directory: String, device: String = "cpu") throws {
        try self.init(folder: try DiffusersFolder(path: directory), device: try ComputeDevice.select(device))
    }

    public init(folder: DiffusersFolder, device: ComputeDevice) throws {
        directory = folder.path
        self.device = device
        var clock = LoadClock()
        try folder.require(["scheduler", "text_encoder", "tokenizer", "transformer", "vae"])
        tokenizer = try QwenTokenizer(directory: try folder.folder("tokenizer"))
        schedulerConfig = try folder.config(FlowMatchEulerScheduler.Config.self, "scheduler/scheduler_config.json")
        clock.lap("tokenizer + scheduler")
        encoder = Qwen3Encoder(config: try folder.config(Qwen3Config.self, "text_encoder/config.json"))
        let enc = encoder
        // The token embedding stays in host memory: the prompt's rows cross, not the table.
        textRunner = try ComponentRunner(folder: folder, component: "text_encoder", phase: .text, groupNames: enc.groupNames,
                                         hostGroups: ["embed_tokens"], groupOf: { enc.group(of: $0) })
        clock.lap("text_encoder")
        transformer = ZImageTransformer(config: try folder.config(ZImageConfig.self, "transformer/config.json"))
        let tr = transformer
        transformerRunner = try ComponentRunner(name: "transformer", phase: .denoise,
                                                checkpoint: try ModelLocator.checkpoint(component: folder.folder("transformer")),
                                                groupNames: tr.groupNames, groupOf: { tr.group(of: $0) })
        clock.lap("transformer")
        vaeComponent = try VAEComponent(folder)
        encoderComponent = try VAEEncoderComponent.optional(folder)
        clock.lap("vae")
        components = PipelineComponents([textRunner] + (encoderComponent.map { [$0.runner] } ?? []) + [transformerRunner, vaeComponent.runner],
                                        device: device)
        loadSeconds = clock.laps
    }

    public func validate(_ r: GenerationRequest) throws(SluiceError) {
        guard r.trueCFGScale == 1 else {
            throw .invalidParameter(.trueCfgScale, reason: "Z-Image has no embedded guidance: its CFG is --guidance (true_cfg_scale is for FLUX.1)")
        }
        if let n = r.maxSequenceLength, !(1...Self.maxPromptTokens).contains(n) {
            throw .invalidParameter(.maxSequenceLength, reason: "\(n) must be 1…\(Self.maxPromptTokens) (Qwen3 tokens with the chat template)")
        }
        do { try validateCommon(r) } catch .invalidParameter(let p, let reason) where (p == .width || p == .height) && max(r.width, r.height) > defaults.maxSide {
            // Say what such a size would take.
            throw .invalidParameter(p, reason: reason + "; \(r.width)×\(r.height) would need about "
                + formatBytes(vae.activationBytes(pixels: r.width * r.height)) + " for the VAE's activations alone")
        }
    }

    /// A prompt longer than the text encoder reads is cut, as diffusers cuts it: say so.
    public func warnings(_ r: GenerationRequest) -> [String] {
        [("prompt", r.prompt), ("negative prompt", r.guidance > 0 ? r.negativePrompt : "")].compactMap { what, text in
            let limit = r.maxSequenceLength ?? Self.maxPromptTokens
            guard !text.isEmpty, let n = try? tokenizer.zImagePromptIDs(text, maxLength: .max).count, n > limit else { return nil }
            return "the \(what) is \(n) tokens with its template; the text encoder reads the first \(limit)"
        }
    }

    // MARK: - Planning

    /// The three components as the planner sees them: this checkpoint's group sizes, the models' formulas.
    func descriptions(_ r: GenerationRequest) throws(SluiceError) -> [ComponentDescription] {
        var d = Self.describe(text: (encoder.config, try textRunner.groupDescriptions()),
                              transformer: (transformer.config, try transformerRunner.groupDescriptions()),
                              vae: (vae, try vaeRunner.groupDescriptions()), followsStorage: false,
                              flops: [:])
        if let encoderComponent { d.insert(try encoderComponent.describe(r), at: 1) }
        return d
    }

    /// A table of a real Z-Image model (`sluice plan --table z-image-turbo`), described with the
    /// formulas a loaded model is planned with; the table's finer groups and FLOPs.
    public static func describe(table: ModelTable) throws(SluiceError) -> [ComponentDescription] {
        let text = try table.configuredComponent("text_encoder"), tr = try table.configuredComponent("transformer")
        let v = try table.configuredComponent("vae")
        let flops = table.flops(of: [text, tr, v])
        return describe(text: (try text.config!.decode(Qwen3Config.self, what: "table \(table.model): text_encoder config"), table.groups(text)),
                        transformer: (try tr.config!.decode(ZImageConfig.self, what: "table \(table.model): transformer config"), table.groups(tr)),
                        vae: (VAEDecoder(config: try v.config!.decode(AutoencoderKLConfig.self, what: "table \(table.model): vae config")), table.groups(v)),
                        followsStorage: true, flops: flops)
    }

    /// The one place Z-Image's components meet the planner, for a loaded model and a table alike.
    /// `flops` by component overrides the rows-based estimate (a table's own FLOPs).
    static func describe(text: (Qwen3Config, [GroupDescription]), transformer: (ZImageConfig, [GroupDescription]),
                         vae: (VAEDecoder, [GroupDescription]), followsStorage: Bool,
                         flops: [String: @Sendable (Workload) -> [Double]]) -> [ComponentDescription] {
        let (textConfig, textGroups) = text, (trConfig, trGroups) = transformer, (decoder, vaeGroups) = vae
        let imageTokens: @Sendable (Workload) -> Int = { ZImageTransformer.padded((decoder.latentSide($0.height) / 2) * (decoder.latentSide($0.width) / 2)) }
        return [
            ComponentDescription(name: "text_encoder", phase: .text, groups: textGroups, followsStorage: followsStorage,
                                 activationBytes: { _ in Qwen3Encoder.activationBytes(config: textConfig, tokens: Self.maxPromptTokens) },
                                 flops: flops["text_encoder"] ?? ComponentDescription.linearFlops(textGroups) { _ in 64 }),
            ComponentDescription(name: "transformer", phase: .denoise, groups: trGroups, followsStorage: followsStorage,
                                 activationBytes: { w in
                                     ZImageTransformer.activationBytes(config: trConfig, imageTokens: imageTokens(w), captionTokens: Self.maxPromptTokens) * w.batch },
                                 flops: flops["transformer"] ?? ComponentDescription.linearFlops(trGroups) { Double(imageTokens($0) + 64) }),
            ComponentDescription(name: "vae", phase: .decode, groups: vaeGroups,
                                 activationBytes: { w in decoder.activationBytes(pixels: w.width * w.height) * w.batch },
                                 flops: flops["vae"] ?? ComponentDescription.linearFlops(vaeGroups) { Double($0.width * $0.height) / 4 },
                                 tiling: decoder.tiling),
        ]
    }

    public func componentDescriptions(_ r: GenerationRequest) throws(SluiceError) -> [ComponentDescription] { try descriptions(r) }

    public func plan(_ r: GenerationRequest, memory: MemoryOptions) throws(SluiceError) -> Plan? {
        try validate(r)
        return try components.plan(descriptions(r), workload: r.workload, memory: memory)
    }

    // MARK: - Generation

    /// The latent tensor's spatial size for an image.
    func latentSize(_ r: GenerationRequest) -> (h: Int, w: Int) { (vae.latentSide(r.height), vae.latentSide(r.width)) }

    public func encodePrompt(_ text: String, maxLength: Int = maxPromptTokens) throws -> Tensor {
        let ids = try tokenizer.zImagePromptIDs(text, maxLength: maxLength)
        let enc = encoder, be = device.backend
        let s = try textRunner.run(Qwen3Encoder.State(ids: ids)) { i, w, s in try enc.run(group: i, w, s, be) }
        return s.hidden!
    }

    public func generate(_ r: GenerationRequest, memory: MemoryOptions, progress: (GenerationProgress) -> Void,
                         afterStep: (Int, Tensor) -> Void, isCancelled: () -> Bool) throws -> GenerationResult {
        try validate(r)
        let run = try components.start(descriptions(r), workload: r.workload, memory: memory)
        defer { run.end() }
        let (lh, lw) = latentSize(r)

        // CFG whenever guidance > 0, as in diffusers' ZImagePipeline; the negative prompt only then.
        let cfg = r.guidance > 0
        let start = r.initImage == nil ? 0 : imageToImageStart(steps: r.steps, strength: r.strength)
        var generator = TorchGenerator(seed: r.seed)
        let be = device.backend
        let (positive, negative, imageLatents) = try run.phase(.text) { () throws -> (Tensor, Tensor?, Tensor?) in
            progress(run.withDevice(GenerationProgress(phase: .text, step: 0, total: cfg ? 2 : 1, elapsed: 0)))
            let length = r.maxSequenceLength ?? Self.maxPromptTokens
            let pos = try encodePrompt(r.prompt, maxLength: length), neg = cfg ? try encodePrompt(r.negativePrompt, maxLength: length) : nil
            // Components of a phase run one at a time: the text encoder leaves (when the plan swaps it) before
            // the VAE encoder takes its room.
            run.finished(component: textRunner.name)
            // Image to image: the init image's latents, sampled with the run's generator before the noise.
            let z = try r.initImage.map { image in try encoderComponent!.sample(image, generator: &generator, run: run, on: be) }
            return (pos, neg, z)
        }
        if isCancelled() { throw SluiceError.cancelled(stage: "after text encoding") }

        let scheduler = try FlowMatchEulerScheduler(config: schedulerConfig,
            baseSigmas: FlowMatchEulerScheduler.linspace(1, 1 / Float(r.steps), r.steps),
            mu: FlowMatchEulerScheduler.mu(imageSeqLen: (lh / 2) * (lw / 2), config: schedulerConfig))
        var latents = try generator.randn([1, transformer.config.inChannels, lh, lw])
        if let imageLatents {
            latents = try FlowMatchImageToImage.noised(imageLatents, noise: latents, sigma: scheduler.sigmas[start], vae: vae.config)
        }
        let tr = transformer
        let timesteps = scheduler.timesteps
        try run.denoise(steps: r.steps - start, progress: progress, afterStep: afterStep, isCancelled: isCancelled) { k in
            let i = start + k
            let t = (1000 - timesteps[i]) / 1000
            let x = try latents.reshaped([tr.config.inChannels, 1, lh, lw])
            func velocity(_ caption: Tensor) throws -> Tensor {
                let s = try transformerRunner.run(ZImageTransformer.State(latents: x, t: t, caption: caption)) { g, w, s in
                    try tr.run(group: g, w, s, be)
                }
                return s.output!
            }
            // The CFG combine and the Euler step run on the backend: on a device the latents stay
            // there from step to step, and the host reads them only for a preview and at the end.
            var pred = try velocity(positive)
            if let negative { pred = try be.axpy(pred, be.sub(pred, velocity(negative)), scale: r.guidance) }
            // diffusers negates the transformer's output to get the flow velocity.
            latents = try scheduler.step(i, velocity: pred.reshaped(latents.shape), latents: latents, velocityScale: -1, on: be)
            return latents
        }

        let image = try vaeComponent.decode(latents, run: run, on: be, progress: progress)
        return GenerationResult(image: image, latents: latents, report: run.complete())
    }
}
