import Foundation
import SluicePipelines

/// A request the server refuses, naming the field at fault; answered 400 (or the given status).
public struct RequestError: Error, CustomStringConvertible, Sendable {
    public let field: String
    public let reason: String
    public var status: Int = 400
    public var description: String { "\(field): \(reason)" }
}

/// What a job generates, validated. The three APIs (Sluice's own, OpenAI's, AUTOMATIC1111's) parse
/// their JSON into this, each with its own field names; unknown fields are ignored.
public struct JobParameters: Sendable, Codable, Equatable {
    public var prompt: String
    public var negativePrompt: String = ""
    /// The seed used (a request's −1 or absent seed is drawn at submission so the gallery can repeat it).
    public var seed: UInt64
    public var steps: Int
    public var width: Int
    public var height: Int
    public var guidance: Float
    public var count: Int = 1
    /// FLUX.1: diffusers' true_cfg_scale (real CFG with the negative prompt when > 1); nil = off.
    public var trueCFGScale: Float?
    /// diffusers' max_sequence_length; nil = the model's default.
    public var maxSequenceLength: Int?

    public static let maxPromptCharacters = 8000
    public static let maxSide = 2048
    public static let maxSteps = 150
    public static let maxCount = 8

    public init(prompt: String, negativePrompt: String = "", seed: UInt64, steps: Int, width: Int, height: Int, guidance: Float, count: Int = 1) {
        self.prompt = prompt; self.negativePrompt = negativePrompt; self.seed = seed; self.steps = steps
        self.width = width; self.height = height; self.guidance = guidance; self.count = count
    }

    public var request: GenerationRequest {
        var r = GenerationRequest(prompt: prompt, negativePrompt: negativePrompt, seed: seed, steps: steps, width: width, height: height, guidance: guidance)
        r.trueCFGScale = trueCFGScale ?? 1
        r.maxSequenceLength = maxSequenceLength
        return r
    }

    enum CodingKeys: String, CodingKey {
        case prompt, negativePrompt = "negative_prompt", seed, steps, width, height, guidance, count
        case trueCFGScale = "true_cfg_scale", maxSequenceLength = "max_sequence_length"
    }
}

/// Field-by-field parsing with the limits every API shares.
struct ParameterParser {
    let fields: [String: Any]
    /// The model's defaults: steps, guidance, size and the multiple sizes must be of.
    let defaults: PipelineDefaults
    /// Sampler names AUTOMATIC1111 clients may send that mean the model's own sampler.
    let samplers: Set<String>

    var sizeMultiple: Int { defaults.sizeMultiple }
    var defaultSteps: Int { defaults.steps }
    var defaultGuidance: Float { defaults.guidance }

    /// JSON true/false (JSONSerialization hands them over as Bool, or as a char-typed NSNumber).
    static func isBool(_ v: Any) -> Bool {
        if type(of: v) == Bool.self { return true }
        if let n = v as? NSNumber { return String(cString: n.objCType) == "c" }
        return false
    }

    static func object(_ body: Data) throws(RequestError) -> [String: Any] {
        guard !body.isEmpty else { throw RequestError(field: "body", reason: "is empty; send a JSON object") }
        let parsed: Any
        do { parsed = try JSONSerialization.jsonObject(with: body) } catch {
            throw RequestError(field: "body", reason: "is not valid JSON")
        }
        guard let obj = parsed as? [String: Any] else { throw RequestError(field: "body", reason: "must be a JSON object") }
        return obj
    }

    func string(_ key: String, required: Bool = false, default value: String = "") throws(RequestError) -> String {
        guard let raw = fields[key], !(raw is NSNull) else {
            if required { throw RequestError(field: key, reason: "is required") }
            return value
        }
        guard let s = raw as? String else { throw RequestError(field: key, reason: "must be a string") }
        guard s.count <= JobParameters.maxPromptCharacters else {
            throw RequestError(field: key, reason: "is longer than \(JobParameters.maxPromptCharacters) characters")
        }
        return s
    }

    /// An integer field (JSON numbers without a fraction; true/false refused).
    func int(_ key: String, default value: Int?, range: ClosedRange<Int>) throws(RequestError) -> Int? {
        guard let raw = fields[key], !(raw is NSNull) else { return value }
        guard !Self.isBool(raw), let n = raw as? NSNumber, case let d = n.doubleValue, d.isFinite, d == d.rounded(), abs(d) < 9.2e18 else {
            throw RequestError(field: key, reason: "must be an integer")
        }
        let i = Int(d)
        guard range.contains(i) else { throw RequestError(field: key, reason: "must be in \(range.lowerBound)…\(range.upperBound), got \(i)") }
        return i
    }

    func float(_ key: String, default value: Float, range: ClosedRange<Float>) throws(RequestError) -> Float {
        guard let raw = fields[key], !(raw is NSNull) else { return value }
        guard !Self.isBool(raw), let n = raw as? NSNumber, n.doubleValue.isFinite else {
            throw RequestError(field: key, reason: "must be a number")
        }
        let f = Float(n.doubleValue)
        guard range.contains(f) else { throw RequestError(field: key, reason: "must be in \(range.lowerBound)…\(range.upperBound)") }
        return f
    }

    func side(_ key: String, _ value: Int) throws(RequestError) -> Int {
        guard value >= sizeMultiple, value <= JobParameters.maxSide, value % sizeMultiple == 0 else {
            throw RequestError(field: key, reason: "must be a multiple of \(sizeMultiple) between \(sizeMultiple) and \(JobParameters.maxSide), got \(value)")
        }
        return value
    }

    /// −1 or absent: a random seed, drawn now and recorded.
    func seed(_ key: String) throws(RequestError) -> UInt64 {
        let s = try int(key, default: -1, range: -1...Int(Int64.max))!
        return s < 0 ? UInt64.random(in: 0...UInt64(UInt32.max)) : UInt64(s)
    }

    /// "prompt": required, and not only whitespace (every API).
    func prompt() throws(RequestError) -> String {
        let prompt = try string("prompt", required: true)
        guard !prompt.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else { throw RequestError(field: "prompt", reason: "is empty") }
        return prompt
    }

    /// Sluice's own API (POST /api/jobs): prompt, negative_prompt, seed, steps, width, height, guidance
    /// (or AUTOMATIC1111's cfg_scale), sampler/sampler_name (the model's own), count, and diffusers'
    /// true_cfg_scale and max_sequence_length (FLUX.1; the model refuses what it cannot take). Any other
    /// field is refused, naming it: a misspelt option should not be silently ignored.
    func sluice() throws(RequestError) -> JobParameters {
        let known: Set<String> = ["prompt", "negative_prompt", "seed", "steps", "width", "height", "guidance", "cfg_scale", "sampler", "sampler_name",
                                  "count", "true_cfg_scale", "max_sequence_length"]
        if let unknown = fields.keys.sorted().first(where: { !known.contains($0) }) {
            throw RequestError(field: unknown, reason: "is not a field of this API (it takes \(known.sorted().joined(separator: ", ")))")
        }
        if fields["guidance"] != nil && fields["cfg_scale"] != nil {
            throw RequestError(field: "cfg_scale", reason: "and guidance are the same setting; give one")
        }
        try checkSamplers(["sampler", "sampler_name"])
        let prompt = try prompt()
        var p = JobParameters(
            prompt: prompt, negativePrompt: try string("negative_prompt"), seed: try seed("seed"),
            steps: try int("steps", default: defaultSteps, range: 1...JobParameters.maxSteps)!,
            width: try side("width", try int("width", default: defaults.width, range: 0...100_000)!),
            height: try side("height", try int("height", default: defaults.height, range: 0...100_000)!),
            guidance: try float(fields["cfg_scale"] != nil ? "cfg_scale" : "guidance", default: defaultGuidance, range: 0...30),
            count: try int("count", default: 1, range: 1...JobParameters.maxCount)!)
        p.trueCFGScale = fields["true_cfg_scale"] == nil ? nil : try float("true_cfg_scale", default: 1, range: 0...30)
        p.maxSequenceLength = try int("max_sequence_length", default: nil, range: 1...512)
        return p
    }

    /// Sampler fields must name the model's own sampler (any of its aliases).
    func checkSamplers(_ keys: [String]) throws(RequestError) {
        for key in keys {
            let s = try string(key)
            guard samplers.contains(s.lowercased()) else {
                throw RequestError(field: key, reason: "'\(s)' is not available; this model samples with its own sampler (\(samplers.filter { !$0.isEmpty }.sorted().joined(separator: ", ")))")
            }
        }
    }

    /// OpenAI's images API: prompt, n, size "WxH", response_format; model/quality/style ignored.
    func openAI() throws(RequestError) -> (JobParameters, base64: Bool) {
        let prompt = try prompt()
        let size = try string("size", default: "\(defaults.width)x\(defaults.height)")
        let parts = size.lowercased().split(separator: "x")
        guard parts.count == 2, let w = Int(parts[0]), let h = Int(parts[1]) else {
            throw RequestError(field: "size", reason: "must look like 1024x1024")
        }
        let format = try string("response_format", default: "b64_json")
        guard format == "b64_json" || format == "url" else { throw RequestError(field: "response_format", reason: "must be b64_json or url") }
        return (JobParameters(prompt: prompt, negativePrompt: "", seed: try seed("seed"), steps: defaultSteps,
                              width: try side("size", w), height: try side("size", h), guidance: defaultGuidance,
                              count: try int("n", default: 1, range: 1...JobParameters.maxCount)!), format == "b64_json")
    }

    /// AUTOMATIC1111's txt2img: prompt, negative_prompt, seed, steps, width, height, cfg_scale,
    /// batch_size × n_iter, sampler_name/sampler_index (Euler only).
    func automatic1111() throws(RequestError) -> JobParameters {
        let prompt = try prompt()
        try checkSamplers(["sampler_name", "sampler_index"])
        let batch = try int("batch_size", default: 1, range: 1...JobParameters.maxCount)!
        let iterations = try int("n_iter", default: 1, range: 1...JobParameters.maxCount)!
        guard batch * iterations <= JobParameters.maxCount else {
            throw RequestError(field: "batch_size", reason: "batch_size × n_iter must be at most \(JobParameters.maxCount)")
        }
        return JobParameters(
            prompt: prompt, negativePrompt: try string("negative_prompt"), seed: try seed("seed"),
            steps: try int("steps", default: defaultSteps, range: 1...JobParameters.maxSteps)!,
            width: try side("width", try int("width", default: defaults.width, range: 0...100_000)!),
            height: try side("height", try int("height", default: defaults.height, range: 0...100_000)!),
            guidance: try float("cfg_scale", default: defaultGuidance, range: 0...30),
            count: batch * iterations)
    }
}
