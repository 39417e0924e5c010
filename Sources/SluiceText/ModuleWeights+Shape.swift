import SluiceCore
import SluiceWeights

extension ModuleWeights {
    /// The tensor `key`, which must have `shape` (what the config implies): a checkpoint of another
    /// size fails naming the tensor rather than deep inside an op.
    func callAsFunction(_ key: String, shape: Shape) throws(SluiceError) -> Tensor {
        let t = try self(key)
        guard t.shape == shape else {
            throw .shapeMismatch(operation: "weight '\(prefix.isEmpty ? key : prefix + "." + key)'", expected: "\(shape)", found: "\(t.shape)")
        }
        return t
    }
}
