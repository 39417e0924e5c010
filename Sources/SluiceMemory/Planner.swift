import Foundation

/// The planner: a pure function from sizes and budgets to a `Plan`.
public enum Planner {
    /// Places one component's groups: everything resident if it fits; otherwise a ring of
    /// `depth + 1` slots sized to the largest streamed group, and as many groups resident as fit
    /// beside it, chosen largest first and spread evenly along the forward order (so the copy
    /// engine keeps streaming while resident groups compute).
    /// `priority`, when given, orders the groups to keep resident (higher first) instead of size:
    /// the pipeline planner passes copy time over compute time, so the groups whose copies could
    /// least hide behind compute stay put.
    /// `timing`, when given (per-group copy and compute seconds), chooses residents where the
    /// copy engine would fall behind: see `fluidResidents`.
    public static func planComponent(name: String, phase: String, groups: [GroupSize], activationBytes: Int,
                                     budget: Int, prefetchDepth: Int? = nil, tileLatent: Int? = nil,
                                     priority: [Double]? = nil, timing: (copy: [Double], compute: [Double], linkBytesPerSecond: Double)? = nil) throws(PlanError) -> ComponentPlan {
        let total = groups.reduce(0) { $0 + $1.bytes }
        if total + activationBytes <= budget {
            return ComponentPlan(component: name, phase: phase, resident: groups.map(\.name), streamed: [], prefetchDepth: 0,
                                 slotBytes: 0, slotCount: 0, residentBytes: total, activationBytes: activationBytes,
                                 streamedBytesPerCall: 0, tiled: tileLatent != nil, tileLatent: tileLatent)
        }
        let depths = prefetchDepth.map { [$0] } ?? [2, 1]
        // Spread order: positions in bit-reversed (van der Corput) order, so equal-sized groups
        // chosen for residency are evenly spaced along the forward pass.
        let spread = spreadRank(count: groups.count)
        let slotCandidates = Array(Set(groups.map(\.bytes))).sorted()
        var best: (resident: Set<Int>, slot: Int, depth: Int, residentBytes: Int)?
        for depth in depths {
            for slot in slotCandidates {
                let forced = groups.indices.filter { groups[$0].bytes > slot }
                let forcedBytes = forced.reduce(0) { $0 + groups[$1].bytes }
                var free = budget - activationBytes - (depth + 1) * slot - forcedBytes
                guard free >= 0 else { continue }
                var resident = Set(forced)
                let key: (Int) -> Double = { i in priority?[i] ?? Double(groups[i].bytes) }
                let candidates = groups.indices.filter { groups[$0].bytes <= slot }
                    .sorted { (key($0), -spread[$0]) > (key($1), -spread[$1]) }
                if let timing {
                    let picked = fluidResidents(groups: groups, candidates: candidates, forced: resident, free: free,
                                                ringSeconds: Double((depth + 1) * slot) / timing.linkBytesPerSecond,
                                                copy: timing.copy, compute: timing.compute)
                    resident.formUnion(picked)
                    free -= picked.reduce(0) { $0 + groups[$1].bytes }
                }
                for i in candidates where !resident.contains(i) && groups[i].bytes <= free {
                    resident.insert(i)
                    free -= groups[i].bytes
                }
                // Everything resident would not need slots; that case was handled above.
                guard resident.count < groups.count else { continue }
                let bytes = resident.reduce(0) { $0 + groups[$1].bytes }
                if best == nil || bytes > best!.residentBytes || (bytes == best!.residentBytes && slot < best!.slot) {
                    best = (resident, slot, depth, bytes)
                }
            }
            if best != nil { break }
        }
        guard let best else {
            // Smallest budget: one group streams through depth + 1 slots and the rest that are
            // larger stay resident; minimise over the slot size.
            let depth = depths.min()!
            let minimum = slotCandidates.map { slot in
                activationBytes + (depth + 1) * slot + groups.filter { $0.bytes > slot }.reduce(0) { $0 + $1.bytes }
            }.min() ?? activationBytes
            throw .budgetTooSmall(component: name, budget: budget, minimumBytes: minimum)
        }
        let streamed = groups.indices.filter { !best.resident.contains($0) }
        // Slots only need to hold the largest group that actually streams.
        let slot = streamed.map { groups[$0].bytes }.max() ?? 0
        return ComponentPlan(component: name, phase: phase,
                             resident: groups.indices.filter { best.resident.contains($0) }.map { groups[$0].name },
                             streamed: streamed.map { groups[$0].name }, prefetchDepth: best.depth,
                             slotBytes: slot, slotCount: best.depth + 1, residentBytes: best.residentBytes,
                             activationBytes: activationBytes,
                             streamedBytesPerCall: streamed.reduce(0) { $0 + groups[$1].bytes }, tiled: tileLatent != nil,
                             tileLatent: tileLatent)
    }

    /// A plan with the given residents and a byte ring of `ringBytes` (at least the largest streamed
    /// group): `slotCount` = depth + 1 regions of `slotBytes`, the depth being how many of the largest
    /// streamed groups the ring holds beyond one (at least 1), so a region may be smaller than a group
    /// — the executor places groups by bytes, not by slot.
    static func planComponent(name: String, phase: String, groups: [GroupSize], activationBytes: Int, resident: [Bool],
                              ringBytes: Int, tileLatent: Int?) -> ComponentPlan {
        let streamed = groups.indices.filter { !resident[$0] }
        let largest = streamed.map { groups[$0].bytes }.max() ?? 0
        precondition(ringBytes >= largest, "ring smaller than a streamed group")
        let depth = max(1, ringBytes / max(largest, 1) - 1)
        let slotBytes = (ringBytes + depth) / (depth + 1)
        return ComponentPlan(component: name, phase: phase, resident: groups.indices.filter { resident[$0] }.map { groups[$0].name },
                             streamed: streamed.map { groups[$0].name }, prefetchDepth: depth, slotBytes: slotBytes, slotCount: depth + 1,
                             residentBytes: groups.indices.filter { resident[$0] }.reduce(0) { $0 + groups[$1].bytes },
                             activationBytes: activationBytes, streamedBytesPerCall: streamed.reduce(0) { $0 + groups[$1].bytes },
                             tiled: tileLatent != nil, tileLatent: tileLatent)
    }

    /// Residents where streaming would stall: a fluid model of the pipeline in which the copy
    /// engine may run ahead of compute by at most the ring (`ringSeconds` of link time). Walking
    /// the forward pass twice (a denoising loop calls the component again and again), a streamed
    /// group whose copy is not done by the time its compute would start stalls; the group with the
    /// largest stall becomes resident, and so on while room lasts.
    static func fluidResidents(groups: [GroupSize], candidates: [Int], forced: Set<Int>, free: Int, ringSeconds: Double,
                               copy: [Double], compute: [Double]) -> Set<Int> {
        var resident = forced, picked = Set<Int>(), room = free
        let allowed = Set(candidates)
        while true {
            var credit = ringSeconds
            var stall = [Double](repeating: 0, count: groups.count)
            for pass in 0..<2 {
                for i in groups.indices {
                    if !resident.contains(i) {
                        if copy[i] <= credit { credit -= copy[i] } else {
                            if pass == 1 { stall[i] = copy[i] - credit }
                            credit = 0
                        }
                    }
                    credit = min(ringSeconds, credit + compute[i])
                }
            }
            guard let worst = groups.indices.filter({ allowed.contains($0) && !resident.contains($0) && stall[$0] > 0 && groups[$0].bytes <= room })
                .max(by: { stall[$0] < stall[$1] }) else { break }
            resident.insert(worst)
            picked.insert(worst)
            room -= groups[worst].bytes
        }
        return picked
    }

    static func spreadRank(count: Int) -> [Int] {
        guard count > 1 else { return [Int](repeating: 0, count: count) }
        var bits = 0
        while (1 << bits) < count { bits += 1 }
        func reverse(_ x: Int) -> Int {
            var r = 0
            for b in 0..<bits where x & (1 << b) != 0 { r |= 1 << (bits - 1 - b) }
            return r
        }
        let order = (0..<(1 << bits)).map(reverse).filter { $0 < count }
        var rank = [Int](repeating: 0, count: count)
        for (r, pos) in order.enumerated() { rank[pos] = r }
        return rank
    }
}
