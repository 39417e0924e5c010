import Foundation
import SluiceBackends
import SluiceCore
import SluiceMemory
import SluiceWeights
import Synchronization

/// The text-to-image families Sluice can run, chosen by the pipeline class a model folder's
/// `model_index.json` names (single-file checkpoints, by their key signatures, later). Adding a family
/// is one `register` line here (or, for a test, in the test) — nothing in the server or the CLI changes.
public final class PipelineRegistry: Sendable {
    public struct Family: Sendable {
        /// e.g. "Z-Image".
        public let name: String
        /// The diffusers pipeline classes it runs (`_class_name`).
        public let pipelineClasses: Set<String>
        public let load: @Sendable (DiffusersFolder, ComputeDevice) throws -> any TextToImagePipeline
        /// The family's description of a model table with the formulas it plans a loaded model with.
        public let describeTable: (@Sendable (ModelTable) throws(SluiceError) -> [ComponentDescription])?
        /// Components whose weights a single file may replace (`--transformer finetune.safetensors`).
        public let singleFileComponents: Set<String>

        public init(name: String, pipelineClasses: Set<String>,
                    load: @escaping @Sendable (DiffusersFolder, ComputeDevice) throws -> any TextToImagePipeline,
                    describeTable: (@Sendable (ModelTable) throws(SluiceError) -> [ComponentDescription])? = nil,
                    singleFileComponents: Set<String> = []) {
            self.name = name; self.pipelineClasses = pipelineClasses; self.load = load; self.describeTable = describeTable
            self.singleFileComponents = singleFileComponents
        }
    }

    private let families: Mutex<[Family]>

    public init(_ families: [Family]) { self.families = Mutex(families) }

    /// Every family this build runs.
    public static let shared = PipelineRegistry([ZImagePipeline.family, FluxPipeline.family, StableDiffusionPipeline.sd15Family, StableDiffusionPipeline.sdxlFamily])

    public func register(_ family: Family) { families.withLock { $0.append(family) } }

    public var all: [Family] { families.withLock { $0 } }

    public func family(pipelineClass: String) -> Family? { all.first { $0.pipelineClasses.contains(pipelineClass) } }

    /// Loads the model in `folder` with the family its index names.
    public func load(_ folder: DiffusersFolder, device: ComputeDevice) throws -> any TextToImagePipeline {
        guard let cls = folder.pipelineClass else {
            throw SluiceError.invalidArgument(name: folder.indexPath, reason: "has no _class_name: which pipeline is this?")
        }
        guard let family = family(pipelineClass: cls) else {
            let known = all.flatMap(\.pipelineClasses).sorted().joined(separator: ", ")
            throw SluiceError.invalidArgument(name: folder.indexPath, reason: "_class_name is \(cls); this build runs \(known)")
        }
        for component in folder.singleFiles.keys.sorted() where !family.singleFileComponents.contains(component) {
            throw SluiceError.invalidParameter(Parameter(rawValue: component) ?? .model,
                reason: "\(family.name) cannot take its \(component) from a single file; give a diffusers folder")
        }
        return try family.load(folder, device)
    }

    /// Resolves `model` (a folder or a Hugging Face repo id), selects `device` and loads; `transformer`
    /// is a single `.safetensors` file whose weights replace the folder's transformer (a finetune).
    public func load(model: String, device: String, transformer: String? = nil, compute: DType = .f32) throws -> any TextToImagePipeline {
        var folder = try DiffusersFolder(path: try ModelLocator.resolve(model))
        if let transformer {
            guard FileManager.default.fileExists(atPath: transformer) else {
                throw SluiceError.invalidParameter(.transformer, reason: "\(transformer): no such file")
            }
            folder.singleFiles["transformer"] = transformer
        }
        return try load(folder, device: try ComputeDevice.select(device, compute: compute))
    }

    /// A table's components: with its family's formulas when the family is registered, else with the
    /// table's own estimates.
    public func describe(_ table: ModelTable) throws(SluiceError) -> [ComponentDescription] {
        if let cls = table.pipeline, let describe = family(pipelineClass: cls)?.describeTable { return try describe(table) }
        return table.genericDescriptions
    }
}
