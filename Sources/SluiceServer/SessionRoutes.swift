import Foundation
import Hummingbird

/// The web UI's login: the API key, posted once, opens a session whose token lives in an HttpOnly,
/// SameSite=Strict cookie (the page never stores the key; API clients send it as a bearer token).
enum SessionRoutes {
    struct Session: Encodable { let keyRequired: Bool; let loggedIn: Bool }

    static func collection(_ state: ServerState) -> RouteCollection<SluiceRequestContext> {
        let routes = RouteCollection(context: SluiceRequestContext.self)
        let auth = AuthMiddleware<SluiceRequestContext>(apiKey: state.options.apiKey, sessions: state.sessions)
        routes.get("api/session") { request, _ in
            Routes.json(Session(keyRequired: state.options.apiKey != nil, loggedIn: auth.isAuthenticated(request)))
        }
        routes.post("api/login") { request, _ in
            await Routes.handle {
                var request = request
                let fields = try await Routes.object(&request, state)
                guard let key = state.options.apiKey else { return Routes.json(Session(keyRequired: false, loggedIn: false)) }
                guard let given = fields["key"] as? String, constantTimeEqual(given, key) else {
                    throw RequestError(field: "key", reason: "is not this server's API key", status: 401)
                }
                let token = state.sessions.open()
                return Routes.json(Session(keyRequired: true, loggedIn: true), headers: [
                    .setCookie: "\(AuthMiddleware<SluiceRequestContext>.cookieName)=\(token); HttpOnly; SameSite=Strict; Path=/; Max-Age=2592000",
                ])
            }
        }
        routes.post("api/logout") { request, _ in
            if let token = AuthMiddleware<SluiceRequestContext>.sessionToken(request) { state.sessions.close(token) }
            return Routes.json(Session(keyRequired: state.options.apiKey != nil, loggedIn: false), headers: [
                .setCookie: "\(AuthMiddleware<SluiceRequestContext>.cookieName)=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0",
            ])
        }
        return routes
    }
}
