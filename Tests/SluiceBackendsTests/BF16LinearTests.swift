import Foundation
import SluiceBackends
import SluiceCore
import SluiceTestSupport
import Testing

/// The AVX512-BF16 linear (issue 16's bf16 compute, not yet chosen by a pipeline) against an
/// independent reference: the same products in f64 from operands rounded to bf16 by Sluice's exact
/// conversion (torch's rounding, tested in DTypeTests). A product of two bf16 values is exact in f32,
/// so the only differences are the order of the f32 sums: K · 2⁻²⁴ · Σ|terms| bounds them; here
/// 1e-5 · (1 + Σ|terms|) per element holds with margin. Shapes cross every block edge (12 × 32 tiles,
/// odd K, K past the 512-step block, rows past the 240-row band).
@Suite(.enabled(if: KernelPath.hasAVX512BF16, "the CPU lacks AVX512-BF16"))
struct BF16LinearTests {
    static func rounded(_ t: Tensor) throws -> [Double] {
        try t.converted(to: .bf16).converted(to: .f32).toFloats().map(Double.init)
    }

    @Test(arguments: [(1, 1, 1), (13, 33, 7), (250, 70, 1031), (37, 96, 512), (5, 3, 2)])
    func matchesAnF64ReferenceOfTheRoundedOperands(m: Int, n: Int, k: Int) throws {
        var rng = SystemRandomNumberGenerator()
        func random(_ count: Int) -> [Float] { (0..<count).map { _ in Float.random(in: -2...2, using: &rng) } }
        let x = Tensor(random(m * k), shape: [m, k])
        for storage in [DType.bf16, .f32, .f8e4m3fn] {
            let w = try Tensor(random(n * k), shape: [n, k]).converted(to: storage)
            let bias = Tensor(random(n), shape: [n])
            let out = try #require(try CPUBackend(threads: 2).linearBF16(x, weight: w, bias: bias)).toFloats()
            let xr = try Self.rounded(x), wr = try Self.rounded(w.converted(to: .f32)), b = try bias.toFloats()
            var worst = 0.0
            for i in 0..<m {
                for j in 0..<n {
                    var sum = 0.0, magnitude = 0.0
                    for p in 0..<k { sum += xr[i * k + p] * wr[j * k + p]; magnitude += abs(xr[i * k + p] * wr[j * k + p]) }
                    let want = sum + Double(b[j])
                    worst = max(worst, abs(Double(out[i * n + j]) - want) / (1 + magnitude))
                }
            }
            #expect(worst <= 1e-5, "\(m)×\(n)×\(k), \(storage): worst scaled error \(worst)")
        }
    }

    /// Convolutions with bf16 compute: the f32 convolution of the operands rounded to bf16 (products of
    /// bf16 values are exact in f32, so only the order of f32 sums differs: 1e-5 · (1 + |out|) holds
    /// for these K ≤ 90 sums of terms ≤ 4). Covers im2col (3×3, padded, strided, grouped, odd K) and
    /// the direct 1×1 path, pixels past a 32-column sliver, and channel counts past the 12-row tile.
    @Test(arguments: [(3, 26, 3, 1, 1, 1), (10, 16, 3, 2, 1, 2), (6, 40, 1, 1, 0, 1), (4, 14, 3, 1, 0, 1)])
    func convolutionIsTheF32ConvolutionOfRoundedOperands(cin: Int, cout: Int, kernel: Int, stride: Int, padding: Int, groups: Int) throws {
        var rng = SystemRandomNumberGenerator()
        func random(_ count: Int) -> [Float] { (0..<count).map { _ in Float.random(in: -2...2, using: &rng) } }
        let x = Tensor(random(2 * cin * 11 * 13), shape: [2, cin, 11, 13])
        let w = try Tensor(random(cout * cin / groups * kernel * kernel), shape: [cout, cin / groups, kernel, kernel]).converted(to: .bf16)
        let bias = Tensor(random(cout), shape: [cout])
        let got = try CPUBackend(threads: 2, compute: .bf16).conv2d(x, weight: w, bias: bias, stride: stride, padding: padding, groups: groups).toFloats()
        let xr = try x.converted(to: .bf16).converted(to: .f32)
        let want = try CPUBackend(threads: 2).conv2d(xr, weight: w, bias: bias, stride: stride, padding: padding, groups: groups).toFloats()
        let unrounded = try CPUBackend(threads: 2).conv2d(x, weight: w, bias: bias, stride: stride, padding: padding, groups: groups).toFloats()
        #expect(got.count == want.count)
        var worst = 0.0
        for (g, r) in zip(got, want) { worst = max(worst, abs(Double(g) - Double(r)) / (1 + abs(Double(r)))) }
        #expect(worst <= 1e-5, "worst scaled error \(worst)")
        #expect(got != unrounded, "the activations were not rounded to bf16")
    }

    /// Rounding to bf16 shows: the result is not the f32 linear's.
    @Test func differsFromTheF32Linear() throws {
        let x = Tensor((0..<64).map { Float($0) * 0.0123 + 0.001 }, shape: [2, 32]), w = Tensor((0..<96).map { Float($0) * -0.0071 + 0.3 }, shape: [3, 32])
        let be = try CPUBackend()
        let a = try #require(try be.linearBF16(x, weight: w, bias: nil)).toFloats(), b = try be.linear(x, weight: w, bias: nil).toFloats()
        #expect(a != b)
        #expect(zip(a, b).allSatisfy { abs($0 - $1) <= 0.02 * max(1, abs($1)) })
    }
}
