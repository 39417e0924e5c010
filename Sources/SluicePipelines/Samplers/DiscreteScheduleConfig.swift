import Foundation
import SluiceCore

/// A checkpoint's `scheduler/scheduler_config.json`, as written: every key optional. diffusers'
/// `Class.from_config(config, **overrides)` keeps the keys the class takes and fills the rest with that
/// class's own defaults (DDIM clips and spaces "leading" unless told otherwise, Euler spaces "linspace"),
/// so defaults are applied by each scheduler, not here; and a key only one class reads (DPM-Solver's
/// `solver_type`, DDIM's `clip_sample`) is checked only by that class.
public struct DiscreteScheduleConfig: Sendable, Equatable, Decodable {
    /// How errors name the file: "scheduler/scheduler_config.json: beta_schedule".
    public static let fileName = "scheduler/scheduler_config.json"

    // The training noise schedule (every class).
    public var numTrainTimesteps: Int?
    public var betaStart: Double?
    public var betaEnd: Double?
    public var betaSchedule: String?
    public var trainedBetas: [Double]?
    public var rescaleBetasZeroSNR: Bool?
    public var predictionType: String?
    public var timestepSpacing: String?
    public var stepsOffset: Int?
    // Sigma schedules (Euler, DPM-Solver).
    public var interpolationType: String?
    public var useKarrasSigmas: Bool?
    public var useExponentialSigmas: Bool?
    public var useBetaSigmas: Bool?
    public var useLuLambdas: Bool?
    public var useFlowSigmas: Bool?
    public var sigmaMin: Double?
    public var sigmaMax: Double?
    public var timestepType: String?
    public var finalSigmasType: String?
    // DPM-Solver.
    public var algorithmType: String?
    public var solverOrder: Int?
    public var solverType: String?
    public var lowerOrderFinal: Bool?
    public var eulerAtFinal: Bool?
    public var lambdaMinClipped: Double?
    public var varianceType: String?
    public var useDynamicShifting: Bool?
    // DDIM (and DPM-Solver's thresholding).
    public var setAlphaToOne: Bool?
    public var clipSample: Bool?
    public var clipSampleRange: Double?
    public var thresholding: Bool?

    enum CodingKeys: String, CodingKey {
        case numTrainTimesteps = "num_train_timesteps", betaStart = "beta_start", betaEnd = "beta_end"
        case betaSchedule = "beta_schedule", trainedBetas = "trained_betas", rescaleBetasZeroSNR = "rescale_betas_zero_snr"
        case predictionType = "prediction_type", timestepSpacing = "timestep_spacing", stepsOffset = "steps_offset"
        case interpolationType = "interpolation_type", useKarrasSigmas = "use_karras_sigmas"
        case useExponentialSigmas = "use_exponential_sigmas", useBetaSigmas = "use_beta_sigmas"
        case useLuLambdas = "use_lu_lambdas", useFlowSigmas = "use_flow_sigmas"
        case sigmaMin = "sigma_min", sigmaMax = "sigma_max", timestepType = "timestep_type"
        case finalSigmasType = "final_sigmas_type", algorithmType = "algorithm_type", solverOrder = "solver_order"
        case solverType = "solver_type", lowerOrderFinal = "lower_order_final", eulerAtFinal = "euler_at_final"
        case lambdaMinClipped = "lambda_min_clipped", varianceType = "variance_type"
        case useDynamicShifting = "use_dynamic_shifting", setAlphaToOne = "set_alpha_to_one"
        case clipSample = "clip_sample", clipSampleRange = "clip_sample_range", thresholding
    }

    /// Every key absent: each class's own defaults.
    public init() {}

    /// Reads `path` (a diffusers folder's scheduler/scheduler_config.json).
    public static func load(path: String) throws(SluiceError) -> DiscreteScheduleConfig {
        let data: Data
        do { data = try Data(contentsOf: URL(fileURLWithPath: path)) } catch {
            throw .io(path: path, reason: "cannot read the scheduler config (\(error.localizedDescription))")
        }
        return try decode(data)
    }

    /// Parses the JSON. diffusers writes `-Infinity` for an unset `lambda_min_clipped`; JSON5 reads it.
    public static func decode(_ data: Data) throws(SluiceError) -> DiscreteScheduleConfig {
        let decoder = JSONDecoder()
        decoder.allowsJSON5 = true
        do { return try decoder.decode(DiscreteScheduleConfig.self, from: data) } catch {
            throw .invalidArgument(name: fileName, reason: DecodingFailure(error).description)
        }
    }

    /// This config with every key `overrides` sets replaced: `from_config(config, **overrides)`.
    public func overriding(with overrides: DiscreteScheduleConfig) -> DiscreteScheduleConfig {
        var c = self
        func take<T>(_ key: WritableKeyPath<DiscreteScheduleConfig, T?>) {
            if let v = overrides[keyPath: key] { c[keyPath: key] = v }
        }
        take(\.numTrainTimesteps); take(\.betaStart); take(\.betaEnd); take(\.betaSchedule); take(\.trainedBetas)
        take(\.rescaleBetasZeroSNR); take(\.predictionType); take(\.timestepSpacing); take(\.stepsOffset)
        take(\.interpolationType); take(\.useKarrasSigmas); take(\.useExponentialSigmas); take(\.useBetaSigmas)
        take(\.useLuLambdas); take(\.useFlowSigmas); take(\.sigmaMin); take(\.sigmaMax); take(\.timestepType)
        take(\.finalSigmasType); take(\.algorithmType); take(\.solverOrder); take(\.solverType)
        take(\.lowerOrderFinal); take(\.eulerAtFinal); take(\.lambdaMinClipped); take(\.varianceType)
        take(\.useDynamicShifting); take(\.setAlphaToOne); take(\.clipSample); take(\.clipSampleRange)
        take(\.thresholding)
        return c
    }

    /// The error for a key whose value Sluice cannot honour.
    static func unsupported(_ key: CodingKeys, _ reason: String) -> SluiceError {
        .invalidArgument(name: "\(fileName): \(key.rawValue)", reason: reason)
    }

    /// A string key the class reads: its value (or the class's default) must be one of `allowed`.
    func choice(_ key: CodingKeys, _ value: String?, default fallback: String, allowed: [String]) throws(SluiceError) -> String {
        let v = value ?? fallback
        guard allowed.contains(v) else {
            throw Self.unsupported(key, "\"\(v)\" is not supported (supported: \(allowed.joined(separator: ", ")))")
        }
        return v
    }

    /// A switch Sluice does not implement must be off.
    func refuse(_ key: CodingKeys, _ value: Bool?) throws(SluiceError) {
        if value == true { throw Self.unsupported(key, "true is not supported") }
    }
}

/// How the inference timesteps are spread over the training ones (Table 2 of "Common Diffusion Noise
/// Schedules and Sample Steps are Flawed").
enum TimestepSpacing: String {
    case linspace, leading, trailing

    static func resolve(_ config: DiscreteScheduleConfig, default fallback: TimestepSpacing) throws(SluiceError) -> TimestepSpacing {
        let v = try config.choice(.timestepSpacing, config.timestepSpacing, default: fallback.rawValue,
                                  allowed: ["linspace", "leading", "trailing"])
        return TimestepSpacing(rawValue: v)!
    }
}

/// What the model predicts.
enum PredictionType: String {
    case epsilon, vPrediction = "v_prediction"

    static func resolve(_ config: DiscreteScheduleConfig) throws(SluiceError) -> PredictionType {
        PredictionType(rawValue: try config.choice(.predictionType, config.predictionType, default: "epsilon",
                                                   allowed: ["epsilon", "v_prediction"]))!
    }
}

/// The last sigma of a schedule: 0 (the clean sample) or the training schedule's smallest.
enum FinalSigma: String {
    case zero, sigmaMin = "sigma_min"

    static func resolve(_ config: DiscreteScheduleConfig) throws(SluiceError) -> FinalSigma {
        FinalSigma(rawValue: try config.choice(.finalSigmasType, config.finalSigmasType, default: "zero",
                                               allowed: ["zero", "sigma_min"]))!
    }
}
