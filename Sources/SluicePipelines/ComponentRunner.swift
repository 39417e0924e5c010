import SluiceBackends
import SluiceCore
import SluiceMemory
import SluiceWeights

/// Runs one component's weight groups in forward order, either straight from the memory-mapped
/// checkpoint (no budget: zero-copy) or through the sluice — a `StreamingExecutor` on the device, which
/// keeps some groups resident and streams the rest under the plan. The model code is the same either way.
public final class ComponentRunner: @unchecked Sendable {
    public let name: String
    public let phase: Phase
    public let groupNames: [String]
    let checkpoint: Checkpoint
    let groupOf: (String) -> String?
    /// A prefix every key of this checkpoint carries beyond the module paths the model names
    /// (a text encoder saved from a *ForCausalLM keeps its decoder under "model.").
    public let keyPrefix: String
    public private(set) var executor: StreamingExecutor?
    /// How many of the first groups stay in host memory under a budget: lookup tables (a text
    /// encoder's token embedding) the model reads by rows (`ModuleWeights.gather`), so only the rows
    /// a prompt uses cross to the device — never the table, which the planner does not see.
    public let hostGroupCount: Int

    public init(name: String, phase: Phase, checkpoint: Checkpoint, groupNames: [String], hostGroups: Set<String> = [],
                groupOf: @escaping (String) -> String?) throws(SluiceError) {
        self.name = name
        self.phase = phase
        self.checkpoint = checkpoint
        self.groupNames = groupNames
        self.groupOf = groupOf
        hostGroupCount = groupNames.prefix { hostGroups.contains($0) }.count
        precondition(hostGroupCount == hostGroups.count, "host groups must come first: \(hostGroups) in \(groupNames)")
        keyPrefix = Self.detectPrefix(checkpoint.names, groupOf: groupOf)
        // Every group has tensors: a broken download fails at load, naming what is missing.
        _ = try groups(groupNames)
    }

    /// The component `component` of a diffusers folder, its weights from the component's folder.
    public convenience init(folder: DiffusersFolder, component: String, phase: Phase, groupNames: [String], hostGroups: Set<String> = [],
                            groupOf: @escaping (String) -> String?) throws {
        try self.init(name: component, phase: phase, checkpoint: try ModelLocator.checkpoint(component: folder.folder(component)),
                      groupNames: groupNames, hostGroups: hostGroups, groupOf: groupOf)
    }

    /// The groups that go to the device under a budget (all but the host groups), in order.
    public var deviceGroupNames: ArraySlice<String> { groupNames.dropFirst(hostGroupCount) }

    /// "" when the keys are the model's module paths; else the "x." prefix that makes most of them so
    /// (CLIPTextModelWithProjection keeps its text_projection beside "text_model.": keys outside the
    /// prefix are still found under their own names).
    static func detectPrefix(_ names: [String], groupOf: (String) -> String?) -> String {
        var best = "", mapped = names.filter { groupOf($0) != nil }.count
        for candidate in ["model.", "text_model.", "transformer.", "model.diffusion_model.", "vae."] {
            let n = names.filter { $0.hasPrefix(candidate) && groupOf(String($0.dropFirst(candidate.count))) != nil }.count
            if n > mapped { (best, mapped) = (candidate, n) }
        }
        return best
    }

    /// The model's name for a checkpoint key and its group, or nil when no group takes it.
    func modelKey(_ key: String) -> (name: String, group: String)? {
        if !keyPrefix.isEmpty, key.hasPrefix(keyPrefix), let g = groupOf(String(key.dropFirst(keyPrefix.count))) {
            return (String(key.dropFirst(keyPrefix.count)), g)
        }
        return groupOf(key).map { (key, $0) }
    }

    /// The checkpoint's tensors by device group (tensors no group uses are left on disk; host groups
    /// never go to the device); `flops` per device group for the modelled clock (0 when only the sizes
    /// matter).
    public func execGroups(flops: [Double]? = nil) throws(SluiceError) -> [ExecGroup] {
        try groups(Array(deviceGroupNames), flops: flops)
    }

    func groups(_ names: [String], flops: [Double]? = nil) throws(SluiceError) -> [ExecGroup] {
        var byGroup: [String: [(key: String, tensor: Tensor)]] = [:]
        for key in checkpoint.names.sorted() {
            guard let g = modelKey(key)?.group else { continue }
            byGroup[g, default: []].append((key, try checkpoint.tensor(key)))
        }
        return try names.enumerated().map { i, g throws(SluiceError) in
            guard let tensors = byGroup[g], !tensors.isEmpty else {
                throw .invalidCheckpoint(file: checkpoint.files.first?.path ?? name, tensor: nil, reason: "no tensors for \(name) group '\(g)'")
            }
            return ExecGroup(name: g, tensors: tensors, flops: flops?[i] ?? 0)
        }
    }

    /// The groups as the planner sees them (the device groups): parameters and stored bytes, from the checkpoint.
    public func groupDescriptions() throws(SluiceError) -> [GroupDescription] {
        try execGroups().map { g in GroupDescription(name: g.name, parameters: g.tensors.reduce(0) { $0 + $1.tensor.count }, storedBytes: g.stagedBytes) }
    }

    /// This component for the planner, with its model's activation formula and FLOPs per row.
    public func describe(activationBytes: @escaping @Sendable (Workload) -> Int, rows: @escaping @Sendable (Workload) -> Double,
                         tiling: Tiling? = nil) throws(SluiceError) -> ComponentDescription {
        let groups = try groupDescriptions()
        return ComponentDescription(name: name, phase: phase, groups: groups, activationBytes: activationBytes,
                                    flops: ComponentDescription.linearFlops(groups, rows: rows), tiling: tiling)
    }

    /// Streams through `device` under `plan` from now on.
    public func attach(device: DeviceMemory, plan: ComponentPlan, flops: [Double], hostBudget: Int?,
                       hostCounter: AllocationCounter? = nil) throws(SluiceError) {
        let groups = try execGroups(flops: flops)
        let sizes = groups.map { GroupSize(name: $0.name, bytes: device.allocationSize($0.stagedBytes)) }
        let name = self.name, phase = self.phase.rawValue, activation = plan.activationBytes, tile = plan.tileLatent
        executor = StreamingExecutor(device: device, plan: plan, groups: groups, hostBudget: hostBudget, hostCounter: hostCounter) { available throws(PlanError) in
            try Planner.planComponent(name: name, phase: phase, groups: sizes, activationBytes: activation, budget: available, tileLatent: tile)
        }
    }

    /// Frees the component's device memory (its weights stay on disk/host).
    public func release() { executor?.releaseAll() }

    /// Releases the device memory and forgets the executor: the next run reads the mapped files
    /// unless `attach` is called again.
    public func detach() {
        executor?.releaseAll()
        executor = nil
    }

    /// Bytes of this component's memory-mapped checkpoint resident in this process now.
    public var mappedResidentBytes: Int {
        checkpoint.files.reduce(0) { $0 + (HostMemory.residentBytes(mappingAt: $1.mapping.baseAddress) ?? 0) }
    }

    public func run<State>(_ input: State, _ body: (Int, ModuleWeights, State) throws -> State) throws -> State {
        let prefix = keyPrefix
        // A model name is looked up under the prefix, then as it is (a key beside the prefix).
        func lookup(_ k: String, _ get: (String) throws(SluiceError) -> Tensor) throws(SluiceError) -> Tensor {
            if prefix.isEmpty { return try get(k) }
            do { return try get(prefix + k) } catch {
                if let t = try? get(k) { return t }
                throw error
            }
        }
        let ckpt = checkpoint
        func fromFile(_ k: String) throws(SluiceError) -> Tensor { try lookup(k) { n throws(SluiceError) in try ckpt.tensor(n) } }
        if let executor {
            // Host groups: the model gathers rows from the mapped table; the rows are what crosses. A real
            // device takes them in as the next kernel's input (counted there); the simulated one models the copy.
            let device = executor.device
            let host = ModuleWeights(gather: { k, ids throws(SluiceError) in
                let rows = try HostMath.embed(fromFile(k), ids: ids, name: k)
                if device.backing == nil { device.copyToDevice(bytes: rows.byteCount, label: k + " rows") }
                return rows
            }, fromFile)
            var s = input
            for i in 0..<hostGroupCount { s = try body(i, host, s) }
            let offset = hostGroupCount
            return try executor.run(s) { i, weights, s in
                try body(offset + i, ModuleWeights { k throws(SluiceError) in try lookup(k) { n throws(SluiceError) in try weights(n) } }, s)
            }
        }
        var s = input
        for i in groupNames.indices { s = try body(i, ModuleWeights(fromFile), s) }
        return s
    }
}
