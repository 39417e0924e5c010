import Foundation
import SluiceBackends
import SluiceCore
import SluiceMemory
import SluiceModels
import SluiceText
import SluiceWeights

/// Qwen-Image text-to-image as diffusers' QwenImagePipeline does it: Qwen2.5-VL's last hidden state for
/// the prompt in its template (the template's 34-token prefix dropped), noise from torch's generator
/// packed 2×2 into tokens, flow-match Euler over σ = shift(linspace(1, 1/n, n)) with the dynamic shift
/// and the schedule stretched to `shift_terminal`, true CFG with a negative prompt — the combined
/// prediction rescaled per token to the norm of the conditional one — and the causal 3-D VAE, its
/// latents de-normalised per channel first.
public final class QwenImagePipeline: TextToImagePipeline, @unchecked Sendable {
    /// The registry's line for this family.
    public static let family = PipelineRegistry.Family(
        name: "Qwen-Image", pipelineClasses: ["QwenImagePipeline"],
        load: { folder, device in try QwenImagePipeline(folder: folder, device: device) },
        describeTable: { table throws(SluiceError) in try QwenImagePipeline.describe(table: table) },
        singleFileComponents: ["transformer"])

    public let family = "Qwen-Image"
    public let directory: String
    public let tokenizer: QwenTokenizer
    public let encoder: Qwen2VLTextEncoder
    public let transformer: QwenImageTransformer
    public let vae: QwenImageVAE
    public let schedulerConfig: FlowMatchEulerScheduler.Config
    public let device: ComputeDevice
    /// The transformer's weights came from this single file, not the folder.
    public let transformerFile: String?
    public private(set) var loadSeconds: [(component: String, seconds: Double)] = []
    let textRunner: ComponentRunner
    let transformerRunner: ComponentRunner
    let vaeRunner: ComponentRunner
    /// The VAE's encoder, for image to image (nil when the VAE file has none).
    let encoderRunner: ComponentRunner?
    public var supportsImageToImage: Bool { encoderRunner != nil }
    public func imageToImageStart(steps: Int, strength: Double) -> Int { ImageToImageStart.flowMatching(steps: steps, strength: strength) }
    public let components: PipelineComponents

    /// The model card's settings: 50 steps, true CFG 4.0 (with a negative prompt), 1328² (its 1:1 size).
    public var defaults: PipelineDefaults {
        PipelineDefaults(steps: 50, guidance: 4, width: 1328, height: 1328, sizeMultiple: vae.config.scale * 2,
                         maxPromptTokens: QwenImagePrompt.maxTokens)
    }

    public var sampler: (name: String, schedule: String) { ("Euler", "Flow match (dynamic shift)") }
    public var samplerAliases: Set<String> { ["", "euler", "flow match euler", "flowmatch euler", "flowmatcheuler", "default"] }

    public convenience init(directory: String, device: String = "cpu", transformerFile: String? = nil) throws {
        var folder = try DiffusersFolder(path: directory)
        if let transformerFile { folder.singleFiles["transformer"] = transformerFile }
        try self.init(folder: folder, device: try ComputeDevice.select(device))
    }

    public init(folder: DiffusersFolder, device: ComputeDevice) throws {
        directory = folder.path
        self.device = device
        var clock = LoadClock()
        try folder.require(["scheduler", "text_encoder", "tokenizer", "transformer", "vae"])
        tokenizer = try QwenTokenizer(directory: try folder.folder("tokenizer"))
        schedulerConfig = try folder.config(FlowMatchEulerScheduler.Config.self, "scheduler/scheduler_config.json")
        clock.lap("tokenizer + scheduler")
        encoder = Qwen2VLTextEncoder(config: try folder.config(Qwen2VLTextConfig.self, "text_encoder/config.json"))
        let enc = encoder
        // The token embedding (545M parameters in Qwen2.5-VL-7B) stays in host memory: rows cross, not the table.
        textRunner = try ComponentRunner(folder: folder, component: "text_encoder", phase: .text, groupNames: enc.groupNames,
                                         hostGroups: ["model.embed_tokens"], groupOf: { enc.group(of: $0) })
        clock.lap("text_encoder")
        transformer = QwenImageTransformer(config: try folder.config(QwenImageConfig.self, "transformer/config.json"))
        let tr = transformer
        transformerFile = folder.singleFiles["transformer"]
        let checkpoint: Checkpoint
        if let file = transformerFile {
            // A ComfyUI-style file (bf16 or fp8, diffusers' names, maybe under "model.diffusion_model.")
            // replaces the folder's transformer; the folder's config says what it must hold.
            checkpoint = try Checkpoint(path: file)
            try Self.check(checkpoint, file: file, against: tr)
        } else {
            checkpoint = try ModelLocator.checkpoint(component: folder.folder("transformer"))
        }
        transformerRunner = try ComponentRunner(name: "transformer", phase: .denoise, checkpoint: checkpoint,
                                                groupNames: tr.groupNames, groupOf: { tr.group(of: $0) })
        clock.lap("transformer")
        vae = QwenImageVAE(config: try folder.config(QwenImageVAEConfig.self, "vae/config.json"))
        // Decoding needs the decoder and post_quant_conv: one group. The encoder (image to image) is its
        // own component, in the text phase, when the file has it.
        let vaeCheckpoint = try ModelLocator.checkpoint(component: folder.folder("vae"))
        vaeRunner = try ComponentRunner(name: "vae", phase: .decode, checkpoint: vaeCheckpoint, groupNames: ["decoder"],
                                        groupOf: { $0.hasPrefix("decoder.") || $0.hasPrefix("post_quant_conv.") ? "decoder" : nil })
        encoderRunner = vaeCheckpoint.names.contains { $0.hasPrefix("encoder.") }
            ? try ComponentRunner(name: "vae_encoder", phase: .text, checkpoint: vaeCheckpoint, groupNames: ["encoder"],
                                  groupOf: { $0.hasPrefix("encoder.") || $0.hasPrefix("quant_conv.") ? "encoder" : nil })
            : nil
        clock.lap("vae")
        let trConfig = transformer.config
        guard trConfig.outChannels == vae.config.zDim else {
            throw SluiceError.invalidArgument(name: folder.path + "/transformer/config.json: out_channels",
                                              reason: "\(trConfig.outChannels) must be the VAE's z_dim \(vae.config.zDim)")
        }
        guard trConfig.jointAttentionDim == encoder.config.hiddenSize else {
            throw SluiceError.invalidArgument(name: folder.path + "/transformer/config.json: joint_attention_dim",
                                              reason: "\(trConfig.jointAttentionDim) must be the text encoder's hidden_size \(encoder.config.hiddenSize)")
        }
        components = PipelineComponents([textRunner] + (encoderRunner.map { [$0] } ?? []) + [transformerRunner, vaeRunner], device: device)
        loadSeconds = clock.laps
    }

    /// A single transformer file must be this config's model: every block and no more, the input and
    /// output projections of its widths, and plain weights (ComfyUI's "scaled fp8" files carry
    /// per-tensor scales Sluice does not apply yet: refused rather than run wrong).
    static func check(_ checkpoint: Checkpoint, file: String, against model: QwenImageTransformer) throws(SluiceError) {
        let names = Set(checkpoint.names)
        let prefix = names.contains { $0.hasPrefix("model.diffusion_model.") } ? "model.diffusion_model." : ""
        if let scaled = names.first(where: { $0.hasSuffix("scale_weight") || $0.hasSuffix("scaled_fp8") || $0.hasSuffix(".weight_scale") }) {
            throw .invalidCheckpoint(file: file, tensor: scaled, reason: "a scaled-fp8 file (per-tensor scales) is not supported; use a plain fp8_e4m3fn or bf16 file")
        }
        let c = model.config
        for (key, shape) in [("img_in.weight", Shape([c.dim, c.inChannels])), ("txt_in.weight", Shape([c.dim, c.jointAttentionDim])),
                             ("proj_out.weight", Shape([4 * c.outChannels, c.dim]))] {
            guard let info = checkpoint.info(prefix + key) else {
                throw .invalidCheckpoint(file: file, tensor: prefix + key, reason: "missing: not a Qwen-Image transformer")
            }
            guard info.shape == shape else {
                throw .invalidCheckpoint(file: file, tensor: prefix + key, reason: "shape \(info.shape), the folder's config says \(shape)")
            }
        }
        let extra = "\(prefix)transformer_blocks.\(c.numLayers)."
        if names.contains(where: { $0.hasPrefix(extra) }) {
            throw .invalidCheckpoint(file: file, tensor: nil, reason: "has more than the config's \(c.numLayers) transformer blocks")
        }
    }

    /// The CFG scale: `--true-cfg-scale` when given (≠ 1), else the guidance (default 4), as diffusers'
    /// `true_cfg_scale`. CFG runs only with a negative prompt, as in diffusers (whatever the scale).
    func cfgScale(_ r: GenerationRequest) -> Float { r.trueCFGScale != 1 ? r.trueCFGScale : r.guidance }
    func trueCFG(_ r: GenerationRequest) -> Bool { cfgScale(r) > 1 && !r.negativePrompt.isEmpty }

    public func validate(_ r: GenerationRequest) throws(SluiceError) {
        try validateCommon(r)
        guard r.trueCFGScale >= 0, r.trueCFGScale.isFinite else {
            throw .invalidParameter(.trueCfgScale, reason: "\(r.trueCFGScale) must be a number ≥ 0 (true CFG runs when it is > 1 and there is a negative prompt)")
        }
        if let n = r.maxSequenceLength, !(1...QwenImagePrompt.maxTokens).contains(n) {
            throw .invalidParameter(.maxSequenceLength, reason: "\(n) must be 1…\(QwenImagePrompt.maxTokens) (Qwen2.5-VL tokens after the template)")
        }
    }

    public func warnings(_ r: GenerationRequest) -> [String] {
        var out: [String] = []
        if cfgScale(r) > 1 && r.negativePrompt.isEmpty {
            out.append("no negative prompt: true CFG is off (as in diffusers); give --negative-prompt (even \" \") to guide with scale \(cfgScale(r))")
        }
        for (what, text) in [("prompt", r.prompt), ("negative prompt", trueCFG(r) ? r.negativePrompt : "")] where !text.isEmpty {
            if let n = try? tokenizer.encode(QwenImagePrompt.prefix + text + QwenImagePrompt.suffix).count,
               n - QwenImagePrompt.droppedTokens > QwenImagePrompt.maxTokens {
                out.append("the \(what) is \(n - QwenImagePrompt.droppedTokens) tokens with its template; the text encoder reads \(QwenImagePrompt.maxTokens)")
            }
        }
        return out
    }

    // MARK: - Planning

    /// Text tokens a plan reserves for: the longest prompt the encoder reads, with the template.
    static let plannedTextTokens = QwenImagePrompt.maxTokens + QwenImagePrompt.droppedTokens

    func descriptions(_ r: GenerationRequest) throws(SluiceError) -> [ComponentDescription] {
        var d = Self.describe(text: (encoder.config, try textRunner.groupDescriptions()), transformer: (transformer.config, try transformerRunner.groupDescriptions()),
                              vae: (vae.config, try vaeRunner.groupDescriptions()), followsStorage: false, flops: [:])
        if let encoderRunner {
            // The encoder's activations are about the decoder's at the same size (mirror-image blocks); none
            // without an init image. Under a budget too small for the whole image it encodes in tiles, as the
            // decoder decodes.
            let config = vae.config, encodes = r.initImage != nil
            d.insert(try encoderRunner.describe(activationBytes: { w in encodes ? config.decodeActivationBytes(pixels: w.width * w.height) * w.batch : 0 },
                                                rows: { w in Double(w.width * w.height) / 4 }, tiling: encodes ? vae.tiling : nil), at: 1)
        }
        return d
    }

    /// A table of the real Qwen-Image (`sluice plan --table qwen-image`), with the formulas a loaded model
    /// is planned with and the table's own groups and FLOPs; the token embedding stays on the host, as
    /// when the model runs.
    public static func describe(table: ModelTable) throws(SluiceError) -> [ComponentDescription] {
        let text = try table.configuredComponent("text_encoder"), tr = try table.configuredComponent("transformer")
        let v = try table.configuredComponent("vae")
        let flops = table.flops(of: [text, tr, v])
        let textGroups = table.groups(text)
        let host = textGroups.indices.filter { textGroups[$0].name.hasSuffix("embed_tokens") }
        let textFlops = flops["text_encoder"].map { f in { @Sendable (w: Workload) in f(w).enumerated().filter { !host.contains($0.offset) }.map(\.element) } }
        var byComponent = flops
        byComponent["text_encoder"] = textFlops
        return describe(text: (try text.config!.decode(Qwen2VLTextConfig.self, what: "table \(table.model): text_encoder config"),
                               textGroups.enumerated().filter { !host.contains($0.offset) }.map(\.element)),
                        transformer: (try tr.config!.decode(QwenImageConfig.self, what: "table \(table.model): transformer config"), table.groups(tr)),
                        vae: (try v.config!.decode(QwenImageVAEConfig.self, what: "table \(table.model): vae config"), table.groups(v)),
                        followsStorage: true, flops: byComponent)
    }

    /// The one place Qwen-Image's components meet the planner, for a loaded model and a table alike.
    /// `flops` by component overrides the rows-based estimate (a table's own FLOPs).
    static func describe(text: (Qwen2VLTextConfig, [GroupDescription]), transformer: (QwenImageConfig, [GroupDescription]),
                         vae: (QwenImageVAEConfig, [GroupDescription]), followsStorage: Bool,
                         flops: [String: @Sendable (Workload) -> [Double]]) -> [ComponentDescription] {
        let (textConfig, textGroups) = text, (trConfig, trGroups) = transformer, (vaeConfig, vaeGroups) = vae
        let scale = vaeConfig.scale
        let imageTokens: @Sendable (Workload) -> Int = { ($0.height / scale / 2) * ($0.width / scale / 2) }
        let textTokens = plannedTextTokens
        return [
            ComponentDescription(name: "text_encoder", phase: .text, groups: textGroups, followsStorage: followsStorage,
                                 activationBytes: { _ in Qwen2VLTextEncoder.activationBytes(config: textConfig, tokens: textTokens) },
                                 flops: flops["text_encoder"] ?? ComponentDescription.linearFlops(textGroups) { _ in 128 }),
            ComponentDescription(name: "transformer", phase: .denoise, groups: trGroups, followsStorage: followsStorage,
                                 activationBytes: { w in
                                     QwenImageTransformer.activationBytes(config: trConfig, imageTokens: imageTokens(w), textTokens: QwenImagePrompt.maxTokens) * w.batch },
                                 flops: flops["transformer"] ?? ComponentDescription.linearFlops(trGroups) { Double(imageTokens($0) + 128) }),
            ComponentDescription(name: "vae", phase: .decode, groups: vaeGroups,
                                 activationBytes: { w in vaeConfig.decodeActivationBytes(pixels: w.width * w.height) * w.batch },
                                 flops: flops["vae"] ?? ComponentDescription.linearFlops(vaeGroups) { Double($0.width * $0.height) / 4 },
                                 tiling: QwenImageVAE(config: vaeConfig).tiling),
        ]
    }

    public func componentDescriptions(_ r: GenerationRequest) throws(SluiceError) -> [ComponentDescription] { try descriptions(r) }

    public func plan(_ r: GenerationRequest, memory: MemoryOptions) throws(SluiceError) -> Plan? {
        try validate(r)
        return try components.plan(descriptions(r), workload: r.workload, memory: memory)
    }

    // MARK: - Generation

    /// The prompt's embeddings [L, hidden]: the encoder's output for the templated prompt, its prefix dropped.
    public func encodePrompt(_ text: String, maxLength: Int = QwenImagePrompt.maxTokens) throws -> Tensor {
        let ids = Array(try QwenImagePrompt.ids(text, tokenizer: tokenizer).prefix(maxLength + QwenImagePrompt.droppedTokens))
        let enc = encoder, be = device.backend
        let s = try textRunner.run(Qwen2VLTextEncoder.State(ids: ids)) { i, w, s in try enc.run(group: i, w, s, be) }
        return try QwenImagePrompt.embeddings(s.hidden!)
    }

    public func generate(_ r: GenerationRequest, memory: MemoryOptions, progress: (GenerationProgress) -> Void,
                         afterStep: (Int, Tensor) -> Void, isCancelled: () -> Bool) throws -> GenerationResult {
        try validate(r)
        let cfg = trueCFG(r), scale = cfgScale(r)
        let run = try components.start(descriptions(r), workload: r.workload, memory: memory)
        defer { run.end() }
        // diffusers: 2 · (side // (scale · 2)) latents a side.
        let lh = 2 * (r.height / (vae.config.scale * 2)), lw = 2 * (r.width / (vae.config.scale * 2))
        var generator = TorchGenerator(seed: r.seed)
        let be = device.backend

        let start = r.initImage == nil ? 0 : imageToImageStart(steps: r.steps, strength: r.strength)
        let (positive, negative, imageLatents) = try run.phase(.text) { () throws -> (Tensor, Tensor?, Tensor?) in
            progress(run.withDevice(GenerationProgress(phase: .text, step: 0, total: cfg ? 2 : 1, elapsed: 0)))
            let length = r.maxSequenceLength ?? QwenImagePrompt.maxTokens
            let pos = try encodePrompt(r.prompt, maxLength: length), neg = cfg ? try encodePrompt(r.negativePrompt, maxLength: length) : nil
            // Components of a phase run one at a time: the text encoder leaves (when the plan swaps it) before
            // the VAE encoder takes its room.
            run.finished(component: textRunner.name)
            // Image to image: the init image's latents, sampled with the run's generator before the noise.
            return (pos, neg, try r.initImage.map { image in try encodeImage(image, generator: &generator, run: run, on: be) })
        }
        if isCancelled() { throw SluiceError.cancelled(stage: "after text encoding") }

        let scheduler = try FlowMatchEulerScheduler(config: schedulerConfig, baseSigmas: FlowMatchEulerScheduler.numpyLinspace(1, 1 / Double(r.steps), r.steps),
                                                    mu: FlowMatchEulerScheduler.mu(imageSeqLen: (lh / 2) * (lw / 2), config: schedulerConfig))
        // randn of [1, 1, C, h, w]: the same draws as [1, C, h, w].
        var noise = try generator.randn([1, vae.config.zDim, lh, lw])
        if let imageLatents {
            // QwenImageImg2ImgPipeline: (z − latents_mean) · (1 / latents_std) per channel, then scale_noise at
            // the start step's σ.
            let plane = lh * lw, mean = vae.config.latentsMean, invStd = vae.config.latentsStd.map { 1 / $0 }
            noise = try FlowMatchImageToImage.noised(imageLatents, noise: noise, sigma: scheduler.sigmas[start]) { x, i in
                (x - mean[i / plane]) * invStd[i / plane]
            }
        }
        var latents = try FluxPipeline.pack(noise, be)
        let tr = transformer
        var unpacked: Tensor?
        let timesteps = scheduler.timesteps
        try run.denoise(steps: r.steps - start, progress: progress, afterStep: afterStep, isCancelled: isCancelled) { k in
            let i = start + k
            // diffusers passes t/1000 (f32); the model multiplies it back.
            let timestep = timesteps[i], x = latents
            func velocity(_ context: Tensor) throws -> Tensor {
                let state = QwenImageTransformer.State(latents: x, rows: lh / 2, columns: lw / 2, t: timestep / 1000, context: context)
                return try transformerRunner.run(state) { g, w, s in try tr.run(group: g, w, s, be) }.output!
            }
            var pred = try velocity(positive)
            if let negative { pred = try Self.guided(pred, negative: velocity(negative), scale: scale, be) }
            latents = try scheduler.step(i, velocity: pred, latents: latents, on: be)
            unpacked = try FluxPipeline.unpack(latents, height: lh, width: lw, be)
            return unpacked!
        }

        let final = try unpacked ?? FluxPipeline.unpack(latents, height: lh, width: lw, be)
        let image = try run.phase(.decode) { () throws -> Tensor in
            progress(run.withDevice(GenerationProgress(phase: .decode, step: 0, total: 1, elapsed: 0)))
            let v = vae, tile = run.plan?.component(vaeRunner.name)?.tileLatent
            let decoded = try vaeRunner.run(try v.config.denormalize(final, be)) { _, w, z in
                if let tile { return try v.decodeTiled(z, tileLatent: tile, w, be) }
                return try v.decode(z, w, be)
            }
            return try ImageOutput.fromDecoder(decoded)
        }
        return GenerationResult(image: image, latents: final, report: run.complete())
    }

    /// A sample of the init image's latent distribution ([1, z_dim, h, w], before normalisation), the
    /// noise from the run's generator (diffusers' retrieve_latents).
    func encodeImage(_ image: InitImage, generator: inout TorchGenerator, run: PipelineRun, on be: any Backend) throws -> Tensor {
        guard let encoderRunner else { throw SluiceError.invalidParameter(.initImage, reason: "this model's VAE file has no encoder") }
        let v = vae, tile = run.plan?.component(encoderRunner.name)?.tileLatent
        return try VAEEncoderComponent.sample(image, runner: encoderRunner, generator: &generator, run: run, on: be) { x, w in
            try tile.map { t throws(SluiceError) in try v.encodeMomentsTiled(x, tileLatent: t, w, be) } ?? v.encodeMoments(x, w, be)
        }
    }

    /// True CFG as QwenImagePipeline combines it: c = neg + s · (pos − neg), then each token rescaled to
    /// the conditional prediction's norm, c · ‖pos‖ / ‖c‖ (norms over the token's channels, f32). The
    /// norms are taken on the host: a step's predictions are tokens × 64 floats.
    static func guided(_ pos: Tensor, negative neg: Tensor, scale: Float, _ b: any Backend) throws(SluiceError) -> Tensor {
        let combined = try b.axpy(neg, b.sub(pos, neg), scale: scale)
        let p = try pos.toFloats(), c = try combined.toFloats()
        let width = pos.shape[pos.shape.rank - 1], tokens = p.count / width
        var out = [Float](repeating: 0, count: c.count)
        for t in 0..<tokens {
            var pp: Float = 0, cc: Float = 0
            for j in t * width..<(t + 1) * width { pp += p[j] * p[j]; cc += c[j] * c[j] }
            let ratio = pp.squareRoot() / cc.squareRoot()
            for j in t * width..<(t + 1) * width { out[j] = c[j] * ratio }
        }
        return Tensor(out, shape: combined.shape)
    }
}
