import Foundation
import SluiceBench
import SluiceBackends
import SluiceCore
let n = Int(CommandLine.arguments[1])!
let t = Int(CommandLine.arguments[2])!
let be = try CPUBackend(threads: t)
var rng = BenchRandom(seed: 1)
let a = Tensor(rng.floats(n * n), shape: [n, n])
let b = Tensor(rng.floats(n * n), shape: [n, n])
for _ in 0..<5 { let s = try Stopwatch.seconds { _ = try be.matmul(a, b, transposeB: false) }; print(2.0*Double(n*n*n)/s/1e9) }
import CKernels
let c = Tensor(zeros: [n, n])
let ws = UnsafeMutablePointer<Float>.allocate(capacity: Int(sk_gemm_workspace_floats(1)) + 64)
for _ in 0..<5 { let s = Stopwatch.seconds { sk_gemm(1, 0, Int64(n), 0, Int64(n), Int64(n), a.f32, Int64(n), b.rawPointer, 0, Int64(n), 0, c.f32, Int64(n), nil, 0, ws) }; print("direct", 2.0*Double(n*n*n)/s/1e9) }
