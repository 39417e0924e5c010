import SluiceCore
import Synchronization

/// The device's memory as the memory manager sees it: a hard cap, what is held and its peak, bytes
/// moved each way, and a modelled clock on which copies and kernels are stamped after the events they
/// wait for (so overlap is measured, not assumed). Allocations beyond the cap fail with the same error a
/// GPU allocation gives (docs/architecture.md).
///
/// The memory behind it is simulated — real host buffers standing in for device memory, so computation
/// on their contents is real — or, with a `DeviceMemoryBacking` (Vulkan), real: allocations are device
/// buffers charged at the size the driver gave, copies run on the device's copy queue and signal its
/// timeline semaphore, and a kernel waits for the copies its events name. The clock stays modelled.
public final class DeviceMemory: @unchecked Sendable {
    /// A point on the modelled clock that work can wait for (a CUDA event / timeline semaphore).
    public struct Event: Sendable, Comparable {
        public let time: Double
        /// The copy timeline's value that signals the real copy (0: nothing real to wait for).
        public var signal: UInt64 = 0
        /// The compute timeline's value that signals the real kernels (0: nothing real): a copy that
        /// overwrites what they read waits for it on the device.
        public var computeSignal: UInt64 = 0
        /// When the work it ends began (the modelled clock).
        public var start: Double = 0
        public init(time: Double, signal: UInt64 = 0, computeSignal: UInt64 = 0, start: Double = 0) {
            self.time = time
            self.signal = signal
            self.computeSignal = computeSignal
            self.start = start
        }
        public static let zero = Event(time: 0)
        public static func < (a: Event, b: Event) -> Bool { a.time < b.time }
    }

    /// Device memory: a real host buffer standing in for it, so computation on its contents is real.
    public final class Allocation: @unchecked Sendable {
        /// Bytes charged against the cap: those asked for, or what the real device took.
        public let bytes: Int
        public let label: String
        public let storage: HostStorage?
        /// The real allocation when the device has a backing.
        public let token: AnyObject?
        fileprivate var freed = false
        init(bytes: Int, label: String, backed: Bool) {
            self.bytes = bytes
            self.label = label
            storage = backed ? HostStorage(byteCount: bytes, zeroed: false) : nil
            token = nil
        }
        init(bytes: Int, label: String, storage: HostStorage, token: AnyObject) {
            self.bytes = bytes
            self.label = label
            self.storage = storage
            self.token = token
        }
    }

    /// One stamped interval on the timeline.
    public struct Span: Sendable {
        public enum Kind: String, Sendable { case copy, compute }
        public let kind: Kind
        public let label: String
        public let start: Double
        public let end: Double
        public let bytes: Int
    }

    public let profile: DeviceProfile
    /// Tensors a `SimulatedBackend` creates on this device (outputs and scratch), live bytes.
    public let tensorBytes = AllocationCounter()
    /// Whether allocations carry real memory (false: a dry run that only models time and bytes).
    public let backed: Bool
    /// Real memory behind the allocations, when the device is a real one.
    public let backing: (any DeviceMemoryBacking)?
    private struct State {
        var cap: Int
        var used = 0
        var peak = 0
        var external = 0
        var hostToDevice = 0
        var deviceToHost = 0
        var copyFree = 0.0
        var computeFree = 0.0
        var spans: [Span] = []
        var recordSpans = true
        var allocations = 0
        var occupyAt: (count: Int, bytes: Int)?
    }
    private let state: Mutex<State>

    public init(profile: DeviceProfile, capBytes: Int? = nil, backed: Bool = true, backing: (any DeviceMemoryBacking)? = nil) {
        self.profile = profile
        self.backed = backed || backing != nil
        self.backing = backing
        state = Mutex(State(cap: capBytes ?? profile.memoryBytes))
    }

    public var name: String { backing.map { "\($0.name) (clock modelled as \(profile.name))" } ?? "simulated \(profile.name)" }
    public var capBytes: Int { state.withLock { $0.cap } }
    /// What an allocation of n bytes really takes: n rounded up to this (1 when simulated).
    public var allocationGranularity: Int { backing?.granularity ?? 1 }
    /// `bytes` as an allocation takes them.
    public func allocationSize(_ bytes: Int) -> Int { bytes.roundedUp(toMultipleOf: allocationGranularity) }
    /// Bytes held: allocations plus live tensors of the simulated backend.
    public var usedBytes: Int { state.withLock { $0.used } + tensorBytes.currentBytes }
    public var peakBytes: Int { state.withLock { $0.peak } }
    /// Bytes free for this process: the cap less ours less other processes' (see `occupy`).
    public var availableBytes: Int { state.withLock { $0.cap - $0.used - $0.external } - tensorBytes.currentBytes }

    /// Folds the simulated backend's live tensors into the peak.
    public func notePeak() {
        let live = tensorBytes.currentBytes
        state.withLock { $0.peak = max($0.peak, $0.used + live) }
    }
    public var bytesHostToDevice: Int { state.withLock { $0.hostToDevice } }
    public var bytesDeviceToHost: Int { state.withLock { $0.deviceToHost } }
    public var spans: [Span] { state.withLock { $0.spans } }
    /// When every queued kernel has finished (copies may run ahead of it).
    public var computeDone: Double { state.withLock { $0.computeFree } }
    /// When every queued copy and kernel has finished.
    public var now: Double { state.withLock { max($0.copyFree, $0.computeFree) } }

    public func allocate(bytes: Int, label: String) throws(SluiceError) -> Allocation {
        guard let backing else { return try reserve(bytes: bytes, label: label) { Allocation(bytes: bytes, label: label, backed: backed) } }
        // Allocate for real, then charge what the device really took; over the cap it is given back.
        let real = try backing.allocate(bytes: bytes, label: label)
        do {
            return try reserve(bytes: real.realBytes, label: label) {
                Allocation(bytes: real.realBytes, label: label, storage: real.storage, token: real.token)
            }
        } catch {
            backing.free(real.token)
            throw error
        }
    }

    private func reserve(bytes: Int, label: String, _ make: () -> Allocation) throws(SluiceError) -> Allocation {
        let live = tensorBytes.currentBytes
        let ok = state.withLock { s -> Int? in
            s.allocations += 1
            if let o = s.occupyAt, s.allocations >= o.count {
                s.external += o.bytes
                s.occupyAt = nil
            }
            let free = s.cap - s.used - s.external - live
            guard bytes <= free else { return free }
            s.used += bytes
            s.peak = max(s.peak, s.used + live)
            return nil
        }
        if let available = ok { throw .outOfMemory(device: name, requestedBytes: bytes, availableBytes: available) }
        return make()
    }

    public func free(_ a: Allocation) {
        guard !a.freed else { return }
        a.freed = true
        if let token = a.token { backing?.free(token) }
        state.withLock { $0.used -= a.bytes }
    }

    /// Another process takes (or, negative, gives back) device memory: our next allocation sees less.
    public func occupy(externalBytes: Int) { state.withLock { $0.external += externalBytes } }

    /// Test hook: another process takes `bytes` just before our `count`-th allocation from now.
    public func occupy(externalBytes bytes: Int, beforeAllocation count: Int) {
        state.withLock { $0.occupyAt = ($0.allocations + count, bytes) }
    }

    /// Queues a host→device copy of `bytes` on the copy engine after `waitFor`; `body` does the real
    /// copy (run now: the simulation is sequential, only the clock is modelled).
    @discardableResult
    public func copyToDevice(bytes: Int, label: String, waitFor: [Event] = [], _ body: () -> Void = {}) -> Event {
        body()
        return stampCopy(bytes: bytes, label: label, waitFor: waitFor, signal: 0)
    }

    /// A copy whose `body` queues the real transfer and returns the timeline value that signals it.
    public func copyToDevice(bytes: Int, label: String, waitFor: [Event] = [], signalling body: () throws(SluiceError) -> UInt64) throws(SluiceError) -> Event {
        let signal = try body()
        return stampCopy(bytes: bytes, label: label, waitFor: waitFor, signal: signal)
    }

    private func stampCopy(bytes: Int, label: String, waitFor: [Event], signal: UInt64) -> Event {
        state.withLock { s in
            let start = max(s.copyFree, waitFor.max()?.time ?? 0)
            let end = start + profile.copySeconds(bytes: bytes)
            s.copyFree = end
            s.hostToDevice += bytes
            if s.recordSpans { s.spans.append(Span(kind: .copy, label: label, start: start, end: end, bytes: bytes)) }
            return Event(time: end, signal: signal, start: start)
        }
    }

    /// Queues a kernel of `flops` touching `bytes` of device memory after `waitFor`.
    @discardableResult
    public func compute(flops: Double, bytes: Double, label: String, waitFor: [Event] = [], _ body: () throws -> Void = {}) rethrows -> Event {
        try body()
        let computeSignal = backing?.computeMark ?? 0
        return state.withLock { s in
            let start = max(s.computeFree, waitFor.max()?.time ?? 0)
            let end = start + profile.kernelSeconds(flops: flops, bytes: bytes)
            s.computeFree = end
            if s.recordSpans { s.spans.append(Span(kind: .compute, label: label, start: start, end: end, bytes: Int(bytes))) }
            return Event(time: end, computeSignal: computeSignal, start: start)
        }
    }

    /// On a real device, the kernels recorded after this wait on the device for the copies `events` name
    /// (the host does not wait; see sk_vk_copy_wait).
    public func waitForCopies(_ events: [Event]) throws(SluiceError) {
        if let backing, let signal = events.map(\.signal).max(), signal > 0 { try backing.wait(signal) }
    }

    public func recordDeviceToHost(bytes: Int) { state.withLock { $0.deviceToHost += bytes } }

    /// Starts a new measurement window: peak resets to current use, spans clear.
    public func resetCounters() {
        state.withLock { s in
            s.peak = s.used
            s.spans = []
            s.hostToDevice = 0
            s.deviceToHost = 0
        }
    }

    public func setRecordSpans(_ on: Bool) { state.withLock { $0.recordSpans = on } }
}
