import SluiceCore
import SluiceBackends
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

extension ModuleWeights {
    /// The rows of embedding table `key` ([vocab, dim] as `shape` says) for `ids`, in f32: gathered by
    /// whoever holds the table when it stays in host memory (only the rows then reach the device),
    /// else read from the table these weights hold.
    func embedding(_ key: String, ids: [Int], shape: Shape) throws(SluiceError) -> Tensor {
        guard let gather else { return try HostMath.embed(self(key), ids: ids, name: self.key(key), expectedShape: shape) }
        let rows = try gather(self.key(key), ids)
        guard rows.shape == [ids.count, shape[1]] else {
            throw .shapeMismatch(operation: "embedding '\(self.key(key))'", expected: "\(shape)", found: "rows \(rows.shape)")
        }
        return rows
    }
}
