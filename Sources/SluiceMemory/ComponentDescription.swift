import SluiceCore

/// The pipeline phase a component runs in. Components run one at a time, in this order.
public enum Phase: String, Sendable, Codable, CaseIterable {
    case text, denoise, decode
}

/// What one call of each component works on: the image size and how many images at once.
public struct Workload: Sendable, Hashable, Codable {
    public var width: Int
    public var height: Int
    /// Images per denoiser/VAE call (text encoders run once per prompt).
    public var batch: Int
    public init(width: Int, height: Int, batch: Int = 1) {
        self.width = width; self.height = height; self.batch = batch
    }
}

/// One streamable unit of a component, as the planner sees it before a storage type is chosen.
public struct GroupDescription: Sendable, Hashable, Codable {
    /// The module path of the group (its checkpoint key prefix within the component).
    public let name: String
    public let parameters: Int
    /// Device bytes as the checkpoint stores them (each tensor 64-byte aligned), when a loaded model
    /// gives them; nil for a table, whose groups take `parameters` × the requested storage type.
    public let storedBytes: Int?

    public init(name: String, parameters: Int, storedBytes: Int? = nil) {
        self.name = name; self.parameters = parameters; self.storedBytes = storedBytes
    }

    /// Device bytes in `storage` (used only when the checkpoint does not say), 64-byte aligned.
    public func bytes(storage: DType) -> Int { storedBytes ?? (parameters * storage.byteSize + 63) & ~63 }
}

/// How a component that can work in tiles (a VAE decoder) shrinks its activations.
public struct Tiling: Sendable {
    /// Tile sides to try, in latents, largest first, for this workload.
    public let tiles: @Sendable (Workload) -> [Int]
    /// Activation bytes of one call on the workload's image in square tiles of this many latents (one
    /// image at a time): one tile's decode plus what the tiling holds (decoded tiles, the output).
    public let activationBytes: @Sendable (Int, Workload) -> Int

    public init(tiles: @escaping @Sendable (Workload) -> [Int], activationBytes: @escaping @Sendable (Int, Workload) -> Int) {
        self.tiles = tiles; self.activationBytes = activationBytes
    }

    /// Three quarters of the whole latent side, then three quarters of that, down to 8 latents, each
    /// rounded down to a multiple of 4: then the quarter overlap and the blend are whole pixels and a
    /// tile's kept part is exactly one step, so the tiled image is diffusers' own `tiled_decode` at that
    /// tile size (at other sizes diffusers' int() truncation shifts each row of tiles by a pixel).
    public static func shrinking(fromLatentSide side: Int) -> [Int] {
        var out: [Int] = []
        var t = side
        while t > 8 {
            t = max(4, t * 3 / 4 / 4 * 4)
            out.append(t)
        }
        return out
    }
}

/// A component as the pipeline planner needs it, produced alike by a loaded model (its checkpoint's
/// group sizes, its model's formulas) and by a model table (the real model's sizes). Each model
/// declares its activation formula beside its code; both sources call it.
public struct ComponentDescription: Sendable {
    public let name: String
    public let phase: Phase
    /// Groups in forward order.
    public let groups: [GroupDescription]
    /// Whether `storage` applies: a table's text encoders and denoiser may be planned in fp8; its VAE
    /// stays bf16 (small, and sensitive to precision); a loaded model's groups are as stored.
    public let followsStorage: Bool
    /// Peak activation bytes of one call (compute in f32).
    public let activationBytes: @Sendable (Workload) -> Int
    /// Modelled FLOPs of each group for one call (the simulated clock; labelled as simulation).
    public let flops: @Sendable (Workload) -> [Double]
    public let tiling: Tiling?

    public init(name: String, phase: Phase, groups: [GroupDescription], followsStorage: Bool = false,
                activationBytes: @escaping @Sendable (Workload) -> Int, flops: @escaping @Sendable (Workload) -> [Double],
                tiling: Tiling? = nil) {
        self.name = name; self.phase = phase; self.groups = groups; self.followsStorage = followsStorage
        self.activationBytes = activationBytes; self.flops = flops; self.tiling = tiling
    }

    public var parameters: Int { groups.reduce(0) { $0 + $1.parameters } }

    /// FLOPs of a group that multiplies each of its weights with `rows` rows per call.
    public static func linearFlops(_ groups: [GroupDescription], rows: Double) -> [Double] {
        groups.map { 2 * Double($0.parameters) * rows }
    }

    /// `linearFlops` with the rows each call runs over given by the workload.
    public static func linearFlops(_ groups: [GroupDescription], rows: @escaping @Sendable (Workload) -> Double) -> @Sendable (Workload) -> [Double] {
        { linearFlops(groups, rows: rows($0)) }
    }
}
