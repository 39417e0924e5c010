import Foundation
import Logging
import PostgresNIO

/// Errors of the database queue, in words.
public enum QueueError: Error, CustomStringConvertible, Equatable {
    case unreachable(url: String, reason: String)
    case badURL(String)
    case schemaNewer(database: Int, binary: Int)
    case full(model: String, depth: Int)
    case database(String)

    public var description: String {
        switch self {
        case .unreachable(let url, let reason): "--queue \(url): cannot reach the database (\(reason))"
        case .badURL(let url): "--queue \(url): not a postgres://user[:password]@host[:port]/database URL"
        case .schemaNewer(let db, let bin): "the queue database is at schema version \(db), newer than this binary's \(bin): upgrade sluice"
        case .full(let model, let depth): "the queue for \(model) holds \(depth) jobs, its limit: try again later"
        case .database(let reason): "queue database: \(reason)"
        }
    }
}

/// A job as a worker holds it.
public struct ClaimedJob: Sendable, Equatable {
    public let id: UUID
    public let model: String
    public let payload: Data
    /// 1 for the first try; more after leases expired.
    public let attempt: Int
}

/// The jobs table as a queue for many workers on PostgreSQL: jobs are claimed with
/// `FOR UPDATE SKIP LOCKED` (no two workers get one job), held under a lease the worker renews
/// (`heartbeat`); a lease that runs out (a worker killed, a machine lost) puts the job back in the queue
/// (`expireLeases`), up to its attempts, then fails it with the reason. A result is written only by the
/// worker that still holds the job (a compare-and-set on its state and worker), so two workers racing
/// after an expiry leave one image. Jobs are routed by model: a worker only claims its model's.
public final class PostgresQueue: Sendable {
    public let url: String
    let client: PostgresClient
    let logger: Logger
    private let runner: Task<Void, Never>

    /// The pool logs every failed connection attempt at info level while it retries: errors only (this
    /// type's own errors say what failed).
    public static var quietLogger: Logger {
        var l = Logger(label: "sluice.queue")
        l.logLevel = .error
        return l
    }

    /// Connects (a pool of up to `connections`), applies the migrations, and checks the schema.
    public init(url: String, connections: Int = 8, connectTimeout: Double = 10, logger: Logger = PostgresQueue.quietLogger) async throws {
        self.url = url
        self.logger = logger
        var config = try Self.configuration(url)
        // The pool retries a refused connection quietly until the timeout below: a server that is not
        // there at all (refused, no such host) is said at once instead.
        if let host = config.host, let port = config.port, let reason = unreachableReason(host: host, port: port) {
            throw QueueError.unreachable(url: Self.redacted(url), reason: reason)
        }
        config.options.maximumConnections = connections
        config.options.minimumConnections = 0
        config.options.connectTimeout = .seconds(connectTimeout)
        let client = PostgresClient(configuration: config, backgroundLogger: logger)
        self.client = client
        runner = Task { await client.run() }
        do {
            // The pool retries a refused connection with backoff: bound the wait so an unreachable
            // database is an error in seconds, not a hang.
            try await withThrowingTaskGroup(of: Bool.self) { group in
                group.addTask { try await self.migrate(); return true }
                group.addTask { try await Task.sleep(for: .seconds(connectTimeout)); return false }
                let migrated = try await group.next()!
                group.cancelAll()
                if !migrated { throw QueueError.unreachable(url: Self.redacted(url), reason: "no connection within \(Int(connectTimeout)) s") }
            }
        } catch let e as QueueError {
            runner.cancel()
            throw e
        } catch let e as PostgresTransactionError where e.closureError is QueueError {
            runner.cancel()
            throw e.closureError!
        } catch {
            runner.cancel()
            throw QueueError.unreachable(url: Self.redacted(url), reason: "\(String(reflecting: error).prefix(300))")
        }
    }

    deinit { runner.cancel() }

    /// Stops the pool.
    public func close() { runner.cancel() }

    static func configuration(_ url: String) throws -> PostgresClient.Configuration {
        guard let u = URLComponents(string: url), ["postgres", "postgresql"].contains(u.scheme ?? ""), let host = u.host, !host.isEmpty,
              let user = u.user, !user.isEmpty else { throw QueueError.badURL(redacted(url)) }
        let database = u.path.hasPrefix("/") && u.path.count > 1 ? String(u.path.dropFirst()) : nil
        return PostgresClient.Configuration(host: host, port: u.port ?? 5432, username: user, password: u.password, database: database, tls: .disable)
    }

    /// The URL without its password, for messages and logs.
    public static func redacted(_ url: String) -> String {
        guard var u = URLComponents(string: url), u.password != nil else { return url }
        u.password = "***"
        return u.string ?? url
    }

    // MARK: - Schema

    func migrate() async throws {
        try await client.withTransaction(logger: logger) { c in
            try await c.query("SELECT pg_advisory_xact_lock(\(QueueSchema.lockKey))", logger: logger)
            try await c.query("CREATE TABLE IF NOT EXISTS sluice_schema (version integer NOT NULL)", logger: logger)
            var version = 0
            for try await v in try await c.query("SELECT version FROM sluice_schema", logger: logger).decode(Int.self) { version = v }
            if version > QueueSchema.latest { throw QueueError.schemaNewer(database: version, binary: QueueSchema.latest) }
            if version == 0 { try await c.query("INSERT INTO sluice_schema (version) VALUES (0)", logger: logger) }
            for (i, sql) in QueueSchema.migrations.enumerated() where i + 1 > version {
                for statement in sql.split(separator: ";").map({ $0.trimmingCharacters(in: .whitespacesAndNewlines) }) where !statement.isEmpty {
                    try await c.query(PostgresQuery(unsafeSQL: statement), logger: logger)
                }
                try await c.query("UPDATE sluice_schema SET version = \(i + 1)", logger: logger)
            }
        }
    }

    /// The last schema version this binary knows (its migrations).
    public static var supportedSchemaVersion: Int { QueueSchema.latest }

    /// The schema version the database is at.
    public func schemaVersion() async throws -> Int {
        var version = 0
        for try await v in try await client.query("SELECT version FROM sluice_schema", logger: logger).decode(Int.self) { version = v }
        return version
    }

    // MARK: - Jobs

    /// Adds a job for `model`; refused with `.full` when `maxDepth` jobs of that model are already waiting.
    public func enqueue(id: UUID = UUID(), model: String, payload: Data, maxAttempts: Int = 3, maxDepth: Int = 1000) async throws -> UUID {
        let inserted = try await client.withTransaction(logger: logger) { c -> Bool in
            // One enqueue per model at a time, so the depth check and the insert agree.
            try await c.query("SELECT pg_advisory_xact_lock(hashtext(\(model)))", logger: logger)
            var depth = 0
            for try await n in try await c.query("SELECT count(*)::integer FROM sluice_jobs WHERE model = \(model) AND state = 'queued'", logger: logger).decode(Int.self) { depth = n }
            guard depth < maxDepth else { return false }
            try await c.query("INSERT INTO sluice_jobs (id, model, payload, max_attempts) VALUES (\(id), \(model), \(payload), \(maxAttempts))", logger: logger)
            return true
        }
        guard inserted else { throw QueueError.full(model: model, depth: maxDepth) }
        return id
    }

    /// The oldest waiting job of `model`, now held by `worker` for `lease` seconds; nil when none waits.
    /// Leases that ran out are returned to the queue first.
    public func claim(model: String, worker: String, lease: Double) async throws -> ClaimedJob? {
        try await expireLeases()
        let rows = try await client.query("""
            UPDATE sluice_jobs SET state = 'running', worker = \(worker), attempts = attempts + 1, started_at = clock_timestamp(),
                lease_until = clock_timestamp() + make_interval(secs => \(lease))
            WHERE id = (SELECT id FROM sluice_jobs WHERE model = \(model) AND state = 'queued' ORDER BY created_at, id
                        FOR UPDATE SKIP LOCKED LIMIT 1)
            RETURNING id, payload, attempts
            """, logger: logger)
        for try await (id, payload, attempts) in rows.decode((UUID, Data, Int).self) {
            try await client.query("UPDATE sluice_workers SET current_job = \(id), last_seen = clock_timestamp() WHERE id = \(worker)", logger: logger)
            return ClaimedJob(id: id, model: model, payload: payload, attempt: attempts)
        }
        return nil
    }

    /// Renews `worker`'s lease on `job`; false when the worker no longer holds it (expired and taken,
    /// cancelled before it started, finished) — the worker should stop.
    public func heartbeat(job: UUID, worker: String, lease: Double) async throws -> Bool {
        try await returning(client.query("""
            UPDATE sluice_jobs SET lease_until = clock_timestamp() + make_interval(secs => \(lease))
            WHERE id = \(job) AND state = 'running' AND worker = \(worker) RETURNING id
            """, logger: logger))
    }

    /// Jobs whose lease ran out go back to the queue, or fail once they have used their attempts. Returns
    /// how many were returned and how many failed.
    @discardableResult
    public func expireLeases() async throws -> (requeued: Int, failed: Int) {
        let rows = try await client.query("""
            UPDATE sluice_jobs SET
                state = CASE WHEN attempts >= max_attempts THEN 'failed' ELSE 'queued' END,
                error = CASE WHEN attempts >= max_attempts
                    THEN 'the lease ran out ' || attempts || ' times (last worker ' || coalesce(worker, '?') || ')' ELSE error END,
                finished_at = CASE WHEN attempts >= max_attempts THEN clock_timestamp() ELSE NULL END,
                worker = NULL, lease_until = NULL
            WHERE state = 'running' AND lease_until < clock_timestamp()
            RETURNING state
            """, logger: logger)
        var requeued = 0, failed = 0
        for try await state in rows.decode(String.self) { if state == "failed" { failed += 1 } else { requeued += 1 } }
        return (requeued, failed)
    }

    /// Stores the result if `worker` still holds `job` (compare-and-set on the job's state and worker);
    /// false when another worker won or the job was cancelled: the caller drops its image.
    public func complete(job: UUID, worker: String, image: Data) async throws -> Bool {
        try await complete(job: job, worker: worker, images: [image])
    }

    /// As `complete(job:worker:image:)` for a job that made several images (numbered 0…).
    public func complete(job: UUID, worker: String, images: [Data]) async throws -> Bool {
        try await client.withTransaction(logger: logger) { c -> Bool in
            let won = try await returning(c.query("""
                UPDATE sluice_jobs SET state = 'done', finished_at = clock_timestamp(), lease_until = NULL
                WHERE id = \(job) AND state = 'running' AND worker = \(worker) AND NOT cancel_requested RETURNING id
                """, logger: logger))
            guard won else { return false }
            for (n, image) in images.enumerated() {
                try await c.query("INSERT INTO sluice_results (job, n, image, worker) VALUES (\(job), \(n), \(image), \(worker))", logger: logger)
            }
            try await c.query("DELETE FROM sluice_previews WHERE job = \(job)", logger: logger)
            try await c.query("UPDATE sluice_workers SET current_job = NULL WHERE id = \(worker)", logger: logger)
            return true
        }
    }

    /// Fails the job `worker` holds, with the reason (not retried: the request itself failed).
    public func fail(job: UUID, worker: String, reason: String) async throws {
        try await client.query("""
            UPDATE sluice_jobs SET state = 'failed', error = \(reason), finished_at = clock_timestamp(), lease_until = NULL
            WHERE id = \(job) AND state = 'running' AND worker = \(worker)
            """, logger: logger)
    }

    /// Cancels a job: a waiting one at once; a running one by a flag its worker reads between steps
    /// (`isCancelled`), then ends with `acknowledgeCancel`. False when the job had already ended.
    public func cancel(job: UUID) async throws -> Bool {
        try await returning(client.query("""
            UPDATE sluice_jobs SET cancel_requested = true,
                state = CASE WHEN state = 'queued' THEN 'cancelled' ELSE state END,
                finished_at = CASE WHEN state = 'queued' THEN clock_timestamp() ELSE finished_at END
            WHERE id = \(job) AND state IN ('queued', 'running') RETURNING id
            """, logger: logger))
    }

    public func isCancelled(job: UUID) async throws -> Bool {
        for try await flag in try await client.query("SELECT cancel_requested FROM sluice_jobs WHERE id = \(job)", logger: logger).decode(Bool.self) {
            return flag
        }
        return true  // gone: stop
    }

    /// The worker stopped on a cancel request: the job ends cancelled.
    public func acknowledgeCancel(job: UUID, worker: String) async throws {
        try await client.query("""
            UPDATE sluice_jobs SET state = 'cancelled', finished_at = clock_timestamp(), lease_until = NULL
            WHERE id = \(job) AND state = 'running' AND worker = \(worker)
            """, logger: logger)
    }

    // MARK: - Reading

    public struct JobRecord: Sendable, Equatable {
        public let id: UUID
        public let model: String
        public let state: String
        public let attempts: Int
        public let worker: String?
        public let error: String?
    }

    public func job(_ id: UUID) async throws -> JobRecord? {
        try await jobs([id])[id]
    }

    /// The (first) stored image of a finished job, and the worker that made it.
    public func result(_ id: UUID) async throws -> (image: Data, worker: String)? {
        let rows = try await client.query("SELECT image, worker FROM sluice_results WHERE job = \(id) ORDER BY n LIMIT 1", logger: logger)
        for try await (image, worker) in rows.decode((Data, String).self) { return (image, worker) }
        return nil
    }

    /// Every stored image of a finished job, in order.
    public func results(_ id: UUID) async throws -> [Data] {
        var out: [Data] = []
        for try await image in try await client.query("SELECT image FROM sluice_results WHERE job = \(id) ORDER BY n", logger: logger).decode(Data.self) {
            out.append(image)
        }
        return out
    }

    /// The records of `ids` that exist (one query: a front server follows its jobs with it).
    public func jobs(_ ids: [UUID]) async throws -> [UUID: JobRecord] {
        guard !ids.isEmpty else { return [:] }
        var out: [UUID: JobRecord] = [:]
        let rows = try await client.query("SELECT id, model, state, attempts, worker, error FROM sluice_jobs WHERE id = ANY(\(ids))", logger: logger)
        for try await (id, model, state, attempts, worker, error) in rows.decode((UUID, String, String, Int, String?, String?).self) {
            out[id] = JobRecord(id: id, model: model, state: state, attempts: attempts, worker: worker, error: error)
        }
        return out
    }

    /// Each waiting job of `model` and its place in line (1: next to be claimed).
    public func positions(model: String) async throws -> [UUID: Int] {
        var out: [UUID: Int] = [:]
        let rows = try await client.query("""
            SELECT id, (row_number() OVER (ORDER BY created_at, id))::integer FROM sluice_jobs WHERE model = \(model) AND state = 'queued'
            """, logger: logger)
        for try await (id, n) in rows.decode((UUID, Int).self) { out[id] = n }
        return out
    }

    /// A job as a front server takes it up again after a restart.
    public struct Adoptable: Sendable {
        public let id: UUID
        public let state: String
        public let payload: Data
        public let createdAt: Double
        public let error: String?
    }

    /// The jobs of `model` a front server should follow when it starts: every one not yet ended, and the
    /// `recent` most recently ended within `hours` (their images may not have reached its gallery).
    public func adoptable(model: String, recent: Int = 500, hours: Double = 24) async throws -> [Adoptable] {
        var out: [Adoptable] = []
        let rows = try await client.query("""
            (SELECT id, state, payload, extract(epoch FROM created_at)::float8, error FROM sluice_jobs
              WHERE model = \(model) AND state IN ('queued', 'running'))
            UNION ALL
            (SELECT id, state, payload, extract(epoch FROM created_at)::float8, error FROM sluice_jobs
              WHERE model = \(model) AND state IN ('done', 'failed', 'cancelled')
                AND finished_at > clock_timestamp() - make_interval(secs => \(hours * 3600))
              ORDER BY finished_at DESC LIMIT \(recent))
            """, logger: logger)
        for try await (id, state, payload, created, error) in rows.decode((UUID, String, Data, Double, String?).self) {
            out.append(Adoptable(id: id, state: state, payload: payload, createdAt: created, error: error))
        }
        return out.sorted { $0.createdAt < $1.createdAt }
    }

    /// Waiting jobs per model.
    public func depths() async throws -> [String: Int] {
        var out: [String: Int] = [:]
        let rows = try await client.query("SELECT model, count(*)::integer FROM sluice_jobs WHERE state = 'queued' GROUP BY model", logger: logger)
        for try await (model, n) in rows.decode((String, Int).self) { out[model] = n }
        return out
    }

    /// Jobs in each state.
    public func counts() async throws -> [String: Int] {
        var out: [String: Int] = [:]
        for try await (state, n) in try await client.query("SELECT state, count(*)::integer FROM sluice_jobs GROUP BY state", logger: logger).decode((String, Int).self) {
            out[state] = n
        }
        return out
    }

    func returning(_ rows: PostgresRowSequence) async throws -> Bool {
        for try await _ in rows { return true }
        return false
    }
}
