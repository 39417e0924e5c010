import SluiceCore
import SluiceWeights

/// A FLUX.1 transformer shipped as one .safetensors file with no config: Black Forest Labs' own layout
/// (flux1-dev.safetensors; finetunes such as majicflus, often float8_e4m3fn, sometimes under ComfyUI's
/// "model.diffusion_model.") or diffusers' names. Whatever the layout, `checkpoint` presents the
/// tensors under diffusers' FluxTransformer2DModel names, which are our model code's module paths; they
/// keep the stored dtype (the backends widen at use). Opening checks every tensor the inferred shapes
/// call for, so a broken file fails here, naming the tensor.
public struct FluxSingleFile: Sendable {
    public let file: SafetensorsFile
    public let layout: FluxCheckpointLayout
    /// The shapes read from the tensors (`inferred.config(axesDimsRope:)` gives a FluxConfig).
    public let inferred: FluxShapes
    /// The transformer under diffusers' names, prefix stripped. q, k, v (and the single blocks' MLP
    /// input) of BFL's fused projections are zero-copy views into the mapped file; norm_out.linear, whose
    /// halves BFL stores the other way round, is a small copy made when read.
    public let checkpoint: Checkpoint
    /// Stored tensors no presented name reads (another component's weights in an all-in-one file), sorted.
    public let unusedKeys: [String]

    public static func open(path: String) throws(SluiceError) -> FluxSingleFile {
        try FluxSingleFile(file: SafetensorsFile(path: path))
    }

    public init(file: SafetensorsFile) throws(SluiceError) {
        let names = file.names
        try Self.refuseScaledFP8(names, file: file.path)
        let layout = try FluxCheckpointLayout.detect(names, file: file.path)
        let prefix = layout.keyPrefix
        let inner = names.filter { $0.hasPrefix(prefix) }.map { String($0.dropFirst(prefix.count)) }
        let inferred = try FluxShapes.infer(names: inner, shape: { file.info(prefix + $0)?.shape }, layout: layout, file: file.path)
        let specs = FluxKeyTable.specs(for: inferred)
        try Self.verify(specs, in: file, layout: layout, expectedBy: """
            for inner width \(inferred.dim), head width \(inferred.headDim) and MLP width \(inferred.mlpHidden) (read from \
            \(layout.keyPrefix)\(layout.names.xEmbedder) and the first block)
            """)
        let recipes = specs.map { spec in
            (name: spec.key, recipe: layout.isBFL ? TensorRecipe(source: prefix + spec.bflSource, form: spec.form) : .stored(prefix + spec.key))
        }
        let used = Set(recipes.map(\.recipe.source))
        self.file = file
        self.layout = layout
        self.inferred = inferred
        checkpoint = try Checkpoint(files: [file]).presenting(recipes)
        unusedKeys = names.filter { !used.contains($0) }.sorted()
    }

    /// Checks the file holds the transformer `config` describes: every tensor it needs, with its shape,
    /// and nothing more. Fails naming the first tensor that is missing, of the wrong shape or extra
    /// (with its stored name where the layout stores it under another).
    public func check(against config: FluxConfig) throws(SluiceError) {
        let specs = FluxKeyTable.specs(for: FluxShapes(config))
        try Self.verify(specs, in: file, layout: layout, expectedBy: "by the config")
        let expected = Set(specs.map(\.key))
        if let extra = checkpoint.names.first(where: { !expected.contains($0) }) {
            throw .invalidCheckpoint(file: file.path, tensor: extra, reason: """
                not in the configured transformer (\(config.numLayers) double and \(config.numSingleLayers) single blocks, \
                \(config.guidanceEmbeds ? "with" : "without") a guidance embedder): the file holds another one
                """)
        }
    }

    /// Every spec's stored tensor is present, with the shape it needs and a float dtype.
    static func verify(_ specs: [FluxTensorSpec], in file: SafetensorsFile, layout: FluxCheckpointLayout, expectedBy: String) throws(SluiceError) {
        let n = layout.names
        for spec in specs {
            let stored = layout.keyPrefix + (layout.isBFL ? spec.bflSource : spec.key)
            let expected = layout.isBFL ? spec.bflShape : spec.shape
            let storedAs = stored == spec.key ? "" : "stored as '\(stored)' "
            guard let info = file.info(stored) else {
                var reason = "missing" + (stored == spec.key ? "" : " (stored as '\(stored)' in this layout)")
                if let block = spec.block {
                    let blockPrefix: String
                    switch block {
                    case .double(let i): blockPrefix = layout.keyPrefix + n.doubleBlocks + "\(i)."
                    case .single(let i): blockPrefix = layout.keyPrefix + n.singleBlocks + "\(i)."
                    }
                    if !file.names.contains(where: { $0.hasPrefix(blockPrefix) }) {
                        reason += "; \(block) is absent (no '\(blockPrefix)…' tensors)"
                    }
                }
                throw .invalidCheckpoint(file: file.path, tensor: spec.key, reason: reason)
            }
            guard info.shape == expected else {
                throw .invalidCheckpoint(file: file.path, tensor: spec.key, reason: "\(storedAs)has shape \(info.shape); \(expected) expected \(expectedBy)")
            }
            guard info.dtype.isFloatStorage else {
                throw .invalidCheckpoint(file: file.path, tensor: spec.key, reason: "\(storedAs)has dtype \(info.dtype.safetensorsName); weights must be a float type")
            }
        }
    }

    /// ComfyUI's "scaled fp8" files (comfy/ops.py, scaled_fp8_ops) store each linear's weight as fp8
    /// values to be multiplied by a per-tensor `scale_weight` (some also `scale_input`, and a
    /// `scaled_fp8` marker). Reading the fp8 values alone would give wrong weights silently, so such a
    /// file is refused until the scales are applied.
    static func refuseScaledFP8(_ names: [String], file: String) throws(SluiceError) {
        let markers: Set<Substring> = ["scale_weight", "scale_input", "scaled_fp8"]
        guard let key = names.sorted().first(where: { $0.split(separator: ".").last.map(markers.contains) == true }) else { return }
        throw .invalidCheckpoint(file: file, tensor: key, reason: """
            ComfyUI "scaled fp8" checkpoints (fp8 weights times a per-tensor scale_weight) are not supported yet; \
            a plain float8_e4m3fn, bf16 or f16 file is
            """)
    }
}
