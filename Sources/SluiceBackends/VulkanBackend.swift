import SluiceCore

/// The Vulkan backend: every op of the `Backend` protocol has a kernel (Sources/CVulkan/shaders).
/// Operands that live in device buffers the memory manager filled (resident or streamed weights) are
/// bound in place; others are uploaded into per-op buffers — carved from the component's activation
/// reservation when the memory manager set one, so the budget stays a hard cap — and results are read
/// back when the op ends. An op falls back to the CPU backend only for what the kernels do not take:
/// non-f32 activations, attention heads wider than 128, an operand beyond the device's storage-buffer
/// range (linear layers split their rows to stay inside it), or shapes the CPU rejects with an error.
/// Tested for correctness on lavapipe; its speed on real GPUs has not been measured.
public struct VulkanBackend: Backend {
    public let context: VulkanContext
    public let cpu: CPUBackend
    /// The largest operand a kernel binds: the device's storage-buffer range (lavapipe: 128 MiB), or
    /// less to exercise the splitting paths in tests.
    public let range: Int

    public init(context: VulkanContext, cpu: CPUBackend? = nil, maxBindingBytes: Int? = nil) throws(SluiceError) {
        self.context = context
        if let cpu { self.cpu = cpu } else { self.cpu = try CPUBackend() }
        range = min(maxBindingBytes ?? .max, context.info.maxStorageBufferRange)
    }

    public var name: String { "vulkan (\(context.info.name)) + cpu" }

    func fits(_ tensors: [Tensor]) -> Bool { tensors.allSatisfy { $0.byteCount <= range } }
    func fits(bytes: Int) -> Bool { bytes <= range }

    /// Weight storage types the kernels widen (weights.glsl).
    static func code(_ dt: DType) -> UInt32? {
        switch dt {
        case .f32: 0
        case .bf16: 1
        case .f16: 2
        case .f8e4m3fn: 3
        case .f8e5m2: 4
        default: nil
        }
    }

    /// Runs one op: its per-op buffers are given back to the arena when it returns.
    func op(_ body: () throws(SluiceError) -> Tensor) throws(SluiceError) -> Tensor {
        let mark = context.arenaMark()
        defer { context.endOp(mark) }
        return try body()
    }

    /// A tensor as a kernel operand: in place when the memory manager put it on the device, else uploaded.
    func input(_ t: Tensor) throws(SluiceError) -> VulkanContext.Binding {
        if let b = context.residentBinding(t) { return b }
        let b = try context.transient(bytes: t.byteCount)
        try context.upload(t, to: b)
        return b
    }

    func f32Input(_ t: Tensor) throws(SluiceError) -> VulkanContext.Binding {
        try input(t.dtype == .f32 ? t : t.converted(to: .f32))
    }

    func read(_ b: VulkanContext.Binding, _ shape: Shape) throws(SluiceError) -> Tensor {
        let t = Tensor(uninitialized: shape, dtype: .f32, counter: cpu.allocations)
        try context.download(b, into: t)
        return t
    }

    /// A 1-D grid of `size`-wide groups covering n invocations (folded into y past 65,535 groups).
    static func groups(_ n: Int, size: Int = 256) -> (Int, Int, Int) {
        let g = (n + size - 1) / size
        return g <= 65535 ? (g, 1, 1) : (65535, (g + 65534) / 65535, 1)
    }

    // MARK: - Matrix products

    public func linear(_ x: Tensor, weight: Tensor, bias: Tensor?) throws(SluiceError) -> Tensor {
        let K = x.shape.rank > 0 ? x.shape[-1] : 0
        guard weight.shape.rank == 2, weight.shape[1] == K, K > 0, x.dtype == .f32, let dtype = Self.code(weight.dtype),
              fits([weight]), bias.map({ $0.count == weight.shape[0] }) ?? true, K * 4 <= range, weight.shape[0] * 4 <= range else {
            return try cpu.linear(x, weight: weight, bias: bias)
        }
        let M = x.count / K, N = weight.shape[0]
        let out = Tensor(uninitialized: Shape(Array(x.shape.dims.dropLast()) + [N]), dtype: .f32, counter: cpu.allocations)
        guard M > 0 else { return out }
        let xs = try x.reshaped([M, K]), outRows = try out.reshaped([M, N])
        // Rows per dispatch: both the input and the output slice within the storage-buffer range.
        let chunk = min(M, range / (K * 4), range / (N * 4))
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
                    try context.dispatch(.gemm, bindings: [bx, bw, bb ?? bx, bo],
                                         push: [UInt32(rows), UInt32(N), UInt32(K), 0, 0, dtype, 1, bias == nil ? 0 : 1],
                                         groups: ((N + 15) / 16, (rows + 15) / 16, 1))
                    let slice = try outRows.sliced(dim: 0, m0..<(m0 + rows))
                    try context.download(bo, into: slice)
                    return slice
                }
            }
            return out
        }
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
            let ba = try input(a.contiguous()), bb = try input(b.contiguous())
            let bo = try context.transient(bytes: batch * M * N * 4)
            try context.dispatch(.gemm, bindings: [ba, bb, ba, bo],
                                 push: [UInt32(M), UInt32(N), UInt32(K), UInt32(M * K), shared ? 0 : UInt32(K * N), dtype, transposeB ? 1 : 0, 0],
                                 groups: ((N + 15) / 16, (M + 15) / 16, batch))
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
            let bx = try input(x.contiguous()), bw = try input(weight.contiguous())
            let bb = try bias.map { b throws(SluiceError) in try f32Input(b) } ?? bx
            let bo = try context.transient(bytes: total * 4)
            let push = [n, cin, h, w, cout, oh, ow, kh, kw, stride, padding, groups].map { UInt32($0) } + [dtype, bias == nil ? 0 : 1]
            // Implicit GEMM: 16 × 16 tiles of (output pixels × the group's output channels), one z per group.
            try context.dispatch(.conv2d, bindings: [bx, bw, bb, bo], push: push,
                                 groups: ((cout / groups + 15) / 16, (n * oh * ow + 15) / 16, groups))
            return try read(bo, [n, cout, oh, ow])
        }
    }

    // MARK: - Row-wise: norms and softmax

    public func groupNorm(_ x: Tensor, groups: Int, weight: Tensor?, bias: Tensor?, eps: Float) throws(SluiceError) -> Tensor {
        guard x.shape.rank >= 3, groups > 0, x.shape[1] % groups == 0, x.count > 0 else {
            return try cpu.groupNorm(x, groups: groups, weight: weight, bias: bias, eps: eps)
        }
        let c = x.shape[1], hw = x.shape.dims.dropFirst(2).reduce(1, *)
        return try rows(x, rowLength: (c / groups) * hw, mode: 3, weight: weight, bias: bias, featureCount: c, eps: eps, groups: groups, hw: hw) {
            () throws(SluiceError) in try cpu.groupNorm(x, groups: groups, weight: weight, bias: bias, eps: eps)
        }
    }

    public func layerNorm(_ x: Tensor, weight: Tensor?, bias: Tensor?, eps: Float) throws(SluiceError) -> Tensor {
        let D = x.shape.rank > 0 ? x.shape[-1] : 0
        return try rows(x, rowLength: D, mode: 1, weight: weight, bias: bias, featureCount: D, eps: eps) { () throws(SluiceError) in
            try cpu.layerNorm(x, weight: weight, bias: bias, eps: eps)
        }
    }

    public func rmsNorm(_ x: Tensor, weight: Tensor?, eps: Float) throws(SluiceError) -> Tensor {
        let D = x.shape.rank > 0 ? x.shape[-1] : 0
        return try rows(x, rowLength: D, mode: 0, weight: weight, bias: nil, featureCount: D, eps: eps) { () throws(SluiceError) in
            try cpu.rmsNorm(x, weight: weight, eps: eps)
        }
    }

    public func softmax(_ x: Tensor) throws(SluiceError) -> Tensor {
        let D = x.shape.rank > 0 ? x.shape[-1] : 0
        return try rows(x, rowLength: D, mode: 2, weight: nil, bias: nil, featureCount: D, eps: 0) { () throws(SluiceError) in try cpu.softmax(x) }
    }

    /// The row kernel over contiguous rows of `rowLength` values; per-feature weight and bias are
    /// widened to f32 on the host (they are one row). Falls back to `onCPU` for what it does not take.
    func rows(_ x: Tensor, rowLength D: Int, mode: UInt32, weight: Tensor?, bias: Tensor?, featureCount: Int, eps: Float,
              groups: Int = 1, hw: Int = 1, onCPU: () throws(SluiceError) -> Tensor) throws(SluiceError) -> Tensor {
        // A row's 256 invocations each loop over D / 256 values; llvmpipe stops loops at 65,535 iterations.
        guard x.dtype == .f32, D > 0, D <= 256 * 65_000, x.count > 0, x.count % D == 0, fits([x]), weight.map({ $0.count == featureCount }) ?? true,
              bias.map({ $0.count == featureCount }) ?? true else {
            return try onCPU()
        }
        let rowCount = x.count / D
        return try op { () throws(SluiceError) -> Tensor in
            let bx = try input(x.contiguous())
            let bw = try weight.map { w throws(SluiceError) in try f32Input(w) } ?? bx
            let bb = try bias.map { b throws(SluiceError) in try f32Input(b) } ?? bx
            let bo = try context.transient(bytes: x.count * 4)
            // One workgroup per row.
            try context.dispatch(.rows, bindings: [bx, bw, bb, bo],
                                 push: [UInt32(rowCount), UInt32(D), mode, eps.bitPattern, weight == nil ? 0 : 1, bias == nil ? 0 : 1,
                                        UInt32(groups), UInt32(hw)], groups: Self.groups(rowCount, size: 1))
            return try read(bo, x.shape)
        }
    }

    // MARK: - Element-wise

    func unary(_ x: Tensor, mode: UInt32, onCPU: () throws(SluiceError) -> Tensor) throws(SluiceError) -> Tensor {
        guard x.dtype == .f32, x.count > 0 else { return try onCPU() }
        let xc = x.contiguous()
        return try elementwise(x.shape, [xc]) { (parts, n) throws(SluiceError) -> VulkanContext.Binding in
            let bx = try input(parts[0]), bo = try context.transient(bytes: n * 4)
            try context.dispatch(.unary, bindings: [bx, bo], push: [UInt32(n), mode], groups: Self.groups(n))
            return bo
        }
    }

    /// An element-wise kernel over same-shaped contiguous f32 operands, in slices that each fit the
    /// storage-buffer range (a 4608 × 10240 SwiGLU activation at 1024² is 189 MB, past lavapipe's
    /// 128 MiB). `kernel(slices, n)` dispatches over one slice of n elements and returns its output.
    func elementwise(_ shape: Shape, _ operands: [Tensor],
                     _ kernel: ([Tensor], Int) throws(SluiceError) -> VulkanContext.Binding) throws(SluiceError) -> Tensor {
        let count = shape.count
        let out = Tensor(uninitialized: shape, dtype: .f32, counter: cpu.allocations)
        let flat = try operands.map { t throws(SluiceError) in try t.reshaped([count]) }, flatOut = try out.reshaped([count])
        let step = max(range / 4 / 16 * 16, 16)
        for start in stride(from: 0, to: count, by: step) {
            let part = start..<min(start + step, count)
            _ = try op { () throws(SluiceError) -> Tensor in
                let bo = try kernel(try flat.map { t throws(SluiceError) in try t.sliced(dim: 0, part) }, part.count)
                let dst = try flatOut.sliced(dim: 0, part)
                try context.download(bo, into: dst)
                return dst
            }
        }
        return out
    }

    public func silu(_ x: Tensor) throws(SluiceError) -> Tensor {
        try unary(x, mode: 0) { () throws(SluiceError) in try cpu.silu(x) }
    }

    public func gelu(_ x: Tensor, approximateTanh: Bool) throws(SluiceError) -> Tensor {
        try unary(x, mode: approximateTanh ? 2 : 1) { () throws(SluiceError) in try cpu.gelu(x, approximateTanh: approximateTanh) }
    }

    public func binary(_ op: BinaryOp, _ a: Tensor, _ b: Tensor) throws(SluiceError) -> Tensor {
        let code: UInt32 = switch op { case .add: 0; case .sub: 1; case .mul: 2; case .div: 3 }
        // Same shapes (SwiGLU's product, residual adds): sliced when larger than a binding.
        if a.shape == b.shape, a.dtype == .f32, b.dtype == .f32, a.count > 0, a.byteCount > range {
            return try elementwise(a.shape, [a.contiguous(), b.contiguous()]) { (parts, n) throws(SluiceError) -> VulkanContext.Binding in
                try dispatchBinary(code, input(parts[0]), input(parts[1]), Self.broadcast([n], [n])!)
            }
        }
        guard a.dtype == .f32, b.dtype == .f32, a.count > 0, b.count > 0, fits([a, b]),
              let plan = Self.broadcast(a.shape.dims, b.shape.dims), fits(bytes: plan.count * 4) else {
            return try cpu.binary(op, a, b)
        }
        return try self.op { () throws(SluiceError) -> Tensor in
            try read(try dispatchBinary(code, input(a.contiguous()), input(b.contiguous()), plan), Shape(plan.shape))
        }
    }

    /// The binary kernel over a broadcast plan: its output in a per-op buffer.
    func dispatchBinary(_ code: UInt32, _ a: VulkanContext.Binding, _ b: VulkanContext.Binding,
                        _ plan: (shape: [Int], count: Int, dims: [Int], aStrides: [Int], bStrides: [Int])) throws(SluiceError) -> VulkanContext.Binding {
        let out = try context.transient(bytes: plan.count * 4)
        let push = [UInt32(plan.count), code, 0, 0] + (plan.dims + plan.aStrides + plan.bStrides).map { UInt32($0) }
        try context.dispatch(.binary, bindings: [a, b, out], push: push, groups: Self.groups(plan.count))
        return out
    }

    /// numpy broadcasting of two contiguous shapes, merged into at most 4 dims (adjacent dims merge
    /// when both operands broadcast them the same way) with each operand's element strides (0 on a
    /// broadcast axis). nil when the shapes do not broadcast (the CPU then reports it) or need more dims.
    static func broadcast(_ a: [Int], _ b: [Int]) -> (shape: [Int], count: Int, dims: [Int], aStrides: [Int], bStrides: [Int])? {
        let rank = max(a.count, b.count)
        let pa = [Int](repeating: 1, count: rank - a.count) + a, pb = [Int](repeating: 1, count: rank - b.count) + b
        var shape: [Int] = []
        for (x, y) in zip(pa, pb) {
            guard x == y || x == 1 || y == 1 else { return nil }
            shape.append(max(x, y))
        }
        // (size, a broadcasts, b broadcasts) per axis, size-1 axes dropped, like neighbours merged.
        var axes: [(n: Int, ab: Bool, bb: Bool)] = []
        for k in 0..<rank where shape[k] > 1 {
            let axis = (n: shape[k], ab: pa[k] == 1, bb: pb[k] == 1)
            if let last = axes.last, last.ab == axis.ab, last.bb == axis.bb { axes[axes.count - 1].n *= axis.n } else { axes.append(axis) }
        }
        guard axes.count <= 4 else { return nil }
        while axes.count < 4 { axes.insert((1, false, false), at: 0) }
        func strides(_ broadcastOn: (Int) -> Bool) -> [Int] {
            var out = [Int](repeating: 0, count: 4), s = 1
            for k in stride(from: 3, through: 0, by: -1) {
                out[k] = broadcastOn(k) ? 0 : s
                if !broadcastOn(k) { s *= axes[k].n }
            }
            return out
        }
        return (shape, shape.reduce(1, *), axes.map(\.n), strides { axes[$0].ab }, strides { axes[$0].bb })
    }

    public func upsampleNearest2x(_ x: Tensor) throws(SluiceError) -> Tensor {
        guard x.dtype == .f32, x.shape.rank == 4, x.count > 0, fits(bytes: x.count * 16) else { return try cpu.upsampleNearest2x(x) }
        let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        return try op { () throws(SluiceError) -> Tensor in
            let bx = try input(x.contiguous()), bo = try context.transient(bytes: x.byteCount * 4)
            try context.dispatch(.upsample, bindings: [bx, bo], push: [UInt32(n * c), UInt32(h), UInt32(w)], groups: Self.groups(x.count * 4))
            return try read(bo, [n, c, 2 * h, 2 * w])
        }
    }

    public func concat(_ tensors: [Tensor], dim: Int) throws(SluiceError) -> Tensor {
        guard let first = tensors.first else { return try cpu.concat(tensors, dim: dim) }
        let rank = first.shape.rank, d = dim < 0 ? dim + rank : dim
        guard d >= 0, d < rank, tensors.allSatisfy({ t in
            t.dtype == .f32 && t.shape.rank == rank && (0..<rank).allSatisfy { $0 == d || t.shape[$0] == first.shape[$0] }
        }) else {
            return try cpu.concat(tensors, dim: dim)
        }
        let total = tensors.reduce(0) { $0 + $1.shape[d] }
        let outer = first.shape.dims.prefix(d).reduce(1, *), inner = first.shape.dims.suffix(from: d + 1).reduce(1, *)
        var dims = first.shape.dims
        dims[d] = total
        let count = outer * total * inner
        guard count > 0, fits(bytes: count * 4) else { return try cpu.concat(tensors, dim: dim) }
        return try op { () throws(SluiceError) -> Tensor in
            let bo = try context.transient(bytes: count * 4)
            var offset = 0
            for t in tensors where t.count > 0 {
                let row = t.shape[d] * inner
                try context.dispatch(.copy, bindings: [try input(t.contiguous()), bo],
                                     push: [UInt32(outer), UInt32(row), UInt32(total * inner), UInt32(offset)], groups: Self.groups(t.count))
                offset += row
            }
            return try read(bo, Shape(dims))
        }
    }

    public func rotaryEmbedding(_ x: Tensor, cos: Tensor, sin: Tensor, seqDim: Int, layout: RotaryLayout) throws(SluiceError) -> Tensor {
        let rank = x.shape.rank, sd = seqDim < 0 ? seqDim + rank : seqDim
        guard x.dtype == .f32, rank >= 2, sd >= 0, sd < rank - 1, x.shape[-1] % 2 == 0, x.count > 0, fits([x]),
              cos.count == x.shape[sd] * x.shape[-1] / 2, sin.count == cos.count else {
            return try cpu.rotaryEmbedding(x, cos: cos, sin: sin, seqDim: seqDim, layout: layout)
        }
        let D = x.shape[-1], L = x.shape[sd], after = x.shape.dims[(sd + 1)..<(rank - 1)].reduce(1, *)
        return try op { () throws(SluiceError) -> Tensor in
            let bx = try input(x.contiguous()), bc = try f32Input(cos.contiguous()), bs = try f32Input(sin.contiguous())
            let bo = try context.transient(bytes: x.byteCount)
            try context.dispatch(.rotary, bindings: [bx, bc, bs, bo],
                                 push: [UInt32(x.count / D), UInt32(D), UInt32(L), UInt32(after), layout == .interleaved ? 1 : 0],
                                 groups: Self.groups(x.count / 2))
            return try read(bo, x.shape)
        }
    }

    // MARK: - Attention

    public func attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor?, scale: Float?) throws(SluiceError) -> Tensor {
        guard q.shape.rank == 4, k.shape.rank == 4, v.shape == k.shape, q.dtype == .f32, k.dtype == .f32, v.dtype == .f32,
              q.shape[0] == k.shape[0], q.shape[1] == k.shape[1], q.shape[3] == k.shape[3], q.count > 0, k.count > 0,
              q.shape[3] <= 128, q.shape[0] * q.shape[1] <= 65535, fits([q, k, v]) else {
            return try cpu.attention(q: q, k: k, v: v, mask: mask, scale: scale)
        }
        let (B, H, Lq, D) = (q.shape[0], q.shape[1], q.shape[2], q.shape[3]), Lk = k.shape[2]
        // The mask as additive f32 (bool: 0 where attended, −inf elsewhere) with broadcast strides.
        var additive: Tensor?
        var strides = [0, 0, 0, 0]
        if let mask {
            let dims = [Int](repeating: 1, count: max(4 - mask.shape.rank, 0)) + mask.shape.dims
            let full = [B, H, Lq, Lk]
            guard dims.count == 4, (0..<4).allSatisfy({ dims[$0] == 1 || dims[$0] == full[$0] }), mask.dtype == .f32 || mask.dtype == .bool else {
                return try cpu.attention(q: q, k: k, v: v, mask: mask, scale: scale)
            }
            let m: Tensor
            if mask.dtype == .bool {
                let src = mask.contiguous(), p = src.rawPointer.assumingMemoryBound(to: UInt8.self)
                m = Tensor(uninitialized: mask.shape, dtype: .f32)
                for i in 0..<m.count { m.f32[i] = p[i] != 0 ? 0 : -Float.infinity }
            } else {
                m = mask.contiguous()
            }
            let contiguous = Shape(dims).contiguousStrides
            strides = (0..<4).map { dims[$0] == 1 ? 0 : contiguous[$0] }
            additive = m
        }
        guard fits(bytes: B * H * Lq * D * 4), additive.map({ fits([$0]) }) ?? true else {
            return try cpu.attention(q: q, k: k, v: v, mask: mask, scale: scale)
        }
        let s = scale ?? 1 / Float(D).squareRoot()
        // As the kernel divides its 64 invocations: one per row up to D = 64, two per row up to 128.
        let rowsPerGroup = 64 / ((D + 63) / 64)
        return try op { () throws(SluiceError) -> Tensor in
            let bq = try input(q.contiguous()), bk = try input(k.contiguous()), bv = try input(v.contiguous())
            let bm = try additive.map { m throws(SluiceError) in try input(m) } ?? bq
            let bo = try context.transient(bytes: B * H * Lq * D * 4)
            try context.dispatch(.attention, bindings: [bq, bk, bv, bm, bo],
                                 push: [UInt32(Lq), UInt32(Lk), UInt32(D), UInt32(H), s.bitPattern, additive == nil ? 0 : 1] + strides.map { UInt32($0) },
                                 groups: ((Lq + rowsPerGroup - 1) / rowsPerGroup, B * H, 1))
            return try read(bo, [B, H, Lq, D])
        }
    }
}
