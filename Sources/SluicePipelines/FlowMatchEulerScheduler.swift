import Foundation
import SluiceBackends
import SluiceCore

/// diffusers' FlowMatchEulerDiscreteScheduler for the options the flow-matching models ship with:
/// static shift (Z-Image-Turbo: 3.0) or resolution-dependent "dynamic" shift (FLUX, Qwen-Image, which
/// also stretches the schedule to end at `shift_terminal`), Euler steps,
/// the sigma schedule computed in f32 as diffusers computes it (numpy f32 for the shift).
public struct FlowMatchEulerScheduler: Sendable {
    public struct Config: Sendable, Decodable {
        public var numTrainTimesteps: Int = 1000
        public var shift: Double = 1.0
        public var useDynamicShifting: Bool = false
        public var baseImageSeqLen: Int = 256
        public var maxImageSeqLen: Int = 4096
        public var baseShift: Double = 0.5
        public var maxShift: Double = 1.15
        public var timeShiftType: String = "exponential"
        public var invertSigmas: Bool = false
        public var stochasticSampling: Bool = false
        /// Where the shifted schedule is stretched to end (Qwen-Image: 0.02); nil or 0: not stretched.
        public var shiftTerminal: Double?

        enum CodingKeys: String, CodingKey {
            case numTrainTimesteps = "num_train_timesteps", shift, useDynamicShifting = "use_dynamic_shifting"
            case baseImageSeqLen = "base_image_seq_len", maxImageSeqLen = "max_image_seq_len"
            case baseShift = "base_shift", maxShift = "max_shift", timeShiftType = "time_shift_type"
            case invertSigmas = "invert_sigmas", stochasticSampling = "stochastic_sampling"
            case useKarras = "use_karras_sigmas", useExponential = "use_exponential_sigmas", useBeta = "use_beta_sigmas"
            case shiftTerminal = "shift_terminal"
        }

        public init() {}

        public init(from decoder: Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            numTrainTimesteps = try c.decodeIfPresent(Int.self, forKey: .numTrainTimesteps) ?? 1000
            shift = try c.decodeIfPresent(Double.self, forKey: .shift) ?? 1.0
            useDynamicShifting = try c.decodeIfPresent(Bool.self, forKey: .useDynamicShifting) ?? false
            baseImageSeqLen = try c.decodeIfPresent(Int.self, forKey: .baseImageSeqLen) ?? 256
            maxImageSeqLen = try c.decodeIfPresent(Int.self, forKey: .maxImageSeqLen) ?? 4096
            baseShift = try c.decodeIfPresent(Double.self, forKey: .baseShift) ?? 0.5
            maxShift = try c.decodeIfPresent(Double.self, forKey: .maxShift) ?? 1.15
            timeShiftType = try c.decodeIfPresent(String.self, forKey: .timeShiftType) ?? "exponential"
            invertSigmas = try c.decodeIfPresent(Bool.self, forKey: .invertSigmas) ?? false
            stochasticSampling = try c.decodeIfPresent(Bool.self, forKey: .stochasticSampling) ?? false
            // Options no supported model ships with are refused, not silently ignored.
            for key in [CodingKeys.useKarras, .useExponential, .useBeta] where (try c.decodeIfPresent(Bool.self, forKey: key)) == true {
                throw SluiceError.invalidArgument(name: "scheduler_config.json: \(key.rawValue)", reason: "is not supported")
            }
            shiftTerminal = try c.decodeIfPresent(Double.self, forKey: .shiftTerminal)
            if let t = shiftTerminal, !(0..<1).contains(t) {
                throw SluiceError.invalidArgument(name: "scheduler_config.json: shift_terminal", reason: "\(t) must be in [0, 1)")
            }
            if invertSigmas || stochasticSampling {
                throw SluiceError.invalidArgument(name: "scheduler_config.json", reason: "invert_sigmas / stochastic_sampling are not supported")
            }
        }
    }

    public let config: Config
    /// σ for each step, then the terminal 0 (count = steps + 1).
    public let sigmas: [Float]
    /// The model's timestep per step: σ·num_train_timesteps.
    public var timesteps: [Float] { sigmas.dropLast().map { $0 * Float(config.numTrainTimesteps) } }
    public var steps: Int { sigmas.count - 1 }

    /// `set_timesteps(sigmas: base, mu:)`: `base` are the unshifted sigmas a pipeline passes (Z-Image:
    /// linspace(1, 1/n, n)); `mu` is the dynamic-shift exponent when the config asks for it.
    public init(config: Config, baseSigmas: [Float], mu: Double? = nil) throws(SluiceError) {
        guard !baseSigmas.isEmpty else { throw .invalidArgument(name: "steps", reason: "must be at least 1") }
        self.config = config
        var s: [Float]
        if config.useDynamicShifting {
            guard let mu else { throw .invalidArgument(name: "mu", reason: "dynamic shifting needs the image sequence length") }
            s = baseSigmas.map { sigma in
                if config.timeShiftType == "linear" {
                    return Float(mu) / (Float(mu) + (1 / sigma - 1))
                }
                let e = Float(exp(mu))
                return e / (e + (1 / sigma - 1))
            }
        } else {
            let shift = Float(config.shift)
            s = baseSigmas.map { shift * $0 / (1 + (shift - 1) * $0) }
        }
        if let terminal = config.shiftTerminal, terminal != 0 {
            // stretch_shift_to_terminal, in numpy f32 as diffusers runs it: 1 − (1 − σ) / ((1 − σ_last) / (1 − terminal)).
            let scale = (1 - s[s.count - 1]) / Float(1 - terminal)
            s = s.map { 1 - (1 - $0) / scale }
        }
        s.append(0)
        self.sigmas = s
    }

    /// torch.linspace(1, 1/n, n) in f32: the first half counts up from the start, the second down from
    /// the end, as torch's CPU kernel does.
    public static func linspace(_ start: Float, _ end: Float, _ n: Int) -> [Float] {
        guard n > 1 else { return n == 1 ? [start] : [] }
        let step = (end - start) / Float(n - 1)
        let half = n / 2
        return (0..<n).map { i in i < half ? start + step * Float(i) : end - step * Float(n - i - 1) }
    }

    /// numpy.linspace(1, 1/n, n) in f64, rounded to f32 (FluxPipeline's sigmas): start + i·step, the
    /// last exactly `end`.
    public static func numpyLinspace(_ start: Double, _ end: Double, _ n: Int) -> [Float] {
        guard n > 1 else { return n == 1 ? [Float(start)] : [] }
        let step = (end - start) / Double(n - 1)
        return (0..<n).map { i in Float(i == n - 1 ? end : Double(i) * step + start) }
    }

    /// diffusers' `calculate_shift`: μ grows linearly with the image's token count.
    public static func mu(imageSeqLen: Int, config: Config) -> Double {
        let m = (config.maxShift - config.baseShift) / Double(config.maxImageSeqLen - config.baseImageSeqLen)
        let b = config.baseShift - m * Double(config.baseImageSeqLen)
        return Double(imageSeqLen) * m + b
    }

    /// One Euler step, x + (σ_next − σ)·v, on the backend (on a device the latents stay there).
    /// `velocityScale` multiplies v first (−1: diffusers negates the transformer's output).
    public func step(_ i: Int, velocity: Tensor, latents: Tensor, velocityScale: Float = 1, on backend: any Backend) throws(SluiceError) -> Tensor {
        guard velocity.shape == latents.shape else {
            throw .shapeMismatch(operation: "scheduler step", expected: "\(latents.shape)", found: "\(velocity.shape)")
        }
        // dt·(−v) and (−dt)·v round alike: the sign is exact.
        return try backend.axpy(latents, velocity, scale: (sigmas[i + 1] - sigmas[i]) * velocityScale)
    }
}
