import Foundation
import SluiceCore

/// The sizes and costs of a real model's weight groups, as `tools/reference/make_tables.py` writes
/// them from the diffusers/transformers configs (meta device: no weights). The committed tables ship
/// with the package (resources of this module); `sluice plan --table NAME` finds them by name.
///
/// A table is a model folder without weights: the pipeline class and each component's config, as
/// the model's own files give them, beside the group sizes. A registered pipeline describes a
/// table's components with the same formulas it plans a loaded model with (`describe(table:)`);
/// components of models Sluice does not run yet fall back to the table's own analytic estimates
/// (`genericDescriptions`).
public struct ModelTable: Codable, Sendable {
    public struct Group: Codable, Sendable {
        /// The module path of the group (its checkpoint key prefix), e.g. "transformer.layers.3".
        public let name: String
        public let parameters: Int
        /// FLOPs of one forward at the reference resolution: the part linear in tokens…
        public let linearFlops: Double
        /// …and the part quadratic in tokens (attention scores and their product with V).
        public let attentionFlops: Double
    }

    public struct Component: Codable, Sendable {
        public let name: String
        public let phase: Phase
        public let groups: [Group]
        /// The table's analytic estimate of one forward's peak activations at the reference
        /// resolution, batch 1: used for components whose model Sluice does not run yet.
        public let activationBytes: Int
        /// How activations and FLOPs scale with image size: pixels (denoiser, VAE) or fixed (text
        /// encoders, whose length does not depend on the image).
        public let scaling: Scaling
        public let computeDType: String
        /// The component's config as its config.json gives it (absent in older tables).
        public let config: JSONTree?
        public var parameters: Int { groups.reduce(0) { $0 + $1.parameters } }
    }

    public enum Scaling: String, Codable, Sendable { case pixels, fixed }

    public let model: String
    public let source: String
    /// The diffusers pipeline class (model_index.json's `_class_name`).
    public let pipeline: String?
    public let referenceWidth: Int
    public let referenceHeight: Int
    public let components: [Component]

    public var parameters: Int { components.reduce(0) { $0 + $1.parameters } }

    public static func load(path: String) throws(SluiceError) -> ModelTable {
        guard let data = FileManager.default.contents(atPath: path) else { throw .io(path: path, reason: "cannot read") }
        do { return try JSONDecoder().decode(ModelTable.self, from: data) }
        catch { throw .invalidArgument(name: path, reason: "not a model table (\(DecodingFailure(error)))") }
    }

    /// Where the committed tables are: this module's resources.
    public static var directory: String? { Bundle.module.url(forResource: "Tables", withExtension: nil)?.path }

    /// Names of the committed tables.
    public static var known: [String] {
        guard let dir = directory, let files = try? FileManager.default.contentsOfDirectory(atPath: dir) else { return [] }
        return files.filter { $0.hasSuffix(".json") }.map { String($0.dropLast(5)) }.sorted()
    }

    /// A committed table by name, or a table file by path.
    public static func resolve(_ nameOrPath: String) throws(SluiceError) -> ModelTable {
        if FileManager.default.fileExists(atPath: nameOrPath) { return try load(path: nameOrPath) }
        guard let dir = directory, FileManager.default.fileExists(atPath: dir + "/" + nameOrPath + ".json") else {
            throw .invalidParameter(.table, reason: "'\(nameOrPath)' is neither a file nor one of \(known.joined(separator: ", "))")
        }
        return try load(path: dir + "/" + nameOrPath + ".json")
    }

    /// Image size over the table's reference size.
    public func pixelRatio(_ w: Workload) -> Double {
        Double(w.width * w.height) / Double(referenceWidth * referenceHeight)
    }

    /// The component `name`, with the config a family decodes it by; an error names the table and what
    /// it lacks.
    public func configuredComponent(_ name: String) throws(SluiceError) -> Component {
        guard let c = components.first(where: { $0.name == name }) else {
            throw .invalidArgument(name: "table \(model)", reason: "has no '\(name)' component")
        }
        guard c.config != nil else { throw .invalidArgument(name: "table \(model): \(name)", reason: "has no config") }
        return c
    }

    /// The table's own FLOPs of each of `components`, by name (a family's description uses them in place
    /// of its rows-based estimate).
    public func flops(of components: [Component]) -> [String: @Sendable (Workload) -> [Double]] {
        var out: [String: @Sendable (Workload) -> [Double]] = [:]
        for c in components { out[c.name] = { self.flops(c, $0) } }
        return out
    }

    /// A component's groups for the planner (a table's bytes follow the requested storage type).
    public func groups(_ c: Component) -> [GroupDescription] {
        c.groups.map { GroupDescription(name: $0.name, parameters: $0.parameters) }
    }

    /// Modelled FLOPs of each group: linear parts scale with tokens, attention with tokens².
    public func flops(_ c: Component, _ w: Workload) -> [Double] {
        let p = c.scaling == .pixels ? pixelRatio(w) : 1
        let b = c.scaling == .pixels ? Double(w.batch) : 1
        return c.groups.map { ($0.linearFlops * p + $0.attentionFlops * p * p) * b }
    }

    /// A component with the table's own estimates: activations that scale with pixels (and batch),
    /// and a decoder that tiles in latents of `latentScale` pixels, shrinking as `Tiling.shrinking`.
    public func genericDescription(_ c: Component, latentScale: Int = 8) -> ComponentDescription {
        let table = self
        let act = Double(c.activationBytes), pixels = c.scaling == .pixels
        let reference = Double(referenceWidth * referenceHeight)
        let tiling: Tiling? = c.phase == .decode ? Tiling(
            tiles: { Tiling.shrinking(fromLatentSide: max($0.width, $0.height) / latentScale) },
            activationBytes: { t, _ in Int((act * Double(t * latentScale * t * latentScale) / reference).rounded(.up)) }) : nil
        return ComponentDescription(
            name: c.name, phase: c.phase, groups: groups(c), followsStorage: c.phase != .decode,
            activationBytes: { w in pixels ? Int((act * table.pixelRatio(w) * Double(w.batch)).rounded(.up)) : c.activationBytes },
            flops: { table.flops(c, $0) }, tiling: tiling)
    }

    public var genericDescriptions: [ComponentDescription] { components.map { genericDescription($0) } }
}

/// Any JSON value, kept as it was read (a component's config inside a table).
public indirect enum JSONTree: Codable, Sendable, Equatable {
    case null, bool(Bool), number(Double), string(String), array([JSONTree]), object([String: JSONTree])

    public init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { self = .null }
        else if let b = try? c.decode(Bool.self) { self = .bool(b) }
        else if let n = try? c.decode(Double.self) { self = .number(n) }
        else if let s = try? c.decode(String.self) { self = .string(s) }
        else if let a = try? c.decode([JSONTree].self) { self = .array(a) }
        else { self = .object(try c.decode([String: JSONTree].self)) }
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .null: try c.encodeNil()
        case .bool(let b): try c.encode(b)
        case .number(let n): if n == n.rounded() && abs(n) < 1e15 { try c.encode(Int(n)) } else { try c.encode(n) }
        case .string(let s): try c.encode(s)
        case .array(let a): try c.encode(a)
        case .object(let o): try c.encode(o)
        }
    }

    /// Decodes the value as `T` (a model's config type), naming `what` when it does not fit.
    public func decode<T: Decodable>(_ type: T.Type, what: String) throws(SluiceError) -> T {
        do { return try JSONDecoder().decode(T.self, from: JSONEncoder().encode(self)) } catch let e as SluiceError { throw e } catch {
            throw .invalidArgument(name: what, reason: "cannot be read (\(DecodingFailure(error)))")
        }
    }
}
