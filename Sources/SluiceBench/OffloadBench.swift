import Foundation
import SluiceBackends
import SluiceCore
import SluiceMemory

/// `sluice bench offload`: one denoising step of a real model's table on the modelled clock of a
/// device profile under four policies, against the physical bound. Simulation, labelled as such.
public struct OffloadBench {
    public let table: ModelTable
    /// The table's components as the planner sees them (its family's formulas where Sluice runs it).
    public let components: [ComponentDescription]
    public let profile: DeviceProfile
    public let request: PlanRequest

    public init(table: ModelTable, components: [ComponentDescription], profile: DeviceProfile, request: PlanRequest) {
        self.table = table
        self.components = components
        self.profile = profile
        var r = request
        r.profile = profile
        self.request = r
    }

    public struct Result {
        public let json: [String: Any]
        public let report: RunReport
    }

    public func run() throws -> Result {
        let wall = Date()
        guard let c = components.first(where: { $0.phase == .denoise }) else {
            throw SluiceError.invalidParameter(.table, reason: "\(table.model) has no denoising component")
        }
        let plan: Plan
        do { plan = try PipelinePlanner.plan(components, request) } catch {
            throw SluiceError.invalidParameter(.vramLimit, reason: error.description)
        }
        let p = plan.component(c.name)!
        let act = p.activationBytes
        let k = OffloadModel.costs(c, request, activation: act)
        let total = k.bytes.reduce(0, +)
        let device = DeviceMemory(profile: profile, capBytes: request.deviceBudget, backed: false)
        let sluice = OffloadModel.sluiceStepSeconds(plan: p, costs: k, profile: profile, device: device)
        let residentFits = total + act <= request.deviceBudget
        let resident = residentFits ? OffloadModel.computeSeconds(k, profile) : nil
        let group = OffloadModel.groupOffloadSeconds(k, profile)
        let model = OffloadModel.modelOffloadSeconds(k, profile)
        let bound = OffloadModel.boundSeconds(k, profile, budget: request.deviceBudget, activation: act)
        let staged = OffloadModel.stagingAwareBoundSeconds(k, profile, budget: request.deviceBudget, activation: act)
        var policies: [String: Any] = ["sluice": sluice, "group-offload-depth1": group, "model-offload": model]
        policies["resident"] = resident.map { $0 as Any } ?? NSNull()
        let phase = PhaseReport.from(device: device, phase: "denoise, two steps (steady state)", wallSeconds: Date().timeIntervalSince(wall),
                                     start: device.computeDone - 2 * sluice)
        let json: [String: Any] = [
            "benchmark": "offload", "simulated": true,
            "note": "SIMULATION: modelled clock of the \(profile.name) profile (\(profile.source)); not a GPU measurement",
            "table": table.model, "component": c.name, "profile": profile.name,
            "width": request.width, "height": request.height, "storage": request.storage.rawValue,
            "budget_bytes": request.deviceBudget, "weights_bytes": total, "activation_bytes": act,
            "policy_seconds": policies, "bound_seconds": bound.seconds, "must_cross_bytes": bound.mustCross,
            "sluice_vs_bound": sluice / bound.seconds, "sluice_vs_group_offload": sluice / group,
            "staging_aware_bound_seconds": staged, "sluice_vs_staging_aware_bound": sluice / staged,
            "sluice_vs_resident": resident.map { sluice / $0 as Any } ?? NSNull(),
            "peak_device_bytes": device.peakBytes, "streamed_bytes_per_step": p.streamedBytesPerCall,
            "resident_groups": p.resident.count, "streamed_groups": p.streamed.count, "prefetch_depth": p.prefetchDepth,
            "ring_bytes": p.slotBytes * p.slotCount, "overlap_seconds": phase.overlapSeconds,
        ]
        return Result(json: json, report: RunReport(device: device.name, plan: plan, phases: [phase]))
    }
}

