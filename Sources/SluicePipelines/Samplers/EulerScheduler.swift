import SluiceCore

/// "Euler": diffusers' EulerDiscreteScheduler (scheduling_euler_discrete.py) with s_churn 0 — Karras'
/// Algorithm 2 without added noise, one model evaluation per step.
public struct EulerScheduler: DiscreteScheduler {
    public var sampler: Sampler { .euler }
    public let timesteps: [Float]
    public let initNoiseSigma: Float
    public var sigmas: [Float]? { sigmaSteps }
    let sigmaSteps: [Float]
    let prediction: PredictionType

    /// `EulerDiscreteScheduler.from_config(config)` then `set_timesteps(steps)`.
    public init(config: DiscreteScheduleConfig, steps: Int) throws(SluiceError) {
        // Options that change the schedule in ways Sluice does not implement are refused by name.
        _ = try config.choice(.interpolationType, config.interpolationType, default: "linear", allowed: ["linear"])
        _ = try config.choice(.timestepType, config.timestepType, default: "discrete", allowed: ["discrete"])
        try config.refuse(.useKarrasSigmas, config.useKarrasSigmas)
        try config.refuse(.useExponentialSigmas, config.useExponentialSigmas)
        try config.refuse(.useBetaSigmas, config.useBetaSigmas)
        let s = try EulerSchedule(config: config, steps: steps, final: try FinalSigma.resolve(config))
        timesteps = s.timesteps
        sigmaSteps = s.sigmas
        initNoiseSigma = s.initNoiseSigma
        prediction = try PredictionType.resolve(config)
    }

    /// `scale_model_input`: x / √(σ² + 1).
    public func scaleModelInput(_ sample: Tensor, stepIndex i: Int) throws(SluiceError) -> Tensor {
        try EulerSchedule.scaledInput(sample, sigmas: sigmaSteps, stepIndex: i)
    }

    /// `EulerDiscreteScheduler.step`: x₀ from the prediction, then x + (x − x₀)/σ · (σ_next − σ).
    public mutating func step(_ modelOutput: Tensor, stepIndex i: Int, sample: Tensor, generator: inout TorchGenerator) throws(SluiceError) -> Tensor {
        try HostLatents.checkIndex(i, steps: steps)
        let x = try sample.toFloats(), m = try HostLatents.floats(modelOutput, like: sample, "Euler step")
        let sigma = sigmaSteps[i]
        let x0 = EulerSchedule.predictedOriginal(x, m, sigma: sigma, prediction)
        let dt = sigmaSteps[i + 1] - sigma
        var out = x
        for k in out.indices {
            let derivative = (x[k] - x0[k]) / sigma
            out[k] = x[k] + derivative * dt
        }
        return HostLatents.tensor(out, like: sample)
    }

    /// `add_noise` after `set_begin_index`: x + noise·σ.
    public func addNoise(_ original: Tensor, noise: Tensor, stepIndex i: Int) throws(SluiceError) -> Tensor {
        try HostLatents.checkIndex(i, steps: steps)
        return try EulerSchedule.addNoise(original, noise, sigma: sigmaSteps[i])
    }
}

/// The schedule Euler and Euler a share (their `set_timesteps`): training timesteps spaced per the
/// config, σ interpolated linearly in the training σ table at each, then the final σ.
struct EulerSchedule {
    let timesteps: [Float]
    let sigmas: [Float]
    let initNoiseSigma: Float

    /// The Euler-type samplers' `scale_model_input`: x / √(σ² + 1) at step `i`.
    static func scaledInput(_ sample: Tensor, sigmas: [Float], stepIndex i: Int) throws(SluiceError) -> Tensor {
        try HostLatents.checkIndex(i, steps: sigmas.count - 1)
        let d = (sigmas[i] * sigmas[i] + 1).squareRoot()
        return HostLatents.tensor(try sample.toFloats().map { $0 / d }, like: sample)
    }

    init(config: DiscreteScheduleConfig, steps: Int, final: FinalSigma) throws(SluiceError) {
        let train = try TrainingNoiseSchedule(config: config)
        try Sampler.checkSteps(steps, trainSteps: train.count)
        let spacing = try TimestepSpacing.resolve(config, default: .linspace)
        let t = SigmaSchedule.eulerTimesteps(spacing, steps: steps, trainSteps: train.count, offset: config.stepsOffset ?? 0)
        var s = SigmaSchedule.interpolate(t, in: train.sigmas).map { Float($0) }
        s.append(final == .zero ? 0 : train.sigmas[0])
        timesteps = t.map { Float($0) }
        sigmas = s
        // `init_noise_sigma`: σ_max, or √(σ_max² + 1) for "leading" spacing (whose first timestep is
        // not the last training one).
        let maxSigma = s.max()!
        initNoiseSigma = spacing == .leading ? (maxSigma * maxSigma + 1).squareRoot() : maxSigma
    }

    /// The clean sample the model's output implies at σ (both Euler classes' `step`).
    static func predictedOriginal(_ x: [Float], _ m: [Float], sigma: Float, _ prediction: PredictionType) -> [Float] {
        switch prediction {
        case .epsilon:
            return zip(x, m).map { x, m in x - sigma * m }
        case .vPrediction:
            // model_output · (−σ/√(σ² + 1)) + x/(σ² + 1)
            let v2 = sigma * sigma + 1
            let a = -sigma / v2.squareRoot()
            return zip(x, m).map { x, m in m * a + x / v2 }
        }
    }

    static func addNoise(_ original: Tensor, _ noise: Tensor, sigma: Float) throws(SluiceError) -> Tensor {
        let x = try original.toFloats(), n = try HostLatents.floats(noise, like: original, "add noise")
        return HostLatents.tensor(zip(x, n).map { x, n in x + n * sigma }, like: original)
    }
}
