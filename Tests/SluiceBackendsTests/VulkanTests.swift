import Foundation
import SluiceBackends
import SluiceCore
import SluiceTestSupport
import Testing

/// The Vulkan kernels against the CPU backend, on whatever Vulkan device is present (CI installs
/// Mesa's lavapipe: correctness only, never speed). Skipped, with the reason, where there is none.
@Suite(.enabled(if: Vulkan.unavailableReason == nil && ((try? Vulkan.devices().count) ?? 0) > 0,
                "no Vulkan device: \(Vulkan.unavailableReason ?? "none found")"))
struct VulkanKernelTests {
    static func upload(_ ctx: VulkanContext, _ t: Tensor) throws -> VulkanContext.Buffer {
        let b = try ctx.buffer(bytes: t.byteCount)
        try ctx.upload(t, to: b)
        return b
    }

    @Test func devicesAreListed() throws {
        let devices = try Vulkan.devices()
        #expect(!devices.isEmpty)
        for d in devices {
            #expect(!d.name.isEmpty && !d.heaps.isEmpty && d.queueFamilies.contains { $0.compute })
            #expect(d.heaps.allSatisfy { $0.budget > 0 && $0.budget <= $0.size })
        }
    }

    /// Elementwise ops with row broadcasting and SiLU: the same f32 arithmetic, so exact (SiLU's exp
    /// may differ by an ulp or two: 1e-6 relative).
    @Test func elementwiseMatchesCPU() throws {
        let ctx = try VulkanContext()
        let cpu = try CPUBackend()
        var rng = SplitMix(seed: 3)
        let a = Tensor((0..<(37 * 19)).map { _ in rng.uniform() * 2 }, shape: [37, 19])
        let b = Tensor((0..<19).map { _ in abs(rng.uniform()) + 0.5 }, shape: [1, 19])
        let ba = try Self.upload(ctx, a), bb = try Self.upload(ctx, b), out = try ctx.buffer(bytes: a.byteCount)
        for (code, op) in [(0, BinaryOp.add), (1, .sub), (2, .mul), (3, .div)] {
            try ctx.dispatch(.binary, [ba, bb, out], push: [UInt32(a.count), UInt32(b.count), UInt32(code)], groups: ((a.count + 255) / 256, 1, 1))
            let got = Tensor(zeros: a.shape)
            try ctx.download(out, into: got)
            #expect(try got.toFloats() == (try cpu.binary(op, a, b).toFloats()), "\(op)")
        }
        try ctx.dispatch(.silu, [ba, out], push: [UInt32(a.count)], groups: ((a.count + 255) / 256, 1, 1))
        let got = Tensor(zeros: a.shape)
        try ctx.download(out, into: got)
        let c = compare(try got.toFloats(), try cpu.silu(a).toFloats(), atol: 1e-6, rtol: 1e-6)
        #expect(c.ok, "\(c)")
    }

    /// A linear layer with f32 and bf16 weights (bf16 widened in the shader), odd sizes to exercise
    /// the tile edges. 2e-5 + 1e-5 relative: K = 53 products summed in another order.
    @Test(arguments: [DType.f32, .bf16])
    func linearMatchesCPU(storage: DType) throws {
        let ctx = try VulkanContext()
        let cpu = try CPUBackend()
        var rng = SplitMix(seed: 5)
        let (M, N, K) = (29, 45, 53)
        let x = Tensor((0..<(M * K)).map { _ in rng.uniform() }, shape: [M, K])
        let w = try Tensor((0..<(N * K)).map { _ in rng.uniform() }, shape: [N, K]).converted(to: storage)
        let bias = Tensor((0..<N).map { _ in rng.uniform() }, shape: [N])
        let bx = try Self.upload(ctx, x), bw = try Self.upload(ctx, w), bb = try Self.upload(ctx, bias)
        let out = try ctx.buffer(bytes: M * N * 4)
        try ctx.dispatch(.matmulTransposed, [bx, bw, bb, out], push: [UInt32(M), UInt32(N), UInt32(K), storage == .bf16 ? 1 : 0, 1],
                         groups: ((N + 15) / 16, (M + 15) / 16, 1))
        let got = Tensor(zeros: [M, N])
        try ctx.download(out, into: got)
        let c = compare(try got.toFloats(), try cpu.linear(x, weight: w, bias: bias).toFloats(), atol: 2e-5, rtol: 1e-5)
        #expect(c.ok, "\(storage): \(c)")
    }

    /// RMSNorm, LayerNorm (with and without affine) and softmax through the backend: 2e-6 abs + 2e-6 rel
    /// (the reductions sum in a tree, the CPU in vector lanes).
    @Test func rowOpsMatchCPU() throws {
        let vk = try VulkanBackend(context: VulkanContext())
        let cpu = try CPUBackend()
        var rng = SplitMix(seed: 9)
        let x = Tensor((0..<(23 * 300)).map { _ in rng.uniform() * 3 }, shape: [23, 300])
        let w = try Tensor((0..<300).map { _ in rng.uniform() + 1 }, shape: [300]).converted(to: .bf16)
        let b = Tensor((0..<300).map { _ in rng.uniform() }, shape: [300])
        let pairs: [(String, Tensor, Tensor)] = [
            ("rms", try vk.rmsNorm(x, weight: w, eps: 1e-5), try cpu.rmsNorm(x, weight: w, eps: 1e-5)),
            ("rms bare", try vk.rmsNorm(x, weight: nil, eps: 1e-6), try cpu.rmsNorm(x, weight: nil, eps: 1e-6)),
            ("layer", try vk.layerNorm(x, weight: w, bias: b, eps: 1e-6), try cpu.layerNorm(x, weight: w, bias: b, eps: 1e-6)),
            ("layer bare", try vk.layerNorm(x, weight: nil, bias: nil, eps: 1e-6), try cpu.layerNorm(x, weight: nil, bias: nil, eps: 1e-6)),
            ("softmax", try vk.softmax(x), try cpu.softmax(x)),
        ]
        for (name, got, want) in pairs {
            let c = compare(try got.toFloats(), try want.toFloats(), atol: 2e-6, rtol: 2e-6)
            #expect(c.ok, "\(name): \(c)")
        }
    }

    /// On a device with one queue family (lavapipe), copies go through the compute queue in order
    /// and stay correct; a transfer-only family would be used where it exists.
    @Test func copyQueueFallbackIsCorrect() throws {
        let ctx = try VulkanContext()
        #expect(ctx.hasTransferQueue == ctx.info.hasTransferQueue)
        let t = Tensor((0..<5000).map { Float($0) }, shape: [5000])
        let b = try Self.upload(ctx, t)
        let back = Tensor(zeros: [5000])
        try ctx.download(b, into: back)
        #expect(try back.toFloats() == (try t.toFloats()))
    }

    /// Asking for more memory than the device has is an error with the numbers, not a crash.
    @Test func hugeAllocationIsAnError() throws {
        let ctx = try VulkanContext()
        let heap = ctx.info.heaps.map(\.size).max() ?? 0
        #expect(throws: SluiceError.self) { _ = try ctx.buffer(bytes: heap * 4 + (1 << 40)) }
    }
}
