import Foundation
import SluiceCore

/// "DPM++ 2M" and "DPM++ 2M Karras": diffusers' DPMSolverMultistepScheduler
/// (scheduling_dpmsolver_multistep.py) with algorithm_type "dpmsolver++" and solver_order 2 — the
/// second-order multistep solver on the data prediction x₀ (Lu et al. 2022), in λ = log(α/σ).
///
/// It remembers the previous step's x₀: the first step (and, by default, the last) is first order.
public struct DPMSolverMultistepScheduler: DiscreteScheduler {
    public let sampler: Sampler
    public let timesteps: [Float]
    public var sigmas: [Float]? { sigmaSteps }
    public var initNoiseSigma: Float { 1 }
    let sigmaSteps: [Float]
    let prediction: PredictionType
    let heun: Bool
    let lowerOrderFinal: Bool
    let eulerAtFinal: Bool
    let finalSigma: FinalSigma
    /// The step before and its x₀ (`model_outputs[-2]` once `lower_order_nums` ≥ 1).
    var previous: (index: Int, x0: [Float])?

    /// `DPMSolverMultistepScheduler.from_config(config)` then `set_timesteps(steps)`; the config's
    /// `algorithm_type` and `solver_order` must be "dpmsolver++" and 2 (as `Sampler` sets them).
    public init(config: DiscreteScheduleConfig, steps: Int) throws(SluiceError) {
        _ = try config.choice(.algorithmType, config.algorithmType, default: "dpmsolver++", allowed: ["dpmsolver++"])
        guard (config.solverOrder ?? 2) == 2 else {
            throw DiscreteScheduleConfig.unsupported(.solverOrder, "\(config.solverOrder!) is not supported (supported: 2)")
        }
        // diffusers maps the UniPC/DEIS solver names to "midpoint".
        let solver = try config.choice(.solverType, config.solverType, default: "midpoint",
                                       allowed: ["midpoint", "heun", "logrho", "bh1", "bh2"])
        heun = solver == "heun"
        for (key, value) in [(DiscreteScheduleConfig.CodingKeys.thresholding, config.thresholding),
                             (.useExponentialSigmas, config.useExponentialSigmas), (.useBetaSigmas, config.useBetaSigmas),
                             (.useLuLambdas, config.useLuLambdas), (.useFlowSigmas, config.useFlowSigmas),
                             (.useDynamicShifting, config.useDynamicShifting)] {
            try config.refuse(key, value)
        }
        if let v = config.varianceType { throw DiscreteScheduleConfig.unsupported(.varianceType, "\"\(v)\" is not supported") }
        if let l = config.lambdaMinClipped, l != -.infinity {
            throw DiscreteScheduleConfig.unsupported(.lambdaMinClipped, "\(l) is not supported (only -inf, the default)")
        }
        prediction = try PredictionType.resolve(config)
        finalSigma = try FinalSigma.resolve(config)
        lowerOrderFinal = config.lowerOrderFinal ?? true
        eulerAtFinal = config.eulerAtFinal ?? false
        let karras = config.useKarrasSigmas ?? false
        sampler = karras ? .dpmpp2MKarras : .dpmpp2M

        let train = try TrainingNoiseSchedule(config: config)
        let n = train.count
        try Sampler.checkSteps(steps, trainSteps: n)
        // `set_timesteps`: integer timesteps (lambda_min_clipped −inf: the whole range).
        var t: [Double]
        switch try TimestepSpacing.resolve(config, default: .linspace) {
        case .linspace:
            t = Array(NumPy.linspace(0, Double(n - 1), steps + 1).map(NumPy.round).reversed().dropLast())
        case .leading:
            let ratio = n / (steps + 1)
            t = (1...steps).reversed().map { Double($0 * ratio + (config.stepsOffset ?? 0)) }
        case .trailing:
            t = NumPy.arange(Double(n), 0, -Double(n) / Double(steps)).map { NumPy.round($0) - 1 }
        }
        var s: [Double]
        if karras {
            // The ramp spans the whole training range (or the config's sigma_min/sigma_max); each σ's
            // timestep is its interpolated training timestep, rounded.
            s = SigmaSchedule.karras(sigmaMin: config.sigmaMin ?? Double(train.sigmas[0]),
                                     sigmaMax: config.sigmaMax ?? Double(train.sigmas[n - 1]), steps: steps)
            let logSigmas = train.sigmas.map { Foundation.log($0) }
            t = s.map { NumPy.round(SigmaSchedule.timestep(forSigma: $0, logSigmas: logSigmas)) }
        } else {
            s = SigmaSchedule.interpolate(t, in: train.sigmas)
        }
        s.append(finalSigma == .zero ? 0 : Double(train.sigmas[0]))
        timesteps = t.map { Float($0) }
        sigmaSteps = s.map { Float($0) }
    }

    /// DPM-Solver needs no input scaling.
    public func scaleModelInput(_ sample: Tensor, stepIndex i: Int) throws(SluiceError) -> Tensor {
        try HostLatents.checkIndex(i, steps: steps)
        return sample
    }

    /// `DPMSolverMultistepScheduler.step`: the model output becomes x₀ (`convert_model_output`), then a
    /// first-order update (the first step, a step not following the one before, the final step when
    /// `lower_order_final` / `euler_at_final` / a final σ of 0 ask) or the second-order multistep one.
    public mutating func step(_ modelOutput: Tensor, stepIndex i: Int, sample: Tensor, generator: inout TorchGenerator) throws(SluiceError) -> Tensor {
        try HostLatents.checkIndex(i, steps: steps)
        let x = try sample.toFloats(), m = try HostLatents.floats(modelOutput, like: sample, "DPM-Solver step")
        let x0 = dataPrediction(m, x, sigma: sigmaSteps[i])
        let lastFirstOrder = i == steps - 1 && (eulerAtFinal || (lowerOrderFinal && steps < 15) || finalSigma == .zero)
        let out: [Float]
        if let previous, previous.index == i - 1, !lastFirstOrder {
            out = secondOrderUpdate(x0, previous.x0, x, i)
        } else {
            out = firstOrderUpdate(x0, x, i)
        }
        previous = (i, x0)
        return HostLatents.tensor(out, like: sample)
    }

    /// `add_noise` after `set_begin_index`: α·x + σ·noise at the step's σ.
    public func addNoise(_ original: Tensor, noise: Tensor, stepIndex i: Int) throws(SluiceError) -> Tensor {
        try HostLatents.checkIndex(i, steps: steps)
        let x = try original.toFloats(), n = try HostLatents.floats(noise, like: original, "add noise")
        let (alpha, sigma) = Self.alphaSigma(sigmaSteps[i])
        return HostLatents.tensor(zip(x, n).map { x, n in alpha * x + sigma * n }, like: original)
    }

    /// `_sigma_to_alpha_sigma_t`: α = 1/√(σ² + 1), σₜ = σ·α.
    static func alphaSigma(_ sigma: Float) -> (alpha: Float, sigma: Float) {
        let alpha = 1 / (sigma * sigma + 1).squareRoot()
        return (alpha, sigma * alpha)
    }

    /// λ = log α − log σₜ (+∞ at σ = 0, which makes the final step return x₀).
    static func lambda(_ sigma: Float) -> (alpha: Float, sigma: Float, lambda: Float) {
        let (a, s) = alphaSigma(sigma)
        return (a, s, Foundation.log(a) - Foundation.log(s))
    }

    /// `convert_model_output` for dpmsolver++: x₀ = (x − σₜ·ε)/α, or α·x − σₜ·v.
    func dataPrediction(_ m: [Float], _ x: [Float], sigma: Float) -> [Float] {
        let (alpha, sigmaT) = Self.alphaSigma(sigma)
        switch prediction {
        case .epsilon: return zip(x, m).map { x, m in (x - sigmaT * m) / alpha }
        case .vPrediction: return zip(x, m).map { x, m in alpha * x - sigmaT * m }
        }
    }

    /// `dpm_solver_first_order_update`: (σₜ/σₛ)·x − α(e^{−h} − 1)·x₀.
    func firstOrderUpdate(_ x0: [Float], _ x: [Float], _ i: Int) -> [Float] {
        let t = Self.lambda(sigmaSteps[i + 1]), s = Self.lambda(sigmaSteps[i])
        let h = t.lambda - s.lambda
        let a = t.sigma / s.sigma, b = t.alpha * (Foundation.exp(-h) - 1)
        return zip(x, x0).map { x, d in a * x - b * d }
    }

    /// `multistep_dpm_solver_second_order_update`: D₀ = x₀, D₁ = (x₀ − x₀_prev)/r₀ with r₀ = h₀/h;
    /// midpoint adds −½α(e^{−h} − 1)·D₁, Heun α((e^{−h} − 1)/h + 1)·D₁.
    func secondOrderUpdate(_ x0: [Float], _ previous: [Float], _ x: [Float], _ i: Int) -> [Float] {
        let t = Self.lambda(sigmaSteps[i + 1]), s0 = Self.lambda(sigmaSteps[i]), s1 = Self.lambda(sigmaSteps[i - 1])
        let h = t.lambda - s0.lambda, h0 = s0.lambda - s1.lambda
        let r0 = h0 / h
        let invR0 = 1 / r0
        let em1 = Foundation.exp(-h) - 1
        let a = t.sigma / s0.sigma, b = t.alpha * em1
        let c = heun ? t.alpha * (em1 / h + 1) : 0.5 * (t.alpha * em1)
        var out = x
        for k in out.indices {
            let d1 = invR0 * (x0[k] - previous[k])
            let base = a * x[k] - b * x0[k]
            out[k] = heun ? base + c * d1 : base - c * d1
        }
        return out
    }
}
