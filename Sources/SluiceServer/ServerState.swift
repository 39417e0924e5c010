import Foundation
import SluiceCore
import Synchronization

/// Everything the routes need: the engine once loaded (nil while loading), the queue, the gallery.
public final class ServerState: @unchecked Sendable {
    private let lock = NSLock()
    private var _queue: JobQueue?
    private var _engine: Engine?
    public let gallery: Gallery
    public let options: ServeOptions
    public let started = Date()
    /// Browser sessions opened through the login form (the cookie's tokens).
    let sessions = SessionStore()

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
    public func becomeReady(engine: Engine, database: QueueDatabase? = nil) async {
        let q = JobQueue(engine: engine, gallery: gallery, capacity: options.queueSize, perClient: options.maxJobsPerClient, database: database)
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
    /// Jobs one client (one remote address) may have waiting or running at once.
    public var maxJobsPerClient = 4
    public var apiKey: String?
    public var insecure = false
    public var maxBodyBytes = 1 << 20
    /// The largest body of a route that may carry an init image (img2img, /api/jobs) when the model
    /// takes one: base64 PNGs are large.
    public var maxImageBodyBytes = 32 << 20
    /// A request body must arrive within this many seconds (a client that announces more than it
    /// sends does not hold the connection).
    public var bodyTimeoutSeconds = 10.0
    /// Browser origins (`https://app.example`) allowed to call the API cross-site; none by default.
    public var corsOrigins: [String] = []
    /// Host names, beyond the bound address and loopback's, that requests may name (DNS rebinding guard).
    public var allowedHosts: [String] = []
    /// The gallery keeps at most this many images and bytes; the oldest go first.
    public var galleryMaxImages = 5000
    public var galleryMaxBytes = 5 << 30
    /// cpu, vulkan or vulkan:N (as `sluice generate --device`).
    public var device = "cpu"
    /// A single file replacing the model's transformer (`--transformer`).
    public var transformer: String?
    /// A single-file checkpoint's config folder or repo id (`--config`).
    public var config: String?
    /// What linear layers compute in (`--compute`).
    public var compute: DType = .f32
    /// A live preview every this many denoising steps (0: none). On a GPU each preview reads the latents
    /// back and makes the host wait for the step; between previews the latents stay on the device.
    public var previewEvery = 1
    /// `--queue`: jobs wait in this PostgreSQL database for `sluice worker`s; nil: they run in this process.
    public var queueURL: String?
    /// `--route`: the model name workers take this server's jobs under (default: `--model` as given).
    public var route: String?
    public init() {}
}

/// Session tokens handed to browsers that logged in with the API key (an HttpOnly, SameSite=Strict
/// cookie), so the page never stores the key; at most `limit`, the oldest forgotten first.
final class SessionStore: Sendable {
    private let tokens = Mutex<[String]>([])
    let limit = 64

    func open() -> String {
        var bytes = [UInt8](repeating: 0, count: 32)
        for i in bytes.indices { bytes[i] = UInt8.random(in: 0...255) }
        let token = bytes.map { String(format: "%02x", $0) }.joined()
        tokens.withLock { list in
            list.append(token)
            if list.count > limit { list.removeFirst(list.count - limit) }
        }
        return token
    }

    func isOpen(_ token: String) -> Bool { tokens.withLock { list in list.contains { constantTimeEqual($0, token) } } }
    func close(_ token: String) { tokens.withLock { $0.removeAll { $0 == token } } }
}

/// Compares secrets in time independent of where they differ.
func constantTimeEqual(_ a: String, _ b: String) -> Bool {
    let x = Array(a.utf8), y = Array(b.utf8)
    guard x.count == y.count else { return false }
    var diff: UInt8 = 0
    for i in x.indices { diff |= x[i] ^ y[i] }
    return diff == 0
}
