import Foundation
import SluiceBackends
import SluiceCore
import SluiceMemory

/// A loaded pipeline's components in phase order and the device they compute on: what every family
/// shares between "plan a request" and "run it under that plan", so both give the same plan.
public final class PipelineComponents: @unchecked Sendable {
    public let runners: [ComponentRunner]
    public let device: ComputeDevice
    /// What stayed on the device after the last run — its plan and memory — when everything fitted at
    /// once: the next run with the same plan reuses it (resident groups are not uploaded again).
    private var kept: (plan: Plan, memory: DeviceMemory, hostBudget: Int?)?
    private let keptLock = NSLock()

    /// Components whose weights stayed on the device since the last run (for status pages).
    public var keptOnDevice: [String] { keptLock.withLock { kept.map { $0.plan.components.map(\.component) } ?? [] } }

    public init(_ runners: [ComponentRunner], device: ComputeDevice) {
        self.runners = runners
        self.device = device
    }

    /// The request the planner gets for `workload` under `memory`, or nil without a device budget.
    public func planRequest(_ workload: Workload, memory: MemoryOptions) -> PlanRequest? {
        guard let budget = device.budget(limit: memory.deviceBudget) else { return nil }
        var r = PlanRequest(deviceBudget: budget, hostBudget: memory.hostBudget, width: workload.width, height: workload.height,
                            profile: memory.profile)
        r.batch = workload.batch
        r.allocationGranularity = device.allocationGranularity
        return r
    }

    /// The plan for `descriptions` (one per runner, same order) under `memory`; nil without a budget.
    public func plan(_ descriptions: [ComponentDescription], workload: Workload, memory: MemoryOptions) throws(SluiceError) -> Plan? {
        guard let request = planRequest(workload, memory: memory) else { return nil }
        do { return try PipelinePlanner.plan(descriptions, request) } catch {
            throw .invalidParameter(.vramLimit, reason: error.description)
        }
    }

    /// Without a device budget everything runs on the CPU in host memory: refuses, with the numbers, a
    /// workload whose activations alone need more than this machine has (rather than dying in an
    /// allocation halfway through).
    public func checkHostMemory(_ descriptions: [ComponentDescription], workload: Workload) throws(SluiceError) {
        guard let (largest, bytes) = descriptions.map({ ($0.name, $0.activationBytes(workload)) }).max(by: { $0.1 < $1.1 }) else { return }
        let physical = HostMemory.physicalBytes()
        if physical > 0 && bytes > physical {
            throw .invalidParameter(workload.width >= workload.height ? .width : .height,
                reason: "\(workload.width)×\(workload.height) needs about \(formatBytes(bytes)) for the \(largest)'s activations alone; this machine has \(formatBytes(physical))")
        }
    }

    /// Starts a run: every runner attached to one device under the plan (none without a budget). What
    /// the last run left on the device is reused where the plan is the same — the same budget, device
    /// model and RAM limit, and for each component the same placement; a component whose placement
    /// changed (another image size, say) is placed again, the rest keep their resident groups.
    public func start(_ descriptions: [ComponentDescription], workload: Workload, memory: MemoryOptions) throws -> PipelineRun {
        guard let plan = try plan(descriptions, workload: workload, memory: memory) else {
            releaseKept()
            try checkHostMemory(descriptions, workload: workload)
            return PipelineRun(components: self, plan: nil, memory: nil)
        }
        let cap = memory.deviceCapBytes ?? plan.deviceBudget
        let previous = keptLock.withLock { () -> (plan: Plan, memory: DeviceMemory, hostBudget: Int?)? in defer { kept = nil }; return kept }
        let reuse = previous.flatMap { p in
            p.plan.deviceBudget == plan.deviceBudget && p.memory.capBytes == cap && p.memory.profile.name == memory.profile.name
                && p.hostBudget == memory.hostBudget ? p : nil
        }
        if reuse == nil { for r in runners { r.detach() } }
        let deviceMemory = reuse?.memory ?? device.memory(budget: plan.deviceBudget, profile: memory.profile, cap: memory.deviceCapBytes)
        let run = PipelineRun(components: self, plan: plan, memory: deviceMemory)
        do {
            for (runner, description) in zip(runners, descriptions) {
                guard let p = plan.component(runner.name) else { continue }
                if runner.executor != nil, reuse?.plan.component(runner.name) == p { continue }
                runner.detach()
                try runner.attach(device: deviceMemory, plan: p, flops: description.flops(workload), hostBudget: memory.hostBudget,
                                  hostCounter: device.hostWeights)
            }
        } catch {
            run.end()
            throw error
        }
        return run
    }

    /// After a run: when it completed and its plan holds every component at once, what it placed stays
    /// for the next run; otherwise the device is emptied.
    func finished(_ run: PipelineRun) {
        if run.completed, let plan = run.plan, let memory = run.memory, plan.swappedBetweenPhases.isEmpty {
            keptLock.withLock { kept = (plan, memory, plan.hostBudget) }
        } else {
            releaseKept()
        }
    }

    /// Empties the device: every runner goes back to reading the mapped files.
    public func releaseKept() {
        keptLock.withLock { kept = nil }
        for r in runners { r.detach() }
    }
}

/// One generation's phases on the device under a plan: each phase measured (wall time, device and
/// host peaks, bytes moved), each component released after its phase when the plan swaps it, and at
/// the end either kept for the next run or released (`end`).
public final class PipelineRun: @unchecked Sendable {
    public let plan: Plan?
    /// The device memory the run allocates from (nil without a budget).
    public let memory: DeviceMemory?
    let components: PipelineComponents
    public private(set) var phases: [PhaseReport] = []
    /// Set by `complete()`: every phase ran.
    private(set) var completed = false

    init(components: PipelineComponents, plan: Plan?, memory: DeviceMemory?) {
        self.components = components
        self.plan = plan
        self.memory = memory
    }

    /// `p` with the device's memory now and at peak this phase.
    public func withDevice(_ p: GenerationProgress) -> GenerationProgress {
        var p = p
        if let d = memory { p.deviceBytes = d.usedBytes; p.devicePeakBytes = d.peakBytes }
        return p
    }

    /// Runs `body` as `phase`, recording its report; then releases the components of that phase the
    /// plan does not keep.
    public func phase<T>(_ phase: Phase, _ body: () throws -> T) throws -> T {
        memory?.resetCounters()
        let host = components.device.activations
        host.resetPeak()
        let start = memory?.computeDone ?? 0
        let vulkan = components.device.vulkan, before = vulkan?.counters
        let t0 = Date()
        let out = try body()
        // A device may still be running what the phase recorded: the phase ends when it has finished.
        try components.device.finish()
        let wall = Date().timeIntervalSince(t0)
        var report: PhaseReport
        if let d = memory { report = .from(device: d, phase: phase.rawValue, wallSeconds: wall, start: start, peakHostBytes: host.peakBytes) }
        else { report = .cpu(phase: phase.rawValue, wallSeconds: wall, peakHostBytes: host.peakBytes) }
        if let vulkan, let before {
            let c = vulkan.counters - before
            report.deviceTraffic = DeviceTraffic(submits: c.submits, hostWaits: c.hostWaits, weightBytesToDevice: c.weightBytesIn,
                                                 otherBytesToDevice: c.otherBytesIn, bytesToHost: c.bytesOut)
        }
        phases.append(report)
        if let plan {
            for r in components.runners where r.phase == phase && plan.swappedBetweenPhases.contains(r.name) { r.release() }
        }
        return out
    }

    /// A component is done for this phase before the phase ends (CLIP before T5): when the plan swaps
    /// it, its device memory goes now, so the next component of the phase has the room the plan gave it.
    public func finished(component name: String) {
        guard let plan, plan.swappedBetweenPhases.contains(name) else { return }
        components.runners.first { $0.name == name }?.release()
    }

    /// The run's report, marking it complete: its placement may stay on the device for the next run.
    public func complete() -> RunReport {
        completed = true
        return report
    }

    /// Ends the run: what it placed stays for the next one if it completed and everything fits at once;
    /// otherwise (a failure, a cancel, a plan that swaps) the device is emptied.
    public func end() {
        components.finished(self)
    }

    public var report: RunReport {
        RunReport(device: memory?.name ?? "cpu", compute: components.device.compute, plan: plan, phases: phases)
    }
}
