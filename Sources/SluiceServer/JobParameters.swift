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
    /// The sampler, by the name the model gives it (`samplerNames`); nil = the model's default.
    public var sampler: String?
    /// Image to image: the picture to start from. Never encoded — the gallery and the job records keep
    /// only `strength`, which says an init image was used; the queue drops the pixels when the job ends.
    public var initImage: InitImage?
    /// Image to image's strength (diffusers' `strength`, AUTOMATIC1111's denoising strength); set
    /// exactly when the job starts from an init image.
    public var strength: Double?

    public static let maxPromptCharacters = 8000
    public static let maxSide = 2048
    public static let maxSteps = 150
    public static let maxCount = 8
    /// The longest base64 init image accepted, in characters (a 2048² PNG of noise is ~16 MiB of base64).
    public static let maxInitImageBase64 = 24 << 20

    public init(prompt: String, negativePrompt: String = "", seed: UInt64, steps: Int, width: Int, height: Int, guidance: Float, count: Int = 1) {
        self.prompt = prompt; self.negativePrompt = negativePrompt; self.seed = seed; self.steps = steps
        self.width = width; self.height = height; self.guidance = guidance; self.count = count
    }

    public var request: GenerationRequest {
        var r = GenerationRequest(prompt: prompt, negativePrompt: negativePrompt, seed: seed, steps: steps, width: width, height: height, guidance: guidance)
        r.trueCFGScale = trueCFGScale ?? 1
        r.maxSequenceLength = maxSequenceLength
        r.sampler = sampler
        r.initImage = initImage
        if let strength { r.strength = strength }
        return r
    }

    enum CodingKeys: String, CodingKey {
        case prompt, negativePrompt = "negative_prompt", seed, steps, width, height, guidance, count
        case trueCFGScale = "true_cfg_scale", maxSequenceLength = "max_sequence_length", sampler, strength
    }
}

/// What a request may ask of the loaded model beyond its defaults: its samplers and whether it takes
/// an init image.
struct ModelAbilities {
    /// The sampler names a request may send (any case), the model's aliases included.
    var samplerAliases: Set<String>
    /// The samplers by the model's own names, default first (what error messages list).
    var samplerNames: [String]
    /// A name a request sent as the model calls it ("k_euler" → "Euler").
    var canonicalSampler: (String) -> String = { $0 }
    /// Whether a name (any spelling the model reads) is one of its samplers.
    var knowsSampler: (String) -> Bool
    var imageToImage = false

    init(samplerAliases: Set<String>, samplerNames: [String], canonicalSampler: @escaping (String) -> String = { $0 },
         knowsSampler: ((String) -> Bool)? = nil, imageToImage: Bool = false) {
        self.samplerAliases = samplerAliases; self.samplerNames = samplerNames
        self.canonicalSampler = canonicalSampler; self.imageToImage = imageToImage
        self.knowsSampler = knowsSampler ?? { samplerAliases.contains($0.lowercased()) }
    }

    init(_ pipeline: any TextToImagePipeline) {
        self.init(samplerAliases: pipeline.samplerAliases, samplerNames: pipeline.samplerNames, canonicalSampler: { name in
            var r = pipeline.request(prompt: "")
            r.sampler = name
            return pipeline.sampler(for: r).name
        }, knowsSampler: { pipeline.knowsSampler($0) }, imageToImage: pipeline.supportsImageToImage)
    }
}

/// Field-by-field parsing with the limits every API shares.
struct ParameterParser {
    let fields: [String: Any]
    /// The model's defaults: steps, guidance, size and the multiple sizes must be of.
    let defaults: PipelineDefaults
    /// The model's samplers and image to image.
    let model: ModelAbilities

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

    /// A number kept as JSON's double (strength: the start step rounds as Python's floats do).
    func double(_ key: String, default value: Double, range: ClosedRange<Double>) throws(RequestError) -> Double {
        guard let raw = fields[key], !(raw is NSNull) else { return value }
        guard !Self.isBool(raw), let n = raw as? NSNumber, n.doubleValue.isFinite else {
            throw RequestError(field: key, reason: "must be a number")
        }
        guard range.contains(n.doubleValue) else { throw RequestError(field: key, reason: "must be in \(range.lowerBound)…\(range.upperBound)") }
        return n.doubleValue
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
    /// (or AUTOMATIC1111's cfg_scale), sampler/sampler_name (one of the model's), count, init_image
    /// (base64 PNG) and strength for image to image, and diffusers' true_cfg_scale and
    /// max_sequence_length (FLUX.1; the model refuses what it cannot take). Any other field is refused,
    /// naming it: a misspelt option should not be silently ignored.
    func sluice() throws(RequestError) -> JobParameters {
        let known: Set<String> = ["prompt", "negative_prompt", "seed", "steps", "width", "height", "guidance", "cfg_scale", "sampler", "sampler_name",
                                  "count", "true_cfg_scale", "max_sequence_length", "init_image", "strength"]
        if let unknown = fields.keys.sorted().first(where: { !known.contains($0) }) {
            throw RequestError(field: unknown, reason: "is not a field of this API (it takes \(known.sorted().joined(separator: ", ")))")
        }
        if fields["guidance"] != nil && fields["cfg_scale"] != nil {
            throw RequestError(field: "cfg_scale", reason: "and guidance are the same setting; give one")
        }
        var named: [(key: String, name: String)] = []
        for key in ["sampler", "sampler_name"] { if let name = try sampler(key) { named.append((key, name)) } }
        if named.count == 2, named[0].name != named[1].name {
            throw RequestError(field: "sampler_name", reason: "and sampler are the same setting; give one")
        }
        if fields["strength"] != nil && !has("init_image") {
            throw RequestError(field: "strength", reason: "applies to image to image only; send init_image too")
        }
        let prompt = try prompt()
        let image = has("init_image") ? try initImage("init_image", fields["init_image"]!) : nil
        var p = JobParameters(
            prompt: prompt, negativePrompt: try string("negative_prompt"), seed: try seed("seed"),
            steps: try int("steps", default: defaultSteps, range: 1...JobParameters.maxSteps)!,
            width: try side(sizeKey("width", image, "init_image"), try int("width", default: image?.width ?? defaults.width, range: 0...100_000)!),
            height: try side(sizeKey("height", image, "init_image"), try int("height", default: image?.height ?? defaults.height, range: 0...100_000)!),
            guidance: try float(fields["cfg_scale"] != nil ? "cfg_scale" : "guidance", default: defaultGuidance, range: 0...30),
            count: try int("count", default: 1, range: 1...JobParameters.maxCount)!)
        p.trueCFGScale = fields["true_cfg_scale"] == nil ? nil : try float("true_cfg_scale", default: 1, range: 0...30)
        p.maxSequenceLength = try int("max_sequence_length", default: nil, range: 1...512)
        p.sampler = named.first?.name
        if let image { try attach(image, "init_image", strength: "strength", default: GenerationRequest(prompt: "", steps: 1, guidance: 0).strength, to: &p) }
        return p
    }

    /// The field a size came from: the init image's when the request gives none.
    func sizeKey(_ key: String, _ image: InitImage?, _ imageKey: String) -> String { image != nil && !has(key) ? imageKey : key }

    /// A field present and not null.
    func has(_ key: String) -> Bool { fields[key].map { !($0 is NSNull) } ?? false }

    /// A sampler field: nil when absent, empty or "default" (the model's default), else the model's
    /// name for it; refused, naming the field and listing the model's samplers, when the model has none
    /// by that name.
    func sampler(_ key: String) throws(RequestError) -> String? {
        let s = try string(key).trimmingCharacters(in: .whitespaces)
        guard s.isEmpty || model.knowsSampler(s) else {
            throw RequestError(field: key, reason: "'\(s)' is not a sampler of this model (it has \(model.samplerNames.joined(separator: ", ")))")
        }
        return s.isEmpty || s.lowercased() == "default" ? nil : model.canonicalSampler(s)
    }

    /// Image to image's picture: a base64 PNG, with or without a `data:image/png;base64,` prefix, at
    /// most `maxSide` pixels a side. Refused, naming `key`, when the model takes none or the PNG is
    /// broken (libpng's errors are values here, never a crash).
    func initImage(_ key: String, _ raw: Any) throws(RequestError) -> InitImage {
        guard model.imageToImage else { throw RequestError(field: key, reason: "this model does not take an init image (no image to image)") }
        guard var text = raw as? String else { throw RequestError(field: key, reason: "must be a base64 PNG (a string)") }
        guard text.utf8.count <= JobParameters.maxInitImageBase64 else {
            throw RequestError(field: key, reason: "is longer than \(JobParameters.maxInitImageBase64) characters of base64", status: 413)
        }
        if text.hasPrefix("data:"), let comma = text.firstIndex(of: ",") {
            guard text[..<comma].hasSuffix(";base64") else { throw RequestError(field: key, reason: "a data: URL must be base64 (data:image/png;base64,…)") }
            text = String(text[text.index(after: comma)...])
        }
        guard let data = Data(base64Encoded: text, options: .ignoreUnknownCharacters), !data.isEmpty else {
            throw RequestError(field: key, reason: "is not base64")
        }
        let bytes = [UInt8](data)
        // The header's size first: decoding allocates width × height × 3 bytes.
        if bytes.count >= 24, bytes[12..<16].elementsEqual("IHDR".utf8) {
            let be = { (i: Int) in bytes[i..<(i + 4)].reduce(0) { $0 << 8 | Int($1) } }
            let (w, h) = (be(16), be(20))
            guard w <= JobParameters.maxSide, h <= JobParameters.maxSide else {
                throw RequestError(field: key, reason: "is \(w)×\(h); an init image may be at most \(JobParameters.maxSide) pixels a side")
            }
        }
        do {
            let png = try PNGReader.decode(bytes, name: key)
            return InitImage(pixels: png.pixels, width: png.width, height: png.height)
        } catch {
            if case let .io(_, reason) = error { throw RequestError(field: key, reason: "is not a PNG that can be read: \(reason)") }
            throw RequestError(field: key, reason: "is not a PNG that can be read")
        }
    }

    /// Puts `image` and its strength on `p`: the image must be the job's size (Sluice does not resize
    /// it). Whether the strength leaves a step to run is the model's to say (validate, before queueing).
    func attach(_ image: InitImage, _ key: String, strength strengthKey: String, default value: Double, to p: inout JobParameters) throws(RequestError) {
        guard image.width == p.width, image.height == p.height else {
            throw RequestError(field: key, reason: "is \(image.width)×\(image.height) but the job is \(p.width)×\(p.height); leave width and height out to use the image's size, or resize it")
        }
        let strength = try double(strengthKey, default: value, range: 0...1)
        guard strength > 0 else { throw RequestError(field: strengthKey, reason: "must be above 0") }
        p.initImage = image
        p.strength = strength
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
    /// batch_size × n_iter, sampler_name (else sampler_index, which A1111 also takes as a name).
    /// img2img adds init_images (base64 PNGs; the first is used, and its size is the default width and
    /// height) and denoising_strength (A1111's default 0.75).
    func automatic1111(imageToImage: Bool = false) throws(RequestError) -> JobParameters {
        let prompt = try prompt()
        // A1111: `sampler_name or sampler_index`; only the one used is checked.
        let samplerKey = (try string("sampler_name")).isEmpty && has("sampler_index") ? "sampler_index" : "sampler_name"
        let sampler = try sampler(samplerKey)
        var image: InitImage?
        if imageToImage {
            guard let list = fields["init_images"], !(list is NSNull) else { throw RequestError(field: "init_images", reason: "is required (a list of base64 PNGs)") }
            guard let images = list as? [Any], let first = images.first else {
                throw RequestError(field: "init_images", reason: "must be a non-empty list of base64 PNGs")
            }
            image = try initImage("init_images", first)
        }
        let batch = try int("batch_size", default: 1, range: 1...JobParameters.maxCount)!
        let iterations = try int("n_iter", default: 1, range: 1...JobParameters.maxCount)!
        guard batch * iterations <= JobParameters.maxCount else {
            throw RequestError(field: "batch_size", reason: "batch_size × n_iter must be at most \(JobParameters.maxCount)")
        }
        var p = JobParameters(
            prompt: prompt, negativePrompt: try string("negative_prompt"), seed: try seed("seed"),
            steps: try int("steps", default: defaultSteps, range: 1...JobParameters.maxSteps)!,
            width: try side(sizeKey("width", image, "init_images"), try int("width", default: image?.width ?? defaults.width, range: 0...100_000)!),
            height: try side(sizeKey("height", image, "init_images"), try int("height", default: image?.height ?? defaults.height, range: 0...100_000)!),
            guidance: try float("cfg_scale", default: defaultGuidance, range: 0...30),
            count: batch * iterations)
        p.sampler = sampler
        if let image { try attach(image, "init_images", strength: "denoising_strength", default: 0.75, to: &p) }
        return p
    }
}
