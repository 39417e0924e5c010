import CKernels
import Dispatch
import SluiceCore

/// The CPU backend: CKernels' SIMD paths, threaded across cores from Swift.
public struct CPUBackend: Backend {
    public let path: KernelPath
    public let threads: Int
    /// What linear layers and convolutions compute in: f32, or bf16 (AVX512-BF16; operands rounded to
    /// bf16 at the GEMM's input, sums in f32, as torch's bf16 matmul). Attention and norms stay f32.
    public let compute: DType
    /// Counts the activations this backend allocates: every op's output, live until it is dropped
    /// (what a device backend would hold in device memory too).
    public let allocations: AllocationCounter
    /// Counts the CPU kernels' own workspace apart: packing panels and attention tiles, pooled and
    /// reused across calls (a device backend has none; the planner's activation estimates do not
    /// cover it).
    public let scratchAllocations: AllocationCounter
    let scratch: ScratchPool

    public var name: String { "cpu(\(path.rawValue), \(threads) threads\(compute == .f32 ? "" : ", \(compute.rawValue) compute"))" }

    /// `threads` defaults to every core; `path` to `SLUICE_KERNELS` or the best the CPU supports.
    public init(path: KernelPath? = nil, threads: Int? = nil, allocations: AllocationCounter = AllocationCounter(),
                scratchAllocations: AllocationCounter = AllocationCounter(), compute: DType = .f32) throws(SluiceError) {
        guard compute == .f32 || compute == .bf16 else { throw .invalidParameter(.compute, reason: "\(compute.rawValue): must be f32 or bf16") }
        if compute == .bf16 && !KernelPath.hasAVX512BF16 {
            throw .invalidParameter(.compute, reason: "bf16 needs a CPU with AVX512-BF16 (Zen 4 and later, Cooper Lake and Sapphire Rapids Xeons); this one has none — use f32")
        }
        self.compute = compute
        let chosen: KernelPath
        if let path { chosen = path } else { chosen = try KernelPath.fromEnvironment() }
        guard KernelPath.supported.contains(chosen) else {
            throw .invalidArgument(name: "kernel path", reason: "this CPU cannot run \(chosen.rawValue)")
        }
        if let threads, threads < 1 { throw .invalidArgument(name: "threads", reason: "must be at least 1, got \(threads)") }
        self.path = chosen
        self.threads = threads ?? CPUBackend.coreCount
        self.allocations = allocations
        self.scratchAllocations = scratchAllocations
        scratch = ScratchPool(counter: scratchAllocations)
    }

    public static var coreCount: Int { max(1, sysconf(Int32(_SC_NPROCESSORS_ONLN))) }

    var isa: Int32 { path.isa }

    /// A new f32 tensor that the op overwrites entirely (not zeroed), counted.
    func output(_ shape: Shape) -> Tensor { Tensor(uninitialized: shape, dtype: .f32, counter: allocations) }

    /// Runs `body` with `count` scratch areas of `floats` floats each (the i-th at
    /// `base + i * (floats + 16)`), reused across calls.
    func withWorkspace<R>(floats: Int, count: Int, _ body: (UnsafeMutablePointer<Float>) throws -> R) rethrows -> R {
        try scratch.withScratch(floats: (floats + 16) * count, body)
    }

    /// Runs `body(chunk, worker)` for chunks 0..<chunks on up to `threads` workers. Each worker
    /// takes chunks in a strided order, so `worker` indexes per-thread scratch safely.
    func parallel(chunks: Int, _ body: (Int, Int) -> Void) {
        let workers = min(threads, chunks, WorkerPool.shared.capacity)
        if workers > 1 {
            let ran = WorkerPool.shared.run(width: workers) { w in
                var c = w
                while c < chunks {
                    body(c, w)
                    c += workers
                }
            }
            if ran { return }
        }
        for c in 0..<chunks { body(c, 0) }
    }

    /// Input as a contiguous f32 tensor (widened or copied only when needed).
    func f32(_ t: Tensor) throws(SluiceError) -> Tensor {
        if t.dtype == .f32 { return t.contiguous() }
        return try t.converted(to: .f32)
    }
}

/// Carries a non-Sendable closure into concurrentPerform; each use is confined to disjoint data.
struct UnsafeSendable<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}

#if canImport(Glibc)
import Glibc
#endif
