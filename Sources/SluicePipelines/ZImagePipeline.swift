import Foundation
import SluiceBackends
import SluiceCore
import SluiceMemory
import SluiceModels
import SluiceText
import SluiceWeights

/// What to generate.
public struct GenerationRequest: Sendable {
    public var prompt: String
    public var negativePrompt: String = ""
    public var seed: UInt64 = 42
    public var steps: Int
    public var width: Int = 1024
    public var height: Int = 1024
    /// Classifier-free guidance scale; as in diffusers' ZImagePipeline, guidance runs whenever it is > 0.
    public var guidance: Float

    public init(prompt: String, negativePrompt: String = "", seed: UInt64 = 42, steps: Int, width: Int = 1024, height: Int = 1024, guidance: Float) {
        self.prompt = prompt; self.negativePrompt = negativePrompt; self.seed = seed; self.steps = steps
        self.width = width; self.height = height; self.guidance = guidance
    }
}

/// Where the weights may live: with a device budget the run goes through the sluice on the simulated
/// device (`profile`); without one, everything runs on the CPU straight from the mapped files.
public struct MemoryOptions: Sendable {
    public var deviceBudget: Int?
    public var hostBudget: Int?
    public var profile: DeviceProfile = .rtx4090
    public init(deviceBudget: Int? = nil, hostBudget: Int? = nil, profile: DeviceProfile = .rtx4090) {
        self.deviceBudget = deviceBudget; self.hostBudget = hostBudget; self.profile = profile
    }
}

public struct Progress: Sendable {
    public let phase: String
    public let step: Int
    public let total: Int
    public let elapsed: Double
    /// The (simulated) device's memory in use now and at peak this phase, when running with a budget.
    public var deviceBytes: Int?
    public var devicePeakBytes: Int?
}

public struct GenerationResult: @unchecked Sendable {
    /// [3, H, W] in [0, 1].
    public let image: Tensor
    public let latents: Tensor
    public let report: RunReport?
    public let phases: [PhaseReport]
    /// The VAE decoded in tiles of this many latents (the budget left no room for the whole image).
    public let vaeTileLatent: Int?
}

/// Z-Image(-Turbo) text-to-image as diffusers' ZImagePipeline does it: Qwen3 prompt embeddings
/// (hidden_states[-2] of the chat-templated prompt), noise from torch's generator, flow-match Euler
/// over σ = shift(linspace(1, 1/n, n)), the transformer's output negated as the velocity, the FLUX VAE.
public final class ZImagePipeline: @unchecked Sendable {
    /// Turbo's defaults (its model card): 8 steps, guidance off.
    public static let defaultSteps = 8
    public static let defaultGuidance: Float = 0

    public let directory: String
    public let tokenizer: QwenTokenizer
    public let encoder: Qwen3Encoder
    public let transformer: ZImageTransformer
    public let vae: VAEDecoder
    public let schedulerConfig: FlowMatchEulerScheduler.Config
    let textRunner: ComponentRunner
    let transformerRunner: ComponentRunner
    let vaeRunner: ComponentRunner
    let backend: any Backend
    /// Host bytes of the activations the CPU backend allocates (the default backend counts here).
    public let activationCounter: AllocationCounter

    /// Seconds each component took to open (configs read, files mapped, tensors indexed).
    public private(set) var loadSeconds: [(component: String, seconds: Double)] = []

    /// What `--device` turned into, when it was not what was asked (a Vulkan request that fell back).
    public private(set) var deviceNote: String?

    /// What computes: "cpu", or the Vulkan device with the memory it plans with.
    public var deviceDescription: String {
        guard let v = vulkanContext else { return "cpu" }
        return "vulkan: \(v.info.name) (\(v.info.type), \(formatBytes(v.info.deviceBudget)) device budget)"
    }

    /// The Vulkan device the pipeline computes on, if it does.
    public var vulkanContext: VulkanContext? { (backend as? VulkanBackend)?.context }

    /// With `device` ("cpu", "vulkan", "vulkan:N") choosing the backend.
    public convenience init(directory: String, device: String) throws {
        let counter = AllocationCounter()
        let (backend, note) = try DeviceSelection.backend(device, allocations: counter)
        try self.init(directory: directory, backend: backend, activationCounter: counter)
        deviceNote = note
    }

    public init(directory: String, backend: (any Backend)? = nil, activationCounter: AllocationCounter = AllocationCounter()) throws {
        self.activationCounter = activationCounter
        self.directory = directory
        var clock = Date()
        var times: [(String, Double)] = []
        func lap(_ name: String) { times.append((name, Date().timeIntervalSince(clock))); clock = Date() }
        let index = directory + "/model_index.json"
        guard let data = FileManager.default.contents(atPath: index),
              let obj = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw SluiceError.io(path: index, reason: "missing or not JSON (not a diffusers model folder)")
        }
        guard (obj["_class_name"] as? String) == "ZImagePipeline" else {
            throw SluiceError.invalidArgument(name: index, reason: "_class_name is \(obj["_class_name"] ?? "absent"), expected ZImagePipeline")
        }
        for c in ["scheduler", "text_encoder", "tokenizer", "transformer", "vae"] where obj[c] == nil {
            throw SluiceError.invalidArgument(name: index, reason: "lists no '\(c)' component")
        }
        tokenizer = try QwenTokenizer(directory: directory + "/tokenizer")
        schedulerConfig = try ModelLocator.config(FlowMatchEulerScheduler.Config.self, at: directory + "/scheduler/scheduler_config.json")
        lap("tokenizer + scheduler")
        encoder = Qwen3Encoder(config: try ModelLocator.config(Qwen3Config.self, at: directory + "/text_encoder/config.json"))
        let enc = encoder
        textRunner = ComponentRunner(name: "text_encoder", phase: "text", checkpoint: try ModelLocator.checkpoint(component: directory + "/text_encoder"),
                                     groupNames: enc.groupNames, groupOf: { enc.group(of: $0) })
        lap("text_encoder")
        transformer = ZImageTransformer(config: try ModelLocator.config(ZImageConfig.self, at: directory + "/transformer/config.json"))
        let tr = transformer
        transformerRunner = ComponentRunner(name: "transformer", phase: "denoise",
                                            checkpoint: try ModelLocator.checkpoint(component: directory + "/transformer"),
                                            groupNames: tr.groupNames, groupOf: { tr.group(of: $0) })
        lap("transformer")
        vae = VAEDecoder(config: try ModelLocator.config(AutoencoderKLConfig.self, at: directory + "/vae/config.json"))
        // The VAE is one group: small, resident whole when it goes to the device.
        vaeRunner = ComponentRunner(name: "vae", phase: "decode", checkpoint: try ModelLocator.checkpoint(component: directory + "/vae"),
                                    groupNames: ["vae"], groupOf: { $0.hasPrefix("decoder.") || $0.hasPrefix("post_quant_conv.") ? "vae" : nil })
        lap("vae")
        self.backend = try backend ?? CPUBackend(allocations: activationCounter)
        try checkWeights()
        loadSeconds = times.map { (component: $0.0, seconds: $0.1) }
    }

    /// Every tensor the models will ask for exists, so a broken download fails at load, naming it.
    func checkWeights() throws {
        _ = try textRunner.execGroups()
        _ = try transformerRunner.execGroups()
        let vaeGroup = try vaeRunner.execGroups()[0]
        for key in ["decoder.conv_in.weight", "decoder.conv_out.weight", "decoder.mid_block.resnets.0.conv1.weight"]
        where !vaeGroup.tensors.contains(where: { $0.key == key }) {
            throw SluiceError.missingTensor(key: key, file: directory + "/vae")
        }
    }

    /// Pixel sizes must be multiples of this (VAE scale × patch size).
    public var sizeMultiple: Int { vae.config.scale * 2 }

    public func validate(_ r: GenerationRequest) throws(SluiceError) {
        guard r.width > 0, r.height > 0, r.width % sizeMultiple == 0, r.height % sizeMultiple == 0 else {
            throw .invalidArgument(name: "--width/--height", reason: "\(r.width)×\(r.height) must be positive multiples of \(sizeMultiple)")
        }
        guard (1...1000).contains(r.steps) else { throw .invalidArgument(name: "--steps", reason: "\(r.steps) must be 1…1000") }
        guard r.guidance >= 0, r.guidance.isFinite else { throw .invalidArgument(name: "--guidance", reason: "must be ≥ 0") }
    }

    /// The latent tensor's spatial size for an image.
    func latentSize(_ r: GenerationRequest) -> (h: Int, w: Int) {
        (2 * (r.height / sizeMultiple), 2 * (r.width / sizeMultiple))
    }

    public func encodePrompt(_ text: String) throws -> Tensor {
        let ids = try tokenizer.zImagePromptIDs(text)
        let enc = encoder, be = backend
        let s = try textRunner.run(Qwen3Encoder.State(ids: ids)) { i, w, s in
            try enc.run(group: i, { k throws(SluiceError) in try w(k) }, s, be)
        }
        return s.hidden!
    }

    public func generate(_ r: GenerationRequest, memory: MemoryOptions = MemoryOptions(),
                         progress: (Progress) -> Void = { _ in }, afterStep: (Int, Tensor) -> Void = { _, _ in },
                         isCancelled: () -> Bool = { false }) throws -> GenerationResult {
        defer { releaseDevice() }
        try validate(r)
        let (lh, lw) = latentSize(r)
        let sluice = try deviceBudget(memory).map { budget throws in try attach(budget: budget, memory: memory, request: r) }
        var phases: [PhaseReport] = []
        func withDevice(_ p: Progress) -> Progress {
            var p = p
            if let d = sluice?.device { p.deviceBytes = d.usedBytes; p.devicePeakBytes = d.peakBytes }
            return p
        }
        let host = activationCounter
        func phase<T>(_ name: String, _ body: () throws -> T) throws -> T {
            sluice?.device.resetCounters()
            host.resetPeak()
            let start = sluice?.device.computeDone ?? 0
            let t0 = Date()
            let out = try body()
            let wall = Date().timeIntervalSince(t0)
            if let d = sluice?.device { phases.append(.from(device: d, phase: name, wallSeconds: wall, start: start, peakHostBytes: host.peakBytes)) }
            else { phases.append(.cpu(phase: name, wallSeconds: wall, peakHostBytes: host.peakBytes)) }
            return out
        }

        let cfg = r.guidance > 0
        let (positive, negative) = try phase("text") { () throws -> (Tensor, Tensor?) in
            progress(withDevice(Progress(phase: "text", step: 0, total: cfg ? 2 : 1, elapsed: 0)))
            let p = try encodePrompt(r.prompt)
            let n = cfg ? try encodePrompt(r.negativePrompt) : nil
            return (p, n)
        }
        if let s = sluice, s.releaseTextBeforeDenoise { textRunner.release() }
        if isCancelled() { throw SluiceError.cancelled(stage: "after text encoding") }

        var generator = TorchGenerator(seed: r.seed)
        let latents = try generator.randn([1, transformer.config.inChannels, lh, lw])
        let scheduler = try FlowMatchEulerScheduler(config: schedulerConfig,
            baseSigmas: FlowMatchEulerScheduler.linspace(1, 1 / Float(r.steps), r.steps),
            mu: FlowMatchEulerScheduler.mu(imageSeqLen: (lh / 2) * (lw / 2), config: schedulerConfig))
        let tr = transformer, be = backend
        try phase("denoise") { () throws in
            let t0 = Date()
            for (i, timestep) in scheduler.timesteps.enumerated() {
                // Between steps is where a cancelled job stops (its memory goes with `releaseDevice`).
                if isCancelled() { throw SluiceError.cancelled(stage: "before step \(i + 1) of \(r.steps)") }
                let t = (1000 - timestep) / 1000
                let x = try latents.reshaped([tr.config.inChannels, 1, lh, lw])
                func velocity(_ caption: Tensor) throws -> Tensor {
                    let s = try transformerRunner.run(ZImageTransformer.State(latents: x, t: t, caption: caption)) { g, w, s in
                        try tr.run(group: g, w, s, be)
                    }
                    return s.output!
                }
                var pred = try velocity(positive)
                if let negative {
                    let neg = try velocity(negative)
                    let p = pred.f32, n = neg.f32, g = r.guidance
                    for j in 0..<pred.count { p[j] = p[j] + g * (p[j] - n[j]) }
                }
                // diffusers negates the transformer's output to get the flow velocity.
                for j in 0..<pred.count { pred.f32[j] = -pred.f32[j] }
                pred = try pred.reshaped(latents.shape)
                try scheduler.step(i, velocity: pred, latents: latents)
                afterStep(i, latents)
                progress(withDevice(Progress(phase: "denoise", step: i + 1, total: r.steps, elapsed: Date().timeIntervalSince(t0))))
            }
        }
        if let s = sluice, s.releaseTransformerBeforeDecode { transformerRunner.release() }

        let image = try phase("decode") { () throws -> Tensor in
            progress(withDevice(Progress(phase: "decode", step: 0, total: 1, elapsed: 0)))
            let scale = vae.config.scalingFactor, shift = vae.config.shiftFactor
            let z = Tensor(uninitialized: latents.shape, dtype: .f32)
            for j in 0..<z.count { z.f32[j] = latents.f32[j] / scale + shift }
            let tile = sluice?.vaeTileLatent, v = vae
            let decoded = try vaeRunner.run(z) { _, w, z in
                if let tile { return try v.decodeTiled(z, tileLatent: tile, w, be) }
                return try v.decode(z, w, be)
            }
            // (x / 2 + 0.5) clamped to [0, 1], as diffusers' image processor does.
            let out = Tensor(uninitialized: [decoded.shape[1], decoded.shape[2], decoded.shape[3]], dtype: .f32)
            let d = decoded.contiguous()
            for j in 0..<out.count { out.f32[j] = min(max(d.f32[j] / 2 + 0.5, 0), 1) }
            return out
        }
        let report = sluice.map { RunReport(device: $0.device.name, plan: $0.plan, phases: phases) }
        return GenerationResult(image: image, latents: latents, report: report, phases: phases, vaeTileLatent: sluice?.vaeTileLatent)
    }

    /// Frees everything this run put on the device; the runners go back to reading the mapped files.
    func releaseDevice() {
        for runner in [textRunner, transformerRunner, vaeRunner] { runner.detach() }
    }

    // MARK: - Through the sluice

    /// The device, the plan and the decisions taken between phases.
    final class Sluice: @unchecked Sendable {
        let device: SimulatedDevice
        let plan: Plan
        let releaseTextBeforeDenoise: Bool
        let releaseTransformerBeforeDecode: Bool
        let vaeTileLatent: Int?
        init(device: SimulatedDevice, plan: Plan, releaseText: Bool, releaseTransformer: Bool, vaeTileLatent: Int?) {
            self.device = device; self.plan = plan; releaseTextBeforeDenoise = releaseText
            releaseTransformerBeforeDecode = releaseTransformer; self.vaeTileLatent = vaeTileLatent
        }
    }

    /// Activation estimates (f32): the largest live set of one group's forward, with headroom.
    func activationBytes(component: String, _ r: GenerationRequest) -> Int {
        let (lh, lw) = latentSize(r)
        switch component {
        case "text_encoder":
            let L = 512, c = encoder.config
            return 4 * L * (6 * c.hiddenSize + 3 * c.intermediateSize + 2 * c.numAttentionHeads * c.headDim)
        case "transformer":
            let c = transformer.config
            let tokens = ZImageTransformer.padded((lh / 2) * (lw / 2)) + 512
            return 4 * tokens * (10 * c.dim + 3 * c.ffnDim) * (r.guidance > 0 ? 2 : 1)
        default:
            return vaeActivationBytes(pixels: r.width * r.height)
        }
    }

    /// The decoder's live set at full resolution: the last upsampler's conv reads and writes
    /// blockOutChannels[1] channels there (the last block then narrows to [0]), with the residual
    /// and a norm's output beside them — four f32 tensors of the wider count.
    func vaeActivationBytes(pixels: Int) -> Int {
        let c = vae.config.blockOutChannels
        return 4 * 4 * max(c[0], c.count > 1 ? c[1] : c[0]) * pixels
    }

    /// The budget the memory manager plans with: `--vram-limit`, else on a real device what its
    /// device-local heap offers (none on the CPU: weights are read from the mapped files in place).
    /// A limit above what the device has is capped to it: the plan must fit the real heap.
    public func deviceBudget(_ memory: MemoryOptions) -> Int? {
        guard let heap = vulkanContext?.info.deviceBudget else { return memory.deviceBudget }
        return min(memory.deviceBudget ?? heap, heap)
    }

    func attach(budget: Int, memory: MemoryOptions, request r: GenerationRequest) throws -> Sluice {
        // On Vulkan the memory is real (buffers, copy queue, timeline semaphore); the clock is modelled.
        let backing = vulkanContext.map { VulkanMemory(context: $0) }
        let device = SimulatedDevice(profile: memory.profile, capBytes: budget, backing: backing)
        func planFor(_ runner: ComponentRunner, activation: Int, tiled: Bool = false) throws -> ComponentPlan {
            do {
                return try Planner.planComponent(name: runner.name, phase: runner.phase, groups: try runner.sizes(on: device),
                                                 activationBytes: device.allocationSize(activation), budget: budget, tiled: tiled)
            } catch let e as PlanError { throw SluiceError.invalidArgument(name: "--vram-limit", reason: e.description) }
        }
        let textPlan = try planFor(textRunner, activation: activationBytes(component: "text_encoder", r))
        let denoisePlan = try planFor(transformerRunner, activation: activationBytes(component: "transformer", r))
        // The VAE is small: resident whole; it tiles when its full-image activations do not fit.
        let vaeBytes = try vaeRunner.sizes(on: device)[0].bytes
        var tile: Int? = nil
        var vaeAct = device.allocationSize(activationBytes(component: "vae", r))
        if vaeBytes + vaeAct > budget {
            let (lh, lw) = latentSize(r)
            var t = max(lh, lw)
            while t > 8 && vaeBytes + vaeAct > budget {
                t = t * 3 / 4
                vaeAct = device.allocationSize(vaeActivationBytes(pixels: (t * vae.config.scale) * (t * vae.config.scale)))
            }
            guard vaeBytes + vaeAct <= budget else {
                throw SluiceError.invalidArgument(name: "--vram-limit", reason: "the VAE needs at least \(formatBytes(vaeBytes + vaeAct)) even tiled; the budget is \(formatBytes(budget))")
            }
            tile = t
        }
        let vaePlan = try planFor(vaeRunner, activation: vaeAct, tiled: tile != nil)
        // A component kept on the device between phases keeps all it holds (residents, ring, activations).
        let releaseText = textPlan.deviceBytes + denoisePlan.deviceBytes > budget
        let releaseTransformer = denoisePlan.deviceBytes + vaePlan.deviceBytes
            + (releaseText ? 0 : textPlan.deviceBytes) > budget
        let swapped = (releaseText ? ["text_encoder"] : []) + (releaseTransformer ? ["transformer"] : [])
        let keptText = releaseText ? 0 : textPlan.deviceBytes
        let peak = max(textPlan.deviceBytes, keptText + denoisePlan.deviceBytes,
                       keptText + (releaseTransformer ? 0 : denoisePlan.deviceBytes) + vaePlan.deviceBytes)
        let plan = Plan(deviceBudget: budget, hostBudget: memory.hostBudget, components: [textPlan, denoisePlan, vaePlan],
                        swappedBetweenPhases: swapped, peakDeviceBytes: peak)
        let (lh, lw) = latentSize(r)
        textRunner.rowsPerCall = 64
        transformerRunner.rowsPerCall = Double(ZImageTransformer.padded((lh / 2) * (lw / 2)) + 64) * (r.guidance > 0 ? 2 : 1)
        vaeRunner.rowsPerCall = Double(r.width * r.height) / 4
        try textRunner.attach(device: device, plan: textPlan, hostBudget: memory.hostBudget)
        try transformerRunner.attach(device: device, plan: denoisePlan, hostBudget: memory.hostBudget)
        try vaeRunner.attach(device: device, plan: vaePlan, hostBudget: memory.hostBudget)
        return Sluice(device: device, plan: plan, releaseText: releaseText, releaseTransformer: releaseTransformer, vaeTileLatent: tile)
    }
}
