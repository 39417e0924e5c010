import SluiceCore

/// Element-wise kernels: activations, broadcasting arithmetic, upsampling, concat, rotary embeddings.
extension VulkanBackend {

    func unary(_ x: Tensor, mode: UInt32, onCPU: () throws(SluiceError) -> Tensor) throws(SluiceError) -> Tensor {
        guard x.dtype == .f32, x.count > 0 else { return try onCPU() }
        let xc = try contiguous(x)
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
        let step = max(range / 4 / 16 * 16, 16)
        if count <= step {
            // One slice: the output stays on the device.
            return try op { () throws(SluiceError) -> Tensor in try read(try kernel(operands, count), shape) }
        }
        let out = Tensor(uninitialized: shape, dtype: .f32, counter: cpu.allocations)
        let flat = try operands.map { t throws(SluiceError) in try t.reshaped([count]) }, flatOut = try out.reshaped([count])
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

    public func tanh(_ x: Tensor) throws(SluiceError) -> Tensor {
        try unary(x, mode: 3) { () throws(SluiceError) in try cpu.tanh(x) }
    }

    public func gelu(_ x: Tensor, approximateTanh: Bool) throws(SluiceError) -> Tensor {
        try unary(x, mode: approximateTanh ? 2 : 1) { () throws(SluiceError) in try cpu.gelu(x, approximateTanh: approximateTanh) }
    }

    public func binary(_ op: BinaryOp, _ a: Tensor, _ b: Tensor) throws(SluiceError) -> Tensor {
        let code: UInt32 = switch op { case .add: 0; case .sub: 1; case .mul: 2; case .div: 3 }
        // Same shapes (SwiGLU's product, residual adds): sliced when larger than a binding.
        if a.shape == b.shape, a.dtype == .f32, b.dtype == .f32, a.count > 0, a.byteCount > range {
            return try elementwise(a.shape, [contiguous(a), contiguous(b)]) { (parts, n) throws(SluiceError) -> VulkanContext.Binding in
                try dispatchBinary(code, input(parts[0]), input(parts[1]), Self.broadcast([n], [n])!)
            }
        }
        // A weight in bf16/f16/fp8 (a pad token, a norm's scale) is widened on the device.
        guard Self.code(a.dtype) != nil, Self.code(b.dtype) != nil, a.count > 0, b.count > 0, fits(bytes: max(a.count, b.count) * 4),
              let plan = Self.broadcast(a.shape.dims, b.shape.dims), fits(bytes: plan.count * 4) else {
            return try cpu.binary(op, a, b)
        }
        func operand(_ t: Tensor) throws(SluiceError) -> VulkanContext.Binding {
            t.dtype == .f32 ? try input(contiguous(t)) : try f32Input(t.isContiguous ? t : t.contiguous())
        }
        return try self.op { () throws(SluiceError) -> Tensor in
            try read(try dispatchBinary(code, operand(a), operand(b), plan), Shape(plan.shape))
        }
    }

    public func siluGated(_ gate: Tensor, _ up: Tensor) throws(SluiceError) -> Tensor {
        guard gate.shape == up.shape, gate.dtype == .f32, up.dtype == .f32, gate.count > 0 else { return try mul(silu(gate), up) }
        return try elementwise(gate.shape, [contiguous(gate), contiguous(up)]) { (parts, n) throws(SluiceError) -> VulkanContext.Binding in
            try dispatchBinary(5, input(parts[0]), input(parts[1]), Self.broadcast([n], [n])!)
        }
    }

    public func axpy(_ x: Tensor, _ y: Tensor, scale: Float) throws(SluiceError) -> Tensor {
        guard x.shape == y.shape, x.dtype == .f32, y.dtype == .f32, x.count > 0 else { return try cpu.axpy(x, y, scale: scale) }
        return try elementwise(x.shape, [contiguous(x), contiguous(y)]) { (parts, n) throws(SluiceError) -> VulkanContext.Binding in
            try dispatchBinary(4, input(parts[0]), input(parts[1]), Self.broadcast([n], [n])!, scale: scale)
        }
    }

    /// The binary kernel over a broadcast plan: its output in a per-op buffer.
    func dispatchBinary(_ code: UInt32, _ a: VulkanContext.Binding, _ b: VulkanContext.Binding,
                        _ plan: (shape: [Int], count: Int, dims: [Int], aStrides: [Int], bStrides: [Int]),
                        scale: Float = 0) throws(SluiceError) -> VulkanContext.Binding {
        let out = try context.transient(bytes: plan.count * 4)
        let push = [UInt32(plan.count), code, 0, scale.bitPattern] + (plan.dims + plan.aStrides + plan.bStrides).map { UInt32($0) }
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
            let bx = try input(contiguous(x)), bo = try context.transient(bytes: x.byteCount * 4)
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
                try context.dispatch(.copy, bindings: [try input(contiguous(t)), bo],
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
            let bx = try input(contiguous(x)), bc = try f32Input(cos.contiguous()), bs = try f32Input(sin.contiguous())
            let bo = try context.transient(bytes: x.byteCount)
            try context.dispatch(.rotary, bindings: [bx, bc, bs, bo],
                                 push: [UInt32(x.count / D), UInt32(D), UInt32(L), UInt32(after), layout == .interleaved ? 1 : 0],
                                 groups: Self.groups(x.count / 2))
            return try read(bo, x.shape)
        }
    }

    /// A strided view of a tensor that is on the device, made contiguous there: the binary kernel
    /// multiplies the view (its strides and starting element) by a broadcast 1, which is exact.
    public func contiguous(_ x: Tensor) throws(SluiceError) -> Tensor {
        if x.isContiguous { return x }
        return try op { () throws(SluiceError) -> Tensor in
            guard let view = try deviceView(x) else { return x.contiguous() }
            let out = try context.transient(bytes: x.count * 4)
            try copyView(view, count: x.count, into: out)
            return try read(out, x.shape)
        }
    }

    /// A strided view's elements, in order, into `out` (the binary kernel: a · 1 over the view's strides).
    func copyView(_ view: (binding: VulkanContext.Binding, offset: Int, dims: [Int], strides: [Int]), count: Int,
                  into out: VulkanContext.Binding) throws(SluiceError) {
        let one = try input(Tensor([1], shape: [1]))
        let push = [UInt32(count), 2, UInt32(view.offset), 0] + (view.dims + view.strides + [0, 0, 0, 0]).map { UInt32($0) }
        try context.dispatch(.binary, bindings: [view.binding, one, out], push: push, groups: Self.groups(count))
    }

    /// A strided f32 view whose storage is on the device: its storage's binding, the view's first
    /// element in it, and its shape and strides merged into at most 4 dims (nil otherwise).
    func deviceView(_ x: Tensor) throws(SluiceError) -> (binding: VulkanContext.Binding, offset: Int, dims: [Int], strides: [Int])? {
        guard x.dtype == .f32, x.count > 0, x.storage.byteCount % 4 == 0 else { return nil }
        let whole = Tensor(storage: x.storage, dtype: .f32, shape: [x.storage.byteCount / 4])
        guard let binding = try context.residentBinding(whole), fits(bytes: x.storage.byteCount) else { return nil }
        context.keepForOp(x.storage)
        // Drop size-1 axes, merge axes that are contiguous with each other.
        var axes: [(n: Int, s: Int)] = []
        for (n, s) in zip(x.shape.dims, x.strides) where n > 1 {
            if let last = axes.last, last.s == n * s { axes[axes.count - 1] = (last.n * n, s) } else { axes.append((n, s)) }
        }
        guard axes.count <= 4, axes.allSatisfy({ $0.s >= 0 }) else { return nil }
        while axes.count < 4 { axes.insert((1, 0), at: 0) }
        return (binding, x.offset, axes.map(\.n), axes.map(\.s))
    }
}
