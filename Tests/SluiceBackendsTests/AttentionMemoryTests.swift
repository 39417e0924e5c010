import SluiceBackends
import SluiceCore
import Testing

/// Attention at full size (L = 4096, 24 heads × 128) must hold scratch bounded by its tiles, never
/// the L × L scores: proven with the backend's allocation counter, not a timer.
@Suite struct AttentionMemoryTests {
    @Test func fullSizeAttentionScratchIsBoundedByTheTile() throws {
        let counter = AllocationCounter(), scratchCounter = AllocationCounter()
        let be = try CPUBackend(allocations: counter, scratchAllocations: scratchCounter)
        let (B, H, L, D) = (1, 24, 4096, 128)
        // Inputs are built outside the counter; q = k = v is enough for a memory proof and keeps
        // the test's own footprint small.
        let values = (0..<(B * H * L * D)).map { Float(($0 * 7919) % 1000) / 1000 - 0.5 }
        let q = Tensor(values, shape: [B, H, L, D])
        let out = try be.attention(q: q, k: q, v: q, mask: nil, scale: nil)
        #expect(out.shape == [B, H, L, D])
        let outputBytes = B * H * L * D * 4
        // The backend counts its output as an activation and its workspace apart.
        #expect(counter.peakBytes == outputBytes)
        let scratch = scratchCounter.peakBytes
        let oneScoreMatrix = L * L * 4  // what a non-tiled kernel needs per head: 64 MiB
        #expect(scratch <= be.attentionWorkspaceBytes(headDim: D), "scratch \(scratch) B, bound \(be.attentionWorkspaceBytes(headDim: D)) B")
        #expect(scratch * 16 < oneScoreMatrix, "scratch \(scratch) B is not small next to one \(oneScoreMatrix)-byte score matrix")
        // And the result is a real attention output: every row is a convex combination of v rows,
        // so it lies within v's range.
        let o = out.f32
        #expect((0..<(B * H * L * D)).allSatisfy { o[$0] >= -0.5 && o[$0] <= 0.5 })
    }
}
