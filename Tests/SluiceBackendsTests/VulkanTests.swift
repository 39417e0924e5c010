import Foundation
import SluiceBackends
import SluiceCore
import SluiceTestSupport
import Testing

/// In CI a Vulkan device must be present (.ci/run installs lavapipe): every Vulkan suite would
/// otherwise skip in silence.
@Test func vulkanDeviceIsPresentInCI() {
    if Fixtures.inCI {
        #expect(Vulkan.unavailableReason == nil, "CI=true but Vulkan is unavailable: \(Vulkan.unavailableReason ?? "")")
        #expect(((try? Vulkan.devices().count) ?? 0) > 0, "CI=true but no Vulkan device was found")
    }
}

/// Which memory path a device takes: discrete GPUs never map their memory (reads through the PCIe BAR
/// are uncached); unified devices do; the environment can force either.
@Test func memoryPathFollowsTheDeviceType() {
    func device(_ type: String) -> String { type }
    #expect(VulkanContext.memoryPath(forType: device("discrete GPU"), environment: [:]) == .discrete)
    #expect(VulkanContext.memoryPath(forType: device("integrated GPU"), environment: [:]) == .unified)
    #expect(VulkanContext.memoryPath(forType: device("CPU"), environment: [:]) == .unified)
    #expect(VulkanContext.memoryPath(forType: device("CPU"), environment: ["SLUICE_VULKAN_MEMORY": "discrete"]) == .discrete)
    #expect(VulkanContext.memoryPath(forType: device("discrete GPU"), environment: ["SLUICE_VULKAN_MEMORY": "unified"]) == .unified)
}

/// The Vulkan kernels against the CPU backend, on whatever Vulkan device is present (CI installs
/// Mesa's lavapipe: correctness only, never speed). Skipped, with the reason, where there is none.
@Suite(.enabled(if: Vulkan.unavailableReason == nil && ((try? Vulkan.devices().count) ?? 0) > 0,
                "no Vulkan device: \(Vulkan.unavailableReason ?? "none found")"))
struct VulkanKernelTests {
    @Test func devicesAreListed() throws {
        let devices = try Vulkan.devices()
        #expect(!devices.isEmpty)
        for d in devices {
            #expect(!d.name.isEmpty && !d.heaps.isEmpty && d.queueFamilies.contains { $0.compute })
            #expect(d.heaps.allSatisfy { $0.budget > 0 && $0.budget <= $0.size })
        }
    }

    /// Outputs stay on the device: a permuted view of one is made contiguous there (no readback),
    /// exactly; host code reaching an output brings it over; a host write to it is uploaded before the
    /// next kernel reads it.
    @Test func outputsStayOnTheDevice() throws {
        let ctx = try VulkanContext()
        let vk = try VulkanBackend(context: ctx)
        var rng = SplitMix(seed: 9)
        let x = Tensor((0..<(2 * 3 * 5 * 4)).map { _ in rng.uniform() }, shape: [2, 3, 5, 4])
        let y = try vk.add(x, Tensor([0], shape: [1]))                  // on the device now
        for order in [[0, 2, 1, 3], [3, 1, 0, 2], [1, 0, 2, 3]] {
            let before = ctx.counters
            let c = try vk.contiguous(y.permuted(order))
            #expect((ctx.counters - before).bytesOut == 0, "the copy read something back")
            let want = try x.permuted(order).contiguous().toFloats()
            #expect(try c.toFloats() == want, "\(order)")
        }
        // A head repeated (stride 0, as grouped-query attention shares key/value heads).
        let repeated = Tensor(storage: y.storage, dtype: .f32, shape: [2, 3, 2, 20], strides: [60, 20, 0, 1], offset: 0)
        let before = ctx.counters
        let r = try vk.contiguous(repeated)
        #expect((ctx.counters - before).bytesOut == 0)
        #expect(try r.toFloats() == (try Tensor(storage: x.storage, dtype: .f32, shape: [2, 3, 2, 20], strides: [60, 20, 0, 1], offset: 0).contiguous().toFloats()))
        let sliced = try vk.contiguous(y.sliced(dim: 2, 1..<4))
        #expect(try sliced.toFloats() == x.sliced(dim: 2, 1..<4).contiguous().toFloats())
        // A host write after a host read is what the next kernel sees.
        let z = try vk.add(x, Tensor([1], shape: [1]))
        z.f32[0] = 100
        let w = try vk.add(z, Tensor([0], shape: [1]))
        #expect(try w.toFloats()[0] == 100 && w.toFloats()[1] == x.toFloats()[1] + 1)
    }

    /// Both GEMM kernels — the 16 × 16 one and the register-tiled 64 × 64 one — against the CPU for
    /// linear layers and (batched, shared, transposed) products, shapes off the tile sizes, every weight
    /// storage type. Each sums its dot products in its own order in f32: within 2e-5 + 1e-5·|x|.
    @Test(arguments: [VulkanBackend.GemmVariant.simple, .tiled]) func gemmVariantsMatchTheCPU(variant: VulkanBackend.GemmVariant) throws {
        let ctx = try VulkanContext()
        var vk = try VulkanBackend(context: ctx)
        vk.gemmVariant = variant
        let cpu = try CPUBackend()
        var rng = SplitMix(seed: 11)
        func rand(_ shape: [Int]) -> Tensor { Tensor((0..<shape.reduce(1, *)).map { _ in rng.uniform() * 2 - 1 }, shape: Shape(shape)) }
        let kernel: VulkanContext.Kernel = variant == .tiled ? .gemmTiled : .gemm
        let before = ctx.dispatchCount(kernel)
        for dtype in [DType.f32, .bf16, .f16, .f8e4m3fn, .f8e5m2] {
            for (M, N, K) in [(70, 130, 37), (64, 64, 16), (1, 200, 33), (129, 65, 70)] {
                let x = rand([M, K]), w = try rand([N, K]).converted(to: dtype), bias = rand([N])
                let c = compare(try vk.linear(x, weight: w, bias: bias).toFloats(), try cpu.linear(x, weight: w, bias: bias).toFloats(), atol: 2e-5, rtol: 1e-5)
                #expect(c.ok, "\(variant) \(dtype) linear \(M)×\(N)×\(K): \(c)")
            }
        }
        for transposeB in [false, true] {
            let a = rand([3, 65, 20])
            for b in [rand(transposeB ? [3, 70, 20] : [3, 20, 70]), rand(transposeB ? [70, 20] : [20, 70])] {
                let c = compare(try vk.matmul(a, b, transposeB: transposeB).toFloats(), try cpu.matmul(a, b, transposeB: transposeB).toFloats(),
                                atol: 2e-5, rtol: 1e-5)
                #expect(c.ok, "\(variant) matmul \(a.shape) · \(b.shape) transposeB \(transposeB): \(c)")
            }
        }
        #expect(ctx.dispatchCount(kernel) - before == 24, "every product ran on the \(variant) kernel")
    }

    /// On the discrete path weights have no host copy until host code reads one (a CPU fallback): then
    /// the buffer comes back from the device once, and again only after another copy into it.
    @Test func hostMirrorsOfUnmappedWeightsFillOnlyWhenRead() throws {
        let ctx = try VulkanContext(forceUnmapped: true)
        let memory = VulkanMemory(context: ctx)
        var rng = SplitMix(seed: 13)
        let first = Tensor((0..<256).map { _ in rng.uniform() }, shape: [256]), second = Tensor((0..<256).map { _ in rng.uniform() }, shape: [256])
        let a = try memory.allocate(bytes: first.byteCount, label: "weights")
        defer { memory.free(a.token) }
        let view = Tensor(storage: a.storage, dtype: .f32, shape: [256])
        for (round, t) in [first, second].enumerated() {
            let before = ctx.counters
            try memory.wait(try memory.copy([t], into: a.token, at: 0, after: 0))
            #expect((ctx.counters - before).bytesOut == 0, "round \(round): nothing comes back until read")
            #expect(try view.toFloats() == t.toFloats(), "round \(round)")
            #expect((ctx.counters - before).bytesOut == t.byteCount, "round \(round): read back once")
            _ = try view.toFloats()
            #expect((ctx.counters - before).bytesOut == t.byteCount, "round \(round): and only once")
        }
    }

    /// The small kernels the sampler and the adaLN modulation run on: tanh (GLSL's, clamped to ±9:
    /// within 1e-6), a + s·b (no fused multiply-add: exactly the CPU's), the fused SwiGLU middle and
    /// norm + residual, and a weight in bf16/f16/fp8 widened on the device as an operand (exact: the
    /// same bits the CPU's conversion gives).
    @Test func samplerAndModulationKernelsMatchTheCPU() throws {
        let ctx = try VulkanContext()
        let vk = try VulkanBackend(context: ctx)
        let cpu = try CPUBackend()
        var rng = SplitMix(seed: 12)
        let x = Tensor((0..<1000).map { _ in (rng.uniform() * 2 - 1) * 12 }, shape: [10, 100])
        let y = Tensor((0..<1000).map { _ in rng.uniform() * 2 - 1 }, shape: [10, 100])
        let t = compare(try vk.tanh(x).toFloats(), try cpu.tanh(x).toFloats(), atol: 1e-6, rtol: 0)
        #expect(t.ok, "\(t)")
        #expect(try vk.axpy(x, y, scale: -0.37).toFloats() == (try cpu.axpy(x, y, scale: -0.37).toFloats()))
        // SwiGLU's middle in one pass: the same operations as SiLU then a product on the device (exact),
        // within 1e-6 of the CPU's (the device's exp).
        let fused = try vk.siluGated(x, y).toFloats()
        #expect(fused == (try vk.mul(vk.silu(x), y).toFloats()))
        let f = compare(fused, try cpu.siluGated(x, y).toFloats(), atol: 1e-6, rtol: 1e-6)
        #expect(f.ok, "\(f)")
        // A norm with its residual add in the norm's pass: exactly the two-pass result on the device,
        // within 1e-5 of the CPU's (the reduction's order).
        let nw = Tensor((0..<100).map { _ in rng.uniform() }, shape: [100])
        let normed = try vk.rmsNorm(x, weight: nw, eps: 1e-6, adding: y).toFloats()
        #expect(normed == (try vk.add(y, vk.rmsNorm(x, weight: nw, eps: 1e-6)).toFloats()))
        let n = compare(normed, try cpu.rmsNorm(x, weight: nw, eps: 1e-6, adding: y).toFloats(), atol: 1e-5, rtol: 1e-5)
        #expect(n.ok, "\(n)")
        // A weight the device holds: placed by the memory manager's Vulkan memory (mapped or staged).
        let memory = VulkanMemory(context: ctx)
        for dtype in [DType.bf16, .f16, .f8e4m3fn, .f8e5m2] {
            let token = try Tensor((0..<100).map { _ in rng.uniform() * 2 - 1 }, shape: [1, 100]).converted(to: dtype)
            let a = try memory.allocate(bytes: token.byteCount, label: "pad token")
            defer { memory.free(a.token) }
            try memory.wait(try memory.copy([token], into: a.token, at: 0, after: 0))
            let placed = Tensor(storage: a.storage, dtype: dtype, shape: [1, 100])
            let widened0 = ctx.dispatchCount(.unary)
            let got = try vk.add(placed, Tensor([Float](repeating: 0, count: 3), shape: [3, 1]))
            #expect(ctx.dispatchCount(.unary) - widened0 == 1, "\(dtype) widened on the device")
            #expect(try got.toFloats() == (try cpu.add(token, Tensor([Float](repeating: 0, count: 3), shape: [3, 1])).toFloats()), "\(dtype)")
        }
    }

    /// A linear layer whose rows exceed the binding limit is split into row blocks, one dispatch each,
    /// and equals the unsplit result (each output row is computed the same way: exact).
    @Test func linearSplitsRowsPastTheBindingRange() throws {
        let ctx = try VulkanContext()
        let whole = try VulkanBackend(context: ctx)
        let split = try VulkanBackend(context: ctx, maxBindingBytes: 8192)
        var rng = SplitMix(seed: 5)
        let (M, N, K) = (300, 45, 53)
        let x = Tensor((0..<(M * K)).map { _ in rng.uniform() }, shape: [3, 100, K])
        let w = try Tensor((0..<(N * K)).map { _ in rng.uniform() }, shape: [N, K]).converted(to: .bf16)
        let bias = Tensor((0..<N).map { _ in rng.uniform() }, shape: [N])
        let before = ctx.dispatchCount(.gemm)
        let got = try split.linear(x, weight: w, bias: bias)
        // 8192 bytes hold 8192 / (53 · 4) = 38 rows of x: ⌈300 / 38⌉ = 8 dispatches.
        #expect(ctx.dispatchCount(.gemm) - before == 8)
        #expect(got.shape == [3, 100, N])
        #expect(try got.toFloats() == (try whole.linear(x, weight: w, bias: bias).toFloats()))
        let c = compare(try got.toFloats(), try CPUBackend().linear(x, weight: w, bias: bias).toFloats(), atol: 2e-5, rtol: 1e-5)
        #expect(c.ok, "\(c)")
    }

    /// Element-wise ops on operands larger than a binding run in slices, one dispatch each, with the
    /// unsliced results (the same arithmetic per element: exact).
    @Test func elementwiseSlicesPastTheBindingRange() throws {
        let ctx = try VulkanContext()
        let whole = try VulkanBackend(context: ctx)
        let sliced = try VulkanBackend(context: ctx, maxBindingBytes: 4096)
        var rng = SplitMix(seed: 8)
        let a = Tensor((0..<10_000).map { _ in rng.uniform() * 4 }, shape: [100, 100])
        let b = Tensor((0..<10_000).map { _ in rng.uniform() * 4 }, shape: [100, 100])
        let (u0, b0) = (ctx.dispatchCount(.unary), ctx.dispatchCount(.binary))
        let s = try sliced.silu(a), g = try sliced.gelu(a, approximateTanh: false), p = try sliced.mul(a, b)
        // 4096 bytes: 1024 elements a slice, ⌈10000 / 1024⌉ = 10 dispatches per op.
        #expect(ctx.dispatchCount(.unary) - u0 == 20 && ctx.dispatchCount(.binary) - b0 == 10)
        #expect(try s.toFloats() == (try whole.silu(a).toFloats()))
        #expect(try g.toFloats() == (try whole.gelu(a, approximateTanh: false).toFloats()))
        #expect(try p.toFloats() == (try whole.mul(a, b).toFloats()))
        #expect(p.shape == [100, 100])
    }

    /// Weights copied through the copy queue's staging ring (40 MB: ten 4 MiB slots' worth, so slots
    /// are reused after their copies complete) land intact, and a tensor in that registered buffer is
    /// bound in place by the backend (no upload) with the result the CPU gives. On lavapipe (one queue
    /// family) this is the ordered-submission fallback on the compute queue.
    @Test func copyQueueAndResidentBindingAreCorrect() throws {
        let ctx = try VulkanContext()
        #expect(ctx.hasTransferQueue == ctx.info.hasTransferQueue)
        let n = 10_000_000
        let big = Tensor((0..<n).map { Float($0 % 65_521) }, shape: [n])
        let buffer = try ctx.buffer(bytes: big.byteCount + 4096)
        let v = try ctx.copyAsync(from: big.rawPointer, bytes: big.byteCount, to: buffer, offset: 4096)
        try ctx.copyWait(v)
        let back = Tensor(zeros: [n])
        try ctx.download(VulkanContext.Binding(buffer, offset: 4096, bytes: big.byteCount), into: back)
        #expect(try back.toFloats() == (try big.toFloats()))

        // A bf16 weight placed at offset 0 of a registered buffer, found through its host mirror.
        var rng = SplitMix(seed: 11)
        let w = try Tensor((0..<(45 * 53)).map { _ in rng.uniform() }, shape: [45, 53]).converted(to: .bf16)
        let wb = try ctx.buffer(bytes: w.byteCount)
        try ctx.copyWait(try ctx.copyAsync(from: w.rawPointer, bytes: w.byteCount, to: wb, offset: 0))
        // Its mapping where the memory is host-visible (lavapipe), else a host shadow of it.
        let mirror: HostStorage
        if let host = wb.mapped {
            mirror = HostStorage(external: host, byteCount: w.byteCount, owner: wb)
        } else {
            mirror = HostStorage(byteCount: w.byteCount)
            mirror.baseAddress.copyMemory(from: w.rawPointer, byteCount: w.byteCount)
        }
        ctx.register(wb, host: mirror.baseAddress, bytes: w.byteCount)
        defer { ctx.unregister(wb) }
        let view = Tensor(storage: mirror, dtype: .bf16, shape: [45, 53])
        #expect(try ctx.residentBinding(view)?.buffer === wb)
        let x = Tensor((0..<(29 * 53)).map { _ in rng.uniform() }, shape: [29, 53])
        let got = try VulkanBackend(context: ctx).linear(x, weight: view, bias: nil)
        let c = compare(try got.toFloats(), try CPUBackend().linear(x, weight: w, bias: nil).toFloats(), atol: 2e-5, rtol: 1e-5)
        #expect(c.ok, "\(c)")
    }

    /// Bindings the device cannot take are errors naming the binding, not crashes.
    @Test func badBindingsAreErrors() throws {
        let ctx = try VulkanContext()
        let b = try ctx.buffer(bytes: 4096)
        #expect(throws: SluiceError.self) {
            try ctx.dispatch(.unary, bindings: [VulkanContext.Binding(b, offset: 8192, bytes: 16), VulkanContext.Binding(b)], push: [4, 0], groups: (1, 1, 1))
        }
        #expect(throws: SluiceError.self) {
            try ctx.dispatch(.unary, bindings: [VulkanContext.Binding(b, offset: 0, bytes: 1 << 40), VulkanContext.Binding(b)], push: [4, 0], groups: (1, 1, 1))
        }
        if ctx.info.minStorageOffsetAlignment > 1 {
            #expect(throws: SluiceError.self) {
                try ctx.dispatch(.unary, bindings: [VulkanContext.Binding(b, offset: 1, bytes: 16), VulkanContext.Binding(b)], push: [4, 0], groups: (1, 1, 1))
            }
        }
    }

    /// With an activation arena set (a budget), per-op buffers come from it and an op that does not
    /// fit is an out-of-memory error with the numbers — the budget is a hard cap.
    @Test func arenaIsAHardCap() throws {
        let ctx = try VulkanContext()
        let vk = try VulkanBackend(context: ctx)
        let x = Tensor((0..<4096).map { Float($0) / 100 }, shape: [4096])
        let arena = try ctx.buffer(bytes: 64 << 10)
        ctx.useArena(arena)
        defer { ctx.useArena(nil) }
        let c = compare(try vk.silu(x).toFloats(), try CPUBackend().silu(x).toFloats(), atol: 1e-6, rtol: 1e-6)
        #expect(c.ok, "\(c)")
        let big = Tensor(zeros: [20_000])
        let error = #expect(throws: SluiceError.self) { _ = try vk.silu(big) }
        #expect(error.map { "\($0)" }?.contains("needed 80000 bytes, 65536 available") == true, "\(String(describing: error))")
    }

    /// Attention whose key loop runs long: Mesa's llvmpipe stops any shader loop after 65,535
    /// iterations, which a loop over Lk · D once passed here (garbage from 32,000 products on). The
    /// loops over D are unrolled now; these sizes would fail without that. Against the CPU: 2e-5 + 1e-4
    /// relative, as the op test.
    @Test(arguments: [(2000, 16), (500, 64), (448, 128)])
    func attentionWithLongKeyLoops(L: Int, D: Int) throws {
        let vk = try VulkanBackend(context: VulkanContext())
        var rng = SplitMix(seed: UInt64(L * D))
        func t() -> Tensor { Tensor((0..<(L * D)).map { _ in rng.uniform() }, shape: [1, 1, L, D]) }
        let q = t(), k = t(), v = t()
        let c = compare(try vk.attention(q: q, k: k, v: v, mask: nil, scale: nil).toFloats(),
                        try CPUBackend().attention(q: q, k: k, v: v, mask: nil, scale: nil).toFloats(), atol: 2e-5, rtol: 1e-4)
        #expect(c.ok, "L \(L) D \(D): \(c)")
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

    /// Asking for more memory than the device has is an error with the numbers, not a crash.
    @Test func hugeAllocationIsAnError() throws {
        let ctx = try VulkanContext()
        let heap = ctx.info.heaps.map(\.size).max() ?? 0
        #expect(throws: SluiceError.self) { _ = try ctx.buffer(bytes: heap * 4 + (1 << 40)) }
    }
}
