import SluiceBackends
import SluiceCore
import SluiceTestSupport
import SluiceWeights
import Testing

/// Every op against torch (float64, stored f32), from one test body on every backend: the CPU on
/// every kernel path this CPU supports (paths it lacks cannot execute here and are absent from the
/// arguments) with one and two threads so both the single-worker and the split code paths run, and
/// five (more than the cores CI has) so work is never lost when threads outnumber cores; the
/// simulated device; and Vulkan where a device is present (lavapipe in CI), where each test also
/// counts the kernel dispatches, proving every call ran on the device and none on the CPU fallback.
/// Tolerances are stated per test and hold on every backend.
struct Case: CustomTestStringConvertible, Sendable {
    enum Kind: Sendable { case cpu(KernelPath, Int), simulated, vulkan }
    let kind: Kind
    var testDescription: String {
        switch kind {
        case let .cpu(path, threads): "\(path.rawValue)×\(threads)"
        case .simulated: "simulated"
        case .vulkan: "vulkan"
        }
    }

    func backend() throws -> any Backend {
        switch kind {
        case let .cpu(path, threads): try CPUBackend(path: path, threads: threads)
        case .simulated: try SimulatedBackend(device: DeviceMemory(profile: .rtx4090))
        case .vulkan: try VulkanBackend(context: VulkanContext())
        }
    }

    /// On Vulkan: `body` dispatched exactly these kernels this many times (no call fell back to the CPU).
    func onDevice(_ be: any Backend, _ want: [VulkanContext.Kernel: Int], _ body: () throws -> Void) throws {
        guard let vk = be as? VulkanBackend else { return try body() }
        let before = Dictionary(uniqueKeysWithValues: VulkanContext.Kernel.allCases.map { ($0, vk.context.dispatchCount($0)) })
        try body()
        for k in VulkanContext.Kernel.allCases {
            let n = vk.context.dispatchCount(k) - before[k]!
            #expect(n == want[k] ?? 0, "\(k) dispatched \(n) times, expected \(want[k] ?? 0)")
        }
    }

    static let vulkanPresent = Vulkan.unavailableReason == nil && ((try? Vulkan.devices().count) ?? 0) > 0
    static let all: [Case] = KernelPath.supported.flatMap { p in [1, 2, 5].map { Case(kind: .cpu(p, $0)) } }
        + [Case(kind: .simulated)] + (vulkanPresent ? [Case(kind: .vulkan)] : [])
}

@Suite struct CPUOpsTests {
    let fx: SafetensorsFile
    init() throws { fx = try Fixtures.file("ops.safetensors") }

    func t(_ name: String) throws -> Tensor { try fx.tensor(name) }
    func check(_ got: Tensor, _ want: String, atol: Float, rtol: Float, _ label: String = "") throws {
        let ref = try t(want)
        #expect(got.shape == ref.shape, "\(want) shape")
        let c = compare(try got.toFloats(), try ref.toFloats(), atol: atol, rtol: rtol)
        #expect(c.ok, "\(want) \(label): \(c)")
    }

    // K = 53: f32 sums of 53 products of N(0,1) values (|out| ≲ 25) accumulate ≲ 53 ulp-sized
    // roundings, about 2e-6 relative; the stored-dtype weights are widened exactly, so the same bound holds.
    @Test(arguments: Case.all) func matmulWithEveryWeightStorage(c: Case) throws {
        let be = try c.backend()
        try c.onDevice(be, [.gemm: 7]) {
            for dt in ["f32", "f16", "bf16", "f8e4m3fn", "f8e5m2"] {
                try check(try be.matmul(t("matmul.a"), t("matmul.b.\(dt)"), transposeB: false), "matmul.out.\(dt)", atol: 2e-5, rtol: 1e-5, dt)
            }
            try check(try be.matmul(t("matmul.a"), t("matmul.bbatch"), transposeB: false), "matmul.out.batched", atol: 2e-5, rtol: 1e-5)
            // transposeB reads b as [N, K]
            let bT = try t("matmul.b.f32").permuted([1, 0]).contiguous()
            try check(try be.matmul(t("matmul.a"), bT, transposeB: true), "matmul.out.f32", atol: 2e-5, rtol: 1e-5, "transposed")
        }
    }

    // K up to 520 with bias: |out| ≲ 70, f32 accumulation error ≲ 520 · 6e-8 · 70 ≈ 2e-3 worst
    // case, typically far less; 2e-4 absolute + 1e-5 relative holds with margin on these inputs.
    @Test(arguments: Case.all) func linearAcrossCacheBlocks(c: Case) throws {
        let be = try c.backend()
        try c.onDevice(be, [.gemm: 3]) {
            try check(try be.linear(t("linear.x"), weight: t("linear.w"), bias: t("linear.bias")), "linear.out", atol: 2e-5, rtol: 1e-5)
            for tag in ["deep", "wide"] {
                try check(try be.linear(t("linear.\(tag).x"), weight: t("linear.\(tag).w"), bias: t("linear.\(tag).bias")),
                          "linear.\(tag).out", atol: 2e-4, rtol: 1e-5, tag)
            }
        }
    }

    // The same products with x given as two column blocks (FLUX's single blocks): each block against
    // its columns of the weight, summed — torch's result for the whole x, same tolerance.
    @Test(arguments: Case.all) func linearOfAConcatenation(c: Case) throws {
        let be = try c.backend()
        for tag in ["deep", "wide"] {
            let x = try t("linear.\(tag).x"), k = x.shape[-1], split = k / 3 + 1
            let parts = [try x.sliced(dim: x.shape.rank - 1, 0..<split).contiguous(), try x.sliced(dim: x.shape.rank - 1, split..<k).contiguous()]
            try check(try be.linear(concatenating: parts, weight: t("linear.\(tag).w"), bias: t("linear.\(tag).bias")),
                      "linear.\(tag).out", atol: 2e-4, rtol: 1e-5, tag)
        }
    }

    // K = Cin/g·kh·kw ≤ 54: same reasoning as matmul.
    @Test(arguments: Case.all) func conv2dGroupedStridedPadded(c: Case) throws {
        let be = try c.backend()
        try c.onDevice(be, [.conv2d: 3]) {
            let x = try t("conv.x")
            try check(try be.conv2d(x, weight: t("conv.g2s2p1.w"), bias: t("conv.g2s2p1.b"), stride: 2, padding: 1, groups: 2), "conv.g2s2p1.out", atol: 2e-5, rtol: 1e-5)
            try check(try be.conv2d(x, weight: t("conv.1x1.w"), bias: nil, stride: 1, padding: 0, groups: 1), "conv.1x1.out", atol: 2e-5, rtol: 1e-5)
            try check(try be.conv2d(x, weight: t("conv.3x3f16.w"), bias: nil, stride: 1, padding: 1, groups: 1), "conv.3x3f16.out", atol: 2e-5, rtol: 1e-5)
        }
    }

    // Normalised outputs are O(1) times the affine weight (|w| ≲ 3): statistics in f32 lanes folded
    // into double give ~1e-7 relative error; 1e-5 covers it.
    @Test(arguments: Case.all) func norms(c: Case) throws {
        let be = try c.backend()
        try c.onDevice(be, [.rows: 4]) {
            try check(try be.groupNorm(t("groupnorm.x"), groups: 4, weight: t("groupnorm.w"), bias: t("groupnorm.b"), eps: 1e-6), "groupnorm.out", atol: 1e-5, rtol: 1e-5)
            try check(try be.layerNorm(t("layernorm.x"), weight: t("layernorm.w"), bias: t("layernorm.b"), eps: 1e-5), "layernorm.out", atol: 1e-5, rtol: 1e-5)
            try check(try be.layerNorm(t("layernorm.x"), weight: nil, bias: nil, eps: 1e-6), "layernorm.out.noaffine", atol: 1e-5, rtol: 1e-5)
            try check(try be.rmsNorm(t("layernorm.x"), weight: t("rmsnorm.w"), eps: 1e-6), "rmsnorm.out", atol: 1e-5, rtol: 1e-5)
        }
    }

    // exp's polynomial has relative error < 2e-7; the vector erf (Abramowitz & Stegun 7.1.26) is
    // within 1.5e-7 absolute, so GELU(erf) within 0.5·|x|·1.5e-7 ≤ 1e-6 on |x| ≤ 12; outputs are
    // ≤ 1 (softmax) or ≤ 12 (activations).
    @Test(arguments: Case.all) func softmaxAndActivations(c: Case) throws {
        let be = try c.backend()
        try c.onDevice(be, [.rows: 1, .unary: 3]) {
            try check(try be.softmax(t("softmax.x")), "softmax.out", atol: 2e-6, rtol: 1e-5)
            let x = try t("act.x")
            try check(try be.silu(x), "act.silu", atol: 1e-5, rtol: 1e-5)
            try check(try be.gelu(x, approximateTanh: false), "act.gelu", atol: 1e-5, rtol: 1e-5)
            try check(try be.gelu(x, approximateTanh: true), "act.gelu_tanh", atol: 1e-5, rtol: 1e-5)
        }
    }

    // One f32 rounding per element against the f64 result: relative 6e-8; 1e-6 allows for it.
    // Upsample and concat move values: exact.
    @Test(arguments: Case.all) func elementwiseBroadcastUpsampleConcat(c: Case) throws {
        let be = try c.backend()
        try c.onDevice(be, [.binary: 4, .upsample: 1, .copy: 2]) {
            let a = try t("binary.a"), b = try t("binary.b")
            try check(try be.add(a, b), "binary.add", atol: 1e-6, rtol: 1e-6)
            try check(try be.sub(a, b), "binary.sub", atol: 1e-6, rtol: 1e-6)
            try check(try be.mul(a, b), "binary.mul", atol: 1e-6, rtol: 1e-6)
            try check(try be.div(a, b), "binary.div", atol: 1e-6, rtol: 1e-6)
            try check(try be.upsampleNearest2x(t("upsample.x")), "upsample.out", atol: 0, rtol: 0)
            try check(try be.concat([t("concat.a"), t("concat.b")], dim: 1), "concat.out", atol: 0, rtol: 0)
            #expect(throws: SluiceError.self) { try be.add(Tensor(zeros: [2, 3]), Tensor(zeros: [4])) }
        }
    }

    // Two products and a sum per element: ~1e-7 relative on values ≲ 10.
    @Test(arguments: Case.all) func rotaryEmbedding(c: Case) throws {
        let be = try c.backend()
        try c.onDevice(be, [.rotary: 2]) {
            let x = try t("rope.x"), cos = try t("rope.cos"), sin = try t("rope.sin")
            try check(try be.rotaryEmbedding(x, cos: cos, sin: sin, seqDim: 1, layout: .interleaved), "rope.interleaved", atol: 1e-5, rtol: 1e-5)
            try check(try be.rotaryEmbedding(x, cos: cos, sin: sin, seqDim: 1, layout: .halves), "rope.halves", atol: 1e-5, rtol: 1e-5)
        }
    }

    // Outputs are convex combinations of v (|v| ≲ 4); exp's 2e-7 error and f32 sums over ≤ 290 keys
    // give ≲ 1e-6; 2e-5 absolute leaves margin for the online-softmax rescaling.
    @Test(arguments: Case.all) func attentionTiledWithMasks(c: Case) throws {
        let be = try c.backend()
        try c.onDevice(be, [.attention: 5]) {
            let q = try t("attn.q"), k = try t("attn.k"), v = try t("attn.v")
            try check(try be.attention(q: q, k: k, v: v, mask: nil, scale: nil), "attn.out", atol: 2e-5, rtol: 1e-4)
            try check(try be.attention(q: q, k: k, v: v, mask: t("attn.mask.add"), scale: nil), "attn.out.mask.add", atol: 2e-5, rtol: 1e-4)
            try check(try be.attention(q: q, k: k, v: v, mask: t("attn.mask.bool"), scale: nil), "attn.out.mask.bool", atol: 2e-5, rtol: 1e-4)
            try check(try be.attention(q: t("attn128.q"), k: t("attn128.k"), v: t("attn128.v"), mask: nil, scale: 0.05), "attn128.out", atol: 2e-5, rtol: 1e-4)
            // A [B, L, H, D] tensor permuted to [B, H, L, D] is read in place (strided rows).
            let qBLHD = try q.permuted([0, 2, 1, 3]).contiguous().permuted([0, 2, 1, 3])
            try check(try be.attention(q: qBLHD, k: k, v: v, mask: nil, scale: nil), "attn.out", atol: 2e-5, rtol: 1e-4, "strided")
        }
    }

    @Test func badShapesAreErrorsNotCrashes() throws {
        let be = try CPUBackend()
        #expect(throws: SluiceError.self) { try be.matmul(Tensor(zeros: [2, 3]), Tensor(zeros: [4, 5]), transposeB: false) }
        #expect(throws: SluiceError.self) { try be.linear(Tensor(zeros: [2, 3]), weight: Tensor(zeros: [4, 5]), bias: nil) }
        #expect(throws: SluiceError.self) { try be.conv2d(Tensor(zeros: [1, 4, 5, 5]), weight: Tensor(zeros: [2, 3, 3, 3]), bias: nil, stride: 1, padding: 0, groups: 1) }
        #expect(throws: SluiceError.self) { try be.groupNorm(Tensor(zeros: [1, 6, 2]), groups: 4, weight: nil, bias: nil, eps: 1e-6) }
        #expect(throws: SluiceError.self) { try be.attention(q: Tensor(zeros: [1, 1, 4, 8]), k: Tensor(zeros: [1, 1, 5, 4]), v: Tensor(zeros: [1, 1, 5, 4]), mask: nil, scale: nil) }
        #expect(throws: SluiceError.self) { try CPUBackend(threads: 0) }
    }
}
