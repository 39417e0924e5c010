import Foundation
import Hummingbird
import Logging
import NIOCore
import SluiceCore
import SluiceMemory
import SluicePipelines
import SluiceQueue


/// `sluice serve`: starts listening at once (GET /health answers), loads the model and runs a small
/// warm-up generation on a thread of its own, then GET /ready turns true and jobs are taken.
public enum SluiceServerMain {
    public static func isLoopback(_ host: String) -> Bool {
        ["127.0.0.1", "localhost", "::1", "[::1]"].contains(host) || host.hasPrefix("127.")
    }

    public static func checkSafety(_ o: ServeOptions) throws(RequestError) {
        guard (1...65535).contains(o.port) else { throw RequestError(field: "--port", reason: "\(o.port) must be 1…65535") }
        if !isLoopback(o.host) && o.apiKey == nil && !o.insecure {
            throw RequestError(field: "--host \(o.host)", reason: "binding beyond loopback needs --api-key (or --insecure, explicitly)")
        }
    }

    /// Loads and warms the model, logging what seed 001's console reports: load time per component and the plan.
    /// `warm: false` (a front server whose jobs run on workers) loads it only to check and describe requests.
    public static func load(model: String, memory: MemoryOptions, device: String = "cpu", transformer: String? = nil,
                            compute: DType = .f32, config: String? = nil, warm: Bool = true, log: (String) -> Void) throws -> Engine {
        let t0 = Date()
        let pipe = try PipelineRegistry.shared.load(model: model, device: device, transformer: transformer, compute: compute, config: config)
        if let note = pipe.device.note { log(note) }
        log("computing on \(pipe.device.description)")
        // Status pages show this log: the model's name, never its folder.
        log(String(format: "loaded %@ (%@) in %.2f s: ", (model as NSString).lastPathComponent, pipe.family, Date().timeIntervalSince(t0))
            + pipe.loadSeconds.map { String(format: "%@ %.3f s", $0.component, $0.seconds) }.joined(separator: ", ")
            + " (weights memory-mapped, read on first use)")
        let engine = Engine(pipeline: pipe, memory: memory, modelName: (model as NSString).lastPathComponent)
        guard warm else { return engine }
        let seconds = try engine.warmUp()
        log(String(format: "warm-up generation in %.2f s", seconds))
        if let plan = engine.lastReport?.plan {
            for line in plan.lines { log("plan: " + line) }
        } else {
            log("plan: everything on the CPU, read from the mapped files (no --vram-limit)")
        }
        return engine
    }

    public static func run(model: String, options: ServeOptions, memory: MemoryOptions, galleryDirectory: String) async throws {
        try checkSafety(options)
        let logger: Logger = {
            var l = Logger(label: "sluice")
            l.logLevel = .info
            return l
        }()
        let gallery = try Gallery(directory: galleryDirectory, maxImages: options.galleryMaxImages, maxBytes: options.galleryMaxBytes)
        let state = ServerState(options: options, gallery: gallery)
        // The queue's database before anything listens: unreachable, or a schema newer than this binary, is
        // an error at once.
        let database: QueueDatabase? = if let url = options.queueURL {
            QueueDatabase(queue: try await PostgresQueue(url: url), route: options.route ?? model)
        } else { nil }
        let app = Application(
            router: Routes.router(state, logger: logger),
            configuration: .init(address: .hostname(options.host, port: options.port), serverName: "Sluice"),
            onServerRunning: { _ in logger.info("listening on http://\(options.host):\(options.port) (gallery: \(galleryDirectory))") },
            logger: logger)
        let loader = Task {
            let engine: Engine? = await withCheckedContinuation { done in
                let thread = Thread {
                    do {
                        let e = try load(model: model, memory: memory, device: options.device, transformer: options.transformer, compute: options.compute,
                                         config: options.config, warm: database == nil) { line in
                            state.log(line)
                            logger.info("\(line)")
                        }
                        e.previewEvery = options.previewEvery
                        done.resume(returning: e)
                    } catch {
                        logger.critical("cannot serve \(model): \(error)")
                        done.resume(returning: nil)
                    }
                }
                thread.stackSize = 8 << 20
                thread.start()
            }
            guard let engine else { exit(1) }
            if let database {
                let line = "jobs go to the queue at \(PostgresQueue.redacted(database.queue.url)) for workers of \(database.route)"
                    + " (this server checks requests against the model and generates nothing)"
                state.log(line)
                logger.info("\(line)")
            }
            await state.becomeReady(engine: engine, database: database)
            logger.info("ready")
        }
        defer { loader.cancel() }
        do { try await app.runService() } catch let e as IOError {
            // NIO's text names its own functions; say it in words.
            let reason = e.errnoCode == EADDRINUSE ? "is in use by another program: choose another with --port"
                : e.errnoCode == EACCES ? "needs privileges this user does not have: choose one above 1023"
                : e.errnoCode == EADDRNOTAVAIL ? "cannot be bound on \(options.host): that address is not this machine's"
                : "cannot be bound (\(String(cString: strerror(e.errnoCode))))"
            throw SluiceError.invalidArgument(name: "--port \(options.port)", reason: reason)
        }
    }
}
