import SluiceCore

/// A discrete-time diffusion sampler (Stable Diffusion's ε- or v-prediction UNets), stepped by index:
///
///     var s = try Sampler.eulerAncestral.scheduler(config: config, steps: 25)
///     var g = TorchGenerator(seed: seed)
///     var x = try s.initialLatents([1, 4, h / 8, w / 8], generator: &g)
///     for i in 0..<s.steps {
///         let eps = unet(s.scaleModelInput(x, stepIndex: i), timestep: s.timesteps[i])
///         x = try s.step(eps, stepIndex: i, sample: x, generator: &g)
///     }
///
/// Each implementation mirrors one diffusers scheduler class built with `from_config` and
/// `set_timesteps(steps)`; the generator is the one the initial latents came from, as diffusers'
/// pipelines hand theirs to `step`. Image-to-image starts at `startIndex(strength:)` from
/// `addNoise(image latents, noise, stepIndex: start)`.
public protocol DiscreteScheduler: Sendable {
    /// The sampler this schedule belongs to.
    var sampler: Sampler { get }
    /// The timestep the model receives at each step (diffusers' `scheduler.timesteps`).
    var timesteps: [Float] { get }
    /// σ at each step, then the final σ (steps + 1 values); nil for DDIM, which has none.
    var sigmas: [Float]? { get }
    /// What the initial N(0, 1) noise is multiplied by (`init_noise_sigma`).
    var initNoiseSigma: Float { get }
    /// diffusers' `scheduler.order`: timesteps per model evaluation step (1 for all of these).
    var order: Int { get }

    /// The model's input at step `stepIndex` (`scale_model_input`).
    func scaleModelInput(_ sample: Tensor, stepIndex: Int) throws(SluiceError) -> Tensor
    /// The latents after step `stepIndex` (`step(...).prev_sample`). Multistep samplers remember the
    /// step before; a step that does not follow the one before it starts afresh, as diffusers' does.
    mutating func step(_ modelOutput: Tensor, stepIndex: Int, sample: Tensor, generator: inout TorchGenerator) throws(SluiceError) -> Tensor
    /// `original` noised to the level of step `stepIndex` (`add_noise`, with `set_begin_index`).
    func addNoise(_ original: Tensor, noise: Tensor, stepIndex: Int) throws(SluiceError) -> Tensor
}

extension DiscreteScheduler {
    public var order: Int { 1 }
    /// The number of model evaluations.
    public var steps: Int { timesteps.count }

    /// The step image-to-image begins at (StableDiffusionImg2ImgPipeline.get_timesteps): strength 1
    /// runs every step from pure noise, 0.6 the last ⌊0.6·steps⌋.
    public func startIndex(strength: Double) throws(SluiceError) -> Int {
        guard strength >= 0 && strength <= 1 else {
            throw .invalidParameter(.strength, reason: "\(strength) is outside [0, 1]")
        }
        return ImageToImageStart.stableDiffusion(steps: steps, strength: strength) * order
    }

    /// Text-to-image's starting latents, as diffusers' `prepare_latents`: torch.randn(shape,
    /// generator) · init_noise_sigma (in f32). The same generator then goes to every `step`.
    public func initialLatents(_ shape: Shape, generator: inout TorchGenerator) throws(SluiceError) -> Tensor {
        let sigma = initNoiseSigma
        return Tensor(try generator.randn(shape).toFloats().map { $0 * sigma }, shape: shape)
    }

    /// The timesteps image-to-image runs through at `strength`.
    public func timesteps(forStrength strength: Double) throws(SluiceError) -> ArraySlice<Float> {
        timesteps[try startIndex(strength: strength)...]
    }
}

/// f32 element-wise loops over host latents. Each step's tensor math is written one torch op at a time
/// (every intermediate rounded to f32, scalars computed first as torch's 0-d tensors are), so it
/// follows diffusers' f32 results to the last bit or close to it.
enum HostLatents {
    static func floats(_ t: Tensor, like reference: Tensor, _ what: String) throws(SluiceError) -> [Float] {
        guard t.shape == reference.shape else {
            throw .shapeMismatch(operation: what, expected: "\(reference.shape)", found: "\(t.shape)")
        }
        return try t.toFloats()
    }

    static func tensor(_ values: [Float], like reference: Tensor) -> Tensor {
        Tensor(values, shape: reference.shape)
    }

    static func checkIndex(_ i: Int, steps: Int) throws(SluiceError) {
        guard (0..<steps).contains(i) else {
            throw .invalidArgument(name: "stepIndex", reason: "\(i) is outside 0..<\(steps)")
        }
    }
}

/// Where image to image enters a schedule of `steps` steps at `strength` (the steps from there run).
/// diffusers' pipelines round two ways, and the image depends on which.
public enum ImageToImageStart {
    /// The Stable Diffusion (XL) Img2Img pipelines' get_timesteps: n − min(⌊n·strength⌋, n).
    public static func stableDiffusion(steps: Int, strength: Double) -> Int {
        steps - min(Int(Double(steps) * strength), steps)
    }

    /// SD3's get_timesteps, which the flow-matching pipelines (FLUX.1, Z-Image) use: ⌊max(n − n·strength, 0)⌋.
    public static func flowMatching(steps: Int, strength: Double) -> Int {
        let n = Double(steps)
        return Int(max(n - min(n * strength, n), 0))
    }
}
