import Foundation
import SluiceBackends
import SluiceCore

/// `sluice bench gemm`: Sluice's matmul against numpy's (OpenBLAS) in the same run.
public struct GemmBench {
    public var size: Int
    public var threads: Int
    public var dtype: DType
    public var rounds: Int
    public var repeats: Int

    public init(size: Int, threads: Int, dtype: DType, rounds: Int = 3, repeats: Int = 3) {
        self.size = size; self.threads = threads; self.dtype = dtype; self.rounds = rounds; self.repeats = repeats
    }

    public func run(progress: (String) -> Void = { _ in }) throws -> [String: Any] {
        let n = size
        let backend = try CPUBackend(threads: threads)
        var rng = BenchRandom(seed: 1)
        let a = Tensor(rng.floats(n * n), shape: [n, n])
        let b = try Tensor(rng.floats(n * n), shape: [n, n]).converted(to: dtype)
        let flops = 2.0 * Double(n) * Double(n) * Double(n)
        _ = try backend.matmul(a, b, transposeB: false)  // warm-up: page in, spin up threads
        var ours = [Double](), theirs = [Double]()
        var referenceKernel = "unavailable", note: String?
        let script = """
        import json, time
        try:
            import numpy as np
        except ImportError:
            print(json.dumps({"unavailable": "numpy is not installed"})); raise SystemExit
        \(ReferenceRunner.blasKernelProbe)
        n = \(n)
        rng = np.random.default_rng(1)
        a = rng.standard_normal((n, n), dtype=np.float32); b = rng.standard_normal((n, n), dtype=np.float32)
        a @ b
        ts = []
        for _ in range(\(repeats)):
            t = time.perf_counter(); a @ b; ts.append(time.perf_counter() - t)
        print(json.dumps({"seconds": ts, "kernel": blas_kernel(), "numpy": np.__version__}))
        """
        for round in 0..<rounds {
            for _ in 0..<repeats {
                ours.append(try Stopwatch.seconds { _ = try backend.matmul(a, b, transposeB: false) })
            }
            switch ReferenceRunner().run(script: script, threads: threads) {
            case .ok(let json):
                theirs += (json["seconds"] as? [Double]) ?? []
                referenceKernel = "\(json["kernel"] ?? "unknown") (numpy \(json["numpy"] ?? "?"))"
            case .unavailable(let why):
                note = "reference unavailable: \(why)"
            }
            progress("round \(round + 1)/\(rounds): sluice \(String(format: "%.1f", flops / median(ours) / 1e9)) GFLOP/s" +
                     (theirs.isEmpty ? "" : ", numpy \(String(format: "%.1f", flops / median(theirs) / 1e9)) GFLOP/s"))
        }
        let sluiceGF = flops / median(ours) / 1e9
        let refGF: Double? = theirs.isEmpty ? nil : flops / median(theirs) / 1e9
        var result: [String: Any] = [
            "benchmark": "gemm", "size": n, "threads": threads, "dtype": dtype.rawValue,
            "sluice_gflops": sluiceGF, "sluice_kernel": backend.path.rawValue,
            "sluice_seconds": ours, "reference_seconds": theirs,
            "reference_gflops": refGF.map { $0 as Any } ?? NSNull(),
            "ratio": refGF.map { sluiceGF / $0 as Any } ?? NSNull(),
            "reference_kernel": referenceKernel,
            "method": "median of \(rounds)×\(repeats) runs each, interleaved by round; reference is numpy f32 a @ b",
        ]
        if let note { result["note"] = note }
        return result
    }
}
