import Foundation
import SluiceCore
import SluiceQueue
import Synchronization

/// The jobs: a bounded FIFO with one worker (one device), as an actor. Submitting to a full queue is
/// refused (429); a queued job can be cancelled at once, a running one between steps; a failed job
/// (out of memory after re-planning included) fails alone. Finished images go to the gallery.
///
/// With a `QueueDatabase` (`serve --queue`) the jobs wait in PostgreSQL instead and `sluice worker`s run
/// them: this actor keeps the same records and events by following the database (JobQueue+Database).
public actor JobQueue {
    public struct Job: Sendable {
        public let id: String
        /// What it generates; an init image's pixels are dropped when the job ends (the record keeps
        /// its strength).
        public internal(set) var parameters: JobParameters
        /// Who submitted it (a remote address): at most `perClient` of theirs wait or run at once.
        public let client: String
        public let submitted: Double
        public var state: JobState = .queued
        public var started: Double?
        public var finished: Double?
        public var error: String?
        public var results: [String] = []
        public var last: JobEvent?
        /// The latest live preview (events carry one only every `--preview-every` steps).
        public var latestPreview: String?
    }

    public let capacity: Int
    public let perClient: Int
    let engine: Engine
    let gallery: Gallery
    let hub = EventHub()
    /// nil: jobs run here on `engine`; else they wait in PostgreSQL for workers.
    public nonisolated let database: QueueDatabase?
    var jobs: [String: Job] = [:]
    private var waiting: [String] = []
    private var running: String?
    private var cancelFlags: [String: CancelFlag] = [:]
    private var wake: CheckedContinuation<Void, Never>?
    private var finishedOrder: [String] = []
    /// Memory over time, for the status panel (recent samples).
    var timeline: [MemorySample] = []
    private var worker: Task<Void, Never>?
    /// With a database: each waiting job's place in its model's line (1: next to be claimed).
    var places: [String: Int] = [:]

    public init(engine: Engine, gallery: Gallery, capacity: Int, perClient: Int = .max, database: QueueDatabase? = nil) {
        self.engine = engine
        self.gallery = gallery
        self.capacity = capacity
        self.perClient = perClient
        self.database = database
    }

    /// Starts taking jobs; with a database, first takes up the jobs of this model already there (a
    /// restarted front server loses nothing).
    public func start() async {
        guard worker == nil else { return }
        if let database {
            await adopt(database)
            worker = Task { await self.follow(database) }
        } else {
            worker = Task { await self.work() }
        }
    }

    /// Queues a job; `RequestError` 429 when `capacity` jobs are already waiting or running (with a
    /// database: waiting for this model, from every front server), or `perClient` of this client's.
    public func submit(_ p: JobParameters, client: String = "local") async throws(RequestError) -> (id: String, position: Int) {
        let open = jobs.values.filter { !$0.state.isFinal }
        if database == nil {
            guard open.count < capacity else {
                throw RequestError(field: "queue", reason: "is full (\(capacity) jobs); retry later", status: 429)
            }
        }
        guard open.filter({ $0.client == client }).count < perClient else {
            throw RequestError(field: "queue", reason: "already holds \(perClient) of your jobs; retry when one ends", status: 429)
        }
        let uuid = UUID()
        let id = uuid.uuidString.lowercased()
        // The record first, so a submission running beside this one counts it.
        jobs[id] = Job(id: id, parameters: p, client: client, submitted: Date().timeIntervalSince1970)
        if let database {
            do { try await database.enqueue(uuid, p, depth: capacity) } catch {
                jobs[id] = nil
                throw error
            }
            places = (try? await database.places()) ?? places
        } else {
            waiting.append(id)
            cancelFlags[id] = CancelFlag()
            wake?.resume()
            wake = nil
        }
        let position = self.position(id) ?? 1
        var e = JobEvent(job: id, state: .queued)
        e.position = position
        publish(e)
        return (id, position)
    }

    public func job(_ id: String) -> Job? { jobs[id] }

    /// 1 for the running job, 2… for those waiting; nil when not in the queue. With a database, 1 for any
    /// running job, and a waiting job's place in its model's line plus one.
    public func position(_ id: String) -> Int? {
        if database != nil {
            guard let job = jobs[id] else { return nil }
            return job.state == .running ? 1 : job.state == .queued ? (places[id] ?? 0) + 1 : nil
        }
        if running == id { return 1 }
        return waiting.firstIndex(of: id).map { $0 + 1 + (running == nil ? 0 : 1) }
    }

    /// Jobs waiting or running (with a database: this server's).
    public var length: Int {
        database == nil ? waiting.count + (running == nil ? 0 : 1) : jobs.values.filter { !$0.state.isFinal }.count
    }
    public var current: Job? {
        database == nil ? running.flatMap { jobs[$0] } : jobs.values.filter { $0.state == .running }.min { ($0.started ?? 0) < ($1.started ?? 0) }
    }
    public var memoryTimeline: [MemorySample] { timeline }

    /// Cancels a queued or running job; false if it is unknown or already over.
    public func cancel(_ id: String) async -> Bool {
        guard let before = jobs[id], !before.state.isFinal else { return false }
        if let database {
            // The database decides: a waiting job ends now, a running one when its worker reads the flag.
            guard await database.cancel(id) else { return false }
        } else {
            cancelFlags[id]?.set()
            waiting.removeAll { $0 == id }
        }
        // A waiting job ends here; a running one when its generation stops at the next step.
        guard var job = jobs[id], job.state == .queued else { return true }
        job.state = .cancelled
        job.finished = Date().timeIntervalSince1970
        jobs[id] = job
        finish(id)
        publish(JobEvent(job: id, state: .cancelled))
        return true
    }

    /// Events of one job: its latest state first, then live ones, ending when the job ends.
    public func events(_ id: String) -> AsyncStream<JobEvent>? {
        guard let job = jobs[id] else { return nil }
        let initial = job.last ?? JobEvent(job: id, state: job.state)
        return hub.subscribe(id, initial: initial, finished: job.state.isFinal)
    }

    /// Waits until the job ends (the synchronous OpenAI and AUTOMATIC1111 endpoints).
    public func wait(_ id: String) async -> Job? {
        guard let stream = events(id) else { return nil }
        for await _ in stream {}
        return jobs[id]
    }

    func publish(_ e: JobEvent) {
        record(e)
        hub.publish(e)
    }

    /// Keeps a job's latest event and the memory timeline; a late progress event never overwrites
    /// the job's final state.
    func record(_ e: JobEvent) {
        if let m = e.memory { sample(m) }
        guard let job = jobs[e.job] else { return }
        if e.state == .running, job.state.isFinal { return }
        jobs[e.job]?.last = e
        if let p = e.preview { jobs[e.job]?.latestPreview = p }
    }

    /// Adds to the memory timeline, keeping its last 2000 samples.
    func sample(_ m: MemorySample) {
        timeline.append(m)
        if timeline.count > 2000 { timeline.removeFirst(timeline.count - 2000) }
    }

    /// Puts image `n` of a job's `count` in the gallery with its own seed (as one image of that job) and
    /// returns its gallery id: the job's id, or "id-N" in a batch.
    func addToGallery(png: [UInt8], job id: String, image n: Int, of count: Int, parameters: JobParameters, seed: UInt64, seconds: Double) throws -> String {
        let gid = count == 1 ? id : "\(id)-\(n + 1)"
        var p = parameters
        p.seed = seed
        p.count = 1
        p.initImage = nil
        try gallery.add(png: png, entry: .init(id: gid, created: Date().timeIntervalSince1970, parameters: p, seconds: seconds, model: engine.modelName))
        return gid
    }

    /// Keeps the last 500 finished jobs' records.
    func finish(_ id: String) {
        cancelFlags[id] = nil
        jobs[id]?.parameters.initImage = nil
        finishedOrder.append(id)
        if finishedOrder.count > 500 { jobs[finishedOrder.removeFirst()] = nil }
    }

    private func nextJob() async -> String {
        while waiting.isEmpty { await withCheckedContinuation { wake = $0 } }
        return waiting.removeFirst()
    }

    private func work() async {
        while !Task.isCancelled {
            let id = await nextJob()
            guard var job = jobs[id], let flag = cancelFlags[id] else { continue }
            running = id
            job.state = .running
            job.started = Date().timeIntervalSince1970
            jobs[id] = job
            publish(JobEvent(job: id, state: .running, steps: job.parameters.steps, images: job.parameters.count))
            let engine = self.engine, hub = self.hub
            let params = job.parameters
            let outcome: Result<[(png: [UInt8], seconds: Double, seed: UInt64)], any Error> = await withCheckedContinuation { done in
                let thread = Thread {
                    // Progress goes to listeners straight from this thread (in order); the actor's
                    // record of it follows.
                    let r = Result { try engine.run(params, job: id, report: { e in
                        hub.publish(e)
                        Task { await self.record(e) }
                    }, isCancelled: { flag.isSet }) }
                    done.resume(returning: r)
                }
                thread.stackSize = 8 << 20
                thread.start()
            }
            job = jobs[id] ?? job
            job.finished = Date().timeIntervalSince1970
            var final = JobEvent(job: id, state: .done)
            switch outcome {
            case .success(let images):
                var ids: [String] = []
                for (n, img) in images.enumerated() {
                    do {
                        ids.append(try addToGallery(png: img.png, job: id, image: n, of: images.count, parameters: params, seed: img.seed, seconds: img.seconds))
                    } catch {
                        job.error = "\(error)"
                    }
                }
                job.results = ids
                job.state = job.error == nil ? .done : .failed
            case .failure(let error):
                if case SluiceError.cancelled = error { job.state = .cancelled } else {
                    job.state = .failed
                    job.error = errorText(error)
                }
            }
            final.state = job.state
            final.results = job.results
            final.error = job.error
            final.memory = .now()
            jobs[id] = job
            running = nil
            finish(id)
            publish(final)
            hub.close(id)
        }
    }
}

/// A flag the worker thread reads between steps.
final class CancelFlag: Sendable {
    private let flag = Mutex(false)
    func set() { flag.withLock { $0 = true } }
    var isSet: Bool { flag.withLock { $0 } }
}

/// Fan-out of job events to any number of listeners (SSE clients, waiting API calls). A listener that
/// goes away (a closed browser tab) only loses its own stream; the job goes on.
final class EventHub: @unchecked Sendable {
    private let lock = NSLock()
    private var listeners: [String: [UUID: AsyncStream<JobEvent>.Continuation]] = [:]

    func subscribe(_ job: String, initial: JobEvent, finished: Bool) -> AsyncStream<JobEvent> {
        let (stream, continuation) = AsyncStream<JobEvent>.makeStream(bufferingPolicy: .bufferingNewest(64))
        continuation.yield(initial)
        if finished {
            continuation.finish()
            return stream
        }
        let key = UUID()
        lock.lock()
        listeners[job, default: [:]][key] = continuation
        lock.unlock()
        continuation.onTermination = { [weak self] _ in
            guard let self else { return }
            self.lock.lock()
            self.listeners[job]?[key] = nil
            self.lock.unlock()
        }
        return stream
    }

    func publish(_ e: JobEvent) {
        lock.lock()
        let targets = listeners[e.job].map { Array($0.values) } ?? []
        lock.unlock()
        for c in targets { c.yield(e) }
        if e.state.isFinal { close(e.job) }
    }

    func close(_ job: String) {
        lock.lock()
        let targets = listeners.removeValue(forKey: job).map { Array($0.values) } ?? []
        lock.unlock()
        for c in targets { c.finish() }
    }
}
