import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization

/// Bytes in host memory that a tensor points into: owned and 64-byte aligned, a memory-mapped
/// file (nothing read until touched), a span of another storage kept alive by this one, or memory
/// another object owns and maps (a Vulkan buffer's host-visible memory), kept alive with it.
public final class HostStorage: @unchecked Sendable {
    public enum Origin: Sendable {
        case owned
        case mapped(path: String)
        case view(of: HostStorage)
        case external(owner: any AnyObject & Sendable)
    }

    public let baseAddress: UnsafeMutableRawPointer
    public let byteCount: Int
    public let origin: Origin
    /// Set when a device may hold newer bytes than these (a GPU activation's host shadow, or a view of
    /// one): host code reaching the bytes lets it bring them over first (`prepareHostAccess`).
    public let coherence: (any HostCoherence)?
    private let counter: AllocationCounter?
    private let mappingLength: Int

    /// Allocates `byteCount` bytes, 64-byte aligned, zeroed unless the caller will overwrite every
    /// byte (`zeroed: false`), and records them in `counter`.
    public init(byteCount: Int, zeroed: Bool = true, counter: AllocationCounter? = nil) {
        var p: UnsafeMutableRawPointer?
        // Large buffers ask for transparent huge pages, as numpy does from 4 MiB: first touch of a
        // fresh 16 MiB output costs ~10 ms in 4 KiB page faults here and ~1.5 ms in 2 MiB pages,
        // and GEMM panels see fewer TLB misses. They are also recycled (see `LargeBlockCache`):
        // a model's activations come in a few sizes, and a reused block costs no page faults at all.
        let huge = byteCount >= HostStorage.hugePageThreshold
        if huge, let reused = LargeBlockCache.shared.take(byteCount) {
            p = reused
        } else {
            let rc = posix_memalign(&p, huge ? 1 << 21 : 64, huge ? LargeBlockCache.rounded(byteCount) : max(byteCount, 64))
            precondition(rc == 0 && p != nil, "host allocation of \(byteCount) bytes failed")
            #if os(Linux)
            if huge { _ = madvise(p!, LargeBlockCache.rounded(byteCount), MADV_HUGEPAGE) }
            #endif
        }
        if zeroed { memset(p!, 0, max(byteCount, 64)) }
        baseAddress = p!
        self.byteCount = byteCount
        origin = .owned
        coherence = nil
        self.counter = counter
        mappingLength = 0
        counter?.add(byteCount)
    }

    static let hugePageThreshold = 4 << 20

    /// Maps a whole file read-only. Pages are read on first touch; nothing is copied.
    public init(mapping path: String) throws(SluiceError) {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .io(path: path, reason: "cannot open (\(String(cString: strerror(errno))))") }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw .io(path: path, reason: "cannot stat") }
        guard (st.st_mode & S_IFMT) == S_IFREG else { throw .io(path: path, reason: "not a regular file") }
        let size = Int(st.st_size)
        if size == 0 {
            // mmap rejects length 0; an empty file is a valid (if useless) mapping of nothing.
            var p: UnsafeMutableRawPointer?
            _ = posix_memalign(&p, 64, 64)
            baseAddress = p!
            byteCount = 0
            origin = .owned
            coherence = nil
            counter = nil
            mappingLength = 0
            return
        }
        let p = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0)
        guard let p, p != MAP_FAILED else { throw .io(path: path, reason: "cannot map (\(String(cString: strerror(errno))))") }
        baseAddress = p
        byteCount = size
        origin = .mapped(path: path)
        coherence = nil
        counter = nil
        mappingLength = size
    }

    /// A span of `parent`, which stays alive as long as this view does.
    public init(viewOf parent: HostStorage, offset: Int, byteCount: Int) {
        precondition(offset >= 0 && byteCount >= 0 && offset + byteCount <= parent.byteCount, "view out of bounds")
        baseAddress = parent.baseAddress + offset
        self.byteCount = byteCount
        origin = .view(of: parent)
        coherence = parent.coherence
        counter = nil
        mappingLength = 0
    }

    /// `byteCount` bytes at `address`, which `owner` maps and frees; the storage keeps the owner alive.
    public init(external address: UnsafeMutableRawPointer, byteCount: Int, owner: any AnyObject & Sendable) {
        baseAddress = address
        self.byteCount = byteCount
        origin = .external(owner: owner)
        coherence = owner as? any HostCoherence
        counter = nil
        mappingLength = 0
    }

    /// Before host code reads or writes these bytes: a device holding newer ones brings them over (and
    /// takes the host's copy as the newer from then on). Nothing for ordinary host memory.
    @inline(__always) public func prepareHostAccess() { coherence?.prepareHostAccess() }

    /// For a view of a memory-mapped file: hands its pages back to the kernel (MADV_DONTNEED), so they
    /// leave this process's resident set; a later read faults them in again (from the page cache, or
    /// the disk). The memory manager does this once a group's bytes are on the device or in a host
    /// copy, so `--ram-limit` bounds what weights really hold in RAM. Nothing for other storage.
    public func releaseMappedPages() {
        #if os(Linux)
        guard case .view(let parent) = origin, case .mapped = parent.origin, byteCount > 0 else { return }
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let offset = baseAddress - parent.baseAddress
        let start = offset / page * page, end = min(parent.mappingLength, (offset + byteCount + page - 1) / page * page)
        if end > start { _ = madvise(parent.baseAddress + start, end - start, MADV_DONTNEED) }
        #endif
    }

    /// The mapping a view lies in (itself for a mapping), if it is one of a file.
    public var mapping: HostStorage? {
        switch origin {
        case .mapped: return self
        case .view(let parent): return parent.mapping
        default: return nil
        }
    }

    deinit {
        switch origin {
        case .owned:
            if byteCount < HostStorage.hugePageThreshold || !LargeBlockCache.shared.give(baseAddress, byteCount) { free(baseAddress) }
            counter?.remove(byteCount)
        case .mapped:
            munmap(baseAddress, mappingLength)
        case .view, .external:
            break
        }
    }
}

/// Memory a device may hold newer bytes of than the host (a GPU activation): host code that reaches the
/// bytes through a tensor calls `prepareHostAccess` first, so the device's bytes come over; the device
/// then treats the host's copy as the newer one (host code may write it).
public protocol HostCoherence: AnyObject, Sendable {
    func prepareHostAccess()
}

/// Counts bytes allocated through it: current and peak. Tests use it to prove that an operation's
/// memory is bounded (a counter, never a timer).
public final class AllocationCounter: Sendable {
    private struct State { var current = 0, peak = 0, total = 0 }
    private let state = Mutex(State())

    public init() {}

    public func add(_ bytes: Int) {
        state.withLock {
            $0.current += bytes
            $0.total += bytes
            $0.peak = max($0.peak, $0.current)
        }
    }

    public func remove(_ bytes: Int) { state.withLock { $0.current -= bytes } }
    public var currentBytes: Int { state.withLock { $0.current } }
    public var peakBytes: Int { state.withLock { $0.peak } }
    /// Sum of every allocation ever made through this counter.
    public var totalBytes: Int { state.withLock { $0.total } }
    public func resetPeak() { state.withLock { $0.peak = $0.current } }
}

/// Freed large host blocks (≥ 4 MiB, sizes rounded up to 2 MiB), kept for the next allocation of the
/// same rounded size instead of being returned to the kernel, up to `capacity` bytes in all
/// (`SLUICE_HOST_BLOCK_CACHE`, bytes; default 1 GiB). Fresh pages cost a page fault and a zeroing
/// each: a full-size Z-Image block allocates ~40 activation tensors of 17–180 MB per call.
public final class LargeBlockCache: Sendable {
    public static let shared = LargeBlockCache(
        capacity: ProcessInfo.processInfo.environment["SLUICE_HOST_BLOCK_CACHE"].flatMap { Int($0) } ?? (1 << 30))

    private struct State { var blocks: [Int: [UInt]] = [:]; var cached = 0 }  // addresses
    private let state = Mutex(State())
    public let capacity: Int

    public init(capacity: Int) { self.capacity = capacity }

    static func rounded(_ bytes: Int) -> Int { (bytes + (1 << 21) - 1) & ~((1 << 21) - 1) }

    func take(_ bytes: Int) -> UnsafeMutableRawPointer? {
        let size = Self.rounded(bytes)
        let address = state.withLock { s -> UInt? in
            guard var list = s.blocks[size], let p = list.popLast() else { return nil }
            s.blocks[size] = list
            s.cached -= size
            return p
        }
        return address.flatMap { UnsafeMutableRawPointer(bitPattern: $0) }
    }

    /// Keeps the block if there is room; false means the caller frees it.
    func give(_ p: UnsafeMutableRawPointer, _ bytes: Int) -> Bool {
        let size = Self.rounded(bytes)
        return state.withLock { s in
            guard s.cached + size <= capacity else { return false }
            s.blocks[size, default: []].append(UInt(bitPattern: p))
            s.cached += size
            return true
        }
    }

    /// Bytes held for reuse now.
    public var cachedBytes: Int { state.withLock { $0.cached } }

    /// Returns every cached block to the system.
    public func trim() {
        let all = state.withLock { s -> [UInt] in
            let list = s.blocks.values.flatMap { $0 }
            s.blocks = [:]
            s.cached = 0
            return list
        }
        for a in all { free(UnsafeMutableRawPointer(bitPattern: a)) }
    }
}
