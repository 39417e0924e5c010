import Foundation
import SluiceBackends
import SluiceCore

/// `sluice bench gemm`: Sluice's matmul (weights in any storage dtype, f32 accumulation) against
/// numpy's f32 `a @ b` on OpenBLAS, in the same run; with `compute: .bf16`, Sluice's AVX512-BF16 linear
/// (operands rounded to bf16) against torch's bf16 `a @ b`.
public struct GemmBench {
    public var size: Int
    public var threads: Int
    public var dtype: DType
    public var compute: DType
    public var rounds: Int
    public var repeats: Int

    public init(size: Int, threads: Int, dtype: DType, compute: DType = .f32, rounds: Int = 5, repeats: Int = 3) {
        self.size = size; self.threads = threads; self.dtype = dtype; self.compute = compute; self.rounds = rounds; self.repeats = repeats
    }

    public func run(progress: (String) -> Void = { _ in }) throws -> [String: Any] {
        let n = size
        let backend = try CPUBackend(threads: threads)
        var rng = BenchRandom(seed: 1)
        let a = Tensor(rng.floats(n * n), shape: [n, n])
        let b = try Tensor(rng.floats(n * n), shape: [n, n]).converted(to: dtype)
        if compute == .bf16 {
            guard KernelPath.hasAVX512BF16 else {
                throw SluiceError.invalidParameter(.compute, reason: "bf16 needs a CPU with AVX512-BF16; this one has none")
            }
            let bench = ComparisonBench(
                name: "gemm", threads: threads, rounds: rounds, repeats: repeats, flops: 2 * pow(Double(n), 3),
                referenceSetup: """
                n = \(n)
                torch.manual_seed(1)
                a = torch.randn(n, n).bfloat16(); b = torch.randn(n, n).bfloat16()
                def info(): return "torch " + torch.__version__ + " bf16 matmul, " + str(torch.get_num_threads()) + " threads"
                """,
                referenceCall: "a @ b", referenceModule: "torch")
            var result = try bench.run(ours: { _ = try backend.linearBF16(a, weight: b, bias: nil) }, progress: progress)
            result["size"] = n
            result["dtype"] = dtype.rawValue
            result["compute_dtype"] = "bf16"
            result["sluice_kernel"] = "avx512bf16"
            return result
        }
        let bench = ComparisonBench(
            name: "gemm", threads: threads, rounds: rounds, repeats: repeats, flops: 2 * pow(Double(n), 3),
            referenceSetup: """
            n = \(n)
            rng = np.random.default_rng(1)
            a = rng.standard_normal((n, n), dtype=np.float32); b = rng.standard_normal((n, n), dtype=np.float32)
            def info(): return blas_kernel() + " (numpy " + np.__version__ + ", f32)"
            """,
            referenceCall: "a @ b", referenceModule: "numpy")
        var result = try bench.run(ours: { _ = try backend.matmul(a, b, transposeB: false) }, progress: progress)
        result["size"] = n
        result["dtype"] = dtype.rawValue
        result["compute_dtype"] = "f32"
        result["sluice_kernel"] = backend.path.rawValue + (KernelPath.hasAVX512BF16 ? " (cpu has avx512bf16)" : "")
        result["reference_kernel"] = result["reference"]
        return result
    }
}
