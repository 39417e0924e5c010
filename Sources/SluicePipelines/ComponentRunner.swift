import SluiceBackends
import SluiceCore
import SluiceMemory
import SluiceModels
import SluiceWeights

/// Runs one component's weight groups in forward order, either straight from the memory-mapped
/// checkpoint (no budget: zero-copy) or through the sluice — a `StreamingExecutor` on the device, which
/// keeps some groups resident and streams the rest under the plan. The model code is the same either way.
public final class ComponentRunner: @unchecked Sendable {
    public let name: String
    public let phase: String
    public let groupNames: [String]
    let checkpoint: Checkpoint
    let groupOf: (String) -> String?
    /// A prefix every key of this checkpoint carries beyond the module paths the model names
    /// (a text encoder saved from a *ForCausalLM keeps its decoder under "model.").
    public let keyPrefix: String
    /// Rows each weight meets per call (tokens, or pixels for convolutions): the simulated clock charges
    /// 2 · parameters · rows FLOPs per group — an estimate, labelled as simulation wherever it shows.
    public var rowsPerCall: Double = 0
    public private(set) var executor: StreamingExecutor?

    public init(name: String, phase: String, checkpoint: Checkpoint, groupNames: [String], groupOf: @escaping (String) -> String?) {
        self.name = name
        self.phase = phase
        self.checkpoint = checkpoint
        self.groupNames = groupNames
        self.groupOf = groupOf
        keyPrefix = Self.detectPrefix(checkpoint.names, groupOf: groupOf)
    }

    /// "" when the keys are the model's module paths; else the one "x." prefix that makes them so.
    static func detectPrefix(_ names: [String], groupOf: (String) -> String?) -> String {
        if names.contains(where: { groupOf($0) != nil }) { return "" }
        for candidate in ["model.", "text_model.", "transformer.", "model.diffusion_model.", "vae."] {
            if names.contains(where: { $0.hasPrefix(candidate) && groupOf(String($0.dropFirst(candidate.count))) != nil }) { return candidate }
        }
        return ""
    }

    /// The checkpoint's tensors by group (tensors no group uses are left on disk).
    public func execGroups() throws(SluiceError) -> [ExecGroup] {
        var byGroup: [String: [(key: String, tensor: Tensor)]] = [:]
        for key in checkpoint.names.sorted() {
            guard key.hasPrefix(keyPrefix), let g = groupOf(String(key.dropFirst(keyPrefix.count))) else { continue }
            byGroup[g, default: []].append((key, try checkpoint.tensor(key)))
        }
        return try groupNames.map { g throws(SluiceError) in
            guard let tensors = byGroup[g], !tensors.isEmpty else {
                throw .invalidCheckpoint(file: checkpoint.files.first?.path ?? name, tensor: nil, reason: "no tensors for \(name) group '\(g)'")
            }
            let params = tensors.reduce(0) { $0 + $1.tensor.count }
            return ExecGroup(name: g, tensors: tensors, flops: 2 * Double(params) * rowsPerCall)
        }
    }

    /// Each group's device bytes as an allocation on `device` takes them (a plan must count what the
    /// allocations really take).
    public func sizes(on device: SimulatedDevice) throws(SluiceError) -> [GroupSize] {
        try execGroups().map { GroupSize(name: $0.name, bytes: device.allocationSize($0.stagedBytes)) }
    }

    /// Streams through `device` under `plan` from now on.
    public func attach(device: SimulatedDevice, plan: ComponentPlan, hostBudget: Int?) throws(SluiceError) {
        let groups = try execGroups()
        let sizes = try self.sizes(on: device)
        let name = self.name, phase = self.phase, activation = plan.activationBytes
        executor = StreamingExecutor(device: device, plan: plan, groups: groups, hostBudget: hostBudget) { available throws(PlanError) in
            try Planner.planComponent(name: name, phase: phase, groups: sizes, activationBytes: activation, budget: available)
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

    public func run<State>(_ input: State, _ body: (Int, ModuleWeights, State) throws -> State) throws -> State {
        let prefix = keyPrefix
        if let executor {
            return try executor.run(input) { i, weights, s in
                try body(i, ModuleWeights { k throws(SluiceError) in try weights(prefix + k) }, s)
            }
        }
        let ckpt = checkpoint
        var s = input
        for i in groupNames.indices { s = try body(i, ModuleWeights { k throws(SluiceError) in try ckpt.tensor(prefix + k) }, s) }
        return s
    }
}
