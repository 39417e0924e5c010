import SluiceCore

/// "DDIM": diffusers' DDIMScheduler (scheduling_ddim.py) with η = 0 — deterministic, stepping by ᾱ
/// of the current timestep and of the one `num_train_timesteps // steps` below it.
public struct DDIMScheduler: DiscreteScheduler {
    public var sampler: Sampler { .ddim }
    public let timesteps: [Float]
    public var sigmas: [Float]? { nil }
    public var initNoiseSigma: Float { 1 }
    let alphasCumprod: [Float]
    /// ᾱ past the last step: 1 (`set_alpha_to_one`) or ᾱ₀.
    let finalAlphaCumprod: Float
    let prediction: PredictionType
    /// |x₀| limit when the config clips (DDIM's default), else nil.
    let clipRange: Float?
    let integerTimesteps: [Int]
    let stride: Int

    /// `DDIMScheduler.from_config(config)` then `set_timesteps(steps)`. The class's own defaults apply
    /// to keys the config lacks: "leading" spacing, clip_sample true, set_alpha_to_one true.
    public init(config: DiscreteScheduleConfig, steps: Int) throws(SluiceError) {
        try config.refuse(.thresholding, config.thresholding)
        let train = try TrainingNoiseSchedule(config: config)
        let n = train.count
        try Sampler.checkSteps(steps, trainSteps: n)
        prediction = try PredictionType.resolve(config)
        alphasCumprod = train.alphasCumprod
        finalAlphaCumprod = (config.setAlphaToOne ?? true) ? 1 : train.alphasCumprod[0]
        clipRange = (config.clipSample ?? true) ? Float(config.clipSampleRange ?? 1) : nil
        let t: [Int]
        switch try TimestepSpacing.resolve(config, default: .leading) {
        case .linspace:
            t = NumPy.linspace(0, Double(n - 1), steps).reversed().map { Int(NumPy.round($0)) }
        case .leading:
            let ratio = n / steps
            t = (0..<steps).reversed().map { $0 * ratio + (config.stepsOffset ?? 0) }
        case .trailing:
            t = NumPy.arange(Double(n), 0, -Double(n) / Double(steps)).map { Int(NumPy.round($0)) - 1 }
        }
        guard t.allSatisfy({ (0..<n).contains($0) }) else {
            throw DiscreteScheduleConfig.unsupported(.stepsOffset, "puts a timestep outside 0..<\(n)")
        }
        integerTimesteps = t
        timesteps = t.map { Float($0) }
        stride = n / steps
    }

    /// DDIM needs no input scaling.
    public func scaleModelInput(_ sample: Tensor, stepIndex i: Int) throws(SluiceError) -> Tensor {
        try HostLatents.checkIndex(i, steps: steps)
        return sample
    }

    /// `DDIMScheduler.step` with η = 0: x₀ and ε from the prediction (x₀ clipped if the config says),
    /// then √ᾱ_prev·x₀ + √(1 − ᾱ_prev)·ε.
    public mutating func step(_ modelOutput: Tensor, stepIndex i: Int, sample: Tensor, generator: inout TorchGenerator) throws(SluiceError) -> Tensor {
        try HostLatents.checkIndex(i, steps: steps)
        let x = try sample.toFloats(), m = try HostLatents.floats(modelOutput, like: sample, "DDIM step")
        let t = integerTimesteps[i], prev = t - stride
        let alpha = alphasCumprod[t]
        let alphaPrev = prev >= 0 ? alphasCumprod[prev] : finalAlphaCumprod
        let beta = 1 - alpha
        let sa = alpha.squareRoot(), sb = beta.squareRoot()
        let sap = alphaPrev.squareRoot()
        // (1 − ᾱ_prev − σ_t²)^½ with σ_t = η·… = 0.
        let direction = ((1 - alphaPrev) - 0).squareRoot()
        var out = x
        for k in out.indices {
            var x0: Float, eps: Float
            switch prediction {
            case .epsilon:
                x0 = (x[k] - sb * m[k]) / sa
                eps = m[k]
            case .vPrediction:
                x0 = sa * x[k] - sb * m[k]
                eps = sa * m[k] + sb * x[k]
            }
            if let r = clipRange { x0 = min(max(x0, -r), r) }
            out[k] = sap * x0 + direction * eps
        }
        return HostLatents.tensor(out, like: sample)
    }

    /// `add_noise` at the step's timestep: √ᾱ·x + √(1 − ᾱ)·noise.
    public func addNoise(_ original: Tensor, noise: Tensor, stepIndex i: Int) throws(SluiceError) -> Tensor {
        try HostLatents.checkIndex(i, steps: steps)
        let x = try original.toFloats(), n = try HostLatents.floats(noise, like: original, "add noise")
        let a = alphasCumprod[integerTimesteps[i]]
        let sa = a.squareRoot(), sb = (1 - a).squareRoot()
        return HostLatents.tensor(zip(x, n).map { x, n in sa * x + sb * n }, like: original)
    }
}
