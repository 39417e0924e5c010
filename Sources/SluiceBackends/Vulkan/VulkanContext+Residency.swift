import CVulkan
import SluiceCore
import Synchronization

/// Residency: device buffers the backend binds in place (weights the memory manager placed), and the
/// activation arena per-op buffers are carved from.
extension VulkanContext {


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
}
