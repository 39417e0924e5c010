import SluiceBackends
import SluiceCore

/// What the planner is asked: a budget, a workload, and how the device rounds and times things.
public struct PlanRequest: Sendable {
    public var deviceBudget: Int
    public var hostBudget: Int?
    /// Storage type of the groups a table describes (text encoders and denoiser; the VAE stays bf16).
    /// A loaded model's groups are planned as its checkpoint stores them.
    public var storage: DType
    public var width: Int
    public var height: Int
    /// Images per denoiser/VAE call; a batch that does not fit may run one by one (`allowOneByOne`).
    public var batch: Int = 1
    /// Prefetch depth; nil lets the planner choose (by the cost model when there is a profile).
    public var prefetchDepth: Int?
    /// Device model for the cost model (choosing the prefetch depth and the residents).
    public var profile: DeviceProfile?
    /// Every allocation takes a multiple of this (a real device's granularity; 1 when simulated).
    public var allocationGranularity: Int = 1

    public init(deviceBudget: Int, hostBudget: Int? = nil, storage: DType = .bf16, width: Int = 1024, height: Int = 1024,
                prefetchDepth: Int? = nil, profile: DeviceProfile? = nil) {
        self.deviceBudget = deviceBudget; self.hostBudget = hostBudget; self.storage = storage
        self.width = width; self.height = height; self.prefetchDepth = prefetchDepth; self.profile = profile
    }

    public var workload: Workload { Workload(width: width, height: height, batch: batch) }

    /// `bytes` as an allocation takes them.
    public func allocationSize(_ bytes: Int) -> Int { bytes.roundedUp(toMultipleOf: allocationGranularity) }
}

/// The one pipeline planner: `sluice plan`, `generate` and `serve` all plan with it, from component
/// descriptions that a loaded model and a model table both produce. Each component is planned under
/// the whole budget while it runs (components run one at a time); a tileable component (the VAE)
/// decodes in tiles when its whole image's activations do not fit; a component stays on the device
/// after its phase only while every later phase still fits beside what is kept, else it is released
/// ("swapped") and comes back when its phase comes again.
public enum PipelinePlanner {
    /// Device bytes of each group under `request`.
    public static func sizes(_ c: ComponentDescription, _ request: PlanRequest) -> [GroupSize] {
        let storage = c.followsStorage ? request.storage : .bf16
        return c.groups.map { GroupSize(name: $0.name, bytes: request.allocationSize($0.bytes(storage: storage))) }
    }

    /// Activation bytes of one call under `request` (before any tiling), as allocated.
    public static func activationBytes(_ c: ComponentDescription, _ request: PlanRequest) -> Int {
        request.allocationSize(c.activationBytes(request.workload))
    }

    /// Plans for `request.batch` images per call; when that does not fit but one image does, and
    /// `allowOneByOne`, the plan runs the batch one image at a time (`Plan.oneByOne`).
    public static func plan(_ components: [ComponentDescription], _ request: PlanRequest, allowOneByOne: Bool) throws(PlanError) -> Plan {
        do { return try plan(components, request) } catch {
            guard allowOneByOne, request.batch > 1 else { throw error }
            var single = request
            single.batch = 1
            var p = try plan(components, single)
            p.oneByOne = true
            return p
        }
    }

    public static func plan(_ components: [ComponentDescription], _ request: PlanRequest) throws(PlanError) -> Plan {
        let budget = request.deviceBudget
        var plans: [ComponentPlan] = []
        for c in components {
            let weights = sizes(c, request).reduce(0) { $0 + $1.bytes }
            var activation = activationBytes(c, request)
            var tile: Int?
            if let tiling = c.tiling, weights + activation > budget {
                // The first tile whose activations fit beside the whole component; else the smallest,
                // and the component streams (the error, if even that fails, names the minimum).
                for t in tiling.tiles(request.workload) {
                    tile = t
                    activation = request.allocationSize(tiling.activationBytes(t, request.workload))
                    if weights + activation <= budget { break }
                }
            }
            plans.append(try planComponent(c, request, activation: activation, tileLatent: tile))
        }
        // Which components stay on the device after their phase? One that is kept holds what its
        // executor holds (residents, ring, activation reservation) until the end of the run.
        var kept: [Bool] = []
        for i in plans.indices {
            let holding = plans.indices.filter { $0 < i && kept[$0] }.reduce(plans[i].deviceBytes) { $0 + plans[$1].deviceBytes }
            let later = plans.indices.filter { $0 > i }
            kept.append(later.allSatisfy { holding + plans[$0].deviceBytes <= budget })
        }
        let peak = plans.indices.map { i in
            plans.indices.filter { $0 < i && kept[$0] }.reduce(plans[i].deviceBytes) { $0 + plans[$1].deviceBytes }
        }.max() ?? 0
        return Plan(deviceBudget: budget, hostBudget: request.hostBudget, components: plans,
                    swappedBetweenPhases: plans.indices.filter { !kept[$0] }.map { plans[$0].component },
                    peakDeviceBytes: peak)
    }

    static func planComponent(_ c: ComponentDescription, _ r: PlanRequest, activation: Int, tileLatent: Int?) throws(PlanError) -> ComponentPlan {
        let groups = sizes(c, r)
        func plain(_ depth: Int?) throws(PlanError) -> ComponentPlan {
            try Planner.planComponent(name: c.name, phase: c.phase.rawValue, groups: groups, activationBytes: activation,
                                      budget: r.deviceBudget, prefetchDepth: depth, tileLatent: tileLatent)
        }
        if let depth = r.prefetchDepth { return try plain(depth) }
        // Choose the depth by the cost model when there is one: the fastest modelled step, and
        // the shallower (less memory) on a tie within 0.5%.
        guard let profile = r.profile else { return try plain(nil) }
        let k = OffloadModel.costs(c, r, activation: activation)
        let ratio = k.bytes.indices.map { i in
            profile.copySeconds(bytes: k.bytes[i]) / max(profile.kernelSeconds(flops: k.flops[i], bytes: k.touched[i]), 1e-12)
        }
        var best: (plan: ComponentPlan, seconds: Double)?
        // A deeper ring costs resident room but absorbs bursts where copy and compute take turns
        // being the bottleneck; the cost model picks the best trade.
        let timing = (copy: k.bytes.map { profile.copySeconds(bytes: $0) },
                      compute: k.bytes.indices.map { profile.kernelSeconds(flops: k.flops[$0], bytes: k.touched[$0]) },
                      linkBytesPerSecond: profile.effectiveLink)
        typealias Choice = (depth: Int, priority: [Double]?, fluid: Bool)
        let choices: [Choice] = [1, 2, 3, 5, 8, 12, 16].map { ($0, nil, false) } + [1, 2, 3].map { ($0, ratio, false) }
            + [1, 2, 3, 5].map { ($0, nil, true) }
        for (depth, priority, fluid) in choices {
            do {
                let p = try Planner.planComponent(name: c.name, phase: c.phase.rawValue, groups: groups, activationBytes: activation,
                                                  budget: r.deviceBudget, prefetchDepth: depth, tileLatent: tileLatent, priority: priority,
                                                  timing: fluid ? timing : nil)
                let s = OffloadModel.sluiceStepSeconds(plan: p, costs: k, profile: profile)
                if best == nil || s < best!.seconds * 0.995 { best = (p, s) }
                if p.streamed.isEmpty { return p }
            } catch {
                continue  // this depth does not fit; a shallower one may
            }
        }
        // Residents where copies outrun compute and a ring sized in bytes (ResidencySearch): the fluid
        // model's best few, run on the executor like the rest. Only where a classic ring fits: the
        // smallest budget that plans stays the one the error names.
        guard let classic = best else { return try plain(1) }
        best = classic
        let t = ResidencySearch.Timing(bytes: k.bytes, copy: timing.copy, compute: timing.compute, link: timing.linkBytesPerSecond)
        for cand in ResidencySearch.candidates(t, room: r.deviceBudget - activation, top: 10) {
            let p = Planner.planComponent(name: c.name, phase: c.phase.rawValue, groups: groups, activationBytes: activation,
                                          resident: cand.resident, ringBytes: cand.ringBytes, tileLatent: tileLatent)
            guard p.deviceBytes <= r.deviceBudget else { continue }
            let s = OffloadModel.sluiceStepSeconds(plan: p, costs: k, profile: profile)
            if best == nil || s < best!.seconds * 0.995 { best = (p, s) }
        }
        // Nothing fits: the shallowest ring's error names the smallest budget that works.
        guard let best else { return try plain(1) }
        return best.plan
    }
}
