import SluiceCore

/// The `Backend` of a simulated device: every op computes on the CPU backend (so results are the
/// CPU's, bit for bit), its tensors are charged to the device's memory (an op whose outputs and
/// scratch push the device past its cap fails with the out-of-memory error a GPU gives), and its
/// kernel is stamped on the device's modelled clock from its FLOPs and bytes.
public struct SimulatedBackend: Backend {
    public let device: DeviceMemory
    public let cpu: CPUBackend

    public init(device: DeviceMemory, path: KernelPath? = nil, threads: Int? = nil) throws(SluiceError) {
        self.device = device
        cpu = try CPUBackend(path: path, threads: threads, allocations: device.tensorBytes)
    }

    public var name: String { "\(device.name) on \(cpu.name)" }

    /// Runs `op` on the CPU, then charges the device: over the cap → out of memory; else a kernel
    /// of `flops` touching the inputs and output is stamped on the clock.
    func run(_ label: String, flops: Double, inputs: [Tensor], _ op: () throws(SluiceError) -> Tensor) throws(SluiceError) -> Tensor {
        let out = try op()
        let over = device.availableBytes
        if over < 0 {
            throw .outOfMemory(device: device.name, requestedBytes: out.byteCount, availableBytes: over + out.byteCount)
        }
        device.notePeak()
        let bytes = Double(inputs.reduce(out.byteCount) { $0 + $1.byteCount })
        device.compute(flops: flops, bytes: bytes, label: label) {}
        return out
    }

    public func matmul(_ a: Tensor, _ b: Tensor, transposeB: Bool) throws(SluiceError) -> Tensor {
        let k = a.shape.rank > 0 ? a.shape[-1] : 0
        return try run("matmul", flops: 2 * Double(a.count / max(k, 1)) * Double(b.count), inputs: [a, b]) { () throws(SluiceError) in
            try cpu.matmul(a, b, transposeB: transposeB)
        }
    }

    public func linear(_ x: Tensor, weight: Tensor, bias: Tensor?) throws(SluiceError) -> Tensor {
        let rows = x.count / max(x.shape.rank > 0 ? x.shape[-1] : 1, 1)
        return try run("linear", flops: 2 * Double(rows) * Double(weight.count), inputs: [x, weight]) { () throws(SluiceError) in
            try cpu.linear(x, weight: weight, bias: bias)
        }
    }

    public func linear(concatenating parts: [Tensor], weight: Tensor, bias: Tensor?) throws(SluiceError) -> Tensor {
        let rows = parts.first.map { $0.count / max($0.shape.rank > 0 ? $0.shape[-1] : 1, 1) } ?? 0
        return try run("linear", flops: 2 * Double(rows) * Double(weight.count), inputs: parts + [weight]) { () throws(SluiceError) in
            try cpu.linear(concatenating: parts, weight: weight, bias: bias)
        }
    }

    public func conv2d(_ x: Tensor, weight: Tensor, bias: Tensor?, stride: Int, padding: Int, groups: Int) throws(SluiceError) -> Tensor {
        // Output pixels × 2 × weight elements (each output channel sees Cin/groups·kh·kw inputs).
        var pixels = 0.0
        if x.shape.rank == 4, weight.shape.rank == 4, stride > 0 {
            let oh = (x.shape[2] + 2 * padding - weight.shape[2]) / stride + 1, ow = (x.shape[3] + 2 * padding - weight.shape[3]) / stride + 1
            pixels = Double(x.shape[0] * max(oh, 0) * max(ow, 0))
        }
        return try run("conv2d", flops: 2 * pixels * Double(weight.count), inputs: [x, weight]) { () throws(SluiceError) in
            try cpu.conv2d(x, weight: weight, bias: bias, stride: stride, padding: padding, groups: groups)
        }
    }

    public func groupNorm(_ x: Tensor, groups: Int, weight: Tensor?, bias: Tensor?, eps: Float) throws(SluiceError) -> Tensor {
        try run("groupNorm", flops: 8 * Double(x.count), inputs: [x]) { () throws(SluiceError) in try cpu.groupNorm(x, groups: groups, weight: weight, bias: bias, eps: eps) }
    }

    public func layerNorm(_ x: Tensor, weight: Tensor?, bias: Tensor?, eps: Float) throws(SluiceError) -> Tensor {
        try run("layerNorm", flops: 8 * Double(x.count), inputs: [x]) { () throws(SluiceError) in try cpu.layerNorm(x, weight: weight, bias: bias, eps: eps) }
    }

    public func rmsNorm(_ x: Tensor, weight: Tensor?, eps: Float) throws(SluiceError) -> Tensor {
        try run("rmsNorm", flops: 4 * Double(x.count), inputs: [x]) { () throws(SluiceError) in try cpu.rmsNorm(x, weight: weight, eps: eps) }
    }

    public func softmax(_ x: Tensor) throws(SluiceError) -> Tensor {
        try run("softmax", flops: 5 * Double(x.count), inputs: [x]) { () throws(SluiceError) in try cpu.softmax(x) }
    }

    public func silu(_ x: Tensor) throws(SluiceError) -> Tensor {
        try run("silu", flops: 4 * Double(x.count), inputs: [x]) { () throws(SluiceError) in try cpu.silu(x) }
    }

    public func gelu(_ x: Tensor, approximateTanh: Bool) throws(SluiceError) -> Tensor {
        try run("gelu", flops: 8 * Double(x.count), inputs: [x]) { () throws(SluiceError) in try cpu.gelu(x, approximateTanh: approximateTanh) }
    }

    public func binary(_ op: BinaryOp, _ a: Tensor, _ b: Tensor) throws(SluiceError) -> Tensor {
        try run("binary", flops: Double(max(a.count, b.count)), inputs: [a, b]) { () throws(SluiceError) in try cpu.binary(op, a, b) }
    }

    public func upsampleNearest2x(_ x: Tensor) throws(SluiceError) -> Tensor {
        try run("upsample", flops: 0, inputs: [x]) { () throws(SluiceError) in try cpu.upsampleNearest2x(x) }
    }

    public func concat(_ tensors: [Tensor], dim: Int) throws(SluiceError) -> Tensor {
        try run("concat", flops: 0, inputs: tensors) { () throws(SluiceError) in try cpu.concat(tensors, dim: dim) }
    }

    public func rotaryEmbedding(_ x: Tensor, cos: Tensor, sin: Tensor, seqDim: Int, layout: RotaryLayout) throws(SluiceError) -> Tensor {
        try run("rotary", flops: 3 * Double(x.count), inputs: [x, cos, sin]) { () throws(SluiceError) in
            try cpu.rotaryEmbedding(x, cos: cos, sin: sin, seqDim: seqDim, layout: layout)
        }
    }

    public func attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor?, scale: Float?) throws(SluiceError) -> Tensor {
        let lk = k.shape.rank == 4 ? Double(k.shape[2]) : 0
        return try run("attention", flops: 4 * Double(q.count) * lk, inputs: [q, k, v]) { () throws(SluiceError) in
            try cpu.attention(q: q, k: k, v: v, mask: mask, scale: scale)
        }
    }
}
