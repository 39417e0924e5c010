import Foundation
import Hummingbird
import Logging

/// Errors the framework raises (no such route, method not allowed, a body over the limit) answered
/// as JSON like every other error, and one access-log line per request — method, route, status and
/// duration, never a body (prompts stay private).
struct HTTPBasics<Context: RequestContext>: RouterMiddleware {
    let logger: Logger?

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let t0 = ContinuousClock.now
        let response: Response
        do { response = try await next(request, context) } catch let e as HTTPError {
            let field = e.status == .notFound ? "route" : e.status == .contentTooLarge ? "body" : "request"
            let reason = e.status == .notFound ? "no such route: \(request.method) \(request.uri.path)" : e.body ?? e.status.reasonPhrase
            response = Routes.error(RequestError(field: field, reason: reason, status: e.status.code))
        }
        if let logger {
            let d = t0.duration(to: .now).components
            let ms = Double(d.seconds) * 1000 + Double(d.attoseconds) / 1e15
            logger.info("\(request.method) \(request.uri.path) \(response.status.code) \(String(format: "%.1f", ms)) ms")
        }
        return response
    }
}
