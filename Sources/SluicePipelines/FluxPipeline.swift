import Foundation
import SluiceBackends
import SluiceCore
import SluiceMemory
import SluiceModels
import SluiceText
import SluiceWeights

/// FLUX.1 (dev and schnell) text-to-image as diffusers' FluxPipeline does it: CLIP-L's pooled output
/// and T5's hidden states (padded to `max_sequence_length` and attended unmasked, so the length changes
/// the image), noise from torch's generator packed 2×2 into tokens, flow-match Euler over
/// σ = shift(linspace(1, 1/n, n)) with the shift dynamic in the image's token count (dev), embedded
/// guidance (dev) and optional true CFG with a negative prompt, the FLUX VAE.
public final class FluxPipeline: TextToImagePipeline, @unchecked Sendable {
    /// The registry's line for this family.
    public static let family = PipelineRegistry.Family(
        name: "FLUX.1", pipelineClasses: ["FluxPipeline"],
        load: { folder, device in try FluxPipeline(folder: folder, device: device) },
        describeTable: { table throws(SluiceError) in try FluxPipeline.describe(table: table) },
        singleFileComponents: ["transformer"])

    /// CLIP reads 77 tokens; T5 at most 512 (diffusers' limit for FLUX).
    public static let clipTokens = 77
    public static let maxT5Tokens = 512

    public let family = "FLUX.1"
    public let directory: String
    public let clipTokenizer: CLIPTokenizer
    public let t5Tokenizer: T5Tokenizer
    public let clip: CLIPTextEncoder
    public let t5: T5Encoder
    public let transformer: FluxTransformer
    public var vae: VAEDecoder { vaeComponent.decoder }
    public let schedulerConfig: FlowMatchEulerScheduler.Config
    public let device: ComputeDevice
    /// The transformer's weights came from this single file (BFL or diffusers layout), not the folder.
    public let transformerFile: String?
    public private(set) var loadSeconds: [(component: String, seconds: Double)] = []
    let clipRunner: ComponentRunner
    let t5Runner: ComponentRunner
    let transformerRunner: ComponentRunner
    var vaeRunner: ComponentRunner { vaeComponent.runner }
    let vaeComponent: VAEComponent
    /// The VAE's encoder, for image to image (nil when the VAE file has none).
    let encoderComponent: VAEEncoderComponent?
    public var supportsImageToImage: Bool { encoderComponent != nil }
    public func imageToImageStart(steps: Int, strength: Double) -> Int { ImageToImageStart.flowMatching(steps: steps, strength: strength) }
    public let components: PipelineComponents

    /// dev (a guidance embedder): 28 steps, guidance 3.5, T5 512 tokens; schnell: 4 steps, no guidance,
    /// 256 tokens — their model cards' settings.
    public var isGuidanceDistilled: Bool { transformer.config.guidanceEmbeds }

    public var defaults: PipelineDefaults {
        PipelineDefaults(steps: isGuidanceDistilled ? 28 : 4, guidance: isGuidanceDistilled ? 3.5 : 0, width: 1024, height: 1024,
                         sizeMultiple: vae.config.scale * 2, maxPromptTokens: isGuidanceDistilled ? 512 : 256)
    }

    public var sampler: (name: String, schedule: String) {
        ("Euler", schedulerConfig.useDynamicShifting ? "Flow match (dynamic shift)" : "Flow match (shift \(schedulerConfig.shift))")
    }
    public var samplerAliases: Set<String> { ["", "euler", "euler a", "flow match euler", "flowmatch euler", "flowmatcheuler", "default"] }

    public convenience init(directory: String, device: String = "cpu", transformerFile: String? = nil) throws {
        var folder = try DiffusersFolder(path: directory)
        if let transformerFile { folder.singleFiles["transformer"] = transformerFile }
        try self.init(folder: folder, device: try ComputeDevice.select(device))
    }

    public init(folder: DiffusersFolder, device: ComputeDevice) throws {
        directory = folder.path
        self.device = device
        var clock = LoadClock()
        try folder.require(["scheduler", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "transformer", "vae"])
        clipTokenizer = try CLIPTokenizer(directory: try folder.folder("tokenizer"))
        t5Tokenizer = try T5Tokenizer(directory: try folder.folder("tokenizer_2"))
        schedulerConfig = try folder.config(FlowMatchEulerScheduler.Config.self, "scheduler/scheduler_config.json")
        clock.lap("tokenizers + scheduler")

        clip = CLIPTextEncoder(config: try folder.config(CLIPTextConfig.self, "text_encoder/config.json"))
        let c = clip
        clipRunner = try ComponentRunner(folder: folder, component: "text_encoder", phase: .text, groupNames: c.groupNames, groupOf: { c.group(of: $0) })
        clock.lap("text_encoder")
        t5 = T5Encoder(config: try folder.config(T5Config.self, "text_encoder_2/config.json"))
        let t = t5
        t5Runner = try ComponentRunner(folder: folder, component: "text_encoder_2", phase: .text, groupNames: t.groupNames, groupOf: { t.group(of: $0) })
        clock.lap("text_encoder_2")

        let config = try folder.config(FluxConfig.self, "transformer/config.json")
        let checkpoint: Checkpoint
        transformerFile = folder.singleFiles["transformer"]
        if let file = transformerFile {
            // A finetune's single file replaces the folder's transformer weights; the folder's config
            // says what the file must hold, and the file must hold exactly that.
            let single = try FluxSingleFile.open(path: file)
            try single.check(against: config)
            checkpoint = single.checkpoint
        } else {
            checkpoint = try ModelLocator.checkpoint(component: folder.folder("transformer"))
        }
        transformer = FluxTransformer(config: config)
        let tr = transformer
        transformerRunner = try ComponentRunner(name: "transformer", phase: .denoise, checkpoint: checkpoint,
                                                groupNames: tr.groupNames, groupOf: { tr.group(of: $0) })
        clock.lap("transformer")
        vaeComponent = try VAEComponent(folder)
        encoderComponent = try VAEEncoderComponent.optional(folder)
        guard config.inChannels == 4 * vaeComponent.decoder.config.latentChannels, config.out == config.inChannels else {
            throw SluiceError.invalidArgument(name: folder.path + "/transformer/config.json",
                reason: "in_channels \(config.inChannels) must be 4 × the VAE's latent_channels \(vaeComponent.decoder.config.latentChannels) (2×2 packed latents)")
        }
        guard config.jointAttentionDim == t5.config.dModel, config.pooledProjectionDim == clip.config.hiddenSize else {
            throw SluiceError.invalidArgument(name: folder.path + "/transformer/config.json",
                reason: "joint_attention_dim \(config.jointAttentionDim) / pooled_projection_dim \(config.pooledProjectionDim) must equal T5's d_model \(t5.config.dModel) / CLIP's hidden_size \(clip.config.hiddenSize)")
        }
        clock.lap("vae")
        components = PipelineComponents([clipRunner, t5Runner] + (encoderComponent.map { [$0.runner] } ?? []) + [transformerRunner, vaeComponent.runner],
                                        device: device)
        loadSeconds = clock.laps
    }

    /// The T5 length a request runs with: its own, else the model's default.
    func sequenceLength(_ r: GenerationRequest) -> Int { r.maxSequenceLength ?? defaults.maxPromptTokens }

    /// True CFG (a second transformer call a step, on the negative prompt) when true_cfg_scale > 1.
    func trueCFG(_ r: GenerationRequest) -> Bool { r.trueCFGScale > 1 }

    public func validate(_ r: GenerationRequest) throws(SluiceError) {
        try validateCommon(r)
        if let n = r.maxSequenceLength, !(1...Self.maxT5Tokens).contains(n) {
            throw .invalidParameter(.maxSequenceLength, reason: "\(n) must be 1…\(Self.maxT5Tokens) (T5 tokens; FLUX.1 was trained with up to 512)")
        }
        guard r.trueCFGScale >= 0, r.trueCFGScale.isFinite else {
            throw .invalidParameter(.trueCfgScale, reason: "\(r.trueCFGScale) must be a number ≥ 0 (true CFG runs when it is > 1)")
        }
    }

    /// Prompts longer than an encoder reads are cut, as diffusers cuts them: say so.
    public func warnings(_ r: GenerationRequest) -> [String] {
        var out: [String] = []
        let t5Length = sequenceLength(r)
        for (what, text) in [("prompt", r.prompt), ("negative prompt", trueCFG(r) ? r.negativePrompt : "")] where !text.isEmpty {
            if let n = try? t5Tokenizer.encode(text).count, n > t5Length {
                out.append("the \(what) is \(n) T5 tokens; T5 reads the first \(t5Length) (--max-sequence-length)")
            }
            if let n = try? clipTokenizer.encode(text).count, n > Self.clipTokens {
                out.append("the \(what) is \(n) CLIP tokens; CLIP reads the first \(Self.clipTokens) (its pooled embedding only)")
            }
        }
        if !isGuidanceDistilled && r.guidance > 0 {
            out.append("this model has no guidance embedder (FLUX.1-schnell): --guidance \(r.guidance) is ignored; --true-cfg-scale with a negative prompt is CFG")
        }
        if r.trueCFGScale > 1 && r.negativePrompt.isEmpty {
            out.append("true CFG with an empty negative prompt (as diffusers with negative_prompt=\"\")")
        }
        return out
    }

    // MARK: - Planning

    func descriptions(_ r: GenerationRequest) throws(SluiceError) -> [ComponentDescription] {
        var d = Self.describe(clip: (clip.config, try clipRunner.groupDescriptions()), t5: (t5.config, try t5Runner.groupDescriptions()),
                              transformer: (transformer.config, try transformerRunner.groupDescriptions()),
                              vae: (vae, try vaeRunner.groupDescriptions()), t5Tokens: sequenceLength(r), followsStorage: false, flops: [:])
        if let encoderComponent { d.insert(try encoderComponent.describe(r), at: 2) }
        return d
    }

    /// A table of a real FLUX.1 model (`sluice plan --table flux1-dev`), with the formulas a loaded
    /// model is planned with and the table's own group sizes and FLOPs.
    public static func describe(table: ModelTable) throws(SluiceError) -> [ComponentDescription] {
        let c = try table.configuredComponent("text_encoder"), t = try table.configuredComponent("text_encoder_2")
        let tr = try table.configuredComponent("transformer"), v = try table.configuredComponent("vae")
        let flops = table.flops(of: [c, t, tr, v])
        let config = try tr.config!.decode(FluxConfig.self, what: "table \(table.model): transformer config")
        return describe(clip: (try c.config!.decode(CLIPTextConfig.self, what: "table \(table.model): text_encoder config"), table.groups(c)),
                        t5: (try t.config!.decode(T5Config.self, what: "table \(table.model): text_encoder_2 config"), table.groups(t)),
                        transformer: (config, table.groups(tr)),
                        vae: (VAEDecoder(config: try v.config!.decode(AutoencoderKLConfig.self, what: "table \(table.model): vae config")), table.groups(v)),
                        t5Tokens: config.guidanceEmbeds ? 512 : 256, followsStorage: true, flops: flops)
    }

    /// The one place FLUX's components meet the planner, for a loaded model and a table alike.
    static func describe(clip: (CLIPTextConfig, [GroupDescription]), t5: (T5Config, [GroupDescription]),
                         transformer: (FluxConfig, [GroupDescription]), vae: (VAEDecoder, [GroupDescription]), t5Tokens: Int,
                         followsStorage: Bool, flops: [String: @Sendable (Workload) -> [Double]]) -> [ComponentDescription] {
        let (clipConfig, clipGroups) = clip, (t5Config, t5Groups) = t5, (trConfig, trGroups) = transformer, (decoder, vaeGroups) = vae
        let imageTokens: @Sendable (Workload) -> Int = { (decoder.latentSide($0.height) / 2) * (decoder.latentSide($0.width) / 2) }
        return [
            ComponentDescription(name: "text_encoder", phase: .text, groups: clipGroups, followsStorage: followsStorage,
                                 activationBytes: { _ in CLIPTextEncoder.activationBytes(config: clipConfig, tokens: clipTokens) },
                                 flops: flops["text_encoder"] ?? ComponentDescription.linearFlops(clipGroups) { _ in Double(clipTokens) }),
            ComponentDescription(name: "text_encoder_2", phase: .text, groups: t5Groups, followsStorage: followsStorage,
                                 activationBytes: { _ in T5Encoder.activationBytes(config: t5Config, tokens: t5Tokens) },
                                 flops: flops["text_encoder_2"] ?? ComponentDescription.linearFlops(t5Groups) { _ in Double(t5Tokens) }),
            ComponentDescription(name: "transformer", phase: .denoise, groups: trGroups, followsStorage: followsStorage,
                                 activationBytes: { w in FluxTransformer.activationBytes(config: trConfig, imageTokens: imageTokens(w), textTokens: t5Tokens) * w.batch },
                                 flops: flops["transformer"] ?? ComponentDescription.linearFlops(trGroups) { Double(imageTokens($0) + t5Tokens) }),
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

    /// For each text, CLIP's pooled embedding [1, D] and T5's hidden states [L, D]. CLIP runs for every
    /// text before T5 starts, and a component the plan swaps leaves the device as soon as it is done
    /// (T5-XXL alone may need the whole budget).
    public func encodePrompts(_ texts: [String], sequenceLength: Int, run: PipelineRun? = nil) throws -> [(pooled: Tensor, hidden: Tensor)] {
        let be = device.backend, c = clip, t = t5
        let pooled = try texts.map { text in
            try clipRunner.run(CLIPTextEncoder.State(ids: clipTokenizer.ids(text, maxLength: Self.clipTokens))) { i, w, s in try c.run(group: i, w, s, be) }.pooled!
        }
        run?.finished(component: clipRunner.name)
        let hidden = try texts.map { text in
            try t5Runner.run(T5Encoder.State(ids: t5Tokenizer.ids(text, maxLength: sequenceLength))) { i, w, s in try t.run(group: i, w, s, be) }.hidden!
        }
        run?.finished(component: t5Runner.name)
        return zip(pooled, hidden).map { (pooled: $0, hidden: $1) }
    }

    /// [1, C, H, W] latents → [(H/2)(W/2), 4C] tokens, feature c·4 + ph·2 + pw (diffusers'
    /// _pack_latents, FLUX's and Qwen-Image's): two permutations on the backend, each within 4 axes.
    static func pack(_ lat: Tensor, _ b: any Backend) throws(SluiceError) -> Tensor {
        let C = lat.shape[1], H = lat.shape[2], W = lat.shape[3]
        let a = try b.contiguous(lat.reshaped([C, H / 2, 2, W]).permuted([1, 0, 2, 3]))          // [H/2, C, 2, W]
        return try b.contiguous(a.reshaped([H / 2, 2 * C, W / 2, 2]).permuted([0, 2, 1, 3])).reshaped([(H / 2) * (W / 2), 4 * C])
    }

    /// pack's inverse: tokens → [1, C, H, W].
    static func unpack(_ tokens: Tensor, height H: Int, width W: Int, _ b: any Backend) throws(SluiceError) -> Tensor {
        let C = tokens.shape[1] / 4
        let a = try b.contiguous(tokens.reshaped([H / 2, W / 2, 2 * C, 2]).permuted([0, 2, 1, 3]))  // [H/2, C, 2, W]
        return try b.contiguous(a.reshaped([H / 2, C, 2, W]).permuted([1, 0, 2, 3])).reshaped([1, C, H, W])
    }

    public func generate(_ r: GenerationRequest, memory: MemoryOptions, progress: (GenerationProgress) -> Void,
                         afterStep: (Int, Tensor) -> Void, isCancelled: () -> Bool) throws -> GenerationResult {
        try validate(r)
        let length = sequenceLength(r), cfg = trueCFG(r)
        let start = r.initImage == nil ? 0 : imageToImageStart(steps: r.steps, strength: r.strength)
        let run = try components.start(descriptions(r), workload: r.workload, memory: memory)
        defer { run.end() }
        let lh = vae.latentSide(r.height), lw = vae.latentSide(r.width)
        var generator = TorchGenerator(seed: r.seed)
        let be = device.backend

        typealias Text = (pooled: Tensor, hidden: Tensor)
        let (positive, negative, imageLatents) = try run.phase(.text) { () throws -> (Text, Text?, Tensor?) in
            progress(run.withDevice(GenerationProgress(phase: .text, step: 0, total: cfg ? 2 : 1, elapsed: 0)))
            let e = try encodePrompts(cfg ? [r.prompt, r.negativePrompt] : [r.prompt], sequenceLength: length, run: run)
            // Image to image: the init image's latents, sampled with the run's generator before the noise.
            let z = try r.initImage.map { image in try encoderComponent!.sample(image, generator: &generator, run: run, on: be) }
            return (e[0], cfg ? e[1] : nil, z)
        }
        if isCancelled() { throw SluiceError.cancelled(stage: "after text encoding") }

        let steps = FlowMatchEulerScheduler.numpyLinspace(1, 1 / Double(r.steps), r.steps)
        let scheduler = try FlowMatchEulerScheduler(config: schedulerConfig, baseSigmas: steps,
                                                    mu: FlowMatchEulerScheduler.mu(imageSeqLen: (lh / 2) * (lw / 2), config: schedulerConfig))
        var noise = try generator.randn([1, vae.config.latentChannels, lh, lw])
        if let imageLatents { noise = try FlowMatchImageToImage.noised(imageLatents, noise: noise, sigma: scheduler.sigmas[start], vae: vae.config) }
        var latents = try Self.pack(noise, be)
        let tr = transformer
        // Each step also unpacks its latents for progress and previews; the last of them is what the VAE decodes.
        var unpacked: Tensor?
        let timesteps = scheduler.timesteps
        try run.denoise(steps: r.steps - start, progress: progress, afterStep: afterStep, isCancelled: isCancelled) { k in
            // diffusers passes t/1000 (f32); the model multiplies it back.
            let i = start + k, timestep = timesteps[i], x = latents
            func velocity(_ text: (pooled: Tensor, hidden: Tensor)) throws -> Tensor {
                let state = FluxTransformer.State(latents: x, rows: lh / 2, columns: lw / 2, t: timestep / 1000, guidance: r.guidance,
                                                  context: text.hidden, pooled: text.pooled)
                return try transformerRunner.run(state) { g, w, s in try tr.run(group: g, w, s, be) }.output!
            }
            var pred = try velocity(positive)
            if let negative {
                // neg + scale · (pos − neg), as diffusers combines them.
                let neg = try velocity(negative)
                pred = try be.axpy(neg, be.sub(pred, neg), scale: r.trueCFGScale)
            }
            latents = try scheduler.step(i, velocity: pred, latents: latents, on: be)
            unpacked = try Self.unpack(latents, height: lh, width: lw, be)
            return unpacked!
        }

        let final = try unpacked ?? Self.unpack(latents, height: lh, width: lw, be)
        let image = try vaeComponent.decode(final, run: run, on: be, progress: progress)
        return GenerationResult(image: image, latents: final, report: run.complete())
    }
}
