import Foundation
import Hummingbird

/// The API key, when the server has one: every call but /health, the page's own files and the login
/// needs it — as a bearer token (API clients) or the session cookie the login form sets (the web UI,
/// whose <img> and EventSource requests cannot carry a header). Keys in URLs are not accepted.
struct AuthMiddleware<Context: RequestContext>: RouterMiddleware {
    let apiKey: String?
    let sessions: SessionStore
    static var cookieName: String { "sluice_session" }
    static var openPaths: Set<String> { ["/health", "/ready", "/", "/app.js", "/app.css", "/api/login", "/api/session"] }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard apiKey != nil, !Self.openPaths.contains(request.uri.path) else { return try await next(request, context) }
        guard isAuthenticated(request) else {
            return Routes.error(RequestError(field: "authorization", reason: "a valid bearer token (or a login) is required", status: 401),
                                headers: [.wwwAuthenticate: "Bearer"])
        }
        return try await next(request, context)
    }

    /// A bearer token equal to the key, or an open session's cookie. False when the server has no key.
    func isAuthenticated(_ request: Request) -> Bool {
        guard let key = apiKey else { return false }
        if let given = request.headers[.authorization], constantTimeEqual(given, "Bearer " + key) { return true }
        return Self.sessionToken(request).map(sessions.isOpen) ?? false
    }

    static func sessionToken(_ request: Request) -> String? {
        for header in request.headers[values: .cookie] {
            for part in header.split(separator: ";") {
                let pair = part.trimmingCharacters(in: .whitespaces).split(separator: "=", maxSplits: 1)
                if pair.count == 2, pair[0] == cookieName { return String(pair[1]) }
            }
        }
        return nil
    }
}
