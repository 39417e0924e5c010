import SluiceCore

/// "Euler a": diffusers' EulerAncestralDiscreteScheduler (scheduling_euler_ancestral_discrete.py). Each
/// step goes down to σ_down by Euler, then adds fresh noise of σ_up, drawn from the run's generator —
/// the one the initial latents came from — so a seed gives diffusers' image.
public struct EulerAncestralScheduler: DiscreteScheduler {
    public var sampler: Sampler { .eulerAncestral }
    public let timesteps: [Float]
    public let initNoiseSigma: Float
    public var sigmas: [Float]? { sigmaSteps }
    let sigmaSteps: [Float]
    let prediction: PredictionType

    /// `EulerAncestralDiscreteScheduler.from_config(config)` then `set_timesteps(steps)`; the class
    /// takes no Karras, interpolation or final-σ options (a config's are ignored, as diffusers ignores them).
    public init(config: DiscreteScheduleConfig, steps: Int) throws(SluiceError) {
        let s = try EulerSchedule(config: config, steps: steps, final: .zero)
        timesteps = s.timesteps
        sigmaSteps = s.sigmas
        initNoiseSigma = s.initNoiseSigma
        prediction = try PredictionType.resolve(config)
    }

    /// `scale_model_input`: x / √(σ² + 1).
    public func scaleModelInput(_ sample: Tensor, stepIndex i: Int) throws(SluiceError) -> Tensor {
        try EulerSchedule.scaledInput(sample, sigmas: sigmaSteps, stepIndex: i)
    }

    /// `EulerAncestralDiscreteScheduler.step`: σ_up = √(σ_to²(σ_from² − σ_to²)/σ_from²),
    /// σ_down = √(σ_to² − σ_up²); x + (x − x₀)/σ · (σ_down − σ) + noise·σ_up. The noise is drawn every
    /// step, the last (σ_up = 0) included, as diffusers draws it.
    public mutating func step(_ modelOutput: Tensor, stepIndex i: Int, sample: Tensor, generator: inout TorchGenerator) throws(SluiceError) -> Tensor {
        try HostLatents.checkIndex(i, steps: steps)
        let x = try sample.toFloats(), m = try HostLatents.floats(modelOutput, like: sample, "Euler a step")
        let sigma = sigmaSteps[i], to = sigmaSteps[i + 1]
        let x0 = EulerSchedule.predictedOriginal(x, m, sigma: sigma, prediction)
        let up = (to * to * (sigma * sigma - to * to) / (sigma * sigma)).squareRoot()
        let down = (to * to - up * up).squareRoot()
        let dt = down - sigma
        let noise = try generator.randn(modelOutput.shape).toFloats()
        var out = x
        for k in out.indices {
            let derivative = (x[k] - x0[k]) / sigma
            out[k] = (x[k] + derivative * dt) + noise[k] * up
        }
        return HostLatents.tensor(out, like: sample)
    }

    /// `add_noise` after `set_begin_index`: x + noise·σ.
    public func addNoise(_ original: Tensor, noise: Tensor, stepIndex i: Int) throws(SluiceError) -> Tensor {
        try HostLatents.checkIndex(i, steps: steps)
        return try EulerSchedule.addNoise(original, noise, sigma: sigmaSteps[i])
    }
}
