import SluiceCore

/// The samplers Stable Diffusion users name, by AUTOMATIC1111's names. Each is a diffusers scheduler
/// class built from the checkpoint's scheduler config with the overrides the name implies.
public enum Sampler: String, CaseIterable, Sendable {
    /// EulerDiscreteScheduler (Karras sigmas off).
    case euler = "Euler"
    /// EulerAncestralDiscreteScheduler: fresh noise each step, from the run's generator.
    case eulerAncestral = "Euler a"
    /// DPMSolverMultistepScheduler, algorithm_type "dpmsolver++", solver_order 2, Karras sigmas off.
    case dpmpp2M = "DPM++ 2M"
    /// The same with use_karras_sigmas.
    case dpmpp2MKarras = "DPM++ 2M Karras"
    /// DDIMScheduler with η = 0.
    case ddim = "DDIM"

    /// The display name ("Euler a").
    public var name: String { rawValue }
    /// Every display name, in menu order.
    public static var allNames: [String] { allCases.map(\.name) }

    /// A sampler from its display name or a common alias, ignoring case, "_" and "-": "Euler a",
    /// "euler_a", "k_euler_ancestral", "dpmpp_2m_karras", "DPM++ 2M Karras".
    public init?(name: String) {
        var words = name.lowercased().replacingOccurrences(of: "dpmpp", with: "dpm++")
            .split(whereSeparator: { $0 == " " || $0 == "_" || $0 == "-" }).map(String.init)
        if words.first == "k" { words.removeFirst() }
        switch words.joined(separator: " ") {
        case "euler": self = .euler
        case "euler a", "euler ancestral", "eulera": self = .eulerAncestral
        case "dpm++ 2m": self = .dpmpp2M
        case "dpm++ 2m karras", "dpm++ 2m k": self = .dpmpp2MKarras
        case "ddim": self = .ddim
        default: return nil
        }
    }

    /// `init(name:)`, or an error listing the names.
    public static func parse(_ name: String) throws(SluiceError) -> Sampler {
        guard let s = Sampler(name: name) else {
            throw .invalidParameter(.sampler, reason: "unknown sampler \"\(name)\" (one of: \(allNames.joined(separator: ", ")))")
        }
        return s
    }

    /// This sampler's schedule for `steps` steps: `Class.from_config(config, **overrides)` then
    /// `set_timesteps(steps)`. Errors name the config key Sluice cannot honour.
    public func scheduler(config: DiscreteScheduleConfig, steps: Int) throws(SluiceError) -> any DiscreteScheduler {
        var c = config
        switch self {
        case .euler:
            c.useKarrasSigmas = false
            return try EulerScheduler(config: c, steps: steps)
        case .eulerAncestral:
            return try EulerAncestralScheduler(config: c, steps: steps)
        case .dpmpp2M, .dpmpp2MKarras:
            c.algorithmType = "dpmsolver++"
            c.solverOrder = 2
            c.useKarrasSigmas = self == .dpmpp2MKarras
            return try DPMSolverMultistepScheduler(config: c, steps: steps)
        case .ddim:
            return try DDIMScheduler(config: c, steps: steps)
        }
    }

    /// `steps` must be at least 1 and at most the training schedule's length.
    static func checkSteps(_ steps: Int, trainSteps: Int) throws(SluiceError) {
        guard steps >= 1 else { throw .invalidParameter(.steps, reason: "must be at least 1") }
        guard steps <= trainSteps else {
            throw .invalidParameter(.steps, reason: "\(steps) is more than the model's \(trainSteps) training timesteps")
        }
    }
}
