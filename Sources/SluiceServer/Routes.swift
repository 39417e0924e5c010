import Foundation
import Hummingbird
import NIOCore
import SluiceCore
import SluiceMemory
import SluicePipelines

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

public enum Routes {
    static let jsonHeaders: HTTPFields = [.contentType: "application/json; charset=utf-8"]

    static func json(_ object: Any, status: HTTPResponse.Status = .ok, headers extra: HTTPFields = [:]) -> Response {
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data("{}".utf8)
        var headers = jsonHeaders
        headers.append(contentsOf: extra)
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }

    static func encodable<T: Encodable>(_ value: T, status: HTTPResponse.Status = .ok) -> Response {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        e.keyEncodingStrategy = .convertToSnakeCase
        let data = (try? e.encode(value)) ?? Data("{}".utf8)
        return Response(status: status, headers: jsonHeaders, body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }

    static func error(_ e: RequestError) -> Response {
        var extra: HTTPFields = [:]
        if e.status == 429 { extra[.retryAfter] = "5" }
        return json(["error": ["field": e.field, "message": e.description]], status: .init(code: e.status), headers: extra)
    }

    /// The body, at most `limit` bytes; larger is a 400 naming the body.
    static func body(_ request: inout Request, limit: Int) async throws(RequestError) -> Data {
        do {
            let buffer = try await request.collectBody(upTo: limit)
            return Data(buffer.readableBytesView)
        } catch {
            throw RequestError(field: "body", reason: "is larger than \(limit) bytes")
        }
    }

    /// Answers a request, turning `RequestError`s into their JSON responses.
    static func handle(_ body: () async throws -> Response) async -> Response {
        do { return try await body() } catch let e as RequestError { return error(e) } catch {
            return json(["error": ["field": "server", "message": "\(error)"]], status: .internalServerError)
        }
    }

    static func ready(_ state: ServerState) throws(RequestError) -> (JobQueue, Engine) {
        guard let q = state.queue, let e = state.engine else {
            throw RequestError(field: "model", reason: "is still loading; see GET /ready", status: 503)
        }
        return (q, e)
    }

    /// Submits a job and waits for it, for the synchronous APIs (OpenAI, AUTOMATIC1111): its record when
    /// done; a job that failed or was cancelled answers 500 with its reason.
    static func run(_ p: JobParameters, on q: JobQueue) async throws -> JobQueue.Job {
        let (id, _) = try await q.submit(p)
        guard let job = await q.wait(id) else { throw RequestError(field: "job", reason: "vanished", status: 500) }
        guard job.state == .done else {
            throw RequestError(field: "job", reason: job.error ?? "ended \(job.state.rawValue)", status: 500)
        }
        return job
    }

    static func parser(_ fields: [String: Any], _ engine: Engine) -> ParameterParser {
        ParameterParser(fields: fields, defaults: engine.pipeline.defaults, samplers: engine.pipeline.samplerAliases)
    }

    public static func router(_ state: ServerState) -> Router<BasicRequestContext> {
        let router = Router()
        router.add(middleware: AuthMiddleware(apiKey: state.options.apiKey))
        let limit = state.options.maxBodyBytes

        router.get("/health") { _, _ in json(["status": "up", "uptime_seconds": Date().timeIntervalSince(state.started)]) }
        router.get("/ready") { _, _ in
            state.engine == nil ? json(["ready": false], status: .serviceUnavailable) : json(["ready": true, "model": state.engine!.modelName])
        }

        // Sluice's own API.
        router.post("/api/jobs") { request, _ in
            await handle {
                var request = request
                let (q, engine) = try ready(state)
                let fields = try ParameterParser.object(try await body(&request, limit: limit))
                let p = try parser(fields, engine).sluice()
                let (id, position) = try await q.submit(p)
                return json(["id": id, "position": position, "seed": p.seed], status: .accepted)
            }
        }
        router.get("/api/jobs/:id") { _, context in
            await handle {
                let (q, _) = try ready(state)
                let id = context.parameters.get("id") ?? ""
                guard let job = await q.job(id) else { throw RequestError(field: "id", reason: "no such job", status: 404) }
                var out: [String: Any] = ["id": id, "state": job.state.rawValue, "results": job.results,
                                          "parameters": (try? JSONSerialization.jsonObject(with: JSONEncoder().encode(job.parameters))) ?? [:]]
                if let pos = await q.position(id) { out["position"] = pos }
                if let err = job.error { out["error"] = err }
                if let last = job.last { out["last_event"] = jsonObject(last) }
                return json(out)
            }
        }
        router.delete("/api/jobs/:id") { _, context in
            await handle {
                let (q, _) = try ready(state)
                let id = context.parameters.get("id") ?? ""
                guard await q.cancel(id) else { throw RequestError(field: "id", reason: "no such job, or it has already ended", status: 404) }
                return json(["id": id, "cancelled": true])
            }
        }
        router.get("/api/jobs/:id/events") { _, context in
            await handle {
                let (q, _) = try ready(state)
                let id = context.parameters.get("id") ?? ""
                guard let stream = await q.events(id) else { throw RequestError(field: "id", reason: "no such job", status: 404) }
                // Server-sent events. A client that goes away ends this writer only: the job goes on.
                let body = ResponseBody { writer in
                    for await event in stream {
                        let data = (try? JSONSerialization.data(withJSONObject: jsonObject(event), options: [.sortedKeys])) ?? Data()
                        try await writer.write(ByteBuffer(string: "event: \(event.state.rawValue)\ndata: " + String(decoding: data, as: UTF8.self) + "\n\n"))
                    }
                    try await writer.finish(nil)
                }
                return Response(status: .ok, headers: [.contentType: "text/event-stream", .cacheControl: "no-cache"], body: body)
            }
        }

        router.get("/api/gallery") { request, _ in
            await handle {
                let page = request.uri.queryParameters.get("page").flatMap { Int($0) } ?? 0
                let perPage = min(max(request.uri.queryParameters.get("per_page").flatMap { Int($0) } ?? 24, 1), 200)
                let (entries, total) = state.gallery.list(page: page, perPage: perPage)
                let e = JSONEncoder()
                e.keyEncodingStrategy = .convertToSnakeCase
                let items = (try? JSONSerialization.jsonObject(with: e.encode(entries))) ?? []
                return json(["items": items, "total": total, "page": page, "per_page": perPage])
            }
        }
        router.get("/api/gallery/:id") { _, context in
            await handle {
                var id = context.parameters.get("id") ?? ""
                if id.hasSuffix(".png") {
                    id = String(id.dropLast(4))
                    guard let png = state.gallery.png(id) else { throw RequestError(field: "id", reason: "no such image", status: 404) }
                    return Response(status: .ok, headers: [.contentType: "image/png", .cacheControl: "max-age=31536000, immutable"],
                                    body: .init(byteBuffer: ByteBuffer(bytes: png)))
                }
                guard let entry = state.gallery.entry(id) else { throw RequestError(field: "id", reason: "no such image", status: 404) }
                return encodable(entry)
            }
        }
        router.delete("/api/gallery/:id") { _, context in
            await handle {
                let id = context.parameters.get("id") ?? ""
                guard state.gallery.delete(id) else { throw RequestError(field: "id", reason: "no such image", status: 404) }
                return json(["id": id, "deleted": true])
            }
        }

        router.get("/api/status") { _, _ in
            await handle {
                var out: [String: Any] = ["ready": state.engine != nil, "startup": state.startupLog, "version": SluiceVersion.string]
                out["memory_now"] = jsonObject(MemorySample.now())
                var peak: [String: Any] = ["host_bytes": HostMemory.peakResidentBytes()]
                if let report = state.engine?.lastReport { peak["device_bytes"] = report.phases.map(\.peakDeviceBytes).max() ?? 0 }
                out["memory_peak"] = peak
                if let e = state.engine, let q = state.queue {
                    out["model"] = e.modelName
                    out["queue_length"] = await q.length
                    out["queue_capacity"] = q.capacity
                    if let cur = await q.current { out["current_job"] = cur.id }
                    out["memory_timeline"] = jsonObject(await q.memoryTimeline.suffix(600).map { $0 })
                    if let report = e.lastReport { out["last_run"] = jsonObject(report) }
                    let device = e.pipeline.device
                    out["device_budget_bytes"] = device.budget(limit: e.memory.deviceBudget).map { $0 as Any } ?? NSNull()
                    // Device bytes are real allocations on Vulkan, modelled on the simulated device.
                    out["device_memory"] = device.vulkan != nil ? "vulkan" : e.memory.deviceBudget != nil ? "simulated" : "none"
                    out["profile"] = e.memory.deviceBudget == nil && device.vulkan == nil ? "cpu" : e.memory.profile.name
                    out["device"] = device.description
                    out["device_name"] = device.vulkan?.info.name ?? "cpu"
                }
                return json(out)
            }
        }

        OpenAIRoutes.add(to: router, state)
        Automatic1111Routes.add(to: router, state)
        WebUI.add(to: router)
        return router
    }

    static func jsonObject<T: Encodable>(_ value: T) -> Any {
        let e = JSONEncoder()
        e.keyEncodingStrategy = .convertToSnakeCase
        return (try? JSONSerialization.jsonObject(with: e.encode(value), options: [.fragmentsAllowed])) ?? NSNull()
    }
}

/// Bearer-token check on every API call when the server has a key (`--api-key`); /health stays open
/// so supervisors can probe it. The web page itself holds no data; its calls carry the key.
struct AuthMiddleware<Context: RequestContext>: RouterMiddleware {
    let apiKey: String?

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard let key = apiKey else { return try await next(request, context) }
        let path = request.uri.path
        let open = path == "/health" || path == "/" || path == "/app.js" || path == "/app.css"
        if open { return try await next(request, context) }
        let given = request.headers[.authorization] ?? ""
        // A gallery image in an <img> tag cannot carry a header: ?key= is accepted too.
        let queryKey: String? = request.uri.queryParameters.get("key").map { String($0) }
        guard constantTimeEqual(given, "Bearer " + key) || (queryKey.map { constantTimeEqual($0, key) } ?? false) else {
            return Routes.json(["error": ["field": "authorization", "message": "authorization: a valid bearer token is required"]],
                               status: .unauthorized, headers: [.wwwAuthenticate: "Bearer"])
        }
        return try await next(request, context)
    }

    func constantTimeEqual(_ a: String, _ b: String) -> Bool {
        let x = Array(a.utf8), y = Array(b.utf8)
        guard x.count == y.count else { return false }
        var diff: UInt8 = 0
        for i in x.indices { diff |= x[i] ^ y[i] }
        return diff == 0
    }
}
