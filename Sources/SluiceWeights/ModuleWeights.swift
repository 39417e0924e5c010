import SluiceCore

/// The weights a module sees: keys are module paths, exactly as in the checkpoint ("layers.3.attention.to_q.weight").
/// `scoped("layers.3")` gives a block its own view, so block code names tensors as the paper does.
public struct ModuleWeights: @unchecked Sendable {
    private let lookup: (String) throws(SluiceError) -> Tensor
    public let prefix: String
    /// Rows of a lookup table (an embedding) by index, when whoever holds the weights gathers them
    /// itself: a table kept in host memory whose rows alone go to the device (`rows(_:ids:)`).
    public let gather: ((String, [Int]) throws(SluiceError) -> Tensor)?

    public init(prefix: String = "", gather: ((String, [Int]) throws(SluiceError) -> Tensor)? = nil,
                _ lookup: @escaping (String) throws(SluiceError) -> Tensor) {
        self.prefix = prefix
        self.gather = gather
        self.lookup = lookup
    }

    /// The full key of `key` under this scope.
    public func key(_ key: String) -> String { prefix.isEmpty ? key : prefix + "." + key }

    public func callAsFunction(_ key: String) throws(SluiceError) -> Tensor {
        try lookup(self.key(key))
    }

    public func scoped(_ path: String) -> ModuleWeights {
        ModuleWeights(prefix: prefix.isEmpty ? path : prefix + "." + path, gather: gather, lookup)
    }

    /// A tensor that is optional in some checkpoints (a bias, a post-quant conv).
    public func optional(_ key: String) -> Tensor? { try? self(key) }
}
