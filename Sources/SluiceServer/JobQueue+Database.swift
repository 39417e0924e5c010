import Foundation
import SluiceCore
import SluiceQueue

/// A front server's link to the PostgreSQL queue (`serve --queue`): where its jobs go, under which model
/// name workers take them (`--route`), and the database's errors as HTTP answers.
public struct QueueDatabase: Sendable {
    public let queue: PostgresQueue
    /// The model name jobs are routed by (a worker's `--route`, by default its `--model`).
    public let route: String
    /// Tries per job: a lease that runs out this many times fails the job.
    public var maxAttempts = 3

    public init(queue: PostgresQueue, route: String) {
        self.queue = queue
        self.route = route
    }

    /// Adds the job; 429 when `depth` jobs of this model already wait, 503 when the database is away.
    func enqueue(_ id: UUID, _ p: JobParameters, depth: Int) async throws(RequestError) {
        let payload: Data
        do { payload = try QueuedJob.encode(p) } catch {
            throw RequestError(field: "init_image", reason: "cannot be stored for the queue (\(error))")
        }
        do {
            _ = try await queue.enqueue(id: id, model: route, payload: payload, maxAttempts: maxAttempts, maxDepth: depth)
        } catch QueueError.full {
            throw RequestError(field: "queue", reason: "is full (\(depth) jobs waiting for \(route)); retry later", status: 429)
        } catch {
            throw RequestError(field: "queue", reason: "the queue database is unavailable (\(error))", status: 503)
        }
    }

    func places() async throws -> [String: Int] {
        Dictionary(uniqueKeysWithValues: try await queue.positions(model: route).map { ($0.key.uuidString.lowercased(), $0.value) })
    }

    func cancel(_ id: String) async -> Bool {
        guard let uuid = UUID(uuidString: id) else { return false }
        return (try? await queue.cancel(job: uuid)) == true
    }
}

/// Following the database: job states by polling (four times a second, one query for all of this
/// server's open jobs), progress by LISTEN (workers NOTIFY it; a preview is read from its table by the
/// job's id), finished images copied into this server's gallery once.
extension JobQueue {
    /// Takes up the jobs of this model already in the database: those waiting or running, and those that
    /// ended in the last day (their images reach the gallery if they had not).
    func adopt(_ db: QueueDatabase) async {
        guard let found = try? await db.queue.adoptable(model: db.route) else { return }
        for a in found {
            let id = a.id.uuidString.lowercased()
            guard jobs[id] == nil, let p = try? QueuedJob.decode(a.payload) else { continue }
            jobs[id] = Job(id: id, parameters: p, client: "adopted", submitted: a.createdAt)
        }
        await refresh(db)
    }

    func follow(_ db: QueueDatabase) async {
        let listener = Task {
            // LISTEN holds a connection; if it drops (the database restarted), listen again.
            while !Task.isCancelled {
                try? await db.queue.listen { payload in await self.progress(payload, db) }
                try? await Task.sleep(for: .seconds(1))
            }
        }
        defer { listener.cancel() }
        var sampled = Date.distantPast
        while !Task.isCancelled {
            await refresh(db)
            // The status panel's timeline is this server's own memory (workers' is theirs).
            if Date().timeIntervalSince(sampled) >= 1 {
                sampled = Date()
                sample(.now())
            }
            try? await Task.sleep(for: .milliseconds(250))
        }
    }

    /// Reads the state of every open job of this server and applies what changed.
    func refresh(_ db: QueueDatabase) async {
        let open = jobs.values.filter { !$0.state.isFinal }.compactMap { UUID(uuidString: $0.id) }
        guard !open.isEmpty, let records = try? await db.queue.jobs(open) else { return }
        if let p = try? await db.places() { places = p }
        for uuid in open {
            let id = uuid.uuidString.lowercased()
            guard let r = records[uuid] else {
                await end(id, .failed, error: "the job was removed from the queue database", db)
                continue
            }
            await apply(r, db)
        }
    }

    private func apply(_ r: PostgresQueue.JobRecord, _ db: QueueDatabase) async {
        let id = r.id.uuidString.lowercased()
        guard var job = jobs[id], !job.state.isFinal else { return }
        switch r.state {
        case "running" where job.state == .queued:
            job.state = .running
            job.started = Date().timeIntervalSince1970
            jobs[id] = job
            publish(JobEvent(job: id, state: .running, steps: job.parameters.steps, images: job.parameters.count))
        case "queued" where job.state == .running:
            // Its worker's lease ran out: back in line for another.
            job.state = .queued
            jobs[id] = job
            var e = JobEvent(job: id, state: .queued)
            e.position = position(id)
            publish(e)
        case "done": await end(id, .done, error: nil, db)
        case "failed": await end(id, .failed, error: r.error ?? "failed on a worker", db)
        case "cancelled": await end(id, .cancelled, error: nil, db)
        default: break
        }
    }

    /// A job ended in the database: its images into the gallery (those not there already), then the final
    /// event.
    private func end(_ id: String, _ state: JobState, error: String?, _ db: QueueDatabase) async {
        guard let before = jobs[id], !before.state.isFinal else { return }
        var ids: [String] = [], failure = error
        if state == .done, let uuid = UUID(uuidString: id) {
            let count = before.parameters.count
            let names = (0..<count).map { count == 1 ? id : "\(id)-\($0 + 1)" }
            if names.allSatisfy({ gallery.entry($0) != nil }) {
                ids = names
            } else {
                do {
                    let pngs = try await db.queue.results(uuid)
                    let seconds = before.started.map { Date().timeIntervalSince1970 - $0 } ?? 0
                    for (n, png) in pngs.enumerated() where n < names.count {
                        if gallery.entry(names[n]) == nil {
                            _ = try addToGallery(png: [UInt8](png), job: id, image: n, of: count, parameters: before.parameters,
                                                 seed: before.parameters.seed &+ UInt64(n), seconds: seconds)
                        }
                        ids.append(names[n])
                    }
                    if pngs.count != count { failure = "the worker stored \(pngs.count) of \(count) images" }
                } catch {
                    // Read again at the next look.
                    return
                }
            }
        }
        guard var job = jobs[id], !job.state.isFinal else { return }
        job.state = failure == nil ? state : .failed
        job.error = failure
        job.results = ids
        job.finished = Date().timeIntervalSince1970
        jobs[id] = job
        places[id] = nil
        finish(id)
        var e = JobEvent(job: id, state: job.state)
        e.results = ids
        e.error = failure
        publish(e)
        hub.close(id)
    }

    /// A worker's progress notification: passed on to this server's listeners for jobs it follows, with
    /// the preview read from the database when the worker stored one.
    func progress(_ payload: String, _ db: QueueDatabase) async {
        guard var e = try? JSONDecoder().decode(JobEvent.self, from: Data(payload.utf8)), var job = jobs[e.job],
              !job.state.isFinal else { return }
        if job.state == .queued {
            job.state = .running
            job.started = Date().timeIntervalSince1970
            jobs[e.job] = job
        }
        if e.previewStored == true, let uuid = UUID(uuidString: e.job), let stored = try? await db.queue.preview(job: uuid) {
            e.preview = Data(stored.png).base64EncodedString()
        }
        e.previewStored = nil
        e.memory = nil
        guard let now = jobs[e.job], now.state == .running else { return }
        publish(e)
    }
}
