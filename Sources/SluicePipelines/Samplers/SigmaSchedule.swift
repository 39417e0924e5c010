import Foundation

/// The pieces the σ-parameterised schedulers (Euler, Euler a, DPM-Solver) share: training timesteps
/// for a step count, σ at a fractional timestep, Karras' σ ramp and its inverse. All in f64, as
/// diffusers computes them with numpy; the results are stored in f32, as diffusers stores them.
enum SigmaSchedule {
    /// The training timesteps Euler and Euler a step through (`EulerDiscreteScheduler.set_timesteps`),
    /// before they become f32: fractional for "linspace".
    static func eulerTimesteps(_ spacing: TimestepSpacing, steps n: Int, trainSteps: Int, offset: Int) -> [Double] {
        switch spacing {
        case .linspace:
            // np.linspace(..., dtype=np.float32): computed in f64, then rounded to f32.
            return NumPy.linspace(0, Double(trainSteps - 1), n).reversed().map { Double(Float($0)) }
        case .leading:
            let ratio = trainSteps / n
            return (0..<n).reversed().map { Double($0 * ratio + offset) }
        case .trailing:
            return NumPy.arange(Double(trainSteps), 0, -Double(trainSteps) / Double(n)).map { Double(Float(NumPy.round($0))) - 1 }
        }
    }

    /// σ at each (possibly fractional) timestep: linear interpolation in the training σ table.
    static func interpolate(_ timesteps: [Double], in table: [Float]) -> [Double] {
        timesteps.map { NumPy.interpAtIndices($0, table) }
    }

    /// Karras et al. (2022)'s ρ = 7 ramp from σ_max down to σ_min (`_convert_to_karras`).
    static func karras(sigmaMin: Double, sigmaMax: Double, steps n: Int) -> [Double] {
        let rho = 7.0
        let minInv = pow(sigmaMin, 1 / rho), maxInv = pow(sigmaMax, 1 / rho)
        return NumPy.linspace(0, 1, n).map { pow(maxInv + $0 * (minInv - maxInv), rho) }
    }

    /// The fractional training timestep whose σ is `sigma` (`_sigma_to_t`): interpolation in log σ
    /// between the last table entry at or below it and the next. `logSigmas` is the f32 `np.log` of the
    /// table; its neighbours' difference is taken in f32, as numpy does for two f32 scalars.
    static func timestep(forSigma sigma: Double, logSigmas: [Float]) -> Double {
        let logSigma = log(max(sigma, 1e-10))
        var low = 0
        for (j, l) in logSigmas.enumerated() where logSigma - Double(l) >= 0 { low = j }
        low = min(low, logSigmas.count - 2)
        let lo = logSigmas[low], hi = logSigmas[low + 1]
        let w = min(max((Double(lo) - logSigma) / Double(lo - hi), 0), 1)
        return (1 - w) * Double(low) + w * Double(low + 1)
    }
}
