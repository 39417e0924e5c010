import SluiceBackends
import SluiceCore
import SluiceMemory
import SluiceWeights
import Foundation
import Testing

/// The sluice's promises, proven on the simulated device with a 26-group tiny transformer:
/// peak device bytes never exceed the budget, and offloading never changes the result. The device
/// holds twice the budget wherever the peak is asserted, so a plan that overran its budget would show
/// in the measured peak rather than fail an allocation.
@Suite struct StreamingExecutorTests {
    static let activation = 64 << 10

    func plan(_ m: TinyTransformer, budget: Int, depth: Int?) throws -> ComponentPlan {
        try Planner.planComponent(name: "transformer", phase: "denoise", groups: m.sizes, activationBytes: Self.activation,
                                  budget: budget, prefetchDepth: depth)
    }

    /// The budgets from "everything fits" down to the smallest the planner accepts, one block apart.
    func budgets(_ m: TinyTransformer, depth: Int) -> [Int] {
        let block = m.sizes[1].bytes
        var out: [Int] = []
        var b = m.totalBytes + Self.activation
        while (try? plan(m, budget: b, depth: depth)) != nil { out.append(b); b -= block / 2 }
        return out
    }

    @Test func everyBudgetAndDepthIsBitIdenticalAndUnderBudget() throws {
        let be = try CPUBackend(threads: 2)
        for storage in [DType.f32, .bf16] {
            let model = try TinyTransformer(storage: storage)
            let reference = try bits(model.runOnCPU(be))
            for depth in 1...4 {
                let all = budgets(model, depth: depth)
                #expect(all.count >= 20, "\(storage) depth \(depth): only \(all.count) budgets")
                var streamedSomewhere = false
                for budget in all {
                    let device = DeviceMemory(profile: .rtx4090, capBytes: 2 * budget)
                    let p = try plan(model, budget: budget, depth: depth)
                    streamedSomewhere = streamedSomewhere || !p.streamed.isEmpty
                    let ex = StreamingExecutor(device: device, plan: p, groups: model.execGroups())
                    let out = try model.run(on: ex, be)
                    #expect(try bits(out) == reference, "\(storage) depth \(depth) budget \(budget): output differs")
                    #expect(device.peakBytes <= budget, "\(storage) depth \(depth): peak \(device.peakBytes) > budget \(budget)")
                }
                #expect(streamedSomewhere)
            }
        }
    }

    /// The ring's reuse hazard on the modelled clock: with copies far faster than kernels (a copy that
    /// did not wait would start at once), no copy into a ring range starts before the last kernel that
    /// read that range has finished. Without the wait (a test hook) the same check finds copies that
    /// start early — the simulation copies at once, so only the clock can show it.
    @Test func ringIsReusedOnlyAfterItsReadersFinish() throws {
        let be = try CPUBackend(threads: 2)
        let model = try TinyTransformer(storage: .bf16)
        let fastLink = DeviceProfile(name: "fast link, slow kernels", memoryBytes: 1 << 30, memoryBandwidth: 1e9, linkBandwidth: 1e15,
                                     bf16Flops: 1e9, computeEfficiency: 1, linkEfficiency: 1, source: "test")
        func earlyCopies(skip: Bool) throws -> (early: Int, copies: Int) {
            let budget = model.totalBytes / 3
            let device = DeviceMemory(profile: fastLink, capBytes: budget)
            let p = try plan(model, budget: budget, depth: 2)
            #expect(!p.streamed.isEmpty)
            let ex = StreamingExecutor(device: device, plan: p, groups: model.execGroups())
            ex.recordsRingUses = true
            ex.skipsRingWaits = skip
            for _ in 0..<2 { _ = try model.run(on: ex, be) }
            var early = 0, copies = 0
            for (j, c) in ex.ringUses.enumerated() where c.kind == .copy {
                copies += 1
                let lastRead = ex.ringUses[..<j].filter { $0.kind == .read && $0.range.overlaps(c.range) }.map(\.end).max() ?? 0
                if c.start < lastRead { early += 1 }
            }
            return (early, copies)
        }
        let waited = try earlyCopies(skip: false), skipped = try earlyCopies(skip: true)
        #expect(waited.copies > 0 && waited.early == 0, "\(waited)")
        #expect(skipped.early > 0, "\(skipped)")
    }

    @Test func secondCallUploadsNothingResidentAndStreamsExactlyItsGroups() throws {
        let be = try CPUBackend(threads: 2)
        let model = try TinyTransformer(storage: .bf16)
        let budget = model.totalBytes / 2
        let device = DeviceMemory(profile: .rtx4090, capBytes: budget)
        let p = try plan(model, budget: budget, depth: 2)
        #expect(!p.resident.isEmpty && !p.streamed.isEmpty)
        let ex = StreamingExecutor(device: device, plan: p, groups: model.execGroups())
        let first = try bits(model.run(on: ex, be))
        device.resetCounters()
        let second = try bits(model.run(on: ex, be))
        #expect(first == second)
        // Steady state: each call moves exactly the streamed groups (the first `depth` of them were
        // prefetched at the end of the previous call), and nothing that is resident.
        #expect(device.bytesHostToDevice == p.streamedBytesPerCall)
        let residentNames = Set(p.resident)
        #expect(device.spans.filter { $0.kind == .copy }.allSatisfy { !residentNames.contains($0.label) })
        // Everything fits: the second call copies 0 bytes.
        let roomy = DeviceMemory(profile: .rtx4090, capBytes: model.totalBytes + Self.activation)
        let ex2 = StreamingExecutor(device: roomy, plan: try plan(model, budget: roomy.capBytes, depth: nil), groups: model.execGroups())
        _ = try model.run(on: ex2, be)
        roomy.resetCounters()
        _ = try model.run(on: ex2, be)
        #expect(roomy.bytesHostToDevice == 0)
    }

    @Test func copiesOverlapComputeAndAQuarterBudgetRunsNearResidentSpeed() throws {
        let be = try CPUBackend(threads: 2)
        let model = try TinyTransformer(storage: .bf16)
        // A device whose link moves one block in 0.8× the time the block computes.
        let blockBytes = Double(model.sizes[1].bytes), blockFlops = model.flops(1)
        let flopsPerSecond = 1e9
        let linkBytesPerSecond = blockBytes / (0.8 * blockFlops / flopsPerSecond)
        let tuned = DeviceProfile(name: "balanced", memoryBytes: 1 << 30, memoryBandwidth: 1e15,
                                  linkBandwidth: linkBytesPerSecond, bf16Flops: flopsPerSecond, computeEfficiency: 1,
                                  linkEfficiency: 1, source: "test")
        func steadyStep(budget: Int) throws -> (seconds: Double, device: DeviceMemory, plan: ComponentPlan) {
            let device = DeviceMemory(profile: tuned, capBytes: 2 * budget)
            let p = try plan(model, budget: budget, depth: nil)
            let ex = StreamingExecutor(device: device, plan: p, groups: model.execGroups())
            _ = try model.run(on: ex, be)
            device.resetCounters()
            let t0 = device.now
            _ = try model.run(on: ex, be)
            return (device.now - t0, device, p)
        }
        let resident = try steadyStep(budget: model.totalBytes + Self.activation)
        let quarter = try steadyStep(budget: model.totalBytes / 4 + Self.activation)
        #expect(!quarter.plan.streamed.isEmpty)
        #expect(quarter.device.peakBytes <= model.totalBytes / 4 + Self.activation)
        #expect(quarter.seconds <= 1.15 * resident.seconds, "streamed \(quarter.seconds) s vs resident \(resident.seconds) s")
        // The copy of each streamed group starts before the compute of the group before it ends
        // (each compute is paired with the latest copy of its group that finished before it began).
        let spans = quarter.device.spans
        let computes = spans.filter { $0.kind == .compute }, copies = spans.filter { $0.kind == .copy }
        let streamedNames = Set(quarter.plan.streamed)
        var checked = 0
        for m in computes.indices.dropFirst() where streamedNames.contains(computes[m].label) {
            guard let feed = copies.last(where: { $0.label == computes[m].label && $0.end <= computes[m].start }) else { continue }
            #expect(feed.start < computes[m - 1].end, "\(feed.label) copy starts at \(feed.start), after \(computes[m - 1].label) ends at \(computes[m - 1].end)")
            checked += 1
        }
        // (the first few were prefetched during the previous call, outside this window)
        #expect(checked >= quarter.plan.streamed.count / 2)
    }

    @Test func fp8GroupsCrossTheLinkAtOneBytePerParameter() throws {
        let be = try CPUBackend(threads: 2)
        let model = try TinyTransformer(storage: .f8e4m3fn)
        let reference = try bits(model.runOnCPU(be))
        let budget = model.totalBytes / 3
        let device = DeviceMemory(profile: .rtx3060, capBytes: budget)
        let p = try plan(model, budget: budget, depth: 1)
        let ex = StreamingExecutor(device: device, plan: p, groups: model.execGroups())
        #expect(try bits(model.run(on: ex, be)) == reference)
        device.resetCounters()
        #expect(try bits(model.run(on: ex, be)) == reference)
        // Steady state: a call moves its streamed groups at their stored size — one byte per
        // element for the fp8 tensors (norm weights and biases of this model are f32).
        let streamed = p.streamed.flatMap { name in model.groups.first { $0.name == name }!.tensors }
        let storedBytes = streamed.reduce(0) { $0 + $1.tensor.count * $1.tensor.dtype.byteSize }
        let fp8Elements = streamed.filter { $0.tensor.dtype == .f8e4m3fn }.reduce(0) { $0 + $1.tensor.count }
        #expect(fp8Elements > 0)
        #expect(device.bytesHostToDevice == storedBytes)
        #expect(storedBytes < streamed.reduce(0) { $0 + $1.tensor.count * 4 } / 3)
        #expect(model.groups[1].tensors.first { $0.key.hasSuffix("qkv.weight") }!.tensor.byteCount == 3 * 64 * 64)
    }

    @Test func outOfMemoryMidRunReplansAndGivesTheSameOutput() throws {
        let be = try CPUBackend(threads: 2)
        let model = try TinyTransformer(storage: .bf16)
        let reference = try bits(model.runOnCPU(be))
        let budget = model.totalBytes + Self.activation
        let device = DeviceMemory(profile: .rtx4090, capBytes: budget)
        let act = Self.activation, sizes = model.sizes
        let ex = StreamingExecutor(device: device, plan: try plan(model, budget: budget, depth: nil), groups: model.execGroups(),
                                   replan: { available throws(PlanError) in
            try Planner.planComponent(name: "transformer", phase: "denoise", groups: sizes, activationBytes: act, budget: available)
        })
        // Another process takes half the device just before our 10th allocation.
        device.occupy(externalBytes: budget / 2, beforeAllocation: 10)
        let out = try model.run(on: ex, be)
        #expect(try bits(out) == reference)
        #expect(ex.replans == 1)
        #expect(!ex.plan.streamed.isEmpty)
        // The new plan fits what the other process left (the device's allocator would refuse more, so
        // the plan itself is what is checked).
        #expect(ex.plan.deviceBytes <= budget - budget / 2, "re-planned for \(ex.plan.deviceBytes) bytes with \(budget - budget / 2) left")

        // A budget too small for anything: the error says what is needed and what is there.
        do {
            _ = try plan(model, budget: 4096, depth: nil)
            Issue.record("planned a 4 KiB budget")
        } catch let PlanError.budgetTooSmall(_, budget, minimum) {
            #expect(budget == 4096 && minimum > 4096)
        }
        // And a re-plan that cannot succeed ends with the numbers.
        let tiny = DeviceMemory(profile: .rtx4090, capBytes: budget)
        let ex3 = StreamingExecutor(device: tiny, plan: try plan(model, budget: budget, depth: nil), groups: model.execGroups(),
                                    replan: { available throws(PlanError) in
            try Planner.planComponent(name: "transformer", phase: "denoise", groups: sizes, activationBytes: act, budget: available)
        })
        tiny.occupy(externalBytes: budget - 8192, beforeAllocation: 1)
        do {
            _ = try model.run(on: ex3, be)
            Issue.record("ran in 8 KiB")
        } catch let error as SluiceError {
            #expect("\(error)".contains("out of memory") && "\(error)".contains("available"), "\(error)")
        }
    }

    @Test func diskHomedGroupsKeepHostRAMUnderItsLimit() throws {
        let be = try CPUBackend(threads: 2)
        let model = try TinyTransformer(storage: .bf16)
        let reference = try bits(model.runOnCPU(be))
        // Each group carries 768 KiB of ballast the forward never reads but the executor copies, so the
        // checkpoint (≈ 20 MB) is far larger than the kernel's mapping granule.
        let groups = model.groups.map { g in (name: g.name, tensors: g.tensors + [(key: g.name + ".ballast", tensor: Tensor(zeros: [393_216], dtype: .bf16))]) }
        let dir = NSTemporaryDirectory() + "sluice-disk-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try SafetensorsWriter.write(groups.flatMap { $0.tensors.map { ($0.key, $0.tensor) } }, to: dir + "/model.safetensors")
        let total = groups.reduce(0) { $0 + $1.tensors.reduce(0) { $0 + $1.tensor.byteCount } }
        let largest = groups.map { $0.tensors.reduce(0) { $0 + $1.tensor.byteCount } }.max()!
        /// Runs three calls with weights homed in a fresh mapping of the file; RAM holding weights is
        /// sampled at every group: what the process has resident of the mapping (/proc/self/smaps) plus
        /// the host copies the executor allocated (a real allocation counter).
        func run(ramLimit: Int?) throws -> (peakRAM: Int, executor: StreamingExecutor) {
            let file = try SafetensorsFile(path: dir + "/model.safetensors")
            let mapped = try groups.enumerated().map { i, g in
                ExecGroup(name: g.name, tensors: try g.tensors.map { (key: $0.key, tensor: try file.tensor($0.key)) }, flops: model.flops(i))
            }
            let sizes = mapped.map { GroupSize(name: $0.name, bytes: $0.stagedBytes) }
            let budget = total / 4
            let p = try Planner.planComponent(name: "transformer", phase: "denoise", groups: sizes, activationBytes: Self.activation,
                                              budget: budget, prefetchDepth: 2)
            let copies = AllocationCounter()
            let ex = StreamingExecutor(device: DeviceMemory(profile: .rtx4090, capBytes: 2 * budget), plan: p, groups: mapped,
                                       hostBudget: ramLimit, hostCounter: copies)
            var peak = 0
            func sample() { peak = max(peak, copies.currentBytes + (HostMemory.residentBytes(mappingAt: file.mapping.baseAddress) ?? 0)) }
            for _ in 0..<3 {
                #expect(try bits(ex.run(model.input()) { i, w, x in
                    sample()
                    return try TinyTransformer.forward(group: i, name: model.groups[i].name, w: { try w($0) }, x: x, on: be)
                }) == reference)
                sample()
                if let ramLimit { #expect(copies.peakBytes <= ramLimit) }
            }
            return (peak, ex)
        }
        let ramLimit = total / 3
        // A copy maps its group's pages until it has read them; the kernel maps page-cache folios (up
        // to 2 MiB) whole on a fault.
        let bound = ramLimit + largest + (2 << 20)
        let (limited, ex) = try run(ramLimit: ramLimit)
        #expect(limited <= bound, "weights held \(limited) bytes of RAM under a \(ramLimit)-byte limit (bound \(bound))")
        #expect(ex.hostBytes > 0 && ex.hostBytes <= ramLimit)
        #expect(ex.tiers.contains(.disk) && ex.tiers.contains(.host) && ex.tiers.contains(.device))
        // Without a limit the same run keeps what it read resident: the measure sees weights in RAM.
        let (unlimited, _) = try run(ramLimit: nil)
        #expect(unlimited > bound, "without a limit: \(unlimited) bytes")
    }
}
