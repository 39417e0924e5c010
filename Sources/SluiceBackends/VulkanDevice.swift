import CVulkan
import Foundation
import SluiceCore
import Synchronization

/// A Vulkan device as Sluice sees it (`sluice devices`), and an open context on one, with the
/// compute kernels SPIR-V ships for. Everything goes through the CVulkan C layer.
public struct VulkanDeviceInfo: Sendable, Codable {
    public struct Heap: Sendable, Codable { public let size: Int; public let budget: Int; public let deviceLocal: Bool }
    public struct QueueFamily: Sendable, Codable { public let count: Int; public let graphics: Bool; public let compute: Bool; public let transfer: Bool }
    public let index: Int
    public let name: String
    public let type: String
    public let driver: String
    public let apiVersion: String
    public let heaps: [Heap]
    public let queueFamilies: [QueueFamily]
    public let memoryBudgetExtension: Bool
    public let timelineSemaphore: Bool
    public let maxStorageBufferRange: Int
    public let minStorageOffsetAlignment: Int
    public let subgroupSize: Int

    /// What the memory manager may plan with: the smallest device-local heap's budget.
    public var deviceBudget: Int { heaps.filter(\.deviceLocal).map(\.budget).min() ?? heaps.map(\.budget).min() ?? 0 }

    /// A transfer-only queue family: the copy engine a discrete GPU has beside compute.
    public var hasTransferQueue: Bool { queueFamilies.contains { $0.transfer && !$0.compute && !$0.graphics } }
}

public enum Vulkan {
    static func message(_ buf: [CChar]) -> String { String(cString: buf) }

    /// nil when Vulkan is usable; otherwise the one line saying why not.
    public static var unavailableReason: String? {
        var err = [CChar](repeating: 0, count: 512)
        return sk_vk_available(&err, err.count) == 0 ? nil : message(err)
    }

    public static func devices() throws(SluiceError) -> [VulkanDeviceInfo] {
        var err = [CChar](repeating: 0, count: 512)
        let n = sk_vk_device_count(&err, err.count)
        guard n >= 0 else { throw .invalidArgument(name: "vulkan", reason: message(err)) }
        var out: [VulkanDeviceInfo] = []
        for i in 0..<Int(n) {
            var info = sk_vk_device_info()
            guard sk_vk_device_info_at(Int32(i), &info, &err, err.count) == 0 else { throw .invalidArgument(name: "vulkan device \(i)", reason: message(err)) }
            let name = withUnsafeBytes(of: info.name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            let driver = withUnsafeBytes(of: info.driver) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            let heaps = withUnsafeBytes(of: info.heaps) { raw in
                (0..<Int(info.heap_count)).map { j -> VulkanDeviceInfo.Heap in
                    let h = raw.load(fromByteOffset: j * MemoryLayout<sk_vk_heap>.stride, as: sk_vk_heap.self)
                    return .init(size: Int(h.size), budget: Int(h.budget), deviceLocal: h.device_local != 0)
                }
            }
            let families = withUnsafeBytes(of: info.families) { raw in
                (0..<Int(info.family_count)).map { j -> VulkanDeviceInfo.QueueFamily in
                    let f = raw.load(fromByteOffset: j * MemoryLayout<sk_vk_queue_family>.stride, as: sk_vk_queue_family.self)
                    return .init(count: Int(f.count), graphics: f.graphics != 0, compute: f.compute != 0, transfer: f.transfer != 0)
                }
            }
            let types = [0: "other", 1: "integrated GPU", 2: "discrete GPU", 3: "virtual GPU", 4: "CPU"]
            let v = info.api_version
            out.append(VulkanDeviceInfo(index: i, name: name, type: types[Int(info.type)] ?? "unknown", driver: driver,
                                        apiVersion: "\(v >> 22).\((v >> 12) & 0x3FF).\(v & 0xFFF)", heaps: heaps, queueFamilies: families,
                                        memoryBudgetExtension: info.has_memory_budget != 0, timelineSemaphore: info.has_timeline_semaphore != 0,
                                        maxStorageBufferRange: Int(info.max_storage_buffer_range),
                                        minStorageOffsetAlignment: max(Int(info.min_storage_offset_alignment), 1), subgroupSize: Int(info.subgroup_size)))
        }
        return out
    }

    /// The device `--device vulkan` means: a discrete GPU first, then integrated, then anything.
    public static func preferredIndex(_ devices: [VulkanDeviceInfo]) -> Int? {
        for type in ["discrete GPU", "integrated GPU", "virtual GPU", "CPU", "other"] {
            if let d = devices.first(where: { $0.type == type }) { return d.index }
        }
        return nil
    }
}

/// An open logical device: buffers, uploads/downloads, kernel dispatches (each waited for on a
/// timeline semaphore).
public final class VulkanContext: @unchecked Sendable {
    let handle: OpaquePointer
    public let info: VulkanDeviceInfo

    /// `forceUnmapped`: never map buffers, so every transfer takes the staging path of a discrete GPU
    /// without resizable BAR (tests run that path on lavapipe, whose memory is all host-visible).
    public init(index: Int? = nil, forceUnmapped: Bool = false) throws(SluiceError) {
        let devices = try Vulkan.devices()
        guard let i = index ?? Vulkan.preferredIndex(devices), i < devices.count else {
            throw .invalidArgument(name: "--device vulkan", reason: devices.isEmpty ? "no Vulkan device found" : "no device \(index ?? -1) (there are \(devices.count))")
        }
        var err = [CChar](repeating: 0, count: 512)
        guard let h = sk_vk_open(Int32(i), &err, err.count) else { throw .invalidArgument(name: "vulkan device \(i)", reason: Vulkan.message(err)) }
        handle = h
        info = devices[i]
        if forceUnmapped { sk_vk_force_unmapped(h, 1) }
    }

    deinit { sk_vk_close(handle) }

    public var hasTransferQueue: Bool { sk_vk_has_transfer_queue(handle) != 0 }

    /// A buffer of n bytes takes n rounded up to this much device memory.
    public var allocationGranularity: Int { Int(sk_vk_allocation_granularity(handle)) }

    public final class Buffer: @unchecked Sendable {
        let handle: OpaquePointer
        let context: VulkanContext  // a buffer keeps its device open
        public let bytes: Int
        init(handle: OpaquePointer, context: VulkanContext, bytes: Int) { self.handle = handle; self.context = context; self.bytes = bytes }
        deinit { sk_vk_buffer_destroy(context.handle, handle) }
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

    public func buffer(bytes: Int) throws(SluiceError) -> Buffer {
        var err = [CChar](repeating: 0, count: 512)
        guard let b = sk_vk_buffer_create(handle, UInt64(max(bytes, 4)), &err, err.count) else {
            let reason = Vulkan.message(err)
            if reason.contains("out of device memory") {
                throw .outOfMemory(device: info.name, requestedBytes: bytes, availableBytes: info.heaps.first { $0.deviceLocal }?.budget ?? 0)
            }
            throw .invalidArgument(name: "vulkan buffer", reason: reason)
        }
        return Buffer(handle: b, context: self, bytes: bytes)
    }

    public enum Kernel: CaseIterable, Sendable {
        case binary, unary, gemm, rows, rotary, upsample, conv2d, copy, attention
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

    /// Queues a host → device copy on the copy queue and returns at once with the copy timeline's value
    /// that signals its completion.
    public func copyAsync(from src: UnsafeRawPointer, bytes: Int, to b: Buffer, offset: Int) throws(SluiceError) -> UInt64 {
        guard bytes > 0 else { return 0 }
        var err = [CChar](repeating: 0, count: 512)
        let v = sk_vk_copy_async(handle, b.handle, UInt64(offset), src, UInt64(bytes), &err, err.count)
        guard v > 0 else { throw .invalidArgument(name: "vulkan copy", reason: Vulkan.message(err)) }
        return v
    }

    /// Waits until the copy timeline reaches `value` (the host may then read the memory, later kernels see it).
    public func copyWait(_ value: UInt64) throws(SluiceError) {
        guard value > 0 else { return }
        var err = [CChar](repeating: 0, count: 512)
        guard sk_vk_copy_wait(handle, value, &err, err.count) == 0 else { throw .invalidArgument(name: "vulkan copy wait", reason: Vulkan.message(err)) }
    }

    /// Host-visible staging memory held now: the copy ring and the readback buffer.
    public var stagingBytes: Int { Int(sk_vk_staging_bytes(handle)) }

    // MARK: - Residency: device buffers the backend binds in place

    struct Resident { let base: UInt; let bytes: Int; let buffer: Buffer }
    private let residents = Mutex<[Resident]>([])
    /// The activation arena the memory manager reserved, where the backend places its per-op buffers.
    private let arena = Mutex<(buffer: Buffer, used: Int)?>(nil)

    /// Host memory at `host` mirrors `buffer` byte for byte (its mapping, or a host shadow of it): a
    /// tensor there is bound in place instead of being uploaded.
    public func register(_ buffer: Buffer, host: UnsafeMutableRawPointer, bytes: Int) {
        residents.withLock { $0.append(Resident(base: UInt(bitPattern: host), bytes: bytes, buffer: buffer)) }
    }

    /// The host mirror registered for `buffer`.
    func residentHost(_ buffer: Buffer) -> UnsafeMutableRawPointer? {
        residents.withLock { $0.first { $0.buffer === buffer }.flatMap { UnsafeMutableRawPointer(bitPattern: $0.base) } }
    }

    public func unregister(_ buffer: Buffer) { residents.withLock { $0.removeAll { $0.buffer === buffer } } }

    /// The device binding of a contiguous tensor that lies in a registered buffer at an offset the
    /// device can bind.
    public func residentBinding(_ t: Tensor) -> Binding? {
        guard t.isContiguous, t.byteCount > 0 else { return nil }
        let p = UInt(bitPattern: t.rawPointer), align = info.minStorageOffsetAlignment
        return residents.withLock { list in
            guard let r = list.first(where: { p >= $0.base && p + UInt(t.byteCount) <= $0.base + UInt($0.bytes) }) else { return nil }
            let offset = Int(p - r.base)
            guard offset % align == 0 else { return nil }
            // Whole 16-byte words where the buffer has them: kernels read 8/16-bit data a uint at a time.
            return Binding(r.buffer, offset: offset, bytes: min((t.byteCount + 15) & ~15, r.buffer.capacity - offset))
        }
    }

    /// Per-op buffers come from `buffer` (the component's activation reservation) until `nil`.
    public func useArena(_ buffer: Buffer?) { arena.withLock { $0 = buffer.map { ($0, 0) } } }

    /// A per-op buffer of `bytes`: carved from the arena when one is set (out of memory when the arena
    /// is full: the budget is a hard cap), else a buffer of its own.
    func transient(bytes: Int) throws(SluiceError) -> Binding {
        let rounded = (max(bytes, 4) + 15) & ~15
        let align = max(info.minStorageOffsetAlignment, 16)
        let carved: Result<Binding, SluiceError>? = arena.withLock { a in
            guard let current = a else { return nil }
            let offset = (current.used + align - 1) / align * align
            guard offset + rounded <= current.buffer.bytes else {
                return .failure(.outOfMemory(device: info.name + " activation reservation", requestedBytes: rounded,
                                             availableBytes: max(current.buffer.bytes - offset, 0)))
            }
            a = (current.buffer, offset + rounded)
            return .success(Binding(current.buffer, offset: offset, bytes: rounded))
        }
        switch carved {
        case .success(let b): return b
        case .failure(let e): throw e
        case nil: return Binding(try buffer(bytes: rounded), offset: 0, bytes: rounded)
        }
    }

    /// Where the arena stands: per-op buffers taken after it are given back by `endOp`.
    func arenaMark() -> Int { arena.withLock { $0?.used ?? 0 } }
    func endOp(_ mark: Int) { arena.withLock { a in if let c = a { a = (c.buffer, mark) } } }

    public func upload(_ t: Tensor, to b: Binding) throws(SluiceError) {
        let c = t.contiguous()
        var err = [CChar](repeating: 0, count: 512)
        guard sk_vk_upload(handle, b.buffer.handle, UInt64(b.offset), c.rawPointer, UInt64(c.byteCount), &err, err.count) == 0 else {
            throw .invalidArgument(name: "vulkan upload", reason: Vulkan.message(err))
        }
    }

    public func download(_ b: Binding, into t: Tensor) throws(SluiceError) {
        var err = [CChar](repeating: 0, count: 512)
        guard sk_vk_download(handle, b.buffer.handle, UInt64(b.offset), t.rawPointer, UInt64(t.byteCount), &err, err.count) == 0 else {
            throw .invalidArgument(name: "vulkan download", reason: Vulkan.message(err))
        }
    }
}
