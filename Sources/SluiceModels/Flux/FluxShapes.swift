import SluiceCore
import SluiceWeights

/// The sizes a FLUX.1 transformer's weights fix, as read from a checkpoint's shapes: what config.json
/// would say, less RoPE's axes (no weight shows them). A single-file finetune ships no config, so
/// these are inferred (candle's habit: hidden size from `img_in`, depth from the highest block index).
public struct FluxShapes: Sendable, Equatable {
    public var numLayers: Int
    public var numSingleLayers: Int
    /// Inner width: attention heads × head width (3072 in FLUX.1).
    public var dim: Int
    public var headDim: Int
    /// The MLP's hidden width (4 × dim in FLUX.1).
    public var mlpHidden: Int
    /// x_embedder's input: packed latent channels (64 in FLUX.1).
    public var inChannels: Int
    public var outChannels: Int
    /// The text encoder's width (T5's 4096).
    public var jointAttentionDim: Int
    /// The pooled text vector's width (CLIP's 768).
    public var pooledProjectionDim: Int
    /// dev has a guidance embedder, schnell none.
    public var guidanceEmbeds: Bool

    /// The width of the sinusoidal timestep (and guidance) features diffusers' `Timesteps` makes for FLUX
    /// (transformer_flux.py, CombinedTimestepGuidanceTextProjEmbeddings: num_channels=256).
    public static let timestepChannels = 256

    public var numAttentionHeads: Int { dim / headDim }
    public var mlpRatio: Double { Double(mlpHidden) / Double(dim) }

    public init(numLayers: Int, numSingleLayers: Int, dim: Int, headDim: Int, mlpHidden: Int, inChannels: Int,
                outChannels: Int, jointAttentionDim: Int, pooledProjectionDim: Int, guidanceEmbeds: Bool) {
        self.numLayers = numLayers
        self.numSingleLayers = numSingleLayers
        self.dim = dim
        self.headDim = headDim
        self.mlpHidden = mlpHidden
        self.inChannels = inChannels
        self.outChannels = outChannels
        self.jointAttentionDim = jointAttentionDim
        self.pooledProjectionDim = pooledProjectionDim
        self.guidanceEmbeds = guidanceEmbeds
    }

    /// The shapes a config asks for.
    public init(_ config: FluxConfig) {
        self.init(numLayers: config.numLayers, numSingleLayers: config.numSingleLayers, dim: config.dim,
                  headDim: config.headDim, mlpHidden: config.mlpDim, inChannels: config.inChannels,
                  outChannels: config.out, jointAttentionDim: config.jointAttentionDim,
                  pooledProjectionDim: config.pooledProjectionDim, guidanceEmbeds: config.guidanceEmbeds)
    }

    /// The config with these shapes. RoPE's axes are in no weight: FLUX.1's (16, 56, 56) for its
    /// 128-wide heads unless given. `out_channels` is left unset when it equals `in_channels`, as in
    /// diffusers' own configs.
    public func config(axesDimsRope: [Int]? = nil) throws(SluiceError) -> FluxConfig {
        let what = "inferred FLUX transformer shapes"
        guard mlpHidden == 4 * dim else {
            throw .invalidArgument(name: what, reason: "MLP width \(mlpHidden) is not 4 × the inner width \(dim), which FluxConfig assumes")
        }
        guard let axes = axesDimsRope ?? (headDim == 128 ? [16, 56, 56] : nil) else {
            throw .invalidArgument(name: what, reason: "heads are \(headDim) wide, not FLUX.1's 128: RoPE's axes_dims_rope must be given")
        }
        var c = FluxConfig()
        c.inChannels = inChannels
        c.outChannels = outChannels == inChannels ? nil : outChannels
        c.numLayers = numLayers
        c.numSingleLayers = numSingleLayers
        c.attentionHeadDim = headDim
        c.numAttentionHeads = numAttentionHeads
        c.jointAttentionDim = jointAttentionDim
        c.pooledProjectionDim = pooledProjectionDim
        c.guidanceEmbeds = guidanceEmbeds
        c.axesDimsRope = axes
        try c.validate(what: what)
        return c
    }
}

extension FluxShapes {
    /// Reads the shapes from a checkpoint's tensors in `layout`: `shape` answers for names without the
    /// layout's prefix; `file` and the prefix name what is missing.
    static func infer(names: [String], shape: (String) -> Shape?, layout: FluxCheckpointLayout, file: String) throws(SluiceError) -> FluxShapes {
        let n = layout.names
        func dims(_ key: String, rank: Int, what: String) throws(SluiceError) -> [Int] {
            guard let s = shape(key) else {
                throw .invalidCheckpoint(file: file, tensor: layout.keyPrefix + key, reason: "missing: \(what) is read from its shape")
            }
            guard s.rank == rank, s.dims.allSatisfy({ $0 > 0 }) else {
                throw .invalidCheckpoint(file: file, tensor: layout.keyPrefix + key, reason: "shape \(s) is not a \(rank)-D weight (\(what) is read from it)")
            }
            return s.dims
        }
        let doubles = blockIndices(names, prefix: n.doubleBlocks)
        let singles = blockIndices(names, prefix: n.singleBlocks)
        // A stray huge index would otherwise make the expected-key table that large (FLUX.1 has 19 + 38).
        for (indices, prefix) in [(doubles, n.doubleBlocks), (singles, n.singleBlocks)] {
            if let last = indices.last, last >= maxBlocks {
                throw .invalidCheckpoint(file: file, tensor: nil, reason: "block '\(layout.keyPrefix)\(prefix)\(last).…': more than \(maxBlocks) blocks is not a FLUX.1 transformer")
            }
        }
        let xEmbedder = try dims(n.xEmbedder, rank: 2, what: "the inner width")
        let dim = xEmbedder[0]
        let head: [Int]
        let mlpHidden: Int
        if let i = doubles.first {
            head = try dims(n.doubleQueryNorm(i), rank: 1, what: "the head width")
            mlpHidden = try dims(n.doubleMLPIn(i), rank: 2, what: "the MLP width")[0]
        } else if let i = singles.first {
            head = try dims(n.singleQueryNorm(i), rank: 1, what: "the head width")
            let rows = try dims(n.singleMLPIn(i), rank: 2, what: "the MLP width")[0]
            mlpHidden = layout.isBFL ? rows - 3 * dim : rows  // BFL's linear1 also holds q, k, v
        } else {
            throw .invalidCheckpoint(file: file, tensor: nil, reason: "no transformer blocks ('\(layout.keyPrefix)\(n.doubleBlocks)N.…' or '\(layout.keyPrefix)\(n.singleBlocks)N.…')")
        }
        guard head[0] > 0, dim % head[0] == 0 else {
            throw .invalidCheckpoint(file: file, tensor: nil, reason: "head width \(head[0]) does not divide the inner width \(dim)")
        }
        return FluxShapes(
            numLayers: (doubles.last ?? -1) + 1, numSingleLayers: (singles.last ?? -1) + 1, dim: dim, headDim: head[0],
            mlpHidden: mlpHidden, inChannels: xEmbedder[1], outChannels: try dims(n.projOut, rank: 2, what: "the output channels")[0],
            jointAttentionDim: try dims(n.contextEmbedder, rank: 2, what: "the text width")[1],
            pooledProjectionDim: try dims(n.textEmbedder, rank: 2, what: "the pooled text width")[1],
            guidanceEmbeds: names.contains { $0.hasPrefix(n.guidanceEmbedder) })
    }

    static let maxBlocks = 1024

    /// The block indices present (sorted): N of every "<prefix>N.…" name.
    static func blockIndices(_ names: [String], prefix: String) -> [Int] {
        var found = Set<Int>()
        for name in names where name.hasPrefix(prefix) {
            if let i = name.dropFirst(prefix.count).split(separator: ".", maxSplits: 1).first.flatMap({ Int($0) }), i >= 0 { found.insert(i) }
        }
        return found.sorted()
    }
}

/// The inputs of an MMDiT over 2×2-packed latents (FLUX's and Qwen-Image's): latents [rows·columns,
/// inChannels] and text features [L > 0, textWidth], checked before the first op so a wrong shape is
/// named, with the model's name.
enum PackedInputs {
    static func check(model: String, latents: Tensor, rows: Int, columns: Int, inChannels: Int, context: Tensor, textWidth: Int) throws(SluiceError) {
        let n = rows * columns
        guard latents.shape == [n, inChannels] else {
            throw .shapeMismatch(operation: "\(model) packed latents", expected: "[\(n), \(inChannels)]", found: "\(latents.shape)")
        }
        guard context.shape.rank == 2, context.shape[1] == textWidth, context.shape[0] > 0 else {
            throw .shapeMismatch(operation: "\(model) text features", expected: "[L>0, \(textWidth)]", found: "\(context.shape)")
        }
    }
}
