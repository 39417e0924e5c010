import SluiceBackends
import SluiceCore
import SluiceMemory

/// What to generate.
public struct GenerationRequest: Sendable, Equatable {
    public var prompt: String
    public var negativePrompt: String = ""
    public var seed: UInt64 = 42
    public var steps: Int
    public var width: Int = 1024
    public var height: Int = 1024
    /// Classifier-free guidance scale (each pipeline says when it applies; FLUX.1-dev embeds it).
    public var guidance: Float
    /// diffusers' `true_cfg_scale`: real CFG with the negative prompt when > 1, for models whose
    /// `guidance` is embedded (FLUX.1). 1 = off.
    public var trueCFGScale: Float = 1
    /// diffusers' `max_sequence_length`: the text encoder's padded length where the model attends the
    /// padding (FLUX's T5), or its cut-off; nil = the model's default.
    public var maxSequenceLength: Int?
    /// The sampler, by AUTOMATIC1111's name ("DPM++ 2M Karras"); nil: the model's own default.
    public var sampler: String?
    /// Image to image: the picture to start from, at the request's size.
    public var initImage: InitImage?
    /// Image to image: the share of the schedule run on the noised init image (diffusers' `strength`,
    /// AUTOMATIC1111's denoising strength): 1 ignores the image, near 0 returns it almost unchanged.
    public var strength: Double = 0.8

    public init(prompt: String, negativePrompt: String = "", seed: UInt64 = 42, steps: Int, width: Int = 1024, height: Int = 1024, guidance: Float) {
        self.prompt = prompt; self.negativePrompt = negativePrompt; self.seed = seed; self.steps = steps
        self.width = width; self.height = height; self.guidance = guidance
    }

    /// What one call of each component works on.
    public var workload: Workload { Workload(width: width, height: height) }
}

/// An 8-bit RGB picture, row-major, three bytes a pixel (what a PNG decodes to).
public struct InitImage: Sendable, Equatable {
    public var pixels: [UInt8]
    public var width: Int
    public var height: Int
    public init(pixels: [UInt8], width: Int, height: Int) { self.pixels = pixels; self.width = width; self.height = height }

    public init(path: String) throws(SluiceError) {
        let png = try PNGReader.read(path: path)
        self.init(pixels: png.pixels, width: png.width, height: png.height)
    }

    /// [1, 3, H, W] in [−1, 1], as diffusers' VaeImageProcessor normalises it.
    public var tensor: Tensor { PNGReader.tensor(pixels: pixels, width: width, height: height) }
}

/// Where the weights may live: with a device budget the run goes through the sluice (the simulated
/// device of `profile` on the CPU, real buffers on Vulkan); without one, the CPU runs everything
/// straight from the mapped files.
public struct MemoryOptions: Sendable {
    public var deviceBudget: Int?
    public var hostBudget: Int?
    /// Whose modelled clock times the run and chooses the prefetch depth (a simulation).
    public var profile: DeviceProfile = .rtx4090
    /// Tests only: the simulated device's capacity when it must differ from the budget (set above it,
    /// a plan that exceeds its budget shows in the measured peak instead of failing an allocation).
    public var deviceCapBytes: Int?
    public init(deviceBudget: Int? = nil, hostBudget: Int? = nil, profile: DeviceProfile = .rtx4090) {
        self.deviceBudget = deviceBudget; self.hostBudget = hostBudget; self.profile = profile
    }
}

public struct GenerationProgress: Sendable {
    public let phase: Phase
    public let step: Int
    public let total: Int
    public let elapsed: Double
    /// The device's memory in use now and at peak this phase, when running with a budget.
    public var deviceBytes: Int?
    public var devicePeakBytes: Int?

    public init(phase: Phase, step: Int, total: Int, elapsed: Double) {
        self.phase = phase; self.step = step; self.total = total; self.elapsed = elapsed
    }
}

public struct GenerationResult: @unchecked Sendable {
    /// [3, H, W] in [0, 1].
    public let image: Tensor
    /// The final latents, as the denoiser left them (before the VAE's scale and shift).
    public let latents: Tensor
    /// Phases and the plan; the plan is nil without a device budget.
    public let report: RunReport
    public var phases: [PhaseReport] { report.phases }
    /// The VAE decoded in tiles of this many latents (the budget left no room for the whole image).
    public var vaeTileLatent: Int? { report.plan?.components.first { $0.phase == Phase.decode.rawValue }?.tileLatent }

    public init(image: Tensor, latents: Tensor, report: RunReport) {
        self.image = image; self.latents = latents; self.report = report
    }
}

/// A family's defaults, as its model card gives them.
public struct PipelineDefaults: Sendable, Equatable {
    public let steps: Int
    public let guidance: Float
    public let width: Int
    public let height: Int
    /// Pixel sizes must be multiples of this (VAE scale × patch size).
    public let sizeMultiple: Int
    /// The longest prompt, in tokens, the text encoder reads (longer prompts are cut).
    public let maxPromptTokens: Int
    /// The largest side this family takes, in pixels.
    public let maxSide: Int

    public init(steps: Int, guidance: Float, width: Int, height: Int, sizeMultiple: Int, maxPromptTokens: Int, maxSide: Int = 4096) {
        self.steps = steps; self.guidance = guidance; self.width = width; self.height = height
        self.sizeMultiple = sizeMultiple; self.maxPromptTokens = maxPromptTokens; self.maxSide = maxSide
    }
}

/// Text to image, as the command line and the server use it: they know a model only through this.
/// A family (Z-Image, later FLUX, SDXL…) implements it in one pipeline file and one registry line
/// (`PipelineRegistry`), with its models in a folder of SluiceModels.
public protocol TextToImagePipeline: AnyObject, Sendable {
    /// The family's name, e.g. "Z-Image".
    var family: String { get }
    /// The model folder it was loaded from.
    var directory: String { get }
    var defaults: PipelineDefaults { get }
    /// The sampler and schedule as AUTOMATIC1111's infotext names them (e.g. "Euler", "Flow match (shift 3.0)").
    var sampler: (name: String, schedule: String) { get }
    /// Sampler names an AUTOMATIC1111 client may send that mean this pipeline's own sampler.
    var samplerAliases: Set<String> { get }
    /// The samplers a request may name (`GenerationRequest.sampler`), AUTOMATIC1111's names, default first.
    var samplerNames: [String] { get }
    /// The sampler and schedule `request` runs with (its own choice, else the model's default).
    func sampler(for request: GenerationRequest) -> (name: String, schedule: String)
    /// Whether `name` (any spelling a client may send) names one of this model's samplers.
    func knowsSampler(_ name: String) -> Bool
    /// Whether `GenerationRequest.initImage` is taken (the model has a VAE encoder and the family
    /// implements image to image).
    var supportsImageToImage: Bool { get }
    /// The step image to image starts at for `strength` of `steps` (the rest of the schedule runs);
    /// `steps` when none would run.
    func imageToImageStart(steps: Int, strength: Double) -> Int
    /// What computes.
    var device: ComputeDevice { get }
    /// The components in phase order, and what stays on the device between runs.
    var components: PipelineComponents { get }
    /// Seconds each component took to open (configs read, files mapped, tensors indexed).
    var loadSeconds: [(component: String, seconds: Double)] { get }

    /// Refuses a request this pipeline cannot run, naming the parameter.
    func validate(_ request: GenerationRequest) throws(SluiceError)
    /// What a person should know before the run: a prompt longer than the text encoder reads, say.
    func warnings(_ request: GenerationRequest) -> [String]
    /// The plan `generate` will run `request` with under `memory`: nil when there is no device budget.
    func plan(_ request: GenerationRequest, memory: MemoryOptions) throws(SluiceError) -> Plan?
    /// The components as the planner sees them for `request` (groups, activations, FLOPs), in runner
    /// order: what `sluice plan` times on the modelled clock. Empty where a family does not say.
    func componentDescriptions(_ request: GenerationRequest) throws(SluiceError) -> [ComponentDescription]
    func generate(_ request: GenerationRequest, memory: MemoryOptions, progress: (GenerationProgress) -> Void,
                  afterStep: (Int, Tensor) -> Void, isCancelled: () -> Bool) throws -> GenerationResult
}

extension TextToImagePipeline {
    public func generate(_ request: GenerationRequest, memory: MemoryOptions = MemoryOptions()) throws -> GenerationResult {
        try generate(request, memory: memory, progress: { _ in }, afterStep: { _, _ in }, isCancelled: { false })
    }

    /// A request with this family's defaults.
    public func request(prompt: String, negativePrompt: String = "", seed: UInt64 = 42, steps: Int? = nil,
                        width: Int? = nil, height: Int? = nil, guidance: Float? = nil) -> GenerationRequest {
        GenerationRequest(prompt: prompt, negativePrompt: negativePrompt, seed: seed, steps: steps ?? defaults.steps,
                          width: width ?? defaults.width, height: height ?? defaults.height, guidance: guidance ?? defaults.guidance)
    }

    public func warnings(_ request: GenerationRequest) -> [String] { [] }

    public var samplerNames: [String] { [sampler.name] }
    public func sampler(for request: GenerationRequest) -> (name: String, schedule: String) { sampler }
    public func knowsSampler(_ name: String) -> Bool { samplerAliases.contains(name.lowercased()) }
    public var supportsImageToImage: Bool { false }

    /// Stable Diffusion's rounding; a family without image to image never gets here (validate refuses
    /// the init image first).
    public func imageToImageStart(steps: Int, strength: Double) -> Int {
        ImageToImageStart.stableDiffusion(steps: steps, strength: strength)
    }

    public func componentDescriptions(_ request: GenerationRequest) throws(SluiceError) -> [ComponentDescription] { [] }

    /// The checks every family shares: sizes in multiples of `sizeMultiple` up to `maxSide`, steps, guidance.
    public func validateCommon(_ r: GenerationRequest) throws(SluiceError) {
        let m = defaults.sizeMultiple, top = defaults.maxSide
        for (p, side) in [(Parameter.width, r.width), (.height, r.height)] {
            guard side > 0, side % m == 0 else { throw .invalidParameter(p, reason: "\(side) must be a positive multiple of \(m)") }
            guard side <= top else { throw .invalidParameter(p, reason: "\(side) is larger than the \(top) pixels this model takes") }
        }
        guard (1...1000).contains(r.steps) else { throw .invalidParameter(.steps, reason: "\(r.steps) must be 1…1000") }
        guard r.guidance >= 0, r.guidance.isFinite else { throw .invalidParameter(.guidance, reason: "\(r.guidance) must be a number ≥ 0") }
        if let name = r.sampler, !knowsSampler(name) {
            throw .invalidParameter(.sampler, reason: "'\(name)' is not a sampler of \(family) (\(samplerNames.joined(separator: ", ")))")
        }
        if let image = r.initImage {
            guard supportsImageToImage else { throw .invalidParameter(.initImage, reason: "\(family) does not take an init image (yet)") }
            guard image.width == r.width, image.height == r.height, image.pixels.count == image.width * image.height * 3 else {
                throw .invalidParameter(.initImage, reason: "is \(image.width)×\(image.height); the request is \(r.width)×\(r.height) (give the image's size, or resize it)")
            }
            guard r.strength > 0, r.strength <= 1 else { throw .invalidParameter(.strength, reason: "\(r.strength) must be in (0, 1]") }
            guard imageToImageStart(steps: r.steps, strength: r.strength) < r.steps else {
                throw .invalidParameter(.strength, reason: "\(r.strength) × \(r.steps) steps leaves no step to run; raise the strength or the steps")
            }
        }
    }
}
