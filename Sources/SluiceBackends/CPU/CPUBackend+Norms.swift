import CKernels
import SluiceCore

extension CPUBackend {
    func optionalF32(_ t: Tensor?, count: Int, _ what: String) throws(SluiceError) -> Tensor? {
        guard let t else { return nil }
        guard t.count == count else { throw .shapeMismatch(operation: what, expected: "[\(count)]", found: "\(t.shape)") }
        return try f32(t)
    }

    /// Rows of the last dimension, processed in parallel blocks.
    func forEachRowBlock(rows: Int, cols: Int, _ body: @escaping (Int, Int) -> Void) {
        let block = max(1, 65536 / max(cols, 1))
        let blocks = (rows + block - 1) / block
        parallel(chunks: blocks) { b, _ in body(b * block, min(rows, (b + 1) * block)) }
    }

    public func layerNorm(_ x: Tensor, weight: Tensor?, bias: Tensor?, eps: Float) throws(SluiceError) -> Tensor {
        let cols = x.shape[-1], rows = x.count / max(cols, 1)
        let w = try optionalF32(weight, count: cols, "layerNorm weight"), b = try optionalF32(bias, count: cols, "layerNorm bias")
        let X = try f32(x), out = output(x.shape), isa = self.isa
        let p = UnsafeSendable((X.f32, out.f32, w?.f32, b?.f32))
        forEachRowBlock(rows: rows, cols: cols) { r0, r1 in
            let (xp, op, wp, bp) = p.value
            sk_layer_norm_rows(isa, xp + r0 * cols, op + r0 * cols, Int64(r1 - r0), Int64(cols), wp, bp, eps)
        }
        return out
    }

    public func rmsNorm(_ x: Tensor, weight: Tensor?, eps: Float) throws(SluiceError) -> Tensor {
        let cols = x.shape[-1], rows = x.count / max(cols, 1)
        let w = try optionalF32(weight, count: cols, "rmsNorm weight")
        let X = try f32(x), out = output(x.shape), isa = self.isa
        let p = UnsafeSendable((X.f32, out.f32, w?.f32))
        forEachRowBlock(rows: rows, cols: cols) { r0, r1 in
            let (xp, op, wp) = p.value
            sk_rms_norm_rows(isa, xp + r0 * cols, op + r0 * cols, Int64(r1 - r0), Int64(cols), wp, eps)
        }
        return out
    }

    /// x [N, C, *]: statistics over each group of C/groups channels and all positions.
    public func groupNorm(_ x: Tensor, groups: Int, weight: Tensor?, bias: Tensor?, eps: Float) throws(SluiceError) -> Tensor {
        guard x.shape.rank >= 2, groups >= 1, x.shape[1] % groups == 0 else {
            throw .shapeMismatch(operation: "groupNorm", expected: "[N, C, ...] with C divisible by \(groups)", found: "\(x.shape)")
        }
        let n = x.shape[0], c = x.shape[1], spatial = x.count / max(n * c, 1), cpg = c / groups
        let w = try optionalF32(weight, count: c, "groupNorm weight"), b = try optionalF32(bias, count: c, "groupNorm bias")
        let X = try f32(x), out = output(x.shape), isa = self.isa
        let p = UnsafeSendable((X.f32, out.f32, w?.f32, b?.f32))
        parallel(chunks: n * groups) { job, _ in
            let (xp, op, wp, bp) = p.value
            let base = job * cpg * spatial
            var mean = 0.0, variance = 0.0
            sk_mean_var(isa, xp + base, Int64(cpg * spatial), &mean, &variance)
            let inv = Float(1.0 / (variance + Double(eps)).squareRoot())
            for ch in 0..<cpg {
                let channel = (job % groups) * cpg + ch
                let scale = inv * (wp?[channel] ?? 1)
                let shift = (bp?[channel] ?? 0) - Float(mean) * scale
                let off = base + ch * spatial
                sk_scale_shift(isa, xp + off, op + off, Int64(spatial), scale, shift)
            }
        }
        return out
    }

    public func softmax(_ x: Tensor) throws(SluiceError) -> Tensor {
        let cols = x.shape[-1], rows = x.count / max(cols, 1)
        let out = try f32(x).ownedCopy(counter: allocations), isa = self.isa
        let p = UnsafeSendable(out.f32)
        forEachRowBlock(rows: rows, cols: cols) { r0, r1 in sk_softmax_rows(isa, p.value + r0 * cols, Int64(r1 - r0), Int64(cols)) }
        return out
    }
}
