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
