import ArgumentParser
import Foundation
import SluiceCore
import SluicePipelines
import SluiceQueue
import SluiceServer

/// `sluice worker`: one device serving a PostgreSQL queue. It loads and warms its model, then takes that
/// model's jobs one at a time: the lease is renewed while it generates (a worker killed mid-job lets the
/// lease run out and the job goes back to the queue), a cancel request stops it at the next step (the
/// flag is read four times a second), progress goes out by NOTIFY, and the image is stored only if this
/// worker still holds the job.
struct WorkerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "worker",
        abstract: "Take jobs for one model from a PostgreSQL queue (see `sluice serve --queue`) and run them on this machine's device.")

    @Option(help: "The queue: postgres://user[:password]@host[:port]/database.") var queue: String
    @Option(name: [.customShort("m"), .long], help: "A diffusers folder, or a repo id in the Hugging Face cache (as `sluice serve --model`).") var model: String
    @Option(help: "The model name jobs are routed by (default: --model as given; the front server's --model must match).") var route: String?
    @Option(help: "Compute device: cpu, vulkan or vulkan:N.") var device = "cpu"
    @Option(help: "A single .safetensors file replacing the model's transformer.") var transformer: String?
    @Option(help: "A single-file SD1.5/SDXL checkpoint's configs and tokenizers.") var config: String?
    @Option(help: "What linear layers compute in: f32 or bf16.") var compute: DType = .f32
    @OptionGroup var memory: MemoryFlags
    @Option(help: "This worker's name in the queue (default: host name and process id).") var name: String?
    @Option(parsing: .unconditional, help: "Seconds a job's lease lasts; renewed every third of it while the job runs.") var lease = 30.0
    @Option(parsing: .unconditional, help: "Seconds between looks at an empty queue.") var poll = 0.5
    @Option(parsing: .unconditional, help: "Stop after this many jobs (0: never).") var maxJobs = 0
    @Option(parsing: .unconditional, help: "A live preview every N denoising steps (0: none), sent to the front server through the database.") var previewEvery = 1

    func run() async throws {
        let memory = try self.memory.options(device: device)
        guard lease >= 0.5, lease <= 3600 else { throw CommandError(message: "--lease must be 0.5…3600 seconds") }
        guard poll > 0, poll <= 60 else { throw CommandError(message: "--poll must be in (0, 60] seconds") }
        guard (0...1000).contains(previewEvery) else { throw CommandError(message: "--preview-every must be 0…1000 (0: no previews)") }
        let worker = name ?? "\(ProcessInfo.processInfo.hostName)-\(ProcessInfo.processInfo.processIdentifier)"
        let route = self.route ?? model
        let q: PostgresQueue
        do { q = try await PostgresQueue(url: queue, connections: 3) } catch let e as QueueError { throw CommandError(message: "\(e)") }
        defer { q.close() }
        let engine = try SluiceServerMain.load(model: model, memory: memory, device: device, transformer: transformer, compute: compute, config: config) {
            FileHandle.standardError.write(Data(($0 + "\n").utf8))
        }
        engine.previewEvery = previewEvery
        try await q.register(worker: worker, model: route, device: engine.pipeline.device.description, budget: memory.deviceBudget)
        FileHandle.standardError.write(Data("worker \(worker): taking jobs for \(route) from \(PostgresQueue.redacted(queue))\n".utf8))
        var done = 0
        while maxJobs == 0 || done < maxJobs {
            try await q.workerHeartbeat(worker)
            guard let job = try await q.claim(model: route, worker: worker, lease: lease) else {
                try await Task.sleep(for: .seconds(poll))
                continue
            }
            try await runJob(job, worker: worker, engine: engine, queue: q)
            done += 1
        }
    }

    /// One job: generation on a thread of its own while this task renews the lease and reads the cancel
    /// flag; the result stored if the lease still holds.
    func runJob(_ job: ClaimedJob, worker: String, engine: Engine, queue q: PostgresQueue) async throws {
        let params: JobParameters
        do { params = try QueuedJob.decode(job.payload) } catch {
            try await q.fail(job: job.id, worker: worker, reason: "bad job: \(error)")
            return
        }
        let flags = JobFlags()
        let id = job.id.uuidString.lowercased()
        let generation = Task.detached { () -> Result<[Data], Error> in
            do {
                let images = try engine.run(params, job: id, report: { event in
                    // Small notifications: phase, step, ETA; a preview goes to its table, named by the job.
                    var e = event
                    let preview = e.preview.flatMap { Data(base64Encoded: $0) }
                    e.preview = nil
                    e.previewStored = preview == nil ? nil : true
                    if let json = try? String(decoding: JSONEncoder().encode(e), as: UTF8.self) {
                        flags.progress(PendingProgress(json: json, preview: preview.map { ($0, e.step) }))
                    }
                }, isCancelled: { flags.stop })
                return .success(images.map { Data($0.png) })
            } catch { return .failure(error) }
        }
        // Four times a second: send the newest progress and read the cancel flag (a cancelled job stops at
        // its next step); every third of the lease, renew it (a lost lease stops the job too).
        let keeper = Task {
            var renewed = Date()
            while !Task.isCancelled {
                try? await Task.sleep(for: .milliseconds(250))
                if Task.isCancelled { break }
                await flags.takeProgress()?.send(job: job.id, worker: worker, queue: q)
                if (try? await q.isCancelled(job: job.id)) == true { flags.cancel() }
                if Date().timeIntervalSince(renewed) >= lease / 3 {
                    if (try? await q.heartbeat(job: job.id, worker: worker, lease: lease)) == false { flags.lose() }
                    renewed = Date()
                }
            }
        }
        let outcome = await generation.value
        keeper.cancel()
        await flags.takeProgress()?.send(job: job.id, worker: worker, queue: q)
        switch outcome {
        case .success(let pngs):
            if try await !q.complete(job: job.id, worker: worker, images: pngs) {
                FileHandle.standardError.write(Data("job \(id): no longer ours (lease lost or cancelled); its image is dropped\n".utf8))
                if flags.cancelled { try await q.acknowledgeCancel(job: job.id, worker: worker) }
            }
        case .failure(let error):
            if case SluiceError.cancelled = error, flags.cancelled {
                try await q.acknowledgeCancel(job: job.id, worker: worker)
            } else if !flags.lost {
                try await q.fail(job: job.id, worker: worker, reason: "\(error)")
            }
        }
    }
}

/// A progress notification not sent yet, and the preview PNG it names.
struct PendingProgress {
    let json: String
    let preview: (png: Data, step: Int)?

    /// Out: the preview into its table first, so a front server that reads the notification finds it.
    func send(job: UUID, worker: String, queue q: PostgresQueue) async {
        if let p = preview { try? await q.storePreview(job: job, worker: worker, step: p.step, png: p.png) }
        try? await q.publish(progress: json)
    }
}

/// What the lease keeper tells the generation thread, and the progress it has not sent yet.
final class JobFlags: @unchecked Sendable {
    private let lock = NSLock()
    private var _cancelled = false, _lost = false
    private var pending: PendingProgress?
    var cancelled: Bool { lock.withLock { _cancelled } }
    var lost: Bool { lock.withLock { _lost } }
    var stop: Bool { lock.withLock { _cancelled || _lost } }
    func cancel() { lock.withLock { _cancelled = true } }
    func lose() { lock.withLock { _lost = true } }
    /// Keeps the latest event only: a slow database sees the newest progress, not a backlog.
    func progress(_ p: PendingProgress) { lock.withLock { pending = p } }
    func takeProgress() -> PendingProgress? { lock.withLock { defer { pending = nil }; return pending } }
}

