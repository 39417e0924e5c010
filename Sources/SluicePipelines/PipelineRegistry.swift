import Foundation
import SluiceBackends
import SluiceCore
import SluiceMemory
import SluiceModels
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
    public static let shared = PipelineRegistry([ZImagePipeline.family, FluxPipeline.family, StableDiffusionPipeline.sd15Family, StableDiffusionPipeline.sdxlFamily,
                                                 QwenImagePipeline.family])

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

    /// Resolves `model` (a folder, a Hugging Face repo id, or a Stable Diffusion single-file checkpoint),
    /// selects `device` and loads; `transformer` is a single `.safetensors` file whose weights replace
    /// the folder's transformer (a FLUX finetune). A single-file checkpoint takes its configs and
    /// tokenizers from `config` (a folder or repo id), else from its base model's repository in the
    /// Hugging Face cache.
    public func load(model: String, device: String, transformer: String? = nil, compute: DType = .f32,
                     config: String? = nil) throws -> any TextToImagePipeline {
        var folder: DiffusersFolder
        if let checkpoint = try Self.singleFile(model) {
            folder = try DiffusersFolder(path: try ModelLocator.resolve(try Self.configModel(for: checkpoint, named: config)))
            folder.singleFiles["checkpoint"] = model
        } else {
            guard config == nil else { throw SluiceError.invalidParameter(.config, reason: "applies to a single-file checkpoint; \(model) is a model folder") }
            folder = try DiffusersFolder(path: try ModelLocator.resolve(model))
        }
        if let transformer {
            guard FileManager.default.fileExists(atPath: transformer) else {
                throw SluiceError.invalidParameter(.transformer, reason: "\(transformer): no such file")
            }
            folder.singleFiles["transformer"] = transformer
        }
        return try load(folder, device: try ComputeDevice.select(device, compute: compute))
    }

    /// What a `.safetensors` file given as the model is (nil: `model` is not a file).
    static func singleFile(_ model: String) throws(SluiceError) -> (path: String, family: SingleFileFamily)? {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: model, isDirectory: &isDir), !isDir.boolValue else { return nil }
        let file = try SafetensorsFile(path: model)
        let contents = SingleFileContents.detect(names: file.names, shape: { file.info($0)?.shape })
        switch contents.family {
        case .sd15, .sdxl: return (model, contents.family)
        case .flux: throw .invalidParameter(.model, reason: "\(model) is a FLUX.1 transformer: give the FLUX folder as --model and this file as --transformer")
        case .qwenImage: throw .invalidParameter(.model, reason: "\(model) is a Qwen-Image transformer: give the Qwen-Image folder as --model and this file as --transformer")
        default: throw .invalidParameter(.model, reason: "\(model): \(contents.summary); Sluice reads SD1.5 and SDXL single files (or give a diffusers folder)")
        }
    }

    /// The folder or repo id a single file's configs and tokenizers come from.
    static func configModel(for checkpoint: (path: String, family: SingleFileFamily), named: String?) throws(SluiceError) -> String {
        if let named { return named }
        let candidates = StableDiffusionPipeline.baseRepositories[checkpoint.family] ?? []
        for repo in candidates where (try? ModelLocator.resolve(repo)) != nil { return repo }
        let kind = checkpoint.family == .sdxl ? "SDXL" : "SD1.5"
        throw .invalidParameter(.config, reason: "\(checkpoint.path) is a single \(kind) checkpoint: its configs and tokenizers come from the base model's diffusers folder, and none is in the Hugging Face cache (\(candidates.joined(separator: " or "))); give one with --config")
    }

    /// A table's components: with its family's formulas when the family is registered, else with the
    /// table's own estimates.
    public func describe(_ table: ModelTable) throws(SluiceError) -> [ComponentDescription] {
        if let cls = table.pipeline, let describe = family(pipelineClass: cls)?.describeTable { return try describe(table) }
        return table.genericDescriptions
    }
}
