import CVulkan
import Foundation
import SluiceCore
import Synchronization

/// An open logical device: buffers, uploads/downloads, kernel dispatches (each waited for on a
/// timeline semaphore).
public final class VulkanContext: @unchecked Sendable {
    let handle: OpaquePointer
    public let info: VulkanDeviceInfo
    /// Device buffers the backend binds in place, by the host address that mirrors them (see +Residency).
    struct Resident { let base: UInt; let bytes: Int; let buffer: Buffer }
    let residents = Mutex<[Resident]>([])
    /// The activation reservations the memory manager made, where the backend places its per-op buffers
    /// and the activations that stay on the device (see +Residency).
    let arena = Mutex(ArenaSet())
    /// What the op now running holds (nested ops push marks): its per-op buffers, given back when it
    /// ends, and the storage of the device tensors it reads, kept alive until then (their bytes must not
    /// be reused while the op's kernels read them).
    let opBuffers = Mutex<[OpHolding]>([])
    enum OpHolding: @unchecked Sendable { case buffer(Binding), keep(AnyObject) }
    /// Activations living on the device, by the host shadow that mirrors each.
    let activations = Mutex<[WeakActivation]>([])

    /// How device buffers are reached from the host.
    public enum MemoryPath: String, Sendable {
        /// Mapped: the device's memory is the host's (lavapipe, integrated GPUs) — written and read in place.
        case unified
        /// Never mapped, as on a discrete GPU: device-local memory the CPU does not touch; data goes in
        /// through host-visible staging on the copy queue and comes back through cached host memory.
        /// (Mapping a discrete GPU's memory through the PCIe BAR makes every read an uncached read over
        /// the bus.)
        case discrete
    }

    /// The path this context takes: `discrete` on a discrete GPU, `unified` elsewhere;
    /// `SLUICE_VULKAN_MEMORY=discrete|unified` overrides it (CI runs the discrete path on lavapipe).
    public let memoryPath: MemoryPath

    /// The path for a device of this type (`VulkanDeviceInfo.type`), unless the environment says otherwise.
    public static func memoryPath(forType type: String, environment: [String: String] = ProcessInfo.processInfo.environment) -> MemoryPath {
        if let forced = environment["SLUICE_VULKAN_MEMORY"].flatMap(MemoryPath.init(rawValue:)) { return forced }
        return type == "discrete GPU" ? .discrete : .unified
    }

    /// `forceUnmapped`: take the discrete path whatever the device (tests run it on lavapipe, whose
    /// memory is all host-visible).
    public init(index: Int? = nil, forceUnmapped: Bool = false) throws(SluiceError) {
        let devices = try Vulkan.devices()
        guard let i = index ?? Vulkan.preferredIndex(devices), i < devices.count else {
            throw .invalidParameter(.device, reason: devices.isEmpty ? "no Vulkan device found" : "no device vulkan:\(index ?? -1) (there are \(devices.count); see `sluice devices`)")
        }
        var err = [CChar](repeating: 0, count: 512)
        guard let h = sk_vk_open(Int32(i), &err, err.count) else { throw .invalidArgument(name: "vulkan device \(i)", reason: Vulkan.message(err)) }
        handle = h
        info = devices[i]
        memoryPath = forceUnmapped ? .discrete : Self.memoryPath(forType: devices[i].type)
        sk_vk_force_unmapped(h, memoryPath == .discrete ? 1 : 0)
    }

    deinit { sk_vk_close(handle) }

    public var hasTransferQueue: Bool { sk_vk_has_transfer_queue(handle) != 0 }

    /// A buffer of n bytes takes n rounded up to this much device memory.
    public var allocationGranularity: Int { Int(sk_vk_allocation_granularity(handle)) }

    /// A device buffer. Host code reaching its mapping waits for the copies into it first; when it goes,
    /// its memory is freed once the device has finished with it — waited for (the memory manager's
    /// allocations: the budget counts on the memory being free) or, for per-op buffers, deferred.
    public final class Buffer: HostCoherence, @unchecked Sendable {
        let handle: OpaquePointer
        let context: VulkanContext  // a buffer keeps its device open
        public let bytes: Int
        let deferredFree: Bool
        init(handle: OpaquePointer, context: VulkanContext, bytes: Int, deferredFree: Bool) {
            self.handle = handle
            self.context = context
            self.bytes = bytes
            self.deferredFree = deferredFree
        }
        deinit { deferredFree ? sk_vk_buffer_retire(context.handle, handle) : sk_vk_buffer_destroy(context.handle, handle) }
        public func prepareHostAccess() {
            var err = [CChar](repeating: 0, count: 256)
            // A device that cannot finish a copy is lost: nothing correct can follow.
            guard sk_vk_buffer_host_sync(context.handle, handle, &err, err.count) == 0 else { fatalError("Vulkan copy failed: \(Vulkan.message(err))") }
        }
        /// Bytes a binding may cover: `bytes` rounded up to whole 16-byte words.
        public var capacity: Int { Int(sk_vk_buffer_size(handle)) }
        /// Device memory it really holds (the driver's size, ≥ `bytes`).
        public var allocatedBytes: Int { Int(sk_vk_buffer_allocated(handle)) }
        /// Its memory's host address when the memory is host-visible (lavapipe, integrated GPUs, resizable BAR).
        public var mapped: UnsafeMutableRawPointer? { sk_vk_buffer_mapped(handle) }
    }

    /// `bytes` of a buffer from `offset`: what a kernel's binding sees.
    public struct Binding: @unchecked Sendable {
        public let buffer: Buffer
        public let offset: Int
        public let bytes: Int
        public init(_ buffer: Buffer, offset: Int = 0, bytes: Int? = nil) {
            self.buffer = buffer
            self.offset = offset
            self.bytes = bytes ?? buffer.capacity - offset
        }
    }

    /// `deferredFree`: a per-op buffer, freed without waiting once the device has passed the work recorded so far.
    public func buffer(bytes: Int, deferredFree: Bool = false) throws(SluiceError) -> Buffer {
        var err = [CChar](repeating: 0, count: 512)
        guard let b = sk_vk_buffer_create(handle, UInt64(max(bytes, 4)), &err, err.count) else {
            let reason = Vulkan.message(err)
            if reason.contains("out of device memory") {
                throw .outOfMemory(device: info.name, requestedBytes: bytes, availableBytes: info.heaps.first { $0.deviceLocal }?.budget ?? 0)
            }
            throw .invalidArgument(name: "vulkan buffer", reason: reason)
        }
        return Buffer(handle: b, context: self, bytes: bytes, deferredFree: deferredFree)
    }

    public enum Kernel: CaseIterable, Sendable {
        case binary, unary, gemm, rows, rotary, upsample, conv2d, copy, attention, gemmTiled
        var c: sk_vk_kernel {
            switch self {
            case .binary: SK_VK_BINARY
            case .unary: SK_VK_UNARY
            case .gemm: SK_VK_GEMM
            case .rows: SK_VK_ROWS
            case .rotary: SK_VK_ROTARY
            case .upsample: SK_VK_UPSAMPLE
            case .conv2d: SK_VK_CONV2D
            case .copy: SK_VK_COPY
            case .attention: SK_VK_ATTENTION
            case .gemmTiled: SK_VK_GEMM_TILED
            }
        }
    }

    public func dispatch(_ k: Kernel, bindings: [Binding], push: [UInt32], groups: (Int, Int, Int)) throws(SluiceError) {
        var err = [CChar](repeating: 0, count: 512)
        let raw = bindings.map { sk_vk_binding(buffer: $0.buffer.handle, offset: UInt64($0.offset), range: UInt64($0.bytes)) }
        let rc = withExtendedLifetime(bindings) {
            raw.withUnsafeBufferPointer { bp in
                push.withUnsafeBytes { pp in
                    sk_vk_dispatch(handle, k.c, bp.baseAddress, UInt32(raw.count), pp.baseAddress, UInt32(pp.count),
                                   UInt32(groups.0), UInt32(groups.1), UInt32(groups.2), &err, err.count)
                }
            }
        }
        guard rc == 0 else { throw .invalidArgument(name: "vulkan dispatch", reason: Vulkan.message(err)) }
    }

    /// Dispatches of `k` so far: tests prove with it that an op ran on the device, not its CPU fallback.
    public func dispatchCount(_ k: Kernel) -> Int { Int(sk_vk_dispatch_count(handle, k.c)) }

    /// Queues a host → device copy on the copy queue, to start on the device once the compute timeline
    /// reaches `after` (the last kernel reading what it overwrites; 0: none), and returns at once with the
    /// copy timeline's value that signals its completion.
    public func copyAsync(from src: UnsafeRawPointer, bytes: Int, to b: Buffer, offset: Int, after: UInt64 = 0) throws(SluiceError) -> UInt64 {
        try copyAsync(pieces: [(src, bytes, offset)], to: b, after: after)
    }

    /// `copyAsync` of many pieces (host source, bytes, offset in `b`) packed into the staging slots
    /// together: a group's tensors in one submission.
    public func copyAsync(pieces: [(src: UnsafeRawPointer, bytes: Int, offset: Int)], to b: Buffer, after: UInt64 = 0) throws(SluiceError) -> UInt64 {
        let raw = pieces.map { sk_vk_piece(src: $0.src, bytes: UInt64($0.bytes), offset: UInt64($0.offset)) }
        guard raw.contains(where: { $0.bytes > 0 }) else { return 0 }
        var err = [CChar](repeating: 0, count: 512)
        let v = raw.withUnsafeBufferPointer { sk_vk_copy_pieces(handle, b.handle, $0.baseAddress, UInt32($0.count), after, &err, err.count) }
        guard v > 0 else { throw .invalidArgument(name: "vulkan copy", reason: Vulkan.message(err)) }
        return v
    }

    /// Kernels recorded from now on wait on the device until the copy timeline reaches `value` (the host does not wait).
    public func copyWait(_ value: UInt64) throws(SluiceError) {
        guard value > 0 else { return }
        var err = [CChar](repeating: 0, count: 512)
        guard sk_vk_copy_wait(handle, value, &err, err.count) == 0 else { throw .invalidArgument(name: "vulkan copy wait", reason: Vulkan.message(err)) }
    }

    /// Every crossing between host and device so far (see `DeviceTraffic` in reports).
    public struct Counters: Sendable, Equatable {
        public var submits = 0, hostWaits = 0, weightBytesIn = 0, otherBytesIn = 0, bytesOut = 0, barriers = 0
        public static func - (a: Counters, b: Counters) -> Counters {
            Counters(submits: a.submits - b.submits, hostWaits: a.hostWaits - b.hostWaits, weightBytesIn: a.weightBytesIn - b.weightBytesIn,
                     otherBytesIn: a.otherBytesIn - b.otherBytesIn, bytesOut: a.bytesOut - b.bytesOut, barriers: a.barriers - b.barriers)
        }
    }

    public var counters: Counters {
        var c = sk_vk_counters()
        sk_vk_get_counters(handle, &c)
        return Counters(submits: Int(c.submits), hostWaits: Int(c.host_waits), weightBytesIn: Int(c.weight_bytes_in),
                        otherBytesIn: Int(c.other_bytes_in), bytesOut: Int(c.bytes_out), barriers: Int(c.barriers))
    }

    /// The compute timeline's value that signals when everything recorded so far has finished.
    public var computeMark: UInt64 { sk_vk_compute_mark(handle) }

    /// The host waits until the device has finished what was recorded when `computeMark` gave `mark`.
    public func wait(_ mark: UInt64) throws(SluiceError) {
        var err = [CChar](repeating: 0, count: 512)
        guard sk_vk_wait(handle, mark, &err, err.count) == 0 else { throw .invalidArgument(name: "vulkan", reason: Vulkan.message(err)) }
    }

    /// Submits everything recorded and waits until the device has finished it.
    public func finish() throws(SluiceError) {
        var err = [CChar](repeating: 0, count: 512)
        guard sk_vk_finish(handle, &err, err.count) == 0 else { throw .invalidArgument(name: "vulkan", reason: Vulkan.message(err)) }
    }

    /// Device memory as the device granted it (staging apart): live and peak bytes, and the driver's own
    /// count of the device-local heaps' usage where VK_EXT_memory_budget is present.
    public struct MemoryStats: Sendable { public let live: Int, peak: Int, heapUsage: Int? }
    public var memoryStats: MemoryStats {
        var m = sk_vk_memory_stats()
        sk_vk_get_memory_stats(handle, &m)
        return MemoryStats(live: Int(m.live), peak: Int(m.peak), heapUsage: m.has_heap_usage != 0 ? Int(m.heap_usage) : nil)
    }
    public func resetPeak() { sk_vk_reset_peak(handle) }

    /// What the device was asked to do, for ordering tests (`startTrace` clears it).
    public struct TraceEntry: Sendable {
        public enum Kind: Sendable { case read, write, copy, created }
        public let kind: Kind
        /// Which buffer (identity only).
        public let buffer: UInt
        public let range: Range<Int>
        /// A kernel's binding: the compute timeline value of its submission. A copy: the compute value it
        /// waited for. A buffer made: 0.
        public let value: UInt64
    }
    public func startTrace() { sk_vk_trace(handle, 1) }
    public func stopTrace() { sk_vk_trace(handle, 0) }
    public var trace: [TraceEntry] {
        let n = sk_vk_trace_read(handle, nil, 0)
        var raw = [sk_vk_trace_entry](repeating: sk_vk_trace_entry(), count: Int(n))
        let got = Int(sk_vk_trace_read(handle, &raw, n))
        return raw.prefix(got).map { e in
            TraceEntry(kind: [.read, .write, .copy, .created][Int(e.kind)], buffer: UInt(bitPattern: e.buffer),
                       range: Int(e.lo)..<Int(e.hi), value: e.value)
        }
    }
    /// Test hook: weight copies stop waiting for the kernels that read what they overwrite.
    public func skipCopyWaits(_ on: Bool) { sk_vk_skip_copy_waits(handle, on ? 1 : 0) }

    /// Host-visible staging memory held now: the copy ring and the readback buffer.
    public var stagingBytes: Int { Int(sk_vk_staging_bytes(handle)) }

    public func upload(_ t: Tensor, to b: Binding) throws(SluiceError) {
        let c = t.contiguous()
        try upload(from: c.rawPointer, bytes: c.byteCount, to: b)
    }

    public func download(_ b: Binding, into t: Tensor) throws(SluiceError) {
        try download(b, to: t.rawPointer, bytes: t.byteCount)
    }

    func upload(from src: UnsafeRawPointer, bytes: Int, to b: Binding) throws(SluiceError) {
        var err = [CChar](repeating: 0, count: 512)
        guard sk_vk_upload(handle, b.buffer.handle, UInt64(b.offset), src, UInt64(bytes), &err, err.count) == 0 else {
            throw .invalidArgument(name: "vulkan upload", reason: Vulkan.message(err))
        }
    }

    func download(_ b: Binding, to dst: UnsafeMutableRawPointer, bytes: Int) throws(SluiceError) {
        var err = [CChar](repeating: 0, count: 512)
        guard sk_vk_download(handle, b.buffer.handle, UInt64(b.offset), dst, UInt64(bytes), &err, err.count) == 0 else {
            throw .invalidArgument(name: "vulkan download", reason: Vulkan.message(err))
        }
    }
}
