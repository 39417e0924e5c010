import Foundation
import SluiceBackends
import SluiceCore

/// What one phase of a run did, for `--report PATH` (schema: docs/telemetry.md).
public struct PhaseReport: Codable, Sendable {
    public let phase: String
    public let wallSeconds: Double
    /// Time on the simulated device's clock (0 for phases that ran on the CPU only).
    public let modelledSeconds: Double
    public let peakDeviceBytes: Int
    public let peakHostBytes: Int
    public let bytesHostToDevice: Int
    public let bytesDeviceToHost: Int
    public let copyBusySeconds: Double
    public let computeBusySeconds: Double
    /// Time during which a copy and a kernel ran at once.
    public let overlapSeconds: Double
    public let simulated: Bool
    /// True when the device bytes are real allocations on a real device (Vulkan); the clock is still modelled.
    public var realDeviceMemory: Bool = false
    /// On a real device: every crossing between host and device in the phase, counted where it happens
    /// (`bytesHostToDevice` above counts the weights the memory manager moved, as modelled).
    public var deviceTraffic: DeviceTraffic?

    /// A phase that ran on the CPU alone (no device budget): wall time and host memory only.
    public static func cpu(phase: String, wallSeconds: Double, peakHostBytes: Int) -> PhaseReport {
        PhaseReport(phase: phase, wallSeconds: wallSeconds, modelledSeconds: 0, peakDeviceBytes: 0, peakHostBytes: peakHostBytes,
                    bytesHostToDevice: 0, bytesDeviceToHost: 0, copyBusySeconds: 0, computeBusySeconds: 0, overlapSeconds: 0,
                    simulated: false)
    }

    /// Summarises a simulated device's counters and timeline over the window since its last reset.
    public static func from(device: DeviceMemory, phase: String, wallSeconds: Double, start: Double, peakHostBytes: Int = 0) -> PhaseReport {
        let spans = device.spans
        let copies = spans.filter { $0.kind == .copy }.map { ($0.start, $0.end) }
        let computes = spans.filter { $0.kind == .compute }.map { ($0.start, $0.end) }
        return PhaseReport(phase: phase, wallSeconds: wallSeconds, modelledSeconds: device.computeDone - start,
                           peakDeviceBytes: device.peakBytes, peakHostBytes: peakHostBytes,
                           bytesHostToDevice: device.bytesHostToDevice, bytesDeviceToHost: device.bytesDeviceToHost,
                           copyBusySeconds: copies.reduce(0) { $0 + $1.1 - $1.0 },
                           computeBusySeconds: computes.reduce(0) { $0 + $1.1 - $1.0 },
                           overlapSeconds: intersection(copies, computes), simulated: true, realDeviceMemory: device.backing != nil)
    }

    /// Total length of the intersection of two sets of intervals (each set non-overlapping, in order).
    static func intersection(_ a: [(Double, Double)], _ b: [(Double, Double)]) -> Double {
        var i = 0, j = 0, total = 0.0
        while i < a.count && j < b.count {
            let lo = max(a[i].0, b[j].0), hi = min(a[i].1, b[j].1)
            if hi > lo { total += hi - lo }
            if a[i].1 < b[j].1 { i += 1 } else { j += 1 }
        }
        return total
    }
}

/// What really crossed between host and device (Vulkan): submissions, host waits, and bytes each way —
/// weights apart from everything else going in (op inputs), and everything read back (op outputs).
public struct DeviceTraffic: Codable, Sendable, Equatable {
    public var submits: Int
    public var hostWaits: Int
    public var weightBytesToDevice: Int
    public var otherBytesToDevice: Int
    public var bytesToHost: Int
    public init(submits: Int, hostWaits: Int, weightBytesToDevice: Int, otherBytesToDevice: Int, bytesToHost: Int) {
        self.submits = submits; self.hostWaits = hostWaits; self.weightBytesToDevice = weightBytesToDevice
        self.otherBytesToDevice = otherBytesToDevice; self.bytesToHost = bytesToHost
    }
}

/// A run's report: its phases and the plan it used (none without a device budget: the CPU read the
/// weights from the mapped files).
public struct RunReport: Codable, Sendable {
    public let schema: String
    public let device: String
    /// What the linear layers computed in: "f32", or "bf16" (operands rounded to bf16, f32 sums).
    public let compute: String
    public let plan: Plan?
    public let phases: [PhaseReport]

    public init(device: String, compute: String = "f32", plan: Plan?, phases: [PhaseReport]) {
        schema = "sluice.report/1"
        self.device = device
        self.compute = compute
        self.plan = plan
        self.phases = phases
    }

    public func write(to path: String) throws(SluiceError) {
        let e = JSONEncoder()
        e.outputFormatting = [.prettyPrinted, .sortedKeys]
        do { try e.encode(self).write(to: URL(fileURLWithPath: path), options: .atomic) } catch {
            throw .io(path: path, reason: "cannot write the report (\(String(cString: strerror(errno))))")
        }
    }
}
