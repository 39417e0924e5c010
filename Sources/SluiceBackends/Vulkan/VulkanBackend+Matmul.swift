import SluiceCore

/// Matrix products (matmul, linear, conv2d as an implicit GEMM) as Vulkan kernels.
extension VulkanBackend {

    public func linear(_ x: Tensor, weight: Tensor, bias: Tensor?) throws(SluiceError) -> Tensor {
        let K = x.shape.rank > 0 ? x.shape[-1] : 0
        guard weight.shape.rank == 2, weight.shape[1] == K, K > 0, x.dtype == .f32, let dtype = Self.code(weight.dtype),
              fits([weight]), bias.map({ $0.count == weight.shape[0] }) ?? true, K * 4 <= range, weight.shape[0] * 4 <= range else {
            return try cpu.linear(x, weight: weight, bias: bias)
        }
        let M = x.count / K, N = weight.shape[0]
        let shape = Shape(Array(x.shape.dims.dropLast()) + [N])
        guard M > 0 else { return Tensor(uninitialized: shape, dtype: .f32, counter: cpu.allocations) }
        // Rows per dispatch: both the input and the output slice within the storage-buffer range.
        let chunk = min(M, range / (K * 4), range / (N * 4))
        if chunk == M {
            // One dispatch: the output stays on the device.
            return try op { () throws(SluiceError) -> Tensor in
                let bx = try input(contiguous(x)), bw = try input(weight.contiguous())
                let bb = try bias.map { b throws(SluiceError) in try f32Input(b) }
                let bo = try context.transient(bytes: M * N * 4)
                try gemm([bx, bw, bb ?? bx, bo], M: M, N: N, K: K, dtype: dtype, transposed: true, hasBias: bias != nil)
                return try read(bo, shape)
            }
        }
        let out = Tensor(uninitialized: shape, dtype: .f32, counter: cpu.allocations)
        let xs = try x.reshaped([M, K]), outRows = try out.reshaped([M, N])
        // The weight and bias are bound once (the outer op keeps them); each row block's buffers are
        // given back when its inner op ends.
        return try op { () throws(SluiceError) -> Tensor in
            let bw = try input(weight.contiguous())
            let bb = try bias.map { b throws(SluiceError) in try f32Input(b) }
            for m0 in stride(from: 0, to: M, by: chunk) {
                let rows = min(chunk, M - m0)
                _ = try op { () throws(SluiceError) -> Tensor in
                    let bx = try input(try xs.sliced(dim: 0, m0..<(m0 + rows)))
                    let bo = try context.transient(bytes: rows * N * 4)
                    try gemm([bx, bw, bb ?? bx, bo], M: rows, N: N, K: K, dtype: dtype, transposed: true, hasBias: bias != nil)
                    let slice = try outRows.sliced(dim: 0, m0..<(m0 + rows))
                    try context.download(bo, into: slice)
                    return slice
                }
            }
            return out
        }
    }

    /// One GEMM dispatch (bindings a, b, bias, out) with the variant `gemmVariant` picks.
    func gemm(_ bindings: [VulkanContext.Binding], M: Int, N: Int, K: Int, aStride: Int = 0, bStride: Int = 0, batch: Int = 1,
              dtype: UInt32, transposed: Bool, hasBias: Bool) throws(SluiceError) {
        let push = [M, N, K, aStride, bStride].map { UInt32($0) } + [dtype, transposed ? 1 : 0, hasBias ? 1 : 0]
        let tiled = switch gemmVariant { case .auto: M >= 64 && N >= 64; case .simple: false; case .tiled: true }
        let tile = tiled ? 64 : 16
        try context.dispatch(tiled ? .gemmTiled : .gemm, bindings: bindings, push: push,
                             groups: ((N + tile - 1) / tile, (M + tile - 1) / tile, batch))
    }

    public func matmul(_ a: Tensor, _ b: Tensor, transposeB: Bool) throws(SluiceError) -> Tensor {
        let ra = a.shape.rank, rb = b.shape.rank
        guard ra >= 2, rb >= 2, a.dtype == .f32, let dtype = Self.code(b.dtype), a.count > 0, b.count > 0 else {
            return try cpu.matmul(a, b, transposeB: transposeB)
        }
        let M = a.shape[-2], K = a.shape[-1]
        let (bk, N) = transposeB ? (b.shape[-1], b.shape[-2]) : (b.shape[-2], b.shape[-1])
        let batchDims = Array(a.shape.dims.dropLast(2)), batch = batchDims.reduce(1, *)
        // b shared across a's batch ([K, N]) or batched exactly like a.
        let shared = rb == 2
        guard bk == K, shared || Array(b.shape.dims.dropLast(2)) == batchDims, batch <= 65535,
              fits([a, b]), fits(bytes: batch * M * N * 4) else {
            return try cpu.matmul(a, b, transposeB: transposeB)
        }
        return try op { () throws(SluiceError) -> Tensor in
            let ba = try input(contiguous(a)), bb = try input(b.contiguous())
            let bo = try context.transient(bytes: batch * M * N * 4)
            try gemm([ba, bb, ba, bo], M: M, N: N, K: K, aStride: M * K, bStride: shared ? 0 : K * N, batch: batch,
                     dtype: dtype, transposed: transposeB, hasBias: false)
            return try read(bo, Shape(batchDims + [M, N]))
        }
    }

    public func conv2d(_ x: Tensor, weight: Tensor, bias: Tensor?, stride: Int, padding: Int, groups: Int) throws(SluiceError) -> Tensor {
        guard x.shape.rank == 4, weight.shape.rank == 4, x.dtype == .f32, let dtype = Self.code(weight.dtype), stride > 0, padding >= 0,
              groups > 0, x.shape[1] % groups == 0, weight.shape[0] % groups == 0, weight.shape[1] * groups == x.shape[1],
              bias.map({ $0.count == weight.shape[0] }) ?? true else {
            return try cpu.conv2d(x, weight: weight, bias: bias, stride: stride, padding: padding, groups: groups)
        }
        let (n, cin, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let (cout, kh, kw) = (weight.shape[0], weight.shape[2], weight.shape[3])
        let oh = (h + 2 * padding - kh) / stride + 1, ow = (w + 2 * padding - kw) / stride + 1
        let total = n * cout * max(oh, 0) * max(ow, 0)
        guard oh > 0, ow > 0, total > 0, fits([x, weight]), fits(bytes: total * 4), (n * oh * ow + 15) / 16 <= 65535, groups <= 65535 else {
            return try cpu.conv2d(x, weight: weight, bias: bias, stride: stride, padding: padding, groups: groups)
        }
        return try op { () throws(SluiceError) -> Tensor in
            let bx = try input(contiguous(x)), bw = try input(weight.contiguous())
            let bb = try bias.map { b throws(SluiceError) in try f32Input(b) } ?? bx
            let bo = try context.transient(bytes: total * 4)
            let push = [n, cin, h, w, cout, oh, ow, kh, kw, stride, padding, groups].map { UInt32($0) } + [dtype, bias == nil ? 0 : 1]
            // Implicit GEMM: 16 × 16 tiles of (output pixels × the group's output channels), one z per group.
            try context.dispatch(.conv2d, bindings: [bx, bw, bb, bo], push: push,
                                 groups: ((cout / groups + 15) / 16, (n * oh * ow + 15) / 16, groups))
            return try read(bo, [n, cout, oh, ow])
        }
    }
}
