import Foundation
import SluiceCore

/// The sizes and costs of a real model's weight groups, as `tools/reference/make_tables.py` writes
/// them from the diffusers/transformers configs (meta device: no weights). Fixtures live in
/// Tests/Fixtures/tables/; `sluice plan --table NAME` finds them by name.
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
        /// "text", "denoise" or "decode": the pipeline phase that uses it.
        public let phase: String
        public let groups: [Group]
        /// Peak activation bytes of one forward at the reference resolution, batch 1, compute dtype.
        public let activationBytes: Int
        /// How activations and FLOPs scale with image size: "pixels" (transformer, VAE) or "fixed"
        /// (text encoders, whose length does not depend on the image).
        public let scaling: String
        public let computeDType: String
        public var parameters: Int { groups.reduce(0) { $0 + $1.parameters } }
    }

    public let model: String
    public let source: String
    public let referenceWidth: Int
    public let referenceHeight: Int
    public let components: [Component]

    public var parameters: Int { components.reduce(0) { $0 + $1.parameters } }

    public static func load(path: String) throws(SluiceError) -> ModelTable {
        guard let data = FileManager.default.contents(atPath: path) else { throw .io(path: path, reason: "cannot read") }
        do { return try JSONDecoder().decode(ModelTable.self, from: data) }
        catch { throw .invalidArgument(name: path, reason: "not a model table: \(error)") }
    }

    /// Names of the committed tables.
    public static let known = ["z-image-turbo", "flux1-dev", "qwen-image", "sdxl", "sd15"]

    /// A table by name (looked up in `directory`) or by path.
    public static func resolve(_ nameOrPath: String, directory: String) throws(SluiceError) -> ModelTable {
        if FileManager.default.fileExists(atPath: nameOrPath) { return try load(path: nameOrPath) }
        let path = directory + "/" + nameOrPath + ".json"
        guard FileManager.default.fileExists(atPath: path) else {
            throw .invalidArgument(name: "--table", reason: "'\(nameOrPath)' is neither a file nor one of \(known.joined(separator: ", "))")
        }
        return try load(path: path)
    }
}
