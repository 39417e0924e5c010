import Foundation
import SluiceCore

/// A diffusers model folder: `model_index.json` names the pipeline class and, for each component, the
/// library and class that load it (`"vae": ["diffusers", "AutoencoderKL"]`); each component lives in
/// the folder of its name. Read once, here, for the pipeline registry and `sluice models`.
public struct DiffusersFolder: Sendable {
    public struct Component: Sendable, Equatable {
        public let name: String
        public let library: String
        public let className: String
    }

    public let path: String
    /// `_class_name`: the pipeline (e.g. "ZImagePipeline").
    public let pipelineClass: String?
    /// Components the index lists with a class (a `[null, null]` entry is an unused slot), by name.
    public let components: [Component]

    /// Single `.safetensors` files that replace a component's weights (a finetuned transformer), by
    /// component name; the component's config still comes from the folder.
    public var singleFiles: [String: String] = [:]

    public var indexPath: String { path + "/model_index.json" }

    public init(path: String) throws(SluiceError) {
        self.path = path
        let index = path + "/model_index.json"
        guard let data = FileManager.default.contents(atPath: index) else {
            throw .io(path: index, reason: "missing (not a diffusers model folder)")
        }
        guard let obj = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
            throw .invalidArgument(name: index, reason: "is not a JSON object")
        }
        pipelineClass = obj["_class_name"] as? String
        components = obj.keys.sorted().filter { !$0.hasPrefix("_") }.compactMap { name in
            guard let pair = obj[name] as? [Any], pair.count == 2, let library = pair[0] as? String, let cls = pair[1] as? String else { return nil }
            return Component(name: name, library: library, className: cls)
        }
    }

    public func component(_ name: String) -> Component? { components.first { $0.name == name } }

    /// The component's folder, after checking that the index lists it.
    public func folder(_ name: String) throws(SluiceError) -> String {
        guard component(name) != nil else { throw .invalidArgument(name: indexPath, reason: "lists no '\(name)' component") }
        return path + "/" + name
    }

    /// Fails, naming the first, unless the index lists every one of `names`.
    public func require(_ names: [String]) throws(SluiceError) {
        for n in names { _ = try folder(n) }
    }

    /// A component's JSON config (e.g. "transformer/config.json"), decoded; a missing or malformed
    /// file names itself and the field at fault.
    public func config<T: Decodable>(_ type: T.Type, _ relativePath: String) throws(SluiceError) -> T {
        try ModelLocator.config(type, at: path + "/" + relativePath)
    }
}
