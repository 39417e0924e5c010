import SluiceBackends
import SluiceCore

/// One denoising step of a component on the modelled clock under the four policies `sluice bench
/// offload` compares, and the physical bound. All figures are simulation (docs/architecture.md).
public enum OffloadModel {
    /// One call's costs per group: device bytes, FLOPs, and device bytes a kernel touches.
    public struct Costs: Sendable {
        public let names: [String]
        public let bytes: [Int]
        public let flops: [Double]
        public let touched: [Double]
        public init(names: [String], bytes: [Int], flops: [Double], touched: [Double]) {
            self.names = names; self.bytes = bytes; self.flops = flops; self.touched = touched
        }
    }

    /// `activation`: the bytes the plan reserves (a tiled VAE's are a tile's); default the whole call's.
    public static func costs(_ c: ComponentDescription, _ r: PlanRequest, activation: Int? = nil) -> Costs {
        let sizes = PipelinePlanner.sizes(c, r)
        // A kernel reads its weights once and its activations (≈ the group's share of the peak).
        let act = Double(activation ?? PipelinePlanner.activationBytes(c, r)) / Double(max(c.groups.count, 1))
        return Costs(names: sizes.map(\.name), bytes: sizes.map(\.bytes), flops: c.flops(r.workload),
                     touched: sizes.map { Double($0.bytes) + act })
    }

    /// The sluice: the executor itself, run dry on a simulated device; the mean of calls 3 and 4
    /// (steady state: resident groups uploaded, the pipeline of prefetches settled).
    public static func sluiceStepSeconds(plan: ComponentPlan, costs k: Costs, profile: DeviceProfile, device: DeviceMemory? = nil) -> Double {
        let dev = device ?? DeviceMemory(profile: profile, capBytes: plan.deviceBytes, backed: false)
        dev.setRecordSpans(device != nil)
        let groups = k.names.indices.map { ExecGroup(name: k.names[$0], bytes: k.bytes[$0], flops: k.flops[$0], bytesTouched: k.touched[$0]) }
        let ex = StreamingExecutor(device: dev, plan: plan, groups: groups)
        do {
            for _ in 0..<2 { _ = try ex.run(()) { _, _, _ in () } }
            dev.resetCounters()
            // From the end of one call's last kernel to the end of the next's: the period. (The
            // copy engine may already be working on the next call's first groups.)
            let t0 = dev.computeDone
            for _ in 0..<2 { _ = try ex.run(()) { _, _, _ in () } }
            return (dev.computeDone - t0) / 2
        } catch {
            return .infinity
        }
    }

    /// Compute alone, everything resident.
    public static func computeSeconds(_ k: Costs, _ p: DeviceProfile) -> Double {
        zip(k.flops, k.touched).reduce(0) { $0 + p.kernelSeconds(flops: $1.0, bytes: $1.1) }
    }

    /// diffusers-style group offloading with streams: every group crosses every step; the copy of
    /// group i+1 is issued when group i starts and group i+1 starts after both are done (a
    /// synchronisation per group).
    public static func groupOffloadSeconds(_ k: Costs, _ p: DeviceProfile) -> Double {
        var prevEnd = 0.0
        var copyEnd = p.copySeconds(bytes: k.bytes.first ?? 0)  // group 0 is onloaded up front
        var copyFree = copyEnd
        for i in k.bytes.indices {
            let start = max(prevEnd, copyEnd)
            let end = start + p.kernelSeconds(flops: k.flops[i], bytes: k.touched[i])
            if i + 1 < k.bytes.count {
                let cs = max(copyFree, start)
                copyEnd = cs + p.copySeconds(bytes: k.bytes[i + 1])
                copyFree = copyEnd
            }
            prevEnd = end
        }
        return prevEnd
    }

    /// Model offload: the whole component is uploaded, then computes (no overlap).
    public static func modelOffloadSeconds(_ k: Costs, _ p: DeviceProfile) -> Double {
        p.copySeconds(bytes: k.bytes.reduce(0, +)) + computeSeconds(k, p)
    }

    /// The physical bound under a budget: max(compute, bytes that must cross ÷ link). What must
    /// cross is the weights that cannot stay resident: at most budget − activations can be on the
    /// device, less — when anything streams — room to stage one group while it computes (no scheme
    /// computes a weight it has not got); the smallest group, so the bound stays a lower bound.
    public static func boundSeconds(_ k: Costs, _ p: DeviceProfile, budget: Int, activation: Int) -> (seconds: Double, mustCross: Int) {
        let total = k.bytes.reduce(0, +)
        var room = budget - activation
        if total > room { room -= k.bytes.min() ?? 0 }
        let mustCross = max(0, total - max(room, 0))
        return (max(computeSeconds(k, p), p.copySeconds(bytes: mustCross)), mustCross)
    }

    /// A lower bound that also counts the staging a budget allows. Let W = budget − activations be the
    /// room for weights. For any contiguous run G of groups (compute c_G, weights w_G) and any plan
    /// (residents R, staging S = W − R) and schedule: when G's first group starts, at most S bytes of
    /// G's streamed weights can be on the device, G streams at least w_G − R_G ≥ w_G − R bytes, so at
    /// least w_G − W bytes must cross while G runs: G's span ≥ max(c_G, (w_G − W) / link). Runs are
    /// disjoint in time (one compute queue), so a step ≥ Σ over disjoint runs of that + the compute of
    /// the groups outside them — for every residency choice. The best partition (dynamic programming
    /// over the forward order, and over a few rotations since steps repeat), the specified bound and
    /// the staging-room bound below give `max` of the three.
    public static func stagingAwareBoundSeconds(_ k: Costs, _ p: DeviceProfile, budget: Int, activation: Int) -> Double {
        let spec = boundSeconds(k, p, budget: budget, activation: activation).seconds
        let room = Double(budget - activation)
        let n = k.bytes.count
        let total = k.bytes.reduce(0, +)
        guard n > 0, Double(total) > room else { return spec }
        let c = zip(k.flops, k.touched).map { p.kernelSeconds(flops: $0.0, bytes: $0.1) }
        var best = 0.0
        let rotations = Set((0..<8).map { $0 * n / 8 })
        for shift in rotations {
            let order = (0..<n).map { (shift + $0) % n }
            // f[j] = best lower bound for the first j groups of this rotation.
            var f = [Double](repeating: 0, count: n + 1)
            for j in 1...n {
                var v = f[j - 1] + c[order[j - 1]]
                var cg = 0.0, wg = 0.0
                for i in stride(from: j - 1, through: 0, by: -1) {
                    cg += c[order[i]]
                    wg += Double(k.bytes[order[i]])
                    v = max(v, f[i] + max(cg, p.copySeconds(bytes: Int(max(0, wg - room)))))
                }
                f[j] = v
            }
            best = max(best, f[n])
        }
        return max(spec, best, stagingRoomBoundSeconds(k, p, room: budget - activation, compute: c))
    }

    /// A lower bound that charges the staging room itself. Take any plan with a fixed resident set
    /// (bytes Res) and let F = W − Res be the room left for streamed weights (staging and the group
    /// in use). Each step, everything not resident crosses: total − W + F bytes, so a step is at least
    /// that over the link plus the time the link stands idle. While a run G = g₁…gₘ of groups
    /// computes, copies land in room free when G starts or freed by G's streamed groups as they finish.
    /// A streamed g₁ is whole on the device when G starts (free room ≤ F − s(g₁)) and frees s(g₁) when
    /// it ends; a resident g₁ frees nothing: either way, by the end of gⱼ at most F + s(g₂…gⱼ₋₁) bytes
    /// can have been copied, s counting only groups of at most F bytes (a streamed group fits in F). Copying as early as those caps
    /// and the link allow, A bytes at most cross during G's compute, and the link idles at least
    /// c_G − A / link; idle times of disjoint runs add up (the best set by dynamic programming over
    /// a few rotations, since a step follows a step). The crossing term grows with F and the idle
    /// term shrinks, so for F between two grid points the step is at least the first at the lower
    /// point plus the second at the upper one: the least of those over a fine grid bounds every F
    /// (F is at least the smallest room whose groups of at most F bytes carry total − W + F). The
    /// other bounds let staging room be free; this one counts every byte of it as a byte not resident.
    static func stagingRoomBoundSeconds(_ k: Costs, _ p: DeviceProfile, room w: Int, compute c: [Double]) -> Double {
        let n = k.bytes.count, total = k.bytes.reduce(0, +)
        let link = p.effectiveLink
        let computeTotal = c.reduce(0, +)
        guard n > 0, total > w, w > 0 else { return computeTotal }
        // The smallest feasible F: groups of at most F bytes must sum to at least total − w + F.
        var sum = 0, lowest: Int?
        for b in k.bytes.sorted() {
            sum += b
            if sum >= total - w + b { lowest = b; break }
        }
        guard let lowest else { return .infinity }  // no plan streams under this room
        let rotations = Array(Set((0..<4).map { $0 * n / 4 }))
        func idle(_ f: Int) -> Double {
            let room = Double(f)
            let s = k.bytes.map { $0 <= f ? Double($0) : 0 }
            var best = 0.0
            for shift in rotations {
                // best[j]: the most idle time in disjoint runs among the first j groups of this rotation.
                var most = [Double](repeating: 0, count: n + 1)
                for i in 0..<n {
                    most[i + 1] = max(most[i + 1], most[i])
                    var copied = 0.0, freed = 0.0, busy = 0.0
                    for j in i..<n {
                        let g = (shift + j) % n
                        copied = min(copied + c[g] * link, room + freed)
                        // The run's first group frees nothing it did not hold at the start: streamed,
                        // its bytes were in the room already (free ≤ F − s₁, freed later s₁); resident,
                        // it frees nothing.
                        if j > i { freed += s[g] }
                        busy += c[g]
                        let run = busy - copied / link
                        if run > 0 { most[j + 1] = max(most[j + 1], most[i] + run) }
                    }
                }
                best = max(best, most[n])
            }
            return best
        }
        func crossing(_ f: Int) -> Double { Double(total - w + f) / link }
        var grid: [Int] = []
        var f = Double(max(lowest, 1))
        while Int(f) < w {
            grid.append(Int(f))
            f *= 1.02
        }
        grid.append(w)
        var bound = Double.infinity
        for i in grid.indices {
            let lower = crossing(grid[i])
            if lower >= bound { break }
            bound = min(bound, lower + idle(grid[min(i + 1, grid.count - 1)]))
        }
        return max(computeTotal, bound)
    }
}
