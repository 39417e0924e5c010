import SluiceBackends
import SluiceCore

/// One group as the executor moves it: its tensors where they live now (host RAM or a view of a
/// memory-mapped checkpoint, in their storage dtype) and its modelled cost.
public struct ExecGroup: Sendable {
    public let name: String
    /// Module-path keys and tensors. Empty in a dry run (sizes and clock only).
    public let tensors: [(key: String, tensor: Tensor)]
    /// Bytes that cross the link: the tensors' storage bytes.
    public let bytes: Int
    /// Modelled FLOPs and device bytes touched by its forward.
    public let flops: Double
    public let bytesTouched: Double

    /// Device bytes the group occupies: each tensor starts 64-byte aligned.
    public var stagedBytes: Int {
        tensors.isEmpty ? (bytes + 63) & ~63 : tensors.reduce(0) { $0 + (($1.tensor.byteCount + 63) & ~63) }
    }

    public init(name: String, tensors: [(key: String, tensor: Tensor)], flops: Double, bytesTouched: Double? = nil) {
        self.name = name
        self.tensors = tensors
        bytes = tensors.reduce(0) { $0 + $1.tensor.byteCount }
        self.flops = flops
        self.bytesTouched = bytesTouched ?? Double(bytes)
    }

    /// A group with no data, for modelling a plan on real sizes (tables).
    public init(name: String, bytes: Int, flops: Double, bytesTouched: Double) {
        self.name = name
        tensors = []
        self.bytes = bytes
        self.flops = flops
        self.bytesTouched = bytesTouched
    }
}

/// The weights of one group on the device, by module-path key.
public struct DeviceWeights: @unchecked Sendable {
    public let tensors: [String: Tensor]
    public func callAsFunction(_ key: String) throws(SluiceError) -> Tensor {
        guard let t = tensors[key] else { throw .missingTensor(key: key, file: "device weights") }
        return t
    }
}

/// Where a group lives between uses (its home tier) and what it is doing now.
public enum Tier: String, Sendable, Codable { case disk, host, device }
public enum GroupState: String, Sendable, Codable { case offloaded, loading, resident, inUse, released }

/// Runs a component's groups in forward order on a simulated device under a `ComponentPlan`:
/// resident groups are uploaded once and stay (across calls); streamed groups pass through a
/// staging ring of (depth + 1) × the largest streamed group, allocated once. Copies are issued in
/// forward order as far ahead as the ring has room — before every compute, resident or streamed,
/// so the copy engine keeps working while resident groups compute — each signalled by an event the
/// group's compute waits for. A ring region is reused only after the compute that read it has
/// ended; weights are read-only, so nothing is ever copied back.
public final class StreamingExecutor: @unchecked Sendable {
    public let device: DeviceMemory
    public private(set) var plan: ComponentPlan
    public let groups: [ExecGroup]
    /// Host RAM the executor may use to cache groups that are homed on disk.
    public let hostBudget: Int?
    /// Counts the host copies it makes (a real allocation counter, apart from its own bookkeeping).
    public let hostCounter: AllocationCounter?
    /// Planner called after an out-of-memory: the bytes really available → a smaller plan.
    public let replan: (@Sendable (Int) throws(PlanError) -> ComponentPlan)?

    private var resident: [Int: (allocation: DeviceMemory.Allocation, uploaded: DeviceMemory.Event)] = [:]
    private var ring: DeviceMemory.Allocation?
    private var activations: DeviceMemory.Allocation?
    /// Ring regions in stream order: those copied and not yet freed by their compute.
    private struct Region { var pos: Int; var offset: Int; var bytes: Int; var copied: DeviceMemory.Event; var freed: DeviceMemory.Event? }
    private var regions: [Region] = []
    /// Next stream position to copy, and where the ring's write head is.
    private var streamPosition = 0
    private var head = 0
    /// Stream position of the next call's first streamed group (each call streams the same list).
    private var callStart = 0
    private var hostCopies: [Int: [(key: String, tensor: Tensor)]] = [:]
    public private(set) var states: [GroupState]
    public private(set) var hostBytes = 0
    public private(set) var replans = 0

    public init(device: DeviceMemory, plan: ComponentPlan, groups: [ExecGroup], hostBudget: Int? = nil,
                hostCounter: AllocationCounter? = nil, replan: (@Sendable (Int) throws(PlanError) -> ComponentPlan)? = nil) {
        self.device = device
        self.plan = plan
        self.groups = groups
        self.hostBudget = hostBudget
        self.hostCounter = hostCounter
        self.replan = replan
        states = [GroupState](repeating: .offloaded, count: groups.count)
    }

    public var tiers: [Tier] {
        groups.indices.map { i in resident[i] != nil ? .device : hostCopies[i] != nil ? .host : .disk }
    }

    private lazy var index: [String: Int] = Dictionary(uniqueKeysWithValues: groups.enumerated().map { ($1.name, $0) })
    private var streamedOrder: [Int] { plan.streamed.map { index[$0]! } }
    private var ringBytes: Int { plan.slotBytes * plan.slotCount }

    /// Runs one forward: `body(i, weights, state)` for each group in order. On an out-of-memory
    /// the executor re-plans with what the device really has, releases everything, and runs the
    /// call again from `input`; a second failure is an error with the numbers.
    public func run<State>(_ input: State, _ body: (Int, DeviceWeights, State) throws -> State) throws -> State {
        do {
            return try runOnce(input, body)
        } catch let SluiceError.outOfMemory(_, requested, available) {
            guard let replan else { throw SluiceError.outOfMemory(device: device.name, requestedBytes: requested, availableBytes: available) }
            releaseAll()
            let budget = device.availableBytes
            let smaller: ComponentPlan
            do { smaller = try replan(budget) } catch {
                throw SluiceError.invalidArgument(name: "device memory", reason: "out of memory: needed \(requested) bytes with \(available) available; re-planning for the \(budget) bytes free failed: \(error)")
            }
            plan = smaller
            replans += 1
            do { return try runOnce(input, body) } catch let SluiceError.outOfMemory(_, requested2, available2) {
                releaseAll()
                throw SluiceError.invalidArgument(name: "device memory",
                    reason: "out of memory after re-planning: needed \(requested2) bytes, \(available2) available (plan: \(smaller.resident.count) resident, \(smaller.streamed.count) streamed through a \(smaller.slotCount) × \(smaller.slotBytes)-byte ring, \(smaller.activationBytes) bytes of activations)")
            }
        }
    }

    /// One use of the staging ring, on the device's modelled clock: a copy into `range`, or the kernels of
    /// the group that read it.
    public struct RingUse: Sendable {
        public enum Kind: Sendable { case copy, read }
        public let kind: Kind
        public let range: Range<Int>
        public let start: Double
        public let end: Double
    }
    /// The ring's uses in the order they were issued, while `recordsRingUses` (tests check that no copy
    /// starts before the last kernel reading the bytes it overwrites has finished).
    public private(set) var ringUses: [RingUse] = []
    public var recordsRingUses = false
    /// Test hook: copies into the ring stop waiting for the kernels that read what they overwrite (the
    /// ring test shows its check then fails).
    public var skipsRingWaits = false

    /// Frees every device allocation (weights are read-only: nothing is copied back).
    public func releaseAll() {
        for (_, r) in resident { device.free(r.allocation) }
        if let r = ring { device.free(r) }
        if let a = activations { device.free(a) }
        resident = [:]
        ring = nil
        activations = nil
        regions = []
        streamPosition = 0
        head = 0
        callStart = 0
        states = states.map { _ in .released }
    }

    private func runOnce<State>(_ input: State, _ body: (Int, DeviceWeights, State) throws -> State) throws -> State {
        try prepare()
        // On a real device the compute backend's per-op buffers live in the activation reservation —
        // also after the call, for the pipeline's own ops on its output (a sampler step), until another
        // component's call or until the reservation is freed.
        if let backing = device.backing {
            backing.useAsScratch(activations?.token)
        }
        let streamed = streamedOrder
        let streamRank = Dictionary(uniqueKeysWithValues: streamed.enumerated().map { ($1, $0) })
        var state = input
        let callStart = self.callStart
        defer { self.callStart = callStart + streamed.count }
        for i in groups.indices {
            try issueCopies(streamed: streamed, callStart: callStart)
            let g = groups[i]
            let weights: DeviceWeights
            var waits: [DeviceMemory.Event] = []
            var regionIndex: Int?
            if let r = resident[i] {
                weights = views(of: i, in: r.allocation, at: 0)
                waits.append(r.uploaded)
            } else {
                let pos = callStart + streamRank[i]!
                while !regions.contains(where: { $0.pos == pos }) {
                    // The ring is full of regions still to be computed before this one: impossible
                    // by construction (they precede it in stream order), so copy it now.
                    let before = streamPosition
                    try issueCopies(streamed: streamed, callStart: callStart)
                    precondition(streamPosition > before, "staging ring cannot hold \(g.name)")
                }
                let k = regions.firstIndex { $0.pos == pos }!
                regionIndex = k
                waits.append(regions[k].copied)
                weights = views(of: i, in: ring!, at: regions[k].offset)
            }
            states[i] = .inUse
            try device.waitForCopies(waits)
            var next: State = state
            let done = try device.compute(flops: g.flops, bytes: g.bytesTouched, label: g.name, waitFor: waits) {
                next = try body(i, weights, state)
            }
            if let k = regionIndex {
                regions[k].freed = done
                if recordsRingUses {
                    ringUses.append(RingUse(kind: .read, range: regions[k].offset..<(regions[k].offset + regions[k].bytes), start: done.start, end: done.time))
                }
                states[i] = .released
            } else {
                states[i] = .resident
            }
            state = next
        }
        return state
    }

    /// Allocates the activation reservation and the staging ring, and uploads resident groups, once.
    private func prepare() throws(SluiceError) {
        if activations == nil, plan.activationBytes > 0 {
            activations = try device.allocate(bytes: plan.activationBytes, label: "activations")
        }
        if ring == nil && ringBytes > 0 {
            ring = try device.allocate(bytes: ringBytes, label: "staging ring")
        }
        for name in plan.resident {
            let i = index[name]!
            guard resident[i] == nil else { continue }
            states[i] = .loading
            let a = try device.allocate(bytes: groups[i].stagedBytes, label: groups[i].name)
            let uploaded = try copy(i, into: a, at: 0, waitFor: [])
            resident[i] = (a, uploaded)
            states[i] = .resident
        }
    }

    /// Copies streamed groups in order into the ring while the region each needs holds only
    /// groups that have already computed (their compute events are known: the copy waits for them).
    private func issueCopies(streamed: [Int], callStart: Int) throws(SluiceError) {
        guard !streamed.isEmpty, let ring else { return }
        // Never run more than one call ahead.
        while streamPosition < callStart + 2 * streamed.count {
            let i = streamed[(streamPosition - callStart) % streamed.count]
            let bytes = groups[i].stagedBytes
            precondition(bytes <= ring.bytes, "group \(groups[i].name) larger than the staging ring")
            let offset = head + bytes <= ring.bytes ? head : 0
            let overlapping = regions.filter { $0.offset < offset + bytes && offset < $0.offset + $0.bytes }
            // Every region it would overwrite must have been read by its compute already.
            guard overlapping.allSatisfy({ $0.freed != nil }) else { return }
            let wait = skipsRingWaits ? [] : overlapping.compactMap(\.freed)
            regions.removeAll { r in overlapping.contains { $0.pos == r.pos } }
            states[i] = .loading
            let copied = try copy(i, into: ring, at: offset, waitFor: wait)
            if recordsRingUses { ringUses.append(RingUse(kind: .copy, range: offset..<(offset + bytes), start: copied.start, end: copied.time)) }
            regions.append(Region(pos: streamPosition, offset: offset, bytes: bytes, copied: copied, freed: nil))
            head = offset + bytes
            streamPosition += 1
        }
    }

    /// The group's tensors from the cheapest home: a host copy if one is kept, else the original
    /// (RAM or the memory-mapped file). Host copies are made while `hostBudget` allows.
    private func source(_ i: Int) -> [(key: String, tensor: Tensor)] {
        if let cached = hostCopies[i] { return cached }
        let g = groups[i]
        guard let budget = hostBudget, !g.tensors.isEmpty, isMapped(g), hostBytes + g.bytes <= budget else { return g.tensors }
        let copy = g.tensors.map { (key: $0.key, tensor: $0.tensor.ownedCopy(counter: hostCounter)) }
        releaseMappedPages(i)
        hostCopies[i] = copy
        hostBytes += g.bytes
        return copy
    }

    /// With a host budget, a group read from the memory-mapped file gives its pages back once its bytes
    /// are copied (to the device, or to a host copy): RAM then holds only what the budget allows.
    private func releaseMappedPages(_ i: Int) {
        guard hostBudget != nil, hostCopies[i] == nil else { return }
        for t in groups[i].tensors { t.tensor.storage.releaseMappedPages() }
    }

    private func isMapped(_ g: ExecGroup) -> Bool {
        g.tensors.contains { t in
            if case .view(let parent) = t.tensor.storage.origin, case .mapped = parent.origin { return true }
            return false
        }
    }

    /// Copies group `i` into `a` at `base` after `waitFor`: through the device's copy queue when it is
    /// real (the event carries the timeline value to wait for), else a host copy into the simulation.
    private func copy(_ i: Int, into a: DeviceMemory.Allocation, at base: Int, waitFor: [DeviceMemory.Event]) throws(SluiceError) -> DeviceMemory.Event {
        let g = groups[i]
        // The copies read their sources now (into the device, or a staging slot): the pages may go after.
        defer { releaseMappedPages(i) }
        if let backing = device.backing, let token = a.token {
            let tensors = source(i).map(\.tensor)
            // On the device, the copy waits for the last kernel that read the bytes it overwrites.
            let after = waitFor.map(\.computeSignal).max() ?? 0
            return try device.copyToDevice(bytes: g.bytes, label: g.name, waitFor: waitFor) { () throws(SluiceError) -> UInt64 in
                try backing.copy(tensors, into: token, at: base, after: after)
            }
        }
        return device.copyToDevice(bytes: g.bytes, label: g.name, waitFor: waitFor) { fill(a, at: base, from: source(i)) }
    }

    private func fill(_ a: DeviceMemory.Allocation, at base: Int, from tensors: [(key: String, tensor: Tensor)]) {
        guard let dst = a.storage else { return }
        var offset = base
        for (_, t) in tensors {
            let c = t.contiguous()
            (dst.baseAddress + offset).copyMemory(from: c.rawPointer, byteCount: c.byteCount)
            offset += (c.byteCount + 63) & ~63
        }
    }

    private func views(of i: Int, in a: DeviceMemory.Allocation, at base: Int) -> DeviceWeights {
        guard let storage = a.storage else { return DeviceWeights(tensors: [:]) }
        var out: [String: Tensor] = [:]
        var offset = base
        for (key, t) in groups[i].tensors {
            let view = HostStorage(viewOf: storage, offset: offset, byteCount: t.byteCount)
            out[key] = Tensor(storage: view, dtype: t.dtype, shape: t.shape)
            offset += (t.byteCount + 63) & ~63
        }
        return DeviceWeights(tensors: out)
    }
}
