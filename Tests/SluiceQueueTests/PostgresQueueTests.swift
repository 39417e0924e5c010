import Foundation
import PostgresNIO
import Logging
import SluiceQueue
import SluiceTestSupport
import Testing

actor Received {
    var first: String?
    func add(_ s: String) { if first == nil { first = s } }
}

/// The test server's URL, if any.
enum TestServer {
    static let url = ProcessInfo.processInfo.environment["SLUICE_TEST_POSTGRES"]
}

/// The queue against a real PostgreSQL server: `SLUICE_TEST_POSTGRES` names one (postgres://user@host:port/db;
/// `.ci/run` starts a throwaway cluster and sets it). Each test works in a database of its own, dropped after.
@Suite(.enabled(if: TestServer.url != nil, "SLUICE_TEST_POSTGRES is not set: no PostgreSQL server to test against"))
struct PostgresQueueTests {
    static var server: String? { TestServer.url }

    /// In CI the server must be there: the suite would otherwise skip in silence.
    @Test(.enabled(if: Fixtures.inCI)) func serverIsThereInCI() {
        #expect(Self.server != nil, "CI=true but SLUICE_TEST_POSTGRES is not set (.ci/run starts a cluster)")
    }

    /// Runs `statement` on the database at `url` with a connection of its own; the rows' first column as Int.
    @discardableResult
    static func sql(_ url: String, _ statement: String) async throws -> [Int] {
        let u = URLComponents(string: url)!
        let config = PostgresClient.Configuration(host: u.host!, port: u.port ?? 5432, username: u.user!, password: u.password,
                                                  database: u.path.count > 1 ? String(u.path.dropFirst()) : nil, tls: .disable)
        var logger = Logger(label: "test")
        logger.logLevel = .error
        let client = PostgresClient(configuration: config, backgroundLogger: logger)
        let run = Task { await client.run() }
        defer { run.cancel() }
        var out: [Int] = []
        for try await n in try await client.query(PostgresQuery(unsafeSQL: statement)).decode(Int.self) { out.append(n) }
        return out
    }

    /// Runs `body` with the URL of a fresh database on the test server, dropped afterwards.
    static func withDatabase(_ body: (String) async throws -> Void) async throws {
        let base = try #require(server)
        let name = "sluice_test_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased().prefix(16)
        try await sql(base, "CREATE DATABASE \(name)")
        var u = URLComponents(string: base)!
        u.path = "/" + name
        do { try await body(u.string!) } catch {
            _ = try? await sql(base, "DROP DATABASE IF EXISTS \(name) WITH (FORCE)")
            throw error
        }
        _ = try? await sql(base, "DROP DATABASE IF EXISTS \(name) WITH (FORCE)")
    }

    @Test func migrationsRunOnceAndANewerSchemaIsRefused() async throws {
        try await Self.withDatabase { url in
            let a = try await PostgresQueue(url: url)
            let b = try await PostgresQueue(url: url)  // applies nothing twice
            let latest = PostgresQueue.supportedSchemaVersion
            #expect(try await a.schemaVersion() == latest)
            #expect(try await b.schemaVersion() == latest)
            try await Self.sql(url, "UPDATE sluice_schema SET version = \(latest + 1)")
            await #expect(throws: QueueError.schemaNewer(database: latest + 1, binary: latest)) { _ = try await PostgresQueue(url: url) }
            a.close(); b.close()
        }
    }

    /// A refused port and an unknown host are said at once (not after the pool's timeout), naming the URL
    /// without its password.
    @Test func unreachableAndBadURLsAreSaidInWords() async throws {
        let asked = Date()
        do {
            _ = try await PostgresQueue(url: "postgres://sluice:secret@127.0.0.1:1/none", connectTimeout: 10)
            Issue.record("connected to port 1")
        } catch let QueueError.unreachable(url, reason) {
            #expect(url == "postgres://sluice:***@127.0.0.1:1/none")
            #expect(reason.contains("refused"), "\(reason)")
        }
        #expect(Date().timeIntervalSince(asked) < 3)
        do {
            _ = try await PostgresQueue(url: "postgres://sluice@no-such-host.invalid/none", connectTimeout: 10)
            Issue.record("connected to no-such-host.invalid")
        } catch let QueueError.unreachable(_, reason) {
            #expect(reason.contains("cannot resolve no-such-host.invalid"), "\(reason)")
        }
        await #expect(throws: QueueError.badURL("http://x")) { _ = try await PostgresQueue(url: "http://x") }
    }

    /// 200 jobs, three workers claiming at once (each its own pool): every job done exactly once, one
    /// result each, and the work shared.
    @Test func everyJobDoneExactlyOnce() async throws {
        try await Self.withDatabase { url in
            let q = try await PostgresQueue(url: url)
            var ids: [UUID] = []
            for i in 0..<200 { ids.append(try await q.enqueue(model: "tiny", payload: Data("job \(i)".utf8))) }
            let done = try await withThrowingTaskGroup(of: [UUID].self) { group in
                for w in 0..<3 {
                    group.addTask {
                        let worker = try await PostgresQueue(url: url, connections: 2)
                        defer { worker.close() }
                        var mine: [UUID] = []
                        while let job = try await worker.claim(model: "tiny", worker: "w\(w)", lease: 30) {
                            #expect(try await worker.complete(job: job.id, worker: "w\(w)", image: job.payload))
                            mine.append(job.id)
                        }
                        return mine
                    }
                }
                return try await group.reduce(into: [[UUID]]()) { $0.append($1) }
            }
            let all = done.flatMap { $0 }
            #expect(all.count == 200 && Set(all) == Set(ids))
            #expect(done.filter { !$0.isEmpty }.count >= 2, "\(done.map(\.count))")
            #expect(try await q.counts() == ["done": 200])
            // One result per job, each the job's own payload (what its worker wrote).
            #expect(try await Self.sql(url, "SELECT count(*)::integer FROM sluice_results") == [200])
            for (i, id) in ids.enumerated().prefix(10) { #expect(try await q.result(id)?.image == Data("job \(i)".utf8)) }
            q.close()
        }
    }

    /// A worker that stops renewing its lease (killed) loses the job: it goes back to the queue and
    /// another worker finishes it; the first worker's late result is refused, so one image is stored.
    /// Out of attempts, the job fails with the reason.
    @Test func expiredLeasesRequeueAndOneImageWins() async throws {
        try await Self.withDatabase { url in
            let q = try await PostgresQueue(url: url)
            let id = try await q.enqueue(model: "tiny", payload: Data("x".utf8), maxAttempts: 2)
            let a = try #require(try await q.claim(model: "tiny", worker: "a", lease: 0.3))
            #expect(a.id == id && a.attempt == 1)
            #expect(try await q.claim(model: "tiny", worker: "b", lease: 30) == nil)  // held
            try await Task.sleep(for: .milliseconds(600))
            let b = try #require(try await q.claim(model: "tiny", worker: "b", lease: 30))
            #expect(b.id == id && b.attempt == 2)
            #expect(try await !q.heartbeat(job: id, worker: "a", lease: 30))
            #expect(try await !q.complete(job: id, worker: "a", image: Data("from a".utf8)))
            #expect(try await q.complete(job: id, worker: "b", image: Data("from b".utf8)))
            let stored = try await q.result(id)
            #expect(stored?.worker == "b" && stored?.image == Data("from b".utf8))

            let last = try await q.enqueue(model: "tiny", payload: Data(), maxAttempts: 1)
            _ = try #require(try await q.claim(model: "tiny", worker: "c", lease: 0.2))
            try await Task.sleep(for: .milliseconds(400))
            #expect(try await q.expireLeases() == (0, 1))
            let record = try #require(try await q.job(last))
            #expect(record.state == "failed" && record.error?.contains("lease ran out 1 times (last worker c)") == true, "\(record)")
            q.close()
        }
    }

    /// Cancelling a waiting job ends it at once; a running one is flagged for its worker, whose result
    /// is then refused, and ends cancelled when the worker stops.
    @Test func cancellation() async throws {
        try await Self.withDatabase { url in
            let q = try await PostgresQueue(url: url)
            let waiting = try await q.enqueue(model: "tiny", payload: Data())
            #expect(try await q.cancel(job: waiting))
            #expect(try await q.job(waiting)?.state == "cancelled")
            #expect(try await q.claim(model: "tiny", worker: "w", lease: 30) == nil)
            let running = try await q.enqueue(model: "tiny", payload: Data())
            _ = try #require(try await q.claim(model: "tiny", worker: "w", lease: 30))
            #expect(try await !q.isCancelled(job: running))
            #expect(try await q.cancel(job: running))
            #expect(try await q.isCancelled(job: running))
            #expect(try await !q.complete(job: running, worker: "w", image: Data()))
            try await q.acknowledgeCancel(job: running, worker: "w")
            #expect(try await q.job(running)?.state == "cancelled")
            #expect(try await q.result(running) == nil)
            #expect(try await !q.cancel(job: running))  // already ended
            q.close()
        }
    }

    /// Jobs go to workers of their model only; a model's queue refuses jobs beyond its depth.
    @Test func routingByModelAndDepthLimit() async throws {
        try await Self.withDatabase { url in
            let q = try await PostgresQueue(url: url)
            _ = try await q.enqueue(model: "flux", payload: Data(), maxDepth: 2)
            _ = try await q.enqueue(model: "flux", payload: Data(), maxDepth: 2)
            await #expect(throws: QueueError.full(model: "flux", depth: 2)) { _ = try await q.enqueue(model: "flux", payload: Data(), maxDepth: 2) }
            _ = try await q.enqueue(model: "sdxl", payload: Data(), maxDepth: 2)
            #expect(try await q.depths() == ["flux": 2, "sdxl": 1])
            #expect(try await q.claim(model: "qwen", worker: "w", lease: 30) == nil)
            #expect(try await q.claim(model: "sdxl", worker: "w", lease: 30)?.model == "sdxl")
            q.close()
        }
    }

    /// Workers are listed with model, device, budget, heartbeat age and current job; progress published
    /// by a worker reaches a listener.
    @Test func workersAndProgress() async throws {
        try await Self.withDatabase { url in
            let q = try await PostgresQueue(url: url)
            try await q.register(worker: "gpu-1", model: "tiny", device: "vulkan:0", budget: 8 << 30)
            let id = try await q.enqueue(model: "tiny", payload: Data())
            _ = try await q.claim(model: "tiny", worker: "gpu-1", lease: 30)
            let workers = try await q.workers()
            #expect(workers.count == 1 && workers[0].model == "tiny" && workers[0].device == "vulkan:0" && workers[0].budget == 8 << 30)
            #expect(workers[0].currentJob == id && workers[0].secondsSinceHeartbeat < 5)

            let received = Received()
            let listener = Task {
                // Cancelled at the end of the test: the error that ends the listen then is expected.
                do { try await q.listen { await received.add($0) } } catch where !Task.isCancelled { Issue.record("listen: \(String(reflecting: error))") } catch {}
            }
            defer { listener.cancel() }
            var got: String?
            for attempt in 0..<50 where got == nil {
                try await q.publish(progress: #"{"job":"\#(id)","step":\#(attempt)}"#)
                try await Task.sleep(for: .milliseconds(100))
                got = await received.first
            }
            #expect(got?.contains(id.uuidString) == true, "\(String(describing: got))")
            q.close()
        }
    }
}
