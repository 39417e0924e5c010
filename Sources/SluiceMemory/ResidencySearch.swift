/// Residents and ring size chosen where copies outrun compute, by search on a fluid model of the
/// executor (cheap enough to try hundreds of plans; the pipeline planner runs the few best on the
/// executor itself).
///
/// Why a search: in a UNet the parameters sit in the low-resolution blocks and the FLOPs in the
/// high-resolution ones, so "keep the biggest groups resident" streams exactly the groups whose
/// copies no compute hides. What counts is where along the forward pass the link has time to spare,
/// and how much of that time the ring can carry forward. And when the link is the bottleneck, every
/// ring byte is a byte more that crosses each step: the ring should be as small as the largest
/// streamed group allows, not a whole number of such groups (the executor's ring is a byte ring).
enum ResidencySearch {
    struct Timing {
        let bytes: [Int]
        let copy: [Double]
        let compute: [Double]
        let link: Double
    }

    struct Candidate {
        let resident: [Bool]
        let ringBytes: Int
        let seconds: Double
    }

    /// Ring sizes tried, as multiples of the largest group allowed to stream: fine steps below 2× (where the
    /// link is the bottleneck every ring byte crosses each step, so a sixteenth of a group matters), coarse above.
    static let ringFactors: [Double] = [1, 1.0625, 1.125, 1.1875, 1.25, 1.3125, 1.375, 1.4375, 1.5, 1.625, 1.75, 1.875, 2, 2.25, 2.5, 2.75, 3, 3.5, 4, 5, 6, 8, 12, 16]

    /// The `top` best plans by the fluid model, over slot caps (each distinct group size) × ring sizes
    /// × two ways of choosing residents (`walkResidents`, and copy/compute ratio first).
    static func candidates(_ t: Timing, room weightRoom: Int, top: Int) -> [Candidate] {
        let n = t.bytes.count
        guard n > 1 else { return [] }
        let ratio = (0..<n).map { t.copy[$0] / max(t.compute[$0], 1e-12) }
        let byRatio = (0..<n).sorted { (ratio[$0], -$0) > (ratio[$1], -$1) }
        var out: [Candidate] = []
        for slot in Set(t.bytes).sorted() {
            let forcedBytes = (0..<n).filter { t.bytes[$0] > slot }.reduce(0) { $0 + t.bytes[$1] }
            var lastRing = -1
            for f in ringFactors {
                let ring = Int(Double(slot) * f)
                let room = weightRoom - ring
                guard ring > lastRing, room >= forcedBytes else { continue }
                lastRing = ring
                for resident in [walkResidents(t, slot: slot, ring: ring, room: room, byRatio: byRatio),
                                 ratioResidents(t, slot: slot, room: room, byRatio: byRatio)] {
                    guard let resident, resident.contains(false) else { continue }
                    out.append(Candidate(resident: resident, ringBytes: ring, seconds: fluidStepSeconds(t, resident: resident, ringBytes: ring)))
                }
            }
        }
        // Deterministic: ties by ring size, then by the order tried. The best few are then improved by
        // local moves.
        let ranked = out.enumerated().sorted { ($0.element.seconds, $0.offset) < ($1.element.seconds, $1.offset) }.map(\.element)
        return ranked.prefix(top).map { improve(t, $0, room: weightRoom) }.sorted { $0.seconds < $1.seconds }
    }

    /// Streams what compute hides: walking the forward pass (twice: steps repeat), the link earns the
    /// compute time of each group (at most the ring's worth, what it can copy ahead) and a group
    /// streams when its copy fits in what is earned. When that hides less than must stream, compute
    /// time is stretched (stalls spread over the pass, the link never idle) until enough streams. The
    /// room left over goes back to residency, the groups whose copies hide worst first.
    static func walkResidents(_ t: Timing, slot: Int, ring: Int, room: Int, byRatio: [Int]) -> [Bool]? {
        let n = t.bytes.count, total = t.bytes.reduce(0, +)
        let mustStream = total - room
        let cap = Double(ring) / t.link
        func walk(_ stretch: Double) -> (streamed: [Bool], bytes: Int) {
            var credit = cap
            var streamed = [Bool](repeating: false, count: n), bytes = 0
            for pass in 0..<2 {
                if pass == 1 { streamed = [Bool](repeating: false, count: n); bytes = 0 }
                for i in 0..<n {
                    if t.bytes[i] <= slot && t.copy[i] <= credit {
                        streamed[i] = true
                        bytes += t.bytes[i]
                        credit -= t.copy[i]
                    }
                    credit = min(cap, credit + t.compute[i] * stretch)
                }
            }
            return (streamed, bytes)
        }
        var pick = walk(1)
        if pick.bytes < mustStream {
            var lo = 1.0, hi = 2.0
            while walk(hi).bytes < mustStream {
                hi *= 2
                if hi > 1e4 { return nil }
            }
            for _ in 0..<14 {
                let mid = (lo + hi) / 2
                if walk(mid).bytes >= mustStream { hi = mid } else { lo = mid }
            }
            pick = walk(hi)
        }
        var resident = pick.streamed.map { !$0 }
        var used = (0..<n).filter { resident[$0] }.reduce(0) { $0 + t.bytes[$1] }
        guard used <= room else { return nil }
        for i in byRatio where !resident[i] && used + t.bytes[i] <= room {
            resident[i] = true
            used += t.bytes[i]
        }
        return resident
    }

    /// Groups larger than the slot cap, then the highest copy/compute ratio first, while room lasts.
    static func ratioResidents(_ t: Timing, slot: Int, room: Int, byRatio: [Int]) -> [Bool]? {
        var resident = t.bytes.map { $0 > slot }
        var used = (0..<t.bytes.count).filter { resident[$0] }.reduce(0) { $0 + t.bytes[$1] }
        guard used <= room else { return nil }
        for i in byRatio where !resident[i] && used + t.bytes[i] <= room {
            resident[i] = true
            used += t.bytes[i]
        }
        return resident
    }

    /// The executor as a fluid: copies in stream order as soon as the link is free and the ring has
    /// room where the executor would place them (the tail it skips when wrapping is wasted, as there),
    /// each compute after the previous one and its copy. The period of the third call.
    static func fluidStepSeconds(_ t: Timing, resident: [Bool], ringBytes: Int) -> Double {
        fluid(t, resident: resident, ringBytes: ringBytes).seconds
    }

    /// What the fluid model saw in its last call: per group, how long its compute waited for its copy
    /// (`stall`) and how long the link stood idle, ring full, while it computed (`idle`).
    struct Trace {
        let seconds: Double
        let stall: [Double]
        let idle: [Double]
    }

    static func fluid(_ t: Timing, resident: [Bool], ringBytes: Int, trace: Bool = false) -> Trace {
        let n = t.bytes.count
        let streamed = (0..<n).filter { !resident[$0] }
        let ns = streamed.count
        guard ns > 0 else { return Trace(seconds: t.compute.reduce(0, +), stall: [], idle: []) }
        var rank = [Int](repeating: -1, count: n)
        for (r, g) in streamed.enumerated() { rank[g] = r }
        let calls = 3
        var copyEnd = [Double](repeating: 0, count: calls * ns), computeEnd = copyEnd
        var copyFree = (0..<n).filter { resident[$0] }.reduce(0.0) { $0 + t.copy[$1] }
        var computeFree = 0.0, start = 0.0
        // Ring regions as the executor places them: at the write head, or at 0 when the group does not
        // fit before the end (the tail is wasted); a copy waits for every region it overwrites.
        var live: [(offset: Int, bytes: Int, q: Int)] = []
        var next = 0, head = 0
        var stall = [Double](repeating: 0, count: trace ? n : 0)
        var span = [(Double, Double)](repeating: (0, 0), count: trace ? n : 0)
        var gaps: [(Double, Double)] = []
        for call in 0..<calls {
            let last = call == calls - 1
            if last { start = computeFree }
            for i in 0..<n {
                guard rank[i] >= 0 else {
                    if trace && last { span[i] = (computeFree, computeFree + t.compute[i]) }
                    computeFree += t.compute[i]
                    continue
                }
                let q = call * ns + rank[i]
                while next <= q {
                    let bytes = t.bytes[streamed[next % ns]]
                    let offset = head + bytes <= ringBytes ? head : 0
                    var freed = 0.0
                    live.removeAll { r in
                        guard r.offset < offset + bytes && offset < r.offset + r.bytes else { return false }
                        freed = max(freed, computeEnd[r.q])
                        return true
                    }
                    live.append((offset, bytes, next))
                    head = offset + bytes
                    if trace && freed > copyFree { gaps.append((copyFree, freed)) }
                    copyFree = max(copyFree, freed) + t.copy[streamed[next % ns]]
                    copyEnd[next] = copyFree
                    next += 1
                }
                let begin = max(computeFree, copyEnd[q])
                if trace && last {
                    stall[i] = begin - computeFree
                    span[i] = (begin, begin + t.compute[i])
                }
                computeFree = begin + t.compute[i]
                computeEnd[q] = computeFree
            }
        }
        var idle = [Double](repeating: 0, count: trace ? n : 0)
        if trace {
            for (a, b) in gaps where b > start {
                for i in 0..<n { idle[i] += max(0, min(b, span[i].1) - max(a, span[i].0)) }
            }
        }
        return Trace(seconds: computeFree - start, stall: stall, idle: idle)
    }

    /// Local moves on a plan, judged by the fluid model: a group whose compute waits for its copy
    /// becomes resident, in exchange for a resident one during which the link stood idle (or in room
    /// left over, or in room the ring gives up when it can shrink to its largest streamed group);
    /// the best move each round, until none helps. Where the walk and the ratio order leave the link
    /// idle beside compute-heavy stretches, this finds the trades neither ordering sees.
    static func improve(_ t: Timing, _ start: Candidate, room weightRoom: Int, rounds: Int = 48, width: Int = 8) -> Candidate {
        let n = t.bytes.count
        var best = start
        for _ in 0..<rounds {
            let tr = fluid(t, resident: best.resident, ringBytes: best.ringBytes, trace: true)
            let used = (0..<n).filter { best.resident[$0] }.reduce(0) { $0 + t.bytes[$1] }
            let stalled = (0..<n).filter { !best.resident[$0] && tr.stall[$0] > 0 }.sorted { tr.stall[$0] > tr.stall[$1] }.prefix(width)
            let idling = (0..<n).filter { best.resident[$0] && tr.idle[$0] > 0 && t.bytes[$0] > 0 && t.bytes[$0] <= best.ringBytes }
                .sorted { tr.idle[$0] > tr.idle[$1] }.prefix(width)
            let largest = (0..<n).filter { !best.resident[$0] }.map { t.bytes[$0] }.max() ?? 0
            var moves: [(resident: [Bool], ring: Int)] = []
            for s in stalled {
                var r1 = best.resident
                r1[s] = true
                let streamLargest = (0..<n).filter { !r1[$0] }.map { t.bytes[$0] }.max() ?? 0
                // Room left over, or what the ring gives up when s was its largest group.
                for ring in Set([best.ringBytes, max(streamLargest, best.ringBytes - (largest - streamLargest))]) where ring > 0 {
                    if used + t.bytes[s] <= weightRoom - ring { moves.append((r1, ring)) }
                }
                for r in idling where used + t.bytes[s] - t.bytes[r] <= weightRoom - best.ringBytes {
                    var r2 = r1
                    r2[r] = false
                    moves.append((r2, best.ringBytes))
                }
            }
            var improved: Candidate?
            for m in moves where m.resident.contains(false) {
                let sec = fluid(t, resident: m.resident, ringBytes: m.ring).seconds
                if sec < (improved?.seconds ?? best.seconds) * (1 - 1e-9) { improved = Candidate(resident: m.resident, ringBytes: m.ring, seconds: sec) }
            }
            guard let improved else { break }
            best = improved
        }
        return best
    }
}

