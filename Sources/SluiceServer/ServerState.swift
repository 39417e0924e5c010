import Foundation


/// Everything the routes need: the engine once loaded (nil while loading), the queue, the gallery.
public final class ServerState: @unchecked Sendable {
    private let lock = NSLock()
    private var _queue: JobQueue?
    private var _engine: Engine?
    public let gallery: Gallery
    public let options: ServeOptions
    public let started = Date()

    public init(options: ServeOptions, gallery: Gallery) {
        self.options = options
        self.gallery = gallery
    }

    public var queue: JobQueue? { lock.withLock { _queue } }
    public var engine: Engine? { lock.withLock { _engine } }
    private var _log: [String] = []
    public var startupLog: [String] { lock.withLock { _log } }
    public func log(_ line: String) { lock.withLock { _log.append(line) } }

    /// The model is loaded and warm: jobs may be taken.
    public func becomeReady(engine: Engine) async {
        let q = JobQueue(engine: engine, gallery: gallery, capacity: options.queueSize)
        await q.start()
        lock.withLock {
            _engine = engine
            _queue = q
        }
    }
}

/// How `sluice serve` runs.
public struct ServeOptions: Sendable {
    public var host = "127.0.0.1"
    public var port = 7860
    public var queueSize = 16
    public var apiKey: String?
    public var insecure = false
    public var maxBodyBytes = 1 << 20
    /// cpu, vulkan or vulkan:N (as `sluice generate --device`).
    public var device = "cpu"
    public init() {}
}
