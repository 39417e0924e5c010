import SluiceBackends
import SluiceCore
import SluiceTestSupport
import SluiceWeights
import Testing

/// The simulated backend computes with the CPU's kernels (so every op is bit-identical to the CPU
/// backend and inherits its torch parity), charges its tensors to the device's cap, and stamps
/// kernels on the modelled clock.
@Suite struct SimulatedBackendTests {
    let fx: SafetensorsFile
    init() throws { fx = try Fixtures.file("ops.safetensors") }
    func t(_ name: String) throws -> Tensor { try fx.tensor(name) }

    /// One body, run on each backend.
    func opsOutputs(_ be: some Backend) throws -> [[Float]] {
        [
            try be.linear(t("linear.deep.x"), weight: t("linear.deep.w"), bias: t("linear.deep.bias")).toFloats(),
            try be.conv2d(t("conv.x"), weight: t("conv.g2s2p1.w"), bias: t("conv.g2s2p1.b"), stride: 2, padding: 1, groups: 2).toFloats(),
            try be.groupNorm(t("groupnorm.x"), groups: 4, weight: t("groupnorm.w"), bias: t("groupnorm.b"), eps: 1e-6).toFloats(),
            try be.gelu(t("act.x"), approximateTanh: true).toFloats(),
            try be.attention(q: t("attn.q"), k: t("attn.k"), v: t("attn.v"), mask: t("attn.mask.add"), scale: nil).toFloats(),
            try be.rotaryEmbedding(t("rope.x"), cos: t("rope.cos"), sin: t("rope.sin"), seqDim: 1, layout: .interleaved).toFloats(),
        ]
    }

    @Test func sameResultsAsTheCPUAndTheClockAdvances() throws {
        let cpu = try CPUBackend(threads: 2)
        let device = DeviceMemory(profile: .rtx3060, capBytes: 64 << 20)
        let sim = try SimulatedBackend(device: device, path: cpu.path, threads: 2)
        let a = try opsOutputs(cpu), b = try opsOutputs(sim)
        for (x, y) in zip(a, b) { #expect(x.map(\.bitPattern) == y.map(\.bitPattern)) }
        // And within tolerance of torch, as the CPU backend is (CPUOpsTests): one spot check.
        let c = compare(b[4], try t("attn.out.mask.add").toFloats(), atol: 2e-5, rtol: 1e-4)
        #expect(c.ok, "\(c)")
        #expect(device.now > 0)
        #expect(device.spans.filter { $0.kind == .compute }.count == 6)
        #expect(device.peakBytes > 0 && device.peakBytes <= device.capBytes)
    }

    @Test func aTensorLargerThanTheCapIsAnOutOfMemoryError() throws {
        let device = DeviceMemory(profile: .rtx3060, capBytes: 1 << 20)
        let sim = try SimulatedBackend(device: device, threads: 1)
        let big = Tensor(zeros: [512, 1024])  // the output alone is 2 MiB
        do {
            _ = try sim.gelu(big, approximateTanh: true)
            Issue.record("a 2 MiB output fitted a 1 MiB device")
        } catch let SluiceError.outOfMemory(_, requested, available) {
            #expect(requested == 2 << 20 && available < requested)
        }
    }
}
