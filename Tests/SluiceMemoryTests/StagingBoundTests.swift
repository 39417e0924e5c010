import Foundation
import SluiceBackends
import SluiceMemory
import SluiceTestSupport
import Testing

/// The staging-aware bound claims to be a lower bound for every plan under a budget. The sweep checks
/// it against the planner's own plans; this checks it against all of them on small random components:
/// every residency choice × ring sizes, run on the streaming executor over the simulated device, at the
/// smallest budget each plan fits. A step faster than the bound would mean the bound's argument is wrong.
@Suite struct StagingBoundTests {
    /// A plan as the planner's byte ring writes it (ComponentPlan is decoded: its initialiser is the
    /// planner's): depth = how many of the largest streamed group the ring holds beyond one.
    static func plan(_ k: OffloadModel.Costs, resident: [Bool], ring: Int, activation: Int) throws -> ComponentPlan {
        let streamed = k.bytes.indices.filter { !resident[$0] }
        let largest = streamed.map { k.bytes[$0] }.max() ?? 0
        let depth = streamed.isEmpty ? 0 : max(1, ring / max(largest, 1) - 1)
        let slot = streamed.isEmpty ? 0 : (ring + depth) / (depth + 1)
        let fields: [String: Any] = [
            "component": "c", "phase": "denoise", "resident": k.bytes.indices.filter { resident[$0] }.map { k.names[$0] },
            "streamed": streamed.map { k.names[$0] }, "prefetchDepth": depth, "slotBytes": slot, "slotCount": streamed.isEmpty ? 0 : depth + 1,
            "residentBytes": k.bytes.indices.filter { resident[$0] }.reduce(0) { $0 + k.bytes[$1] }, "activationBytes": activation,
            "streamedBytesPerCall": streamed.reduce(0) { $0 + k.bytes[$1] }, "tiled": false,
        ]
        return try JSONDecoder().decode(ComponentPlan.self, from: JSONSerialization.data(withJSONObject: fields))
    }

    @Test func noPlanBeatsTheStagingAwareBound() throws {
        var rng = SplitMix(seed: 17)
        var checked = 0, tightest = Double.infinity
        for instance in 0..<24 {
            let profile = DeviceProfile.all[instance % DeviceProfile.all.count]
            let n = 5 + rng.below(4)
            let mib = 1 << 20
            let bytes = (0..<n).map { _ in (2 + rng.below(62)) * mib }
            // Compute from a fifth to four times the group's copy: some groups hide their copies, some not.
            let flops = bytes.map { b in Double(0.2 + 3.8 * Double(rng.below(1000)) / 1000) * profile.copySeconds(bytes: b) * profile.effectiveFlops }
            let activation = 4 * mib
            let k = OffloadModel.Costs(names: (0..<n).map { "g\($0)" }, bytes: bytes, flops: flops,
                                       touched: bytes.map { Double($0 + activation / n) })
            for mask in 0..<(1 << n) - 1 {  // every residency choice that streams something
                let resident = (0..<n).map { mask & (1 << $0) != 0 }
                let largest = (0..<n).filter { !resident[$0] }.map { bytes[$0] }.max()!
                for factor in [1.0, 1.25, 1.5, 2, 3] {
                    let p = try Self.plan(k, resident: resident, ring: Int(Double(largest) * factor), activation: activation)
                    let s = OffloadModel.sluiceStepSeconds(plan: p, costs: k, profile: profile)
                    guard s.isFinite else { continue }
                    let lb = OffloadModel.stagingAwareBoundSeconds(k, profile, budget: p.deviceBytes, activation: activation)
                    // 1%: the step is the average of two calls, not the exact period (as in the sweep).
                    #expect(s >= lb * 0.99, "instance \(instance) on \(profile.name): residents \(resident), ring \(factor)×: \(s) s below the bound \(lb) s")
                    tightest = min(tightest, s / lb)
                    checked += 1
                }
            }
        }
        #expect(checked > 10_000)
        print("staging-aware bound: \(checked) plans simulated, closest step \(tightest)× the bound")
    }
}
