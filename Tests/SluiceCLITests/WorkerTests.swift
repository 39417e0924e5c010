import Foundation
import SluiceQueue
import SluiceServer
import SluiceTestSupport
import Testing

/// `sluice worker` processes on the tiny model against a real PostgreSQL server (SLUICE_TEST_POSTGRES;
/// `.ci/run` starts one), each test in a database of its own.
@Suite(.serialized, .enabled(if: ProcessInfo.processInfo.environment["SLUICE_TEST_POSTGRES"] != nil,
                             "SLUICE_TEST_POSTGRES is not set: no PostgreSQL server to test against"))
struct WorkerTests {
    static let model = Fixtures.directory + "/models/z-image-tiny"

    /// A fresh database's URL (created through a throwaway queue's connection to the server's own database).
    static func database() async throws -> String {
        let base = ProcessInfo.processInfo.environment["SLUICE_TEST_POSTGRES"]!
        let name = "sluice_worker_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased().prefix(12)
        let admin = Process()
        admin.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        admin.arguments = ["psql", base, "-qc", "CREATE DATABASE \(name)"]
        try admin.run()
        admin.waitUntilExit()
        var u = URLComponents(string: base)!
        u.path = "/" + name
        return u.string!
    }

    static func startWorker(_ url: String, name: String, lease: Double = 30) throws -> Process {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: CLITests.binary)
        p.arguments = ["worker", "--queue", url, "--model", model, "--name", name, "--lease", "\(lease)", "--poll", "0.1"]
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        return p
    }

    static func payload(steps: Int = 1, seed: UInt64 = 1) throws -> Data {
        try JSONEncoder().encode(JobParameters(prompt: "a red fox", seed: seed, steps: steps, width: 64, height: 64, guidance: 0))
    }

    static func waitUntil(_ seconds: Double, _ condition: () async throws -> Bool) async throws -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if try await condition() { return true }
            try await Task.sleep(for: .milliseconds(100))
        }
        return false
    }

    /// Three workers, 200 jobs: every job done exactly once with one PNG, the work shared.
    @Test func threeWorkersDoEveryJobOnce() async throws {
        let url = try await Self.database()
        let q = try await PostgresQueue(url: url)
        defer { q.close() }
        var ids: [UUID] = []
        for i in 0..<200 { ids.append(try await q.enqueue(model: Self.model, payload: try Self.payload(seed: UInt64(i)), maxDepth: 1000)) }
        let workers = try (0..<3).map { try Self.startWorker(url, name: "w\($0)") }
        defer { for w in workers { w.terminate() } }
        let finished = try await Self.waitUntil(180) { try await q.counts()["done"] == 200 }
        let counts = try await q.counts()
        #expect(finished, "\(counts)")
        var byWorker: [String: Int] = [:]
        for id in ids {
            let r = try #require(try await q.result(id))
            #expect(r.image.prefix(8) == Data([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]))
            byWorker[r.worker, default: 0] += 1
        }
        #expect(byWorker.count >= 2, "\(byWorker)")
        #expect(try await q.workers().count == 3)
    }

    /// The command line end to end: `queue submit` prints an id, a worker makes the image, `queue status`
    /// shows the worker and the counts, `queue result -o` writes the PNG; an unreachable queue is one line.
    @Test func queueCommandsEndToEnd() async throws {
        let url = try await Self.database()
        let worker = try Self.startWorker(url, name: "cli-worker")
        defer { worker.terminate() }
        let submit = try CLITests.sluice(["queue", "submit", "--queue", url, "-m", Self.model, "-p", "a red fox", "--steps", "2", "-W", "64", "-H", "64"])
        let id = submit.output.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(submit.status == 0 && UUID(uuidString: id) != nil, "\(submit.output)")
        let q = try await PostgresQueue(url: url)
        defer { q.close() }
        #expect(try await Self.waitUntil(60) { try await q.job(UUID(uuidString: id)!)?.state == "done" })
        let status = try CLITests.sluice(["queue", "status", "--queue", url])
        #expect(status.status == 0 && status.output.contains("jobs     done 1") && status.output.contains("worker   cli-worker"), "\(status.output)")
        let dir = NSTemporaryDirectory() + "sluice-q-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let result = try CLITests.sluice(["queue", "result", "--queue", url, id, "-o", dir + "/x.png"])
        #expect(result.status == 0 && result.output.contains("done (cli-worker)"), "\(result.output)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: dir + "/x.png")).prefix(4) == Data([0x89, 0x50, 0x4E, 0x47]))
        let down = try CLITests.sluice(["queue", "status", "--queue", "postgres://sluice@127.0.0.1:1/none"])
        #expect(down.status == 1 && down.output.contains("cannot reach the database") && down.output.split(separator: "\n").count == 1, "\(down.output)")
    }

    /// kill -9 of the worker running a job: after its lease runs out the job is finished by another
    /// worker, with one image; a cancelled job stops within a step.
    @Test func killedWorkersJobFinishesElsewhereAndCancelStops() async throws {
        let url = try await Self.database()
        let q = try await PostgresQueue(url: url)
        defer { q.close() }
        let first = try Self.startWorker(url, name: "doomed", lease: 1)
        // A long job (many steps) so the kill lands mid-generation.
        let id = try await q.enqueue(model: Self.model, payload: try Self.payload(steps: 400), maxAttempts: 3)
        #expect(try await Self.waitUntil(60) { try await q.job(id)?.state == "running" })
        try await Task.sleep(for: .milliseconds(300))
        kill(first.processIdentifier, SIGKILL)
        first.waitUntilExit()
        let second = try Self.startWorker(url, name: "survivor", lease: 1)
        defer { second.terminate() }
        let recovered = try await Self.waitUntil(180) { try await q.job(id)?.state == "done" }
        let after = try await q.job(id)
        #expect(recovered, "\(String(describing: after))")
        let record = try #require(try await q.job(id))
        #expect(record.attempts == 2)
        #expect(try await q.result(id)?.worker == "survivor")

        // A worker with the default 30 s lease: it reads the cancel flag four times a second and stops at
        // the next step, long before its lease would be renewed.
        let patient = try Self.startWorker(url, name: "patient", lease: 30)
        defer { patient.terminate() }
        second.terminate()
        second.waitUntilExit()
        let long = try await q.enqueue(model: Self.model, payload: try Self.payload(steps: 1000))
        #expect(try await Self.waitUntil(60) { try await q.job(long)?.worker == "patient" })
        #expect(try await q.cancel(job: long))
        let asked = Date()
        let stopped = try await Self.waitUntil(30) { try await q.job(long)?.state == "cancelled" }
        #expect(Date().timeIntervalSince(asked) < 5)
        let cancelled = try await q.job(long)
        #expect(stopped, "\(String(describing: cancelled))")
        #expect(try await q.result(long) == nil)
    }
}
