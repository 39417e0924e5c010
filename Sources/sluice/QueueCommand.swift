import ArgumentParser
import Foundation
import SluiceQueue
import SluiceServer

/// `sluice queue …`: put jobs in the PostgreSQL queue and read them back, for workers (`sluice worker`)
/// on other machines.
struct QueueCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "queue",
        abstract: "Submit jobs to a PostgreSQL queue served by `sluice worker`, and read their state and images.",
        subcommands: [Submit.self, Status.self, Result.self, Cancel.self])

    struct Connection: ParsableArguments {
        @Option(help: "The queue: postgres://user[:password]@host[:port]/database.") var queue: String

        func open() async throws -> PostgresQueue {
            do { return try await PostgresQueue(url: queue, connections: 2) } catch let e as QueueError { throw CommandError(message: "\(e)") }
        }
    }

    struct Submit: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Queue one image for the workers of --model; prints the job id.")
        @OptionGroup var connection: Connection
        @Option(name: [.customShort("m"), .long], help: "The model name the workers take jobs for (their --route, by default their --model).") var model: String
        @Option(name: [.customShort("p"), .long], help: "What to draw.") var prompt: String
        @Option(name: [.customShort("n"), .long], help: "What to steer away from.") var negativePrompt = ""
        @Option(parsing: .unconditional, help: "Seed.") var seed: UInt64 = 42
        @Option(parsing: .unconditional, help: "Denoising steps.") var steps = 8
        @Option(name: [.customShort("W"), .long], parsing: .unconditional, help: "Width in pixels.") var width = 1024
        @Option(name: [.customShort("H"), .long], parsing: .unconditional, help: "Height in pixels.") var height = 1024
        @Option(name: [.customLong("guidance"), .customLong("cfg-scale")], parsing: .unconditional, help: "Guidance scale.") var guidance: Float = 0
        @Option(parsing: .unconditional, help: "Tries before the job fails when workers die holding it.") var maxAttempts = 3
        @Option(parsing: .unconditional, help: "Most jobs waiting for this model; more are refused.") var maxDepth = 1000

        func run() async throws {
            let q = try await connection.open()
            defer { q.close() }
            let p = JobParameters(prompt: prompt, negativePrompt: negativePrompt, seed: seed, steps: steps, width: width, height: height, guidance: guidance)
            do {
                print(try await q.enqueue(model: model, payload: try QueuedJob.encode(p), maxAttempts: maxAttempts, maxDepth: maxDepth).uuidString.lowercased())
            } catch let e as QueueError { throw CommandError(message: "\(e)") }
        }
    }

    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Waiting jobs per model, jobs by state, and the workers.")
        @OptionGroup var connection: Connection

        func run() async throws {
            let q = try await connection.open()
            defer { q.close() }
            try await q.expireLeases()
            for (model, n) in try await q.depths().sorted(by: { $0.key < $1.key }) { print("waiting  \(n)  \(model)") }
            print("jobs     " + (try await q.counts()).sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "))
            for w in try await q.workers() {
                print(String(format: "worker   %@  %@ on %@, heartbeat %.0f s ago", w.id, w.model, w.device, w.secondsSinceHeartbeat)
                      + (w.currentJob.map { ", running \($0.uuidString.lowercased())" } ?? ""))
            }
        }
    }

    struct Result: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "A job's state; with --out, its image once done.")
        @OptionGroup var connection: Connection
        @Argument(help: "The job id `submit` printed.") var id: String
        @Option(name: [.customShort("o"), .long], help: "Write the image here (PNG).") var out: String?

        func run() async throws {
            guard let uuid = UUID(uuidString: id) else { throw CommandError(message: "\(id) is not a job id") }
            let q = try await connection.open()
            defer { q.close() }
            guard let job = try await q.job(uuid) else { throw CommandError(message: "no job \(id)") }
            print(job.state + (job.error.map { ": \($0)" } ?? "") + (job.worker.map { " (\($0))" } ?? ""))
            if let out {
                guard let r = try await q.result(uuid) else { throw CommandError(message: "job \(id) has no image (\(job.state))") }
                try r.image.write(to: URL(fileURLWithPath: out), options: .atomic)
                print("wrote \(out) (made by \(r.worker))")
            }
        }
    }

    struct Cancel: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Cancel a job: a waiting one at once, a running one at its next step.")
        @OptionGroup var connection: Connection
        @Argument(help: "The job id.") var id: String

        func run() async throws {
            guard let uuid = UUID(uuidString: id) else { throw CommandError(message: "\(id) is not a job id") }
            let q = try await connection.open()
            defer { q.close() }
            print(try await q.cancel(job: uuid) ? "cancelling \(id)" : "job \(id) had already ended")
        }
    }
}
