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
        try QueuedJob.encode(JobParameters(prompt: "a red fox", seed: seed, steps: steps, width: 64, height: 64, guidance: 0))
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

    static func startFront(_ url: String, port: Int, gallery: String, queueSize: Int) throws -> Process {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: CLITests.binary)
        p.arguments = ["serve", "--queue", url, "--model", model, "--port", "\(port)", "--gallery", gallery, "--queue-size", "\(queueSize)",
                       "--max-jobs-per-client", "16"]
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        return p
    }

    static func json(_ text: String) -> [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any] ?? [:]
    }

    /// `serve --queue` in front of two workers: jobs submitted over HTTP wait in PostgreSQL (429 once the
    /// queue's depth is reached, with no worker yet), a waiting job cancelled through the front server is
    /// cancelled in the database; the front server killed (-9) while jobs run and started again loses
    /// none: every job ends done through it, each image once in its gallery, a batch of two included.
    @Test func frontServerOnTheQueueLosesNothing() async throws {
        let url = try await Self.database()
        let dir = NSTemporaryDirectory() + "sluice-front-\(UUID().uuidString)"
        let gallery = dir + "/gallery"
        let port = 20000 + Int.random(in: 0..<20000)
        var front = try Self.startFront(url, port: port, gallery: gallery, queueSize: 6)
        defer { front.terminate() }
        #expect(try await Self.waitUntil(60) { CLITests.httpStatus(port: port, path: "/ready") == 200 })

        var ids: [String] = []
        for i in 0..<6 {
            let body = #"{"prompt": "fox \#(i)", "width": 128, "height": 128, "steps": 6, "seed": \#(i)\#(i == 0 ? #", "count": 2"# : "")}"#
            let r = CLITests.http("POST", port: port, path: "/api/jobs", json: body)
            #expect(r?.status == 202, "\(String(describing: r))")
            if let id = r.flatMap({ Self.json($0.body)["id"] as? String }) { ids.append(id) }
        }
        try #require(ids.count == 6)
        let full = CLITests.http("POST", port: port, path: "/api/jobs", json: #"{"prompt": "one too many", "width": 64, "height": 64}"#)
        #expect(full?.status == 429 && full?.body.contains("is full") == true, "\(String(describing: full))")
        #expect(CLITests.http("DELETE", port: port, path: "/api/jobs/\(ids[5])")?.status == 200)
        let q = try await PostgresQueue(url: url)
        defer { q.close() }
        #expect(try await q.job(UUID(uuidString: ids[5])!)?.state == "cancelled")

        // Workers start; once the first job runs, the front server dies and comes back.
        let workers = try ["left", "right"].map { try Self.startWorker(url, name: $0) }
        defer { for w in workers { w.terminate() } }
        #expect(try await Self.waitUntil(60) { (try await q.counts()["running"] ?? 0) > 0 })
        kill(front.processIdentifier, SIGKILL)
        front.waitUntilExit()
        front = try Self.startFront(url, port: port, gallery: gallery, queueSize: 6)
        #expect(try await Self.waitUntil(60) { CLITests.httpStatus(port: port, path: "/ready") == 200 })

        let ended = try await Self.waitUntil(120) {
            ids.prefix(5).allSatisfy { Self.json(CLITests.http("GET", port: port, path: "/api/jobs/\($0)")?.body ?? "")["state"] as? String == "done" }
        }
        let counts = try await q.counts()
        #expect(ended, "\(counts)")
        let cancelled = Self.json(CLITests.http("GET", port: port, path: "/api/jobs/\(ids[5])")?.body ?? "")
        #expect(cancelled["state"] as? String == "cancelled", "\(cancelled)")
        let batch = Self.json(CLITests.http("GET", port: port, path: "/api/jobs/\(ids[0])")?.body ?? "")
        #expect(batch["results"] as? [String] == [ids[0] + "-1", ids[0] + "-2"], "\(batch)")
        let pngs = try FileManager.default.contentsOfDirectory(atPath: gallery).filter { $0.hasSuffix(".png") }.sorted()
        let expected = ([ids[0] + "-1", ids[0] + "-2"] + ids[1..<5]).map { $0 + ".png" }.sorted()
        #expect(pngs == expected)
        let status = Self.json(CLITests.http("GET", port: port, path: "/api/status")?.body ?? "")
        let listed = (status["workers"] as? [[String: Any]])?.compactMap { $0["id"] as? String }.sorted()
        #expect(listed == ["left", "right"] && status["route"] as? String == Self.model, "\(status)")

        // Progress through NOTIFY as the same server-sent events as without a queue: denoising steps with
        // live previews (read from the previews table), then done with the image.
        let live = CLITests.http("POST", port: port, path: "/api/jobs", json: #"{"prompt": "live", "width": 256, "height": 256, "steps": 50}"#)
        let liveID = try #require(live.flatMap { Self.json($0.body)["id"] as? String })
        let events = CLITests.http("GET", port: port, path: "/api/jobs/\(liveID)/events")?.body ?? ""
        let running = events.components(separatedBy: "\n").filter { $0.hasPrefix("data: ") && $0.contains(#""phase":"denoise""#) }
        #expect(!running.isEmpty && running.contains { $0.contains(#""preview":"iVBOR"#) }, "\(events.prefix(2000))")
        #expect(events.contains("event: done") && events.contains(#""results":["\#(liveID)"]"#), "\(events.suffix(1000))")
        #expect(!events.contains("preview_stored"))
    }
}
