import SluiceCore

/// The Vulkan backend: every op of the `Backend` protocol has a kernel (Sources/CVulkan/shaders).
/// Operands that live in device buffers the memory manager filled (resident or streamed weights) are
/// bound in place; others are uploaded into per-op buffers — carved from the component's activation
/// reservation when the memory manager set one, so the budget stays a hard cap. Results stay on the
/// device as the next ops' inputs and come to the host only when host code reads them. An op falls back to the CPU backend only for what the kernels do not take:
/// non-f32 activations, attention heads wider than 128, an operand beyond the device's storage-buffer
/// range (linear layers split their rows to stay inside it), or shapes the CPU rejects with an error.
/// Tested for correctness on lavapipe; its speed on real GPUs has not been measured.
public struct VulkanBackend: Backend {
    public let context: VulkanContext
    public let cpu: CPUBackend
    /// The largest operand a kernel binds: the device's storage-buffer range (lavapipe: 128 MiB), or
    /// less to exercise the splitting paths in tests.
    public let range: Int
    /// Which GEMM kernel products use: `auto` takes the register-tiled one where both M and N are at
    /// least 64 (tests force each variant).
    public enum GemmVariant: Sendable { case auto, simple, tiled }
    public var gemmVariant = GemmVariant.auto

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

    /// A tensor as a kernel operand: in place when it is on the device (a weight the memory manager
    /// placed, or an earlier op's output) — a strided or unaligned view of one copied on the device
    /// first —, else uploaded.
    func input(_ t: Tensor) throws(SluiceError) -> VulkanContext.Binding {
        if let b = try context.residentBinding(t) {
            context.keepForOp(t.storage)
            return b
        }
        if t.dtype == .f32, !t.isContiguous || t.offset > 0, let view = try deviceView(t) {
            let out = try context.transient(bytes: t.count * 4)
            try copyView(view, count: t.count, into: out)
            return out
        }
        let b = try context.transient(bytes: t.byteCount)
        try context.upload(t, to: b)
        return b
    }

    /// An operand in f32: a weight the device holds in bf16/f16/fp8 is widened there (no host
    /// conversion, no upload); other storage types are converted on the host.
    func f32Input(_ t: Tensor) throws(SluiceError) -> VulkanContext.Binding {
        if t.dtype == .f32 { return try input(t) }
        if let code = Self.code(t.dtype), let raw = try context.residentBinding(t) {
            context.keepForOp(t.storage)
            let out = try context.transient(bytes: t.count * 4)
            try context.dispatch(.unary, bindings: [raw, out], push: [UInt32(t.count), 4, code], groups: Self.groups(t.count))
            return out
        }
        return try input(t.converted(to: .f32))
    }

    /// An op's output: it stays on the device, and comes to the host only when host code reads it.
    func read(_ b: VulkanContext.Binding, _ shape: Shape) throws(SluiceError) -> Tensor {
        context.adopt(b, shape: shape, counter: cpu.allocations)
    }

    /// A 1-D grid of `size`-wide groups covering n invocations (folded into y past 65,535 groups).
    static func groups(_ n: Int, size: Int = 256) -> (Int, Int, Int) {
        let g = (n + size - 1) / size
        return g <= 65535 ? (g, 1, 1) : (65535, (g + 65534) / 65535, 1)
    }
}
