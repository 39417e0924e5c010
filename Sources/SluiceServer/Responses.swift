import Foundation
import Hummingbird
import Logging
import NIOCore
import SluiceCore

/// A JSON value that is written as `null` when absent (a synthesized encoder would leave the key out).
struct Nullable<T: Encodable & Sendable>: Encodable, Sendable {
    let value: T?
    init(_ value: T?) { self.value = value }
    func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        if let value { try c.encode(value) } else { try c.encodeNil() }
    }
}

/// The request context of every route: Hummingbird's, plus who is calling.
public struct SluiceRequestContext: RequestContext, RemoteAddressRequestContext {
    public var coreContext: CoreRequestContextStorage
    public let remoteAddress: SocketAddress?
    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        remoteAddress = source.channel.remoteAddress
    }
}

/// The pieces every route collection shares: JSON responses, errors that name a field, bodies with a
/// limit, and the "is the model ready" check.
public enum Routes {
    static let jsonHeaders: HTTPFields = [.contentType: "application/json; charset=utf-8"]

    /// `value` as JSON, keys sorted; property names in snake_case unless `snakeCase` is false (the
    /// AUTOMATIC1111 API's own names are spelled out in its types).
    static func json<T: Encodable>(_ value: T, status: HTTPResponse.Status = .ok, headers extra: HTTPFields = [:], snakeCase: Bool = true) -> Response {
        var headers = jsonHeaders
        headers.append(contentsOf: extra)
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: encode(value, snakeCase: snakeCase))))
    }

    static func encode<T: Encodable>(_ value: T, snakeCase: Bool = true) -> Data {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        if snakeCase { e.keyEncodingStrategy = .convertToSnakeCase }
        return (try? e.encode(value)) ?? Data("{}".utf8)
    }

    struct ErrorBody: Encodable {
        struct Detail: Encodable { let field: String; let message: String }
        let error: Detail
    }

    static func error(_ e: RequestError, headers: HTTPFields = [:]) -> Response {
        var extra = headers
        if e.status == 429 { extra[.retryAfter] = "5" }
        return json(ErrorBody(error: .init(field: e.field, message: e.description)), status: .init(code: e.status), headers: extra)
    }

    /// The body, at most `limit` bytes (larger: 413), arriving within `timeout` seconds (else 408: a
    /// client that announces a body it does not send does not hold the connection).
    static func body(_ request: inout Request, limit: Int, timeout: Double) async throws(RequestError) -> Data {
        let body = request.body
        let outcome: Result<Data, RequestError> = await withTaskGroup(of: Result<Data, RequestError>?.self) { group in
            group.addTask {
                do {
                    var collected = Data()
                    for try await chunk in body {
                        collected.append(contentsOf: chunk.readableBytesView)
                        if collected.count > limit { return .failure(RequestError(field: "body", reason: "is larger than \(limit) bytes", status: 413)) }
                    }
                    return .success(collected)
                } catch {
                    return .failure(RequestError(field: "body", reason: "could not be read", status: 400))
                }
            }
            group.addTask {
                try? await Task.sleep(for: .seconds(timeout))
                return Task.isCancelled ? nil : .failure(RequestError(field: "body", reason: "did not arrive within \(Int(timeout)) s", status: 408))
            }
            let first = await group.next()!
            group.cancelAll()
            return first ?? .failure(RequestError(field: "body", reason: "could not be read", status: 400))
        }
        return try outcome.get()
    }

    /// Answers a request, turning `RequestError`s into their JSON responses.
    static func handle(_ body: () async throws -> Response) async -> Response {
        do { return try await body() } catch let e as RequestError { return error(e) } catch {
            return self.error(RequestError(field: "server", reason: errorText(error), status: 500))
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
    static func run(_ p: JobParameters, on q: JobQueue, client: String) async throws -> JobQueue.Job {
        let (id, _) = try await q.submit(p, client: client)
        guard let job = await q.wait(id) else { throw RequestError(field: "job", reason: "vanished", status: 500) }
        guard job.state == .done else {
            throw RequestError(field: "job", reason: job.error ?? "ended \(job.state.rawValue)", status: 500)
        }
        return job
    }

    /// A request's JSON object, read within the server's limits (`--max-image-body` for a route that
    /// may carry an init image).
    static func object(_ request: inout Request, _ state: ServerState, images: Bool = false) async throws(RequestError) -> [String: Any] {
        let limit = images ? max(state.options.maxImageBodyBytes, state.options.maxBodyBytes) : state.options.maxBodyBytes
        return try ParameterParser.object(try await body(&request, limit: limit, timeout: state.options.bodyTimeoutSeconds))
    }

    /// A request's JSON object, parsed for `engine`'s model (its defaults, samplers and image to image);
    /// `images`: the route may carry an init image, so the body may be as large as one.
    static func parser(_ request: inout Request, _ state: ServerState, _ engine: Engine, images: Bool = false) async throws(RequestError) -> ParameterParser {
        ParameterParser(fields: try await object(&request, state, images: images && engine.pipeline.supportsImageToImage),
                        defaults: engine.pipeline.defaults, model: ModelAbilities(engine.pipeline))
    }

    /// Asks the model whether it can run `p` before it is queued: what it refuses is a 400 naming the
    /// field as this API spells it (`fields`: the API's names where they are not Sluice's).
    static func validate(_ p: JobParameters, _ engine: Engine, fields: [Parameter: String] = [:]) throws(RequestError) {
        do { try engine.pipeline.validate(p.request) } catch {
            if case let .invalidParameter(parameter, reason) = error {
                throw RequestError(field: fields[parameter] ?? parameter.serverName, reason: reason)
            }
            throw RequestError(field: "request", reason: "\(error)")
        }
    }

    /// Who sent a request, for the per-client job limit: its remote address.
    static func client(_ context: SluiceRequestContext) -> String {
        context.remoteAddress?.ipAddress ?? "unknown"
    }

    /// Every route of `sluice serve`: one collection per resource, behind the access log, the browser
    /// guard and the API-key check (middlewares first: they wrap the routes added after them).
    public static func router(_ state: ServerState, logger: Logger? = nil) -> Router<SluiceRequestContext> {
        let router = Router(context: SluiceRequestContext.self, options: .autoGenerateHeadEndpoints)
        router.add(middleware: HTTPBasics(logger: logger))
        router.add(middleware: BrowserGuard(options: state.options))
        router.add(middleware: AuthMiddleware(apiKey: state.options.apiKey, sessions: state.sessions))
        router.addRoutes(StatusRoutes.collection(state))
        router.addRoutes(SessionRoutes.collection(state))
        router.addRoutes(JobRoutes.collection(state), atPath: "/api/jobs")
        router.addRoutes(GalleryRoutes.collection(state), atPath: "/api/gallery")
        router.addRoutes(OpenAIRoutes.collection(state), atPath: "/v1")
        router.addRoutes(Automatic1111Routes.collection(state), atPath: "/sdapi/v1")
        router.addRoutes(WebUI.collection())
        return router
    }
}
