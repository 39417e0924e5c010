import SluiceCore
import Synchronization

/// Reusable scratch buffers (GEMM packing panels, attention tiles) so steady-state calls allocate
/// nothing: a buffer is checked out for one operation and returned after. Buffers are created
/// through the backend's allocation counter, so memory proofs see them.
final class ScratchPool: Sendable {
    private let free = Mutex<[HostStorage]>([])
    private let counter: AllocationCounter
    /// Buffers kept between calls; more are released.
    private let keep = 4

    init(counter: AllocationCounter) { self.counter = counter }

    func withScratch<R>(floats: Int, _ body: (UnsafeMutablePointer<Float>) throws -> R) rethrows -> R {
        let bytes = (floats + 16) * 4
        let buffer = free.withLock { list -> HostStorage? in
            guard let i = list.firstIndex(where: { $0.byteCount >= bytes }) else { return nil }
            return list.remove(at: i)
        } ?? HostStorage(byteCount: bytes, zeroed: false, counter: counter)
        defer {
            free.withLock { list in
                list.append(buffer)
                if list.count > keep {
                    list.sort { $0.byteCount > $1.byteCount }
                    list.removeLast(list.count - keep)
                }
            }
        }
        return try body(buffer.baseAddress.assumingMemoryBound(to: Float.self))
    }
}
