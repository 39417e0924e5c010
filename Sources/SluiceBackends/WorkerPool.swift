import Foundation
import Synchronization

/// Persistent worker threads for the CPU kernels. Unlike `DispatchQueue.concurrentPerform`, every
/// worker is a real thread that runs at the same time as the others, so the kernels get all the
/// cores they ask for (measured: GCD's pool left 2-thread GEMM ~15% behind OpenBLAS here; dedicated
/// threads close most of that). One parallel region runs at a time; a region started while another
/// holds the pool (or from inside one) runs on the calling thread alone.
final class WorkerPool: @unchecked Sendable {
    static let shared = WorkerPool(workers: max(0, CPUBackend.coreCount - 1))

    private let workers: Int
    /// Threads a region can use, the caller's included.
    var capacity: Int { workers + 1 }
    private let busy = Mutex(false)
    private var starts: [DispatchSemaphore] = []
    private let done = DispatchSemaphore(value: 0)
    // Written by the caller before the workers are signalled, read by them after; the semaphores
    // order the accesses.
    private var job: ((Int) -> Void)?

    init(workers: Int) {
        self.workers = workers
        for w in 0..<workers {
            let start = DispatchSemaphore(value: 0)
            starts.append(start)
            let thread = Thread { [unowned self] in
                while true {
                    start.wait()
                    self.job?(w + 1)
                    self.done.signal()
                }
            }
            thread.name = "sluice-worker-\(w + 1)"
            thread.stackSize = 1 << 20
            thread.start()
        }
    }

    /// Runs `body(i)` for i in 0..<width, each on its own thread (the caller runs i = 0).
    /// Returns false without running anything if the pool is busy: the caller then runs serially.
    func run(width: Int, _ body: (Int) -> Void) -> Bool {
        let n = min(width, workers + 1)
        guard n > 1, busy.withLock({ b in if b { return false }; b = true; return true }) else { return false }
        withoutActuallyEscaping(body) { body in
            job = body
            for w in 0..<(n - 1) { starts[w].signal() }
            body(0)
            for _ in 0..<(n - 1) { done.wait() }
            job = nil
        }
        busy.withLock { $0 = false }
        return true
    }
}
