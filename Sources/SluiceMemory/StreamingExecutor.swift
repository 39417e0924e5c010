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
/// ring of depth + 1 slots allocated once, the copies of the next `depth` groups in flight on the
/// copy engine while the current one computes, each signalled by an event compute waits for.
/// Weights are read-only: a slot is reused without copying anything back.
public final class StreamingExecutor: @unchecked Sendable {
    public let device: SimulatedDevice
    public private(set) var plan: ComponentPlan
    public let groups: [ExecGroup]
    /// Host RAM the executor may use to cache groups that are homed on disk.
    public let hostBudget: Int?
    /// Planner called after an out-of-memory: the bytes really available → a smaller plan.
    public let replan: (@Sendable (Int) throws(PlanError) -> ComponentPlan)?

    private var resident: [Int: SimulatedDevice.Allocation] = [:]
    private var slots: [SimulatedDevice.Allocation] = []
    private var activations: SimulatedDevice.Allocation?
    private var slotFree: [SimulatedDevice.Event] = []
    /// Streamed copies already issued: stream position → (event, slot).
    private var inFlight: [Int: (event: SimulatedDevice.Event, slot: Int)] = [:]
    private var streamPosition = 0
    /// Stream position of the next call's first streamed group (each call streams the same list).
    private var callStart = 0
    private var hostCopies: [Int: [(key: String, tensor: Tensor)]] = [:]
    public private(set) var states: [GroupState]
    public private(set) var hostBytes = 0
    public private(set) var replans = 0

    public init(device: SimulatedDevice, plan: ComponentPlan, groups: [ExecGroup], hostBudget: Int? = nil,
                replan: (@Sendable (Int) throws(PlanError) -> ComponentPlan)? = nil) {
        self.device = device
        self.plan = plan
        self.groups = groups
        self.hostBudget = hostBudget
        self.replan = replan
        states = [GroupState](repeating: .offloaded, count: groups.count)
    }

    public var tiers: [Tier] {
        groups.indices.map { i in resident[i] != nil ? .device : hostCopies[i] != nil ? .host : .disk }
    }

    private lazy var index: [String: Int] = Dictionary(uniqueKeysWithValues: groups.enumerated().map { ($1.name, $0) })
    private var streamedOrder: [Int] { plan.streamed.map { index[$0]! } }

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
                    reason: "out of memory after re-planning: needed \(requested2) bytes, \(available2) available (plan: \(smaller.resident.count) resident, \(smaller.streamed.count) streamed through \(smaller.slotCount) × \(smaller.slotBytes)-byte slots, \(smaller.activationBytes) bytes of activations)")
            }
        }
    }

    /// Frees every device allocation (weights are read-only: nothing is copied back).
    public func releaseAll() {
        for (_, a) in resident { device.free(a) }
        for s in slots { device.free(s) }
        if let a = activations { device.free(a) }
        resident = [:]
        slots = []
        activations = nil
        slotFree = []
        inFlight = [:]
        streamPosition = 0
        callStart = 0
        states = states.map { _ in .released }
    }

    private func runOnce<State>(_ input: State, _ body: (Int, DeviceWeights, State) throws -> State) throws -> State {
        try prepare()
        let streamed = streamedOrder
        let streamRank = Dictionary(uniqueKeysWithValues: streamed.enumerated().map { ($1, $0) })
        var state = input
        let callStart = self.callStart
        defer { self.callStart = callStart + streamed.count }
        for i in groups.indices {
            var waits: [SimulatedDevice.Event] = []
            let weights: DeviceWeights
            if let a = resident[i] {
                weights = views(of: i, in: a)
            } else {
                let rank = streamRank[i]!
                let pos = callStart + rank
                // Keep `depth` copies in flight ahead of this one (wrapping into the next call).
                let horizon = pos + plan.prefetchDepth
                while streamPosition <= horizon { try issue(streamPosition, callStart: callStart, streamed: streamed) }
                let (event, slot) = inFlight.removeValue(forKey: pos)!
                waits.append(event)
                weights = views(of: i, in: slots[slot])
                states[i] = .inUse
                let g = groups[i]
                var next: State = state
                let done = try device.compute(flops: g.flops, bytes: g.bytesTouched, label: g.name, waitFor: waits) {
                    next = try body(i, weights, state)
                }
                slotFree[slot] = done
                states[i] = .released
                state = next
                continue
            }
            states[i] = .inUse
            let g = groups[i]
            var next: State = state
            try device.compute(flops: g.flops, bytes: g.bytesTouched, label: g.name, waitFor: waits) {
                next = try body(i, weights, state)
            }
            states[i] = .resident
            state = next
        }
        return state
    }

    /// Allocates the activation reservation and the slot ring, and uploads resident groups, once.
    private func prepare() throws(SluiceError) {
        if activations == nil, plan.activationBytes > 0 {
            activations = try device.allocate(bytes: plan.activationBytes, label: "activations")
        }
        if slots.isEmpty && plan.slotCount > 0 {
            for k in 0..<plan.slotCount { slots.append(try device.allocate(bytes: plan.slotBytes, label: "slot \(k)")) }
            slotFree = [SimulatedDevice.Event](repeating: .zero, count: plan.slotCount)
        }
        for name in plan.resident {
            let i = index[name]!
            guard resident[i] == nil else { continue }
            states[i] = .loading
            let a = try device.allocate(bytes: groups[i].bytes, label: groups[i].name)
            device.copyToDevice(bytes: groups[i].bytes, label: groups[i].name) { fill(a, from: source(i)) }
            resident[i] = a
            states[i] = .resident
        }
    }

    /// Copies stream position `pos` into its slot after the slot's previous occupant has computed.
    private func issue(_ pos: Int, callStart: Int, streamed: [Int]) throws(SluiceError) {
        guard !streamed.isEmpty else { streamPosition += 1; return }
        let i = streamed[(pos - callStart) % streamed.count]
        let slot = pos % plan.slotCount
        precondition(groups[i].bytes <= plan.slotBytes, "group \(groups[i].name) larger than its slot")
        states[i] = .loading
        let event = device.copyToDevice(bytes: groups[i].bytes, label: groups[i].name, waitFor: [slotFree[slot]]) {
            fill(slots[slot], from: source(i))
        }
        inFlight[pos] = (event, slot)
        streamPosition += 1
    }

    /// The group's tensors from the cheapest home: a host copy if one is kept, else the original
    /// (RAM or the memory-mapped file). Host copies are made while `hostBudget` allows.
    private func source(_ i: Int) -> [(key: String, tensor: Tensor)] {
        if let cached = hostCopies[i] { return cached }
        let g = groups[i]
        guard let budget = hostBudget, !g.tensors.isEmpty, isMapped(g), hostBytes + g.bytes <= budget else { return g.tensors }
        let copy = g.tensors.map { (key: $0.key, tensor: $0.tensor.contiguousCopy()) }
        hostCopies[i] = copy
        hostBytes += g.bytes
        return copy
    }

    private func isMapped(_ g: ExecGroup) -> Bool {
        g.tensors.contains { t in
            if case .view(let parent) = t.tensor.storage.origin, case .mapped = parent.origin { return true }
            return false
        }
    }

    private func fill(_ a: SimulatedDevice.Allocation, from tensors: [(key: String, tensor: Tensor)]) {
        guard let dst = a.storage else { return }
        var offset = 0
        for (_, t) in tensors {
            let c = t.contiguous()
            (dst.baseAddress + offset).copyMemory(from: c.rawPointer, byteCount: c.byteCount)
            offset += (c.byteCount + 63) & ~63
        }
    }

    private func views(of i: Int, in a: SimulatedDevice.Allocation) -> DeviceWeights {
        guard let storage = a.storage else { return DeviceWeights(tensors: [:]) }
        var out: [String: Tensor] = [:]
        var offset = 0
        for (key, t) in groups[i].tensors {
            let view = HostStorage(viewOf: storage, offset: offset, byteCount: t.byteCount)
            out[key] = Tensor(storage: view, dtype: t.dtype, shape: t.shape)
            offset += (t.byteCount + 63) & ~63
        }
        return DeviceWeights(tensors: out)
    }
}

extension Tensor {
    /// A fresh contiguous copy in owned host memory.
    func contiguousCopy() -> Tensor {
        let out = Tensor(uninitialized: shape, dtype: dtype)
        let src = contiguous()
        out.storage.baseAddress.copyMemory(from: src.rawPointer, byteCount: byteCount)
        return out
    }
}
