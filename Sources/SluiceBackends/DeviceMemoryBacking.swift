import Foundation
import SluiceCore
import Synchronization

/// Real device memory behind a `DeviceMemory`: with a backing, the device's allocations are real
/// buffers on a real device (counted at the size the driver really gave), its copies run on the
/// device's copy queue and its kernels wait for them; the budget check and the modelled clock stay the
/// simulated device's. Without one, allocations are plain host memory (the simulation).
public protocol DeviceMemoryBacking: AnyObject, Sendable {
    /// The device, in words.
    var name: String { get }
    /// An allocation of n bytes takes n rounded up to this: plans count with rounded sizes.
    var granularity: Int { get }
    /// Allocates `bytes`; `storage` is host memory that mirrors it (its mapping, or a host shadow) for
    /// the views model code receives, `realBytes` what the device really took.
    func allocate(bytes: Int, label: String) throws(SluiceError) -> (token: AnyObject, storage: HostStorage, realBytes: Int)
    func free(_ token: AnyObject)
    /// Copies `tensors` one after another (each at a 64-byte aligned offset from `offset`) into the
    /// allocation on the copy queue, starting on the device once the compute timeline reaches `after`
    /// (the last kernel that reads the bytes it overwrites; 0: none); returns the copy timeline value
    /// that signals completion.
    func copy(_ tensors: [Tensor], into token: AnyObject, at offset: Int, after: UInt64) throws(SluiceError) -> UInt64
    /// Kernels recorded from now on wait for the copy with `value` (on the device).
    func wait(_ value: UInt64) throws(SluiceError)
    /// The compute timeline's value that signals when the kernels recorded so far have finished.
    var computeMark: UInt64 { get }
    /// Per-op buffers of the compute backend come from this allocation (the activation reservation), or
    /// from their own allocations when `nil`.
    func useAsScratch(_ token: AnyObject?)
}

/// Vulkan memory for the memory manager: buffers in the device-local heap, copies through the staging
/// ring on the copy queue (a transfer-only family where the device has one), completion on the copy
/// timeline semaphore.
public final class VulkanMemory: DeviceMemoryBacking, @unchecked Sendable {
    public let context: VulkanContext
    private let shadows = Mutex<[ObjectIdentifier: ShadowMirror]>([:])
    public init(context: VulkanContext) {
        self.context = context
        granularity = context.allocationGranularity
    }

    public var name: String { "vulkan \(context.info.name)" }
    public let granularity: Int

    public func allocate(bytes: Int, label: String) throws(SluiceError) -> (token: AnyObject, storage: HostStorage, realBytes: Int) {
        let buffer = try context.buffer(bytes: bytes)
        // Host-visible device memory (lavapipe, integrated GPUs, resizable BAR) is its own mirror;
        // otherwise a host shadow, filled from the device only when host code (a CPU fallback) reads it.
        let storage: HostStorage
        if let mapped = buffer.mapped {
            storage = HostStorage(external: mapped, byteCount: bytes, owner: buffer)
        } else {
            let shadow = ShadowMirror(buffer: buffer, bytes: bytes)
            storage = HostStorage(external: shadow.base, byteCount: bytes, owner: shadow)
            shadows.withLock { $0[ObjectIdentifier(buffer)] = shadow }
        }
        context.register(buffer, host: storage.baseAddress, bytes: bytes)
        return (buffer, storage, buffer.allocatedBytes)
    }

    public func free(_ token: AnyObject) {
        guard let buffer = token as? VulkanContext.Buffer else { return }
        context.arenaFreed(buffer)
        context.unregister(buffer)
        shadows.withLock { $0[ObjectIdentifier(buffer)] = nil }
    }

    public func copy(_ tensors: [Tensor], into token: AnyObject, at offset: Int, after: UInt64) throws(SluiceError) -> UInt64 {
        guard let buffer = token as? VulkanContext.Buffer else { throw .invalidArgument(name: "vulkan copy", reason: "not a Vulkan allocation") }
        // Without a mapping the host shadow is stale from now on (filled again if host code reads it).
        shadows.withLock { $0[ObjectIdentifier(buffer)] }?.invalidate()
        let sources = tensors.map { $0.contiguous() }
        var at = offset, pieces: [(src: UnsafeRawPointer, bytes: Int, offset: Int)] = []
        for c in sources {
            pieces.append((UnsafeRawPointer(c.rawPointer), c.byteCount, at))
            at += (c.byteCount + 63) & ~63
        }
        return try withExtendedLifetime(sources) { () throws(SluiceError) -> UInt64 in
            try context.copyAsync(pieces: pieces, to: buffer, after: after)
        }
    }

    public func wait(_ value: UInt64) throws(SluiceError) { try context.copyWait(value) }

    public var computeMark: UInt64 { context.computeMark }

    public func useAsScratch(_ token: AnyObject?) { context.useArena(token as? VulkanContext.Buffer) }
}

/// The host mirror of a buffer the CPU cannot map: its pages are untouched (no RAM) until host code
/// reads a tensor in it — a CPU fallback, an embedding lookup — and then the whole buffer comes back
/// from the device, once per copy into it (weights are read-only).
final class ShadowMirror: HostCoherence, @unchecked Sendable {
    let buffer: VulkanContext.Buffer
    private let host: HostStorage
    var base: UnsafeMutableRawPointer { host.baseAddress }
    let bytes: Int
    private let lock = NSLock()
    private var stale = true

    init(buffer: VulkanContext.Buffer, bytes: Int) {
        self.buffer = buffer
        self.bytes = bytes
        host = HostStorage(byteCount: bytes, zeroed: false)
    }

    func invalidate() { lock.withLock { stale = true } }

    func prepareHostAccess() {
        lock.withLock {
            guard stale else { return }
            // A device that cannot give its bytes back is lost: nothing correct can follow.
            do { try buffer.context.download(VulkanContext.Binding(buffer, offset: 0, bytes: bytes), to: base, bytes: bytes) }
            catch { fatalError("Vulkan device lost reading weights back: \(error)") }
            stale = false
        }
    }
}
