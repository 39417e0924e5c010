import SluiceCore

/// Small helpers on f32 vectors that model code needs between backend calls (adaLN scales and gates,
/// embeddings). They work on a few thousand values at most, so they stay in plain Swift.
public enum HostMath {
    public static func floats(_ t: Tensor) throws(SluiceError) -> [Float] { try t.toFloats() }

    public static func tensor(_ v: [Float], _ shape: Shape) -> Tensor { Tensor(v, shape: shape) }

    /// Rows `ids` of an embedding table [vocab, dim] (any float storage) as f32 [ids.count, dim];
    /// `expectedShape`, when given, is the table's shape the model's config implies.
    public static func embed(_ table: Tensor, ids: [Int], name: String, expectedShape: Shape? = nil) throws(SluiceError) -> Tensor {
        guard table.shape.rank == 2, expectedShape.map({ table.shape == $0 }) ?? true else {
            throw .shapeMismatch(operation: "embedding \(name)", expected: expectedShape.map { "\($0)" } ?? "[vocab, dim]", found: "\(table.shape)")
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
