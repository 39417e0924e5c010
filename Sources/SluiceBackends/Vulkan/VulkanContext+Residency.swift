import CVulkan
import Foundation
import SluiceCore
import Synchronization

/// Residency: device buffers the backend binds in place — weights the memory manager placed, and
/// activations that stay on the device between ops — and the activation arena they are carved from.
extension VulkanContext {
    /// Host memory at `host` mirrors `buffer` byte for byte (its mapping, or a host shadow of it): a
    /// tensor there is bound in place instead of being uploaded.
    public func register(_ buffer: Buffer, host: UnsafeMutableRawPointer, bytes: Int) {
        residents.withLock { $0.append(Resident(base: UInt(bitPattern: host), bytes: bytes, buffer: buffer)) }
    }

    public func unregister(_ buffer: Buffer) { residents.withLock { $0.removeAll { $0.buffer === buffer } } }

    /// The device binding of a contiguous tensor that lies in a registered buffer (a weight) or in an
    /// activation on the device, at an offset the device can bind. An activation whose host copy is
    /// newer is uploaded first.
    public func residentBinding(_ t: Tensor) throws(SluiceError) -> Binding? {
        guard t.isContiguous, t.byteCount > 0 else { return nil }
        let p = UInt(bitPattern: t.address), align = info.minStorageOffsetAlignment
        let weight = residents.withLock { list -> Binding? in
            guard let r = list.first(where: { p >= $0.base && p + UInt(t.byteCount) <= $0.base + UInt($0.bytes) }) else { return nil }
            let offset = Int(p - r.base)
            guard offset % align == 0 else { return nil }
            // Whole 16-byte words where the buffer has them: kernels read 8/16-bit data a uint at a time.
            return Binding(r.buffer, offset: offset, bytes: min((t.byteCount + 15) & ~15, r.buffer.capacity - offset))
        }
        if let weight { return weight }
        let activation = activations.withLock { list in
            list.lazy.compactMap(\.value).first { p >= UInt(bitPattern: $0.shadow) && p + UInt(t.byteCount) <= UInt(bitPattern: $0.shadow) + UInt($0.bytes) }
        }
        guard let activation, let b = try activation.bindForDevice() else { return nil }
        let offset = Int(p - UInt(bitPattern: activation.shadow))
        guard (b.offset + offset) % align == 0 else { return nil }
        return Binding(b.buffer, offset: b.offset + offset, bytes: min((t.byteCount + 15) & ~15, b.bytes - offset))
    }

    /// Per-op buffers and device activations come from `buffer` (a component's activation reservation)
    /// from now on, or from buffers of their own with `nil`. Activations already in another reservation
    /// stay there — the latents a denoiser's call left stay on the device for the next call — until the
    /// memory manager frees that reservation (`arenaFreed`).
    public func useArena(_ buffer: Buffer?) {
        arena.withLock { set in
            guard let buffer else { set.current = nil; return }
            if let i = set.all.firstIndex(where: { $0.buffer === buffer }) { set.current = i; return }
            set.all.append(Arena(buffer: buffer))
            set.current = set.all.count - 1
        }
    }

    /// The memory manager is about to free or reuse `buffer`: activations still alive in it come to the
    /// host first (their host copies then serve every reader), and it is no longer an arena.
    public func arenaFreed(_ buffer: Buffer) {
        let live = activations.withLock { list in list.compactMap(\.value).filter { $0.binding?.buffer === buffer } }
        for a in live { a.evict() }
        arena.withLock { set in
            guard let i = set.all.firstIndex(where: { $0.buffer === buffer }) else { return }
            set.all.remove(at: i)
            if set.current == i { set.current = nil } else if let c = set.current, c > i { set.current = c - 1 }
        }
    }

    /// Gives `bytes` at `offset` back to the arena of `buffer`, if it is one.
    func giveBack(_ buffer: Buffer, _ offset: Int, _ bytes: Int) {
        arena.withLock { set in
            if let i = set.all.firstIndex(where: { $0.buffer === buffer }) { set.all[i].release(offset, bytes) }
        }
    }

    /// A per-op buffer of `bytes`: carved from the arena when one is set (out of memory when the arena
    /// cannot hold it: the budget is a hard cap), else a buffer of its own. Given back when its op ends,
    /// unless the op's output keeps it (`adopt`).
    func transient(bytes: Int) throws(SluiceError) -> Binding {
        let rounded = (max(bytes, 4) + 15) & ~15
        let align = max(info.minStorageOffsetAlignment, 16)
        let carved: Result<Binding, SluiceError>? = arena.withLock { set in
            guard let i = set.current else { return nil }
            guard let offset = set.all[i].allocate(rounded, align: align) else {
                return .failure(.outOfMemory(device: info.name + " activation reservation", requestedBytes: rounded,
                                             availableBytes: set.all[i].largestFree))
            }
            return .success(Binding(set.all[i].buffer, offset: offset, bytes: rounded))
        }
        let b: Binding
        switch carved {
        case .success(let carvedBinding): b = carvedBinding
        case .failure(let e): throw e
        case nil: b = Binding(try buffer(bytes: rounded, deferredFree: true), offset: 0, bytes: rounded)
        }
        opBuffers.withLock { $0.append(.buffer(b)) }
        return b
    }

    /// The op now running reads `storage` on the device: it stays alive until the op ends.
    func keepForOp(_ storage: HostStorage) { opBuffers.withLock { $0.append(.keep(storage)) } }

    /// Where the op about to run starts in the list of per-op buffers.
    func arenaMark() -> Int { opBuffers.withLock { $0.count } }

    /// The op that started at `mark` ended: its per-op buffers (those no output kept) go back.
    func endOp(_ mark: Int) {
        let done = opBuffers.withLock { list -> [OpHolding] in
            let tail = Array(list[mark...])
            list.removeSubrange(mark...)
            return tail
        }
        for case .buffer(let b) in done { giveBack(b.buffer, b.offset, b.bytes) }
    }

    /// An op's output stays on the device as a tensor: its host shadow is written only when host code
    /// reaches it. The per-op buffer holding it is kept until the tensor goes.
    func adopt(_ b: Binding, shape: Shape, counter: AllocationCounter?) -> Tensor {
        opBuffers.withLock { list in
            list.removeAll { if case .buffer(let x) = $0 { return x.buffer === b.buffer && x.offset == b.offset }; return false }
        }
        let a = DeviceActivation(context: self, binding: b, bytes: shape.count * 4, counter: counter)
        activations.withLock { list in
            list.removeAll { $0.value == nil }
            list.append(WeakActivation(value: a))
        }
        return Tensor(storage: HostStorage(external: a.shadow, byteCount: a.bytes, owner: a), dtype: .f32, shape: shape)
    }

    /// A device activation went away: its bytes in the arena are free again.
    func release(_ a: DeviceActivation) {
        guard let b = a.binding else { return }
        giveBack(b.buffer, b.offset, b.bytes)
    }
}

/// The activation reservations the backend knows, and the one it carves from now.
struct ArenaSet { var all: [Arena] = []; var current: Int? }

/// An activation reservation as free ranges, first fit (ops and live activations come and go).
struct Arena {
    let buffer: VulkanContext.Buffer
    private var free: [Range<Int>]

    init(buffer: VulkanContext.Buffer) {
        self.buffer = buffer
        free = [0..<buffer.bytes]
    }

    var largestFree: Int { free.map(\.count).max() ?? 0 }

    mutating func allocate(_ bytes: Int, align: Int) -> Int? {
        for (i, r) in free.enumerated() {
            let start = (r.lowerBound + align - 1) / align * align
            guard start + bytes <= r.upperBound else { continue }
            var pieces: [Range<Int>] = []
            if start > r.lowerBound { pieces.append(r.lowerBound..<start) }
            if start + bytes < r.upperBound { pieces.append((start + bytes)..<r.upperBound) }
            free.replaceSubrange(i...i, with: pieces)
            return start
        }
        return nil
    }

    mutating func release(_ offset: Int, _ bytes: Int) {
        var r = offset..<(offset + bytes)
        var i = free.firstIndex { $0.lowerBound >= r.upperBound } ?? free.count
        // Merge with the neighbours it touches.
        if i < free.count, free[i].lowerBound == r.upperBound { r = r.lowerBound..<free[i].upperBound; free.remove(at: i) }
        if i > 0, free[i - 1].upperBound == r.lowerBound { r = free[i - 1].lowerBound..<r.upperBound; free.remove(at: i - 1); i -= 1 }
        free.insert(r, at: i)
    }
}

struct WeakActivation: @unchecked Sendable { weak var value: DeviceActivation? }

/// An op's output on the device, with a host shadow that receives its bytes only when host code reaches
/// them (`prepareHostAccess`). After that the host copy counts as newer (host code may have written it)
/// and is uploaded again before a kernel reads it.
final class DeviceActivation: HostCoherence, @unchecked Sendable {
    enum Newer { case device, host, neither }
    let context: VulkanContext
    /// The host copy, counted with the CPU's activations (host memory as any op output's).
    private let host: HostStorage
    var shadow: UnsafeMutableRawPointer { host.baseAddress }
    let bytes: Int
    private let lock = NSLock()
    /// Where its bytes live on the device (nil once brought home because its arena went away).
    private(set) var binding: VulkanContext.Binding?
    private var newer = Newer.device

    init(context: VulkanContext, binding: VulkanContext.Binding, bytes: Int, counter: AllocationCounter?) {
        self.context = context
        self.binding = binding
        self.bytes = bytes
        host = HostStorage(byteCount: bytes, zeroed: false, counter: counter)
    }

    deinit { context.release(self) }

    func prepareHostAccess() {
        lock.withLock {
            if newer == .device, let b = binding {
                // A device that cannot give its bytes back is lost: nothing correct can follow.
                do { try context.download(b, to: shadow, bytes: bytes) } catch { fatalError("Vulkan device lost reading an activation back: \(error)") }
            }
            newer = .host
        }
    }

    /// The binding for a kernel to read, the host's newer bytes uploaded first; nil once brought home.
    func bindForDevice() throws(SluiceError) -> VulkanContext.Binding? {
        lock.lock()
        defer { lock.unlock() }
        guard let b = binding else { return nil }
        if newer == .host {
            try context.upload(from: shadow, bytes: bytes, to: b)
            newer = .neither
        }
        return b
    }

    /// Its arena is about to go: the bytes come home and the device copy is forgotten.
    func evict() {
        prepareHostAccess()
        context.release(self)
        lock.withLock { binding = nil }
    }
}
