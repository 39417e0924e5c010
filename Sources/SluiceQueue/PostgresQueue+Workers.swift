import Foundation
import PostgresNIO

/// The workers' side channel beside the jobs: who is up for which model, and the progress they publish
/// (NOTIFY for phase, step and ETA; the latest preview in its table, by job id).
extension PostgresQueue {
    // MARK: - Workers

    public struct WorkerRecord: Sendable, Equatable {
        public let id: String
        public let model: String
        public let device: String
        public let budget: Int?
        public let secondsSinceHeartbeat: Double
        public let currentJob: UUID?
    }

    /// Says a worker is up (or still up) for `model` on `device`.
    public func register(worker: String, model: String, device: String, budget: Int?) async throws {
        try await client.query("""
            INSERT INTO sluice_workers (id, model, device, budget) VALUES (\(worker), \(model), \(device), \(budget))
            ON CONFLICT (id) DO UPDATE SET model = EXCLUDED.model, device = EXCLUDED.device, budget = EXCLUDED.budget,
                last_seen = clock_timestamp()
            """, logger: logger)
    }

    public func workerHeartbeat(_ worker: String) async throws {
        try await client.query("UPDATE sluice_workers SET last_seen = clock_timestamp() WHERE id = \(worker)", logger: logger)
    }

    public func workers() async throws -> [WorkerRecord] {
        var out: [WorkerRecord] = []
        let rows = try await client.query("""
            SELECT id, model, device, budget, extract(epoch FROM clock_timestamp() - last_seen)::float8, current_job
            FROM sluice_workers ORDER BY id
            """, logger: logger)
        for try await (id, model, device, budget, age, job) in rows.decode((String, String, String, Int?, Double, UUID?).self) {
            out.append(WorkerRecord(id: id, model: model, device: device, budget: budget, secondsSinceHeartbeat: age, currentJob: job))
        }
        return out
    }

    // MARK: - Progress

    /// The channel workers publish progress on (small JSON payloads; previews by job id, not inline).
    public static let progressChannel = "sluice_progress"

    /// Keeps `png` as the latest preview of `job` while `worker` holds it (notifications name the step,
    /// listeners read the image here).
    public func storePreview(job: UUID, worker: String, step: Int, png: Data) async throws {
        try await client.query("""
            INSERT INTO sluice_previews (job, step, image)
            SELECT \(job), \(step), \(png) FROM sluice_jobs WHERE id = \(job) AND state = 'running' AND worker = \(worker)
            ON CONFLICT (job) DO UPDATE SET step = EXCLUDED.step, image = EXCLUDED.image
            """, logger: logger)
    }

    /// The latest preview of a running job and its step.
    public func preview(job: UUID) async throws -> (step: Int, png: Data)? {
        for try await (step, image) in try await client.query("SELECT step, image FROM sluice_previews WHERE job = \(job)", logger: logger).decode((Int, Data).self) {
            return (step, image)
        }
        return nil
    }

    public func publish(progress json: String) async throws {
        try await client.query("SELECT pg_notify(\(Self.progressChannel), \(json))", logger: logger)
    }

    /// Delivers every progress payload to `body` until the task is cancelled.
    public func listen(_ body: @Sendable (String) async -> Void) async throws {
        try await client.withConnection { c in
            for try await n in try await c.listen(Self.progressChannel) { await body(n.payload) }
        }
    }
}
