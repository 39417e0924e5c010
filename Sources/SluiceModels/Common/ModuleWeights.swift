import SluiceCore

/// The weights a module sees: keys are module paths, exactly as in the checkpoint ("layers.3.attention.to_q.weight").
/// `scoped("layers.3")` gives a block its own view, so block code names tensors as the paper does.
public struct ModuleWeights: @unchecked Sendable {
    private let lookup: (String) throws(SluiceError) -> Tensor
    public let prefix: String

    public init(prefix: String = "", _ lookup: @escaping (String) throws(SluiceError) -> Tensor) {
        self.prefix = prefix
        self.lookup = lookup
    }

    public func callAsFunction(_ key: String) throws(SluiceError) -> Tensor {
        try lookup(prefix.isEmpty ? key : prefix + "." + key)
    }

    public func scoped(_ path: String) -> ModuleWeights {
        ModuleWeights(prefix: prefix.isEmpty ? path : prefix + "." + path, lookup)
    }

    /// A tensor that is optional in some checkpoints (a bias, a post-quant conv).
    public func optional(_ key: String) -> Tensor? { try? self(key) }
}

/// Small helpers on f32 vectors that model code needs between backend calls (adaLN scales and gates,
/// embeddings). They work on a few thousand values at most, so they stay in plain Swift.
public enum HostMath {
    public static func floats(_ t: Tensor) throws(SluiceError) -> [Float] { try t.toFloats() }

    public static func tensor(_ v: [Float], _ shape: Shape) -> Tensor { Tensor(v, shape: shape) }

    /// Rows `ids` of an embedding table [vocab, dim] (any float storage) as f32 [ids.count, dim].
    public static func embed(_ table: Tensor, ids: [Int], name: String) throws(SluiceError) -> Tensor {
        guard table.shape.rank == 2 else {
            throw .shapeMismatch(operation: "embedding \(name)", expected: "[vocab, dim]", found: "\(table.shape)")
        }
        let vocab = table.shape[0], dim = table.shape[1]
        let out = Tensor(uninitialized: [ids.count, dim], dtype: .f32)
        for (r, id) in ids.enumerated() {
            guard id >= 0 && id < vocab else {
                throw .invalidArgument(name: "token id", reason: "\(id) is outside the vocabulary of \(vocab) (\(name))")
            }
            let row = try table.sliced(dim: 0, id..<(id + 1)).converted(to: .f32)
            out.f32.advanced(by: r * dim).update(from: row.f32, count: dim)
        }
        return out
    }
}
