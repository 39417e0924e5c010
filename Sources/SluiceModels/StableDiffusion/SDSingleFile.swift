import Foundation
import SluiceCore
import SluiceWeights

/// One component of a single-file checkpoint, presented under its diffusers names.
public struct SDPresentedComponent: Sendable {
    public let component: SingleFileComponent
    /// Reads like the diffusers subfolder's weights: the same names and shapes, the stored dtype. Most
    /// tensors are the stored ones; OpenCLIP's q, k, v are row views into its fused projection, the VAE's
    /// mid-attention weights the stored 1×1 convolutions under a linear's shape (no copy); only bigG's
    /// text_projection is a copy (transposed) when read.
    public let checkpoint: Checkpoint
    /// Stored buffers under the component's prefix that no model reads (CLIP's position_ids, OpenCLIP's
    /// logit_scale), sorted.
    public let ignoredKeys: [String]
}

/// A Stable Diffusion 1.5 or SDXL checkpoint in the original layout (LDM's names, as
/// v1-5-pruned-emaonly.safetensors, sd_xl_base_1.0.safetensors and the A1111 / ComfyUI / Civitai
/// finetunes ship them): one file holding the UNet under "model.diffusion_model.", the VAE under
/// "first_stage_model." and the text encoders under "cond_stage_model." or "conditioner.embedders.",
/// some of which a file may leave out. Each component it carries is presented under diffusers' names,
/// for the shapes its diffusers config gives (the tables follow the config, not one model size), so
/// the diffusers-layout model code reads it unchanged. Opening reads the header only.
public struct SDSingleFile: Sendable {
    public let file: SafetensorsFile
    public let contents: SingleFileContents
    public var family: SingleFileFamily { contents.family }

    public static func open(path: String) throws(SluiceError) -> SDSingleFile {
        try SDSingleFile(file: SafetensorsFile(path: path))
    }

    /// Fails, saying what the file is, unless it is an SD1.5 or SDXL checkpoint carrying a component.
    public init(file: SafetensorsFile) throws(SluiceError) {
        let contents = SingleFileContents.detect(names: file.names, shape: { file.info($0)?.shape })
        switch contents.family {
        case .sd15, .sdxl:
            break
        case .flux:
            throw .invalidCheckpoint(file: file.path, tensor: nil, reason: "a FLUX.1 transformer, not Stable Diffusion (FluxSingleFile reads it)")
        case .qwenImage:
            throw .invalidCheckpoint(file: file.path, tensor: nil, reason: "a Qwen-Image transformer, not Stable Diffusion (give it as --transformer with the Qwen-Image folder)")
        case .sd2, .sdxlRefiner:
            throw .invalidCheckpoint(file: file.path, tensor: nil, reason: "\(contents.summary): only SD1.5 and SDXL base single files are read")
        case .unknown:
            throw .invalidCheckpoint(file: file.path, tensor: nil, reason: """
                not a Stable Diffusion 1.5 or SDXL checkpoint in the original layout ('model.diffusion_model.input_blocks.…', \
                'first_stage_model.…', 'cond_stage_model.transformer.…' or 'conditioner.embedders.…'): \(contents.summary)
                """)
        }
        self.file = file
        self.contents = contents
    }

    /// Where the file stores `component`, in this family's layout (nil: the family has no such component).
    public func prefix(of component: SingleFileComponent) -> String? {
        typealias P = SingleFileContents.Prefix
        switch (component, family) {
        case (.unet, _): return P.unet
        case (.vae, _): return P.vae
        case (.textEncoder, .sd15): return P.sd15TextEncoder
        case (.textEncoder, .sdxl): return P.sdxlTextEncoder
        case (.textEncoder2, .sdxl): return P.sdxlTextEncoder2
        default: return nil
        }
    }

    /// Stored tensors under no component's prefix (the noise schedule's buffers, EMA copies), sorted.
    public var otherKeys: [String] {
        let prefixes = SingleFileComponent.allCases.compactMap(prefix(of:))
        return file.names.filter { name in !prefixes.contains { name.hasPrefix($0) } }.sorted()
    }

    public func unet(_ shapes: SDUNetShapes) throws(SluiceError) -> SDPresentedComponent {
        try present(.unet, SDUNetKeyTable.specs(for: shapes))
    }

    public func vae(_ shapes: SDVAEShapes) throws(SluiceError) -> SDPresentedComponent {
        try present(.vae, SDVAEKeyTable.specs(for: shapes))
    }

    /// CLIP-L, as transformers' CLIPTextModel.
    public func textEncoder(_ shapes: SDTextEncoderShapes) throws(SluiceError) -> SDPresentedComponent {
        let prefix = try carried(.textEncoder)
        // LDM saved transformers' CLIPTextModel with its "text_model." level; files from older transformers lack it.
        let inner = file.names.contains { $0.hasPrefix(prefix + "text_model.") } ? "text_model." : ""
        return try present(.textEncoder, SDCLIPKeyTable.specs(for: shapes, storedPrefix: inner))
    }

    /// SDXL's OpenCLIP bigG, as transformers' CLIPTextModelWithProjection.
    public func textEncoder2(_ shapes: SDTextEncoderShapes) throws(SluiceError) -> SDPresentedComponent {
        try present(.textEncoder2, SDOpenCLIPKeyTable.specs(for: shapes))
    }

    /// `component` presented with the config in `folder/<component>/config.json` (a diffusers pipeline
    /// folder of the same family: its configs describe the file's components).
    public func component(_ component: SingleFileComponent, configFolder folder: String) throws(SluiceError) -> SDPresentedComponent {
        let path = folder + "/" + component.rawValue + "/config.json"
        switch component {
        case .unet: return try unet(Self.config(SDUNetShapes.self, at: path))
        case .vae: return try vae(Self.config(SDVAEShapes.self, at: path))
        case .textEncoder: return try textEncoder(Self.config(SDTextEncoderShapes.self, at: path))
        case .textEncoder2: return try textEncoder2(Self.config(SDTextEncoderShapes.self, at: path))
        case .transformer: throw .invalidArgument(name: "component", reason: "Stable Diffusion has a unet, not a transformer")
        }
    }

    /// Every component the file carries, presented with the configs of the diffusers folder `folder`.
    public func components(configFolder folder: String) throws(SluiceError) -> [SingleFileComponent: SDPresentedComponent] {
        var out: [SingleFileComponent: SDPresentedComponent] = [:]
        for c in contents.components { out[c] = try component(c, configFolder: folder) }
        return out
    }

    /// The tensors a component of this config has, under diffusers' names with their shapes, in diffusers'
    /// module order: what presenting it gives.
    public static func diffusersTensors(unet shapes: SDUNetShapes) -> [(name: String, shape: Shape)] {
        SDUNetKeyTable.specs(for: shapes).map { (name: $0.key, shape: $0.shape) }
    }
    public static func diffusersTensors(vae shapes: SDVAEShapes) -> [(name: String, shape: Shape)] {
        SDVAEKeyTable.specs(for: shapes).map { (name: $0.key, shape: $0.shape) }
    }
    public static func diffusersTensors(textEncoder shapes: SDTextEncoderShapes) -> [(name: String, shape: Shape)] {
        SDCLIPKeyTable.specs(for: shapes, storedPrefix: "").map { (name: $0.key, shape: $0.shape) }
    }
    public static func diffusersTensors(textEncoder2 shapes: SDTextEncoderShapes) -> [(name: String, shape: Shape)] {
        SDOpenCLIPKeyTable.specs(for: shapes).map { (name: $0.key, shape: $0.shape) }
    }

    static func config<T: Decodable>(_ type: T.Type, at path: String) throws(SluiceError) -> T {
        guard let data = FileManager.default.contents(atPath: path) else { throw .io(path: path, reason: "cannot read the component's config") }
        do {
            return try JSONDecoder().decode(T.self, from: data)
        } catch let error as SluiceError {
            throw error
        } catch {
            throw .invalidArgument(name: path, reason: "not a config this reader understands: \(error)")
        }
    }

    /// The component's prefix, or why the file does not carry it.
    private func carried(_ component: SingleFileComponent) throws(SluiceError) -> String {
        guard let prefix = prefix(of: component) else {
            throw .invalidCheckpoint(file: file.path, tensor: nil, reason: "\(family.rawValue) has no \(component.rawValue)")
        }
        guard contents.components.contains(component) else {
            let held = contents.components.map(\.rawValue).joined(separator: ", ")
            throw .invalidCheckpoint(file: file.path, tensor: nil, reason: """
                carries no \(component.rawValue) (no '\(prefix)…' tensors); it holds \(held.isEmpty ? "none" : held)
                """)
        }
        return prefix
    }

    /// Buffers a checkpoint may carry that no model reads.
    private static let buffers: Set<Substring> = ["position_ids", "logit_scale"]

    /// Checks every tensor `specs` names is stored with its shape and a float dtype, and that nothing else
    /// is under the component's prefix, then presents the tensors under their diffusers names.
    private func present(_ component: SingleFileComponent, _ specs: [SDTensorSpec]) throws(SluiceError) -> SDPresentedComponent {
        let prefix = try carried(component)
        let expectedBy = "expected by \(component.rawValue)/config.json"
        var recipes: [(name: String, recipe: TensorRecipe)] = []
        for spec in specs {
            let stored = prefix + spec.source
            guard let info = file.info(stored) else {
                throw .invalidCheckpoint(file: file.path, tensor: spec.key, reason: "missing (stored as '\(stored)' in the original layout)")
            }
            var form = spec.form
            if case .reshaped = form, info.shape == spec.shape {
                form = .asStored  // a file already holding the linear's shape (converted by another tool)
            } else if info.shape != spec.sourceShape {
                throw .invalidCheckpoint(file: file.path, tensor: spec.key, reason: """
                    stored as '\(stored)' has shape \(info.shape); \(spec.sourceShape) \(expectedBy)
                    """)
            }
            guard info.dtype.isFloatStorage else {
                throw .invalidCheckpoint(file: file.path, tensor: spec.key, reason: """
                    stored as '\(stored)' has dtype \(info.dtype.safetensorsName); weights must be a float type
                    """)
            }
            recipes.append((name: spec.key, recipe: TensorRecipe(source: stored, form: form)))
        }
        let used = Set(recipes.map(\.recipe.source))
        var ignored: [String] = []
        for name in file.names.sorted() where name.hasPrefix(prefix) && !used.contains(name) {
            if name.split(separator: ".").last.map(Self.buffers.contains) == true { ignored.append(name); continue }
            throw .invalidCheckpoint(file: file.path, tensor: name, reason: """
                not in the configured \(component.rawValue) (\(component.rawValue)/config.json describes another one: \
                other depths, levels or embeddings)
                """)
        }
        return SDPresentedComponent(component: component, checkpoint: try Checkpoint(files: [file]).presenting(recipes), ignoredKeys: ignored)
    }
}
