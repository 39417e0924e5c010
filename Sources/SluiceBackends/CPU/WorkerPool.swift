import Foundation

/// Persistent worker threads for the CPU kernels. Unlike `DispatchQueue.concurrentPerform`, every
/// worker is a real thread that runs at the same time as the others, so the kernels get all the
/// cores they ask for (measured: GCD's pool left 2-thread GEMM ~15% behind OpenBLAS here; dedicated
/// threads close most of that). One parallel region runs at a time: a region started while another
/// holds the pool waits for it; one started from inside a region (nested) runs on its thread alone.
final class WorkerPool: @unchecked Sendable {
    static let shared = WorkerPool(workers: max(0, CPUBackend.coreCount - 1))

    private let workers: Int
    /// Threads a region can use, the caller's included.
    var capacity: Int { workers + 1 }
    private let gate = NSLock()
    /// Marks the threads that are inside a region, so a nested region does not wait for itself.
    private static let inRegion: pthread_key_t = {
        var key = pthread_key_t()
        pthread_key_create(&key, nil)
        return key
    }()
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
                pthread_setspecific(WorkerPool.inRegion, UnsafeRawPointer(bitPattern: 1))
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

    /// Runs `body(i)` for i in 0..<width, each on its own thread at the same time (the caller runs
    /// i = 0), so the bodies may wait for one another. Returns false without running anything if
    /// `width` exceeds `capacity` or the caller is already inside a region: the caller then works
    /// without a team.
    func run(width: Int, _ body: (Int) -> Void) -> Bool {
        let n = width
        guard n > 1, n <= capacity, pthread_getspecific(WorkerPool.inRegion) == nil else { return false }
        gate.lock()
        pthread_setspecific(WorkerPool.inRegion, UnsafeRawPointer(bitPattern: 1))
        withoutActuallyEscaping(body) { body in
            job = body
            for w in 0..<(n - 1) { starts[w].signal() }
            body(0)
            for _ in 0..<(n - 1) { done.wait() }
            job = nil
        }
        pthread_setspecific(WorkerPool.inRegion, nil)
        gate.unlock()
        return true
    }
}
