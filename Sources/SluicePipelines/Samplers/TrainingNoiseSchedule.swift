import Foundation
import SluiceCore

/// The noise schedule a model was trained with: βₜ for each training timestep, ᾱₜ = ∏(1 − βₛ), and
/// σₜ = √((1 − ᾱₜ)/ᾱₜ) — in f32, as every diffusers scheduler's `__init__` computes them with torch.
struct TrainingNoiseSchedule: Sendable {
    /// ᾱ for timestep 0 … N−1 (`alphas_cumprod`).
    let alphasCumprod: [Float]
    /// σ for timestep 0 … N−1, ascending: `((1 - alphas_cumprod) / alphas_cumprod) ** 0.5`.
    let sigmas: [Float]
    var count: Int { alphasCumprod.count }

    /// The betas every scheduler's `__init__` builds (scheduling_euler_discrete.py and its copies):
    /// `trained_betas` as given, else a linear or "scaled_linear" (linear in √β) torch f32 linspace.
    init(config: DiscreteScheduleConfig) throws(SluiceError) {
        let n = config.numTrainTimesteps ?? 1000
        guard n >= 2 else { throw DiscreteScheduleConfig.unsupported(.numTrainTimesteps, "must be at least 2") }
        try config.refuse(.rescaleBetasZeroSNR, config.rescaleBetasZeroSNR)
        let betas: [Float]
        if let trained = config.trainedBetas {
            guard trained.count == n else {
                throw DiscreteScheduleConfig.unsupported(.trainedBetas, "has \(trained.count) values; num_train_timesteps is \(n)")
            }
            betas = trained.map { Float($0) }
        } else {
            let start = config.betaStart ?? 0.0001, end = config.betaEnd ?? 0.02
            switch try config.choice(.betaSchedule, config.betaSchedule, default: "linear", allowed: ["linear", "scaled_linear"]) {
            case "linear":
                betas = Torch.linspaceF32(start, end, n)
            default:
                // Python's `beta_start**0.5` (libm pow), then torch's `** 2` (x·x).
                betas = Torch.linspaceF32(pow(start, 0.5), pow(end, 0.5), n).map { $0 * $0 }
            }
        }
        guard betas.allSatisfy({ $0 > 0 && $0 < 1 }) else {
            throw DiscreteScheduleConfig.unsupported(config.trainedBetas == nil ? .betaStart : .trainedBetas,
                                                     "gives betas outside (0, 1)")
        }
        alphasCumprod = Torch.cumprodF32(betas.map { 1 - $0 })
        sigmas = alphasCumprod.map { ((1 - $0) / $0).squareRoot() }
    }
}
