import SluiceCore

/// The Vulkan backend as far as it goes today: linear layers (f32 or bf16 weights, widened in the
/// shader), element-wise add/sub/mul/div with row broadcasting, SiLU, RMSNorm, LayerNorm, softmax,
/// rotary embeddings and nearest 2× upsampling run on the Vulkan device;
/// every other op runs on the CPU backend, and so does any op whose buffers would exceed the device's
/// storage-buffer range. Inputs are uploaded and results read back per op (no residency yet): this is
/// the correctness path, tested on lavapipe, not a fast one.
public struct VulkanBackend: Backend {
    public let context: VulkanContext
    public let cpu: CPUBackend

    public init(context: VulkanContext, cpu: CPUBackend? = nil) throws(SluiceError) {
        self.context = context
        if let cpu { self.cpu = cpu } else { self.cpu = try CPUBackend() }
    }

    public var name: String { "vulkan (\(context.info.name)) + cpu" }

    func fits(_ tensors: [Tensor]) -> Bool { tensors.allSatisfy { $0.byteCount <= context.info.maxStorageBufferRange } }

    func upload(_ t: Tensor) throws(SluiceError) -> VulkanContext.Buffer {
        let b = try context.buffer(bytes: t.byteCount)
        try context.upload(t, to: b)
        return b
    }

    func read(_ b: VulkanContext.Buffer, _ shape: Shape) throws(SluiceError) -> Tensor {
        let t = Tensor(uninitialized: shape, dtype: .f32, counter: cpu.allocations)
        try context.download(b, into: t)
        return t
    }

    static func groups(_ n: Int) -> (Int, Int, Int) {
        let g = (n + 255) / 256
        return g <= 65535 ? (g, 1, 1) : (65535, (g + 65534) / 65535, 1)
    }

    public func linear(_ x: Tensor, weight: Tensor, bias: Tensor?) throws(SluiceError) -> Tensor {
        let K = x.shape.rank > 0 ? x.shape[-1] : 0
        guard weight.shape.rank == 2, weight.shape[1] == K, K > 0, weight.dtype == .f32 || weight.dtype == .bf16,
              x.dtype == .f32, bias.map({ $0.dtype == .f32 }) ?? true else {
            return try cpu.linear(x, weight: weight, bias: bias)
        }
        let M = x.count / K, N = weight.shape[0]
        let xc = x.contiguous(), wc = weight.contiguous()
        guard fits([xc, wc]), M * N * 4 <= context.info.maxStorageBufferRange else { return try cpu.linear(x, weight: weight, bias: bias) }
        let bx = try upload(xc), bw = try upload(wc)
        let bb = try bias.map { b throws(SluiceError) in try upload(b.contiguous()) } ?? bx
        let out = try context.buffer(bytes: M * N * 4)
        try context.dispatch(.matmulTransposed, [bx, bw, bb, out],
                             push: [UInt32(M), UInt32(N), UInt32(K), weight.dtype == .bf16 ? 1 : 0, bias == nil ? 0 : 1],
                             groups: ((N + 15) / 16, (M + 15) / 16, 1))
        return try read(out, Shape(Array(x.shape.dims.dropLast()) + [N]))
    }

    public func binary(_ op: BinaryOp, _ a: Tensor, _ b: Tensor) throws(SluiceError) -> Tensor {
        // The kernel broadcasts b along a's rows: b's shape, leading 1s dropped, must be a's trailing dims.
        let trailing = Array(b.shape.dims.drop { $0 == 1 })
        guard a.dtype == .f32, b.dtype == .f32, a.count > 0, trailing.count <= a.shape.rank,
              Array(a.shape.dims.suffix(trailing.count)) == trailing, b.shape.rank <= a.shape.rank, fits([a, b]) else {
            return try cpu.binary(op, a, b)
        }
        let code: UInt32 = switch op { case .add: 0; case .sub: 1; case .mul: 2; case .div: 3 }
        let ba = try upload(a.contiguous()), bb = try upload(b.contiguous())
        let out = try context.buffer(bytes: a.byteCount)
        try context.dispatch(.binary, [ba, bb, out], push: [UInt32(a.count), UInt32(max(b.count, 1)), code], groups: Self.groups(a.count))
        return try read(out, a.shape)
    }

    public func silu(_ x: Tensor) throws(SluiceError) -> Tensor {
        guard x.dtype == .f32, x.count > 0, fits([x]) else { return try cpu.silu(x) }
        let bx = try upload(x.contiguous()), out = try context.buffer(bytes: x.byteCount)
        try context.dispatch(.silu, [bx, out], push: [UInt32(x.count)], groups: Self.groups(x.count))
        return try read(out, x.shape)
    }

    // Not yet on the device: the CPU computes these.
    public func matmul(_ a: Tensor, _ b: Tensor, transposeB: Bool) throws(SluiceError) -> Tensor { try cpu.matmul(a, b, transposeB: transposeB) }
    public func conv2d(_ x: Tensor, weight: Tensor, bias: Tensor?, stride: Int, padding: Int, groups: Int) throws(SluiceError) -> Tensor {
        try cpu.conv2d(x, weight: weight, bias: bias, stride: stride, padding: padding, groups: groups)
    }
    public func groupNorm(_ x: Tensor, groups: Int, weight: Tensor?, bias: Tensor?, eps: Float) throws(SluiceError) -> Tensor {
        try cpu.groupNorm(x, groups: groups, weight: weight, bias: bias, eps: eps)
    }
    public func layerNorm(_ x: Tensor, weight: Tensor?, bias: Tensor?, eps: Float) throws(SluiceError) -> Tensor {
        try rows(x, mode: 1, weight: weight, bias: bias, eps: eps) { () throws(SluiceError) in try cpu.layerNorm(x, weight: weight, bias: bias, eps: eps) }
    }
    public func rmsNorm(_ x: Tensor, weight: Tensor?, eps: Float) throws(SluiceError) -> Tensor {
        try rows(x, mode: 0, weight: weight, bias: nil, eps: eps) { () throws(SluiceError) in try cpu.rmsNorm(x, weight: weight, eps: eps) }
    }
    public func softmax(_ x: Tensor) throws(SluiceError) -> Tensor {
        try rows(x, mode: 2, weight: nil, bias: nil, eps: 0) { () throws(SluiceError) in try cpu.softmax(x) }
    }

    /// The row kernel over x's last dimension; per-feature weight and bias are widened to f32 on the host
    /// (they are one row). Falls back to `onCPU` for what it does not take.
    func rows(_ x: Tensor, mode: UInt32, weight: Tensor?, bias: Tensor?, eps: Float,
              onCPU: () throws(SluiceError) -> Tensor) throws(SluiceError) -> Tensor {
        let D = x.shape.rank > 0 ? x.shape[-1] : 0
        guard x.dtype == .f32, D > 0, x.count > 0, fits([x]), weight.map({ $0.count == D }) ?? true, bias.map({ $0.count == D }) ?? true else {
            return try onCPU()
        }
        let rowCount = x.count / D
        let bx = try upload(x.contiguous())
        let bw = try weight.map { w throws(SluiceError) in try upload(w.converted(to: .f32)) } ?? bx
        let bb = try bias.map { b throws(SluiceError) in try upload(b.converted(to: .f32)) } ?? bx
        let out = try context.buffer(bytes: x.byteCount)
        let g = rowCount <= 65535 ? (rowCount, 1, 1) : (65535, (rowCount + 65534) / 65535, 1)
        try context.dispatch(.rows, [bx, bw, bb, out],
                             push: [UInt32(rowCount), UInt32(D), mode, eps.bitPattern, weight == nil ? 0 : 1, bias == nil ? 0 : 1], groups: g)
        return try read(out, x.shape)
    }
    public func gelu(_ x: Tensor, approximateTanh: Bool) throws(SluiceError) -> Tensor { try cpu.gelu(x, approximateTanh: approximateTanh) }
    public func upsampleNearest2x(_ x: Tensor) throws(SluiceError) -> Tensor {
        guard x.dtype == .f32, x.shape.rank == 4, x.count > 0, x.count * 16 <= context.info.maxStorageBufferRange else { return try cpu.upsampleNearest2x(x) }
        let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let bx = try upload(x.contiguous()), out = try context.buffer(bytes: x.byteCount * 4)
        try context.dispatch(.upsample, [bx, out], push: [UInt32(n * c), UInt32(h), UInt32(w)], groups: Self.groups(x.count * 4))
        return try read(out, [n, c, 2 * h, 2 * w])
    }
    public func concat(_ tensors: [Tensor], dim: Int) throws(SluiceError) -> Tensor { try cpu.concat(tensors, dim: dim) }
    public func rotaryEmbedding(_ x: Tensor, cos: Tensor, sin: Tensor, seqDim: Int, layout: RotaryLayout) throws(SluiceError) -> Tensor {
        let rank = x.shape.rank, sd = seqDim < 0 ? seqDim + rank : seqDim
        guard x.dtype == .f32, rank >= 2, sd >= 0, sd < rank - 1, x.shape[-1] % 2 == 0, x.count > 0, fits([x]),
              cos.count == x.shape[sd] * x.shape[-1] / 2, sin.count == cos.count else {
            return try cpu.rotaryEmbedding(x, cos: cos, sin: sin, seqDim: seqDim, layout: layout)
        }
        let D = x.shape[-1], L = x.shape[sd], after = x.shape.dims[(sd + 1)..<(rank - 1)].reduce(1, *)
        let bx = try upload(x.contiguous()), bc = try upload(cos.converted(to: .f32)), bs = try upload(sin.converted(to: .f32))
        let out = try context.buffer(bytes: x.byteCount)
        try context.dispatch(.rotary, [bx, bc, bs, out], push: [UInt32(x.count / D), UInt32(D), UInt32(L), UInt32(after), layout == .interleaved ? 1 : 0],
                             groups: Self.groups(x.count / 2))
        return try read(out, x.shape)
    }
    public func attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor?, scale: Float?) throws(SluiceError) -> Tensor {
        try cpu.attention(q: q, k: k, v: v, mask: mask, scale: scale)
    }
}
