import SluiceBackends
import SluiceCore

/// What the user asks the planner for (`sluice plan` / `--vram-limit` / `--ram-limit`).
public struct PlanRequest: Sendable {
    public var deviceBudget: Int
    public var hostBudget: Int?
    /// Storage type of the text encoders' and denoiser's weights (the VAE stays bf16: it is small
    /// and sensitive to precision).
    public var storage: DType
    public var width: Int
    public var height: Int
    /// Prefetch depth; nil lets the planner choose (1 when copies dominate, else 2).
    public var prefetchDepth: Int?
    /// Device model for the planner's cost estimate (choosing the prefetch depth).
    public var profile: DeviceProfile?
    /// Images per denoiser call. Activations and FLOPs of the denoiser and VAE scale with it (the
    /// text encoders run once per prompt).
    public var batch: Int = 1

    public init(deviceBudget: Int, hostBudget: Int? = nil, storage: DType = .bf16, width: Int = 1024, height: Int = 1024,
                prefetchDepth: Int? = nil, profile: DeviceProfile? = nil) {
        self.deviceBudget = deviceBudget; self.hostBudget = hostBudget; self.storage = storage
        self.width = width; self.height = height; self.prefetchDepth = prefetchDepth; self.profile = profile
    }
}

/// Plans a whole pipeline from a model table: each component under the full budget while it runs
/// (components run one at a time); the others kept on the device only while everything still
/// fits, else released between phases ("swapped"); the VAE decodes in tiles when its full-size
/// activations do not fit.
public enum PipelinePlanner {
    public static let phases = ["text", "denoise", "decode"]

    public static func storage(of c: ModelTable.Component, _ request: PlanRequest) -> DType {
        c.phase == "decode" ? .bf16 : request.storage
    }

    /// Group sizes as the device holds them: storage bytes, 64-byte aligned.
    public static func sizes(_ c: ModelTable.Component, _ request: PlanRequest) -> [GroupSize] {
        let s = storage(of: c, request).byteSize
        return c.groups.map { GroupSize(name: $0.name, bytes: ($0.parameters * s + 63) & ~63) }
    }

    /// Image size over the table's reference size.
    public static func pixelRatio(_ t: ModelTable, _ r: PlanRequest) -> Double {
        Double(r.width * r.height) / Double(t.referenceWidth * t.referenceHeight)
    }

    public static func activationBytes(_ c: ModelTable.Component, _ t: ModelTable, _ r: PlanRequest) -> Int {
        c.scaling == "pixels" ? Int((Double(c.activationBytes) * pixelRatio(t, r) * Double(r.batch)).rounded(.up)) : c.activationBytes
    }

    /// Modelled FLOPs of each group at the requested size: linear parts scale with tokens, attention with tokens².
    public static func flops(_ c: ModelTable.Component, _ t: ModelTable, _ r: PlanRequest) -> [Double] {
        let p = c.scaling == "pixels" ? pixelRatio(t, r) : 1
        let b = c.scaling == "pixels" ? Double(r.batch) : 1
        return c.groups.map { ($0.linearFlops * p + $0.attentionFlops * p * p) * b }
    }

    /// Plans for `request.batch` images per call; when that does not fit but one image does, and
    /// `allowOneByOne`, the plan runs the batch one image at a time (`Plan.oneByOne`).
    public static func plan(_ table: ModelTable, _ request: PlanRequest, allowOneByOne: Bool) throws(PlanError) -> Plan {
        do { return try plan(table, request) } catch {
            guard allowOneByOne, request.batch > 1 else { throw error }
            var single = request
            single.batch = 1
            let p = try plan(table, single)
            return Plan(deviceBudget: p.deviceBudget, hostBudget: p.hostBudget, components: p.components,
                        swappedBetweenPhases: p.swappedBetweenPhases, peakDeviceBytes: p.peakDeviceBytes, oneByOne: true)
        }
    }

    public static func plan(_ table: ModelTable, _ request: PlanRequest) throws(PlanError) -> Plan {
        let B = request.deviceBudget
        var plans: [String: ComponentPlan] = [:]
        for c in table.components {
            var act = activationBytes(c, table, request)
            var tiled = false
            let weights = sizes(c, request).reduce(0) { $0 + $1.bytes }
            if c.phase == "decode" && weights + act > B {
                // Tiles of 512², then 256², with overlap handled by the decoder: activations shrink
                // with the tile's pixels.
                for side in [512, 384, 256] {
                    // Tiles are decoded one image at a time.
                    act = Int(Double(c.activationBytes) * Double(side * side) / Double(table.referenceWidth * table.referenceHeight))
                    tiled = true
                    if weights + act <= B { break }
                }
            }
            plans[c.name] = try planComponent(c, table, request, activation: act, budget: B, tiled: tiled)
        }
        // Components run one at a time (text encoders one after another, then the denoiser, then
        // the VAE). Which may stay on the device while the others run?
        var kept = Set<String>()
        func peak(_ keep: Set<String>) -> Int {
            table.components.map { running in
                plans[running.name]!.deviceBytes + table.components
                    .filter { $0.name != running.name && keep.contains($0.name) }
                    .reduce(0) { $0 + sizes($1, request).reduce(0) { $0 + $1.bytes } }
            }.max() ?? 0
        }
        // Smallest first: the VAE, then text encoders.
        for c in table.components.sorted(by: { $0.parameters < $1.parameters }) {
            guard plans[c.name]!.streamed.isEmpty else { continue }
            if peak(kept.union([c.name])) <= B { kept.insert(c.name) }
        }
        let swapped = table.components.map(\.name).filter { !kept.contains($0) }
        let everything = table.components.count == kept.count
        return Plan(deviceBudget: B, hostBudget: request.hostBudget,
                    components: table.components.map { plans[$0.name]! },
                    swappedBetweenPhases: everything ? [] : swapped, peakDeviceBytes: peak(kept))
    }

    static func planComponent(_ c: ModelTable.Component, _ t: ModelTable, _ r: PlanRequest, activation: Int, budget: Int,
                              tiled: Bool) throws(PlanError) -> ComponentPlan {
        let groups = sizes(c, r)
        if let depth = r.prefetchDepth {
            return try Planner.planComponent(name: c.name, phase: c.phase, groups: groups, activationBytes: activation,
                                             budget: budget, prefetchDepth: depth, tiled: tiled)
        }
        // Choose the depth by the cost model when there is one: the fastest modelled step, and
        // the shallower (less memory) on a tie within 0.5%.
        guard let profile = r.profile else {
            return try Planner.planComponent(name: c.name, phase: c.phase, groups: groups, activationBytes: activation,
                                             budget: budget, tiled: tiled)
        }
        let k = OffloadModel.costs(c, t, r)
        let ratio = k.bytes.indices.map { i in
            profile.copySeconds(bytes: k.bytes[i]) / max(profile.kernelSeconds(flops: k.flops[i], bytes: k.touched[i]), 1e-12)
        }
        var best: (plan: ComponentPlan, seconds: Double)?
        // A deeper ring costs resident room but absorbs bursts where copy and compute take turns
        // being the bottleneck; the cost model picks the best trade.
        let timing = (copy: k.bytes.map { profile.copySeconds(bytes: $0) },
                      compute: k.bytes.indices.map { profile.kernelSeconds(flops: k.flops[$0], bytes: k.touched[$0]) },
                      linkBytesPerSecond: profile.effectiveLink)
        let depths = [1, 2, 3, 5, 8, 12, 16]
        typealias Choice = (depth: Int, priority: [Double]?, fluid: Bool)
        let choices: [Choice] = depths.map { ($0, nil, false) } + [1, 2, 3].map { ($0, ratio, false) } + [1, 2, 3, 5].map { ($0, nil, true) }
        for (depth, priority, fluid) in choices {
            do {
                let p = try Planner.planComponent(name: c.name, phase: c.phase, groups: groups, activationBytes: activation,
                                                  budget: budget, prefetchDepth: depth, tiled: tiled, priority: priority,
                                                  timing: fluid ? timing : nil)
                let s = OffloadModel.sluiceStepSeconds(plan: p, component: c, table: t, request: r, profile: profile)
                if best == nil || s < best!.seconds * 0.995 { best = (p, s) }
                if p.streamed.isEmpty { return p }
            } catch {
                continue  // this depth does not fit; a shallower one may
            }
        }
        guard let best else {
            // Nothing fits: the shallowest ring's error names the smallest budget that works.
            return try Planner.planComponent(name: c.name, phase: c.phase, groups: groups, activationBytes: activation,
                                             budget: budget, prefetchDepth: 1, tiled: tiled)
        }
        return best.plan
    }
}
