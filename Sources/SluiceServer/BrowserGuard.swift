import Foundation

import Hummingbird

/// What a web page the user happens to visit must not be able to do to a server on their machine:
/// - name it by another host (DNS rebinding): on a loopback bind, `Host` must be loopback, the bound
///   address, or one of `--allowed-host`;
/// - send it writes from another origin: a request with a foreign `Origin` (or `Sec-Fetch-Site:
///   cross-site` and no `Origin`) that changes anything is refused unless the origin is one of
///   `--cors-origin`, and API writes must be `Content-Type: application/json` — which a page cannot
///   send cross-site without a CORS preflight, answered here for allowed origins only.
struct BrowserGuard<Context: RequestContext>: RouterMiddleware {
    let options: ServeOptions

    static var writeMethods: Set<HTTPRequest.Method> { [.post, .put, .patch, .delete] }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        if let refusal = hostRefusal(request) { return Routes.error(refusal) }
        let origin = request.headers[.origin]
        let allowed = origin.map(isAllowedCrossOrigin) ?? false
        if request.method == .options { return preflight(request, origin: origin, allowed: allowed) }
        if Self.writeMethods.contains(request.method) {
            if let origin, !allowed, !isSameOrigin(origin, request) {
                return Routes.error(RequestError(field: "origin", reason: "\(origin) may not send requests to this server (see --cors-origin)", status: 403))
            }
            if origin == nil, request.headers.contains(where: { $0.name.canonicalName == "sec-fetch-site" && $0.value == "cross-site" }) {
                return Routes.error(RequestError(field: "origin", reason: "cross-site requests are refused", status: 403))
            }
            if request.method == .post, request.uri.path != "/api/logout" {
                let type = request.headers[.contentType]?.split(separator: ";").first?.trimmingCharacters(in: .whitespaces).lowercased()
                guard type == "application/json" else {
                    return Routes.error(RequestError(field: "content-type", reason: "must be application/json, got \(type ?? "none")", status: 415))
                }
            }
        }
        var response = try await next(request, context)
        if let origin, allowed {
            response.headers[.accessControlAllowOrigin] = origin
            response.headers[.vary] = "Origin"
        }
        return response
    }

    /// On a loopback bind, the host a request names must be ours.
    func hostRefusal(_ request: Request) -> RequestError? {
        guard SluiceServerMain.isLoopback(options.host) else { return nil }
        guard let authority = request.head.authority else { return nil }
        let name = Self.hostName(authority).lowercased()
        let ours = Set(["localhost", "127.0.0.1", "::1", options.host.lowercased()] + options.allowedHosts.map { $0.lowercased() })
        if ours.contains(name) || name.hasPrefix("127.") { return nil }
        return RequestError(field: "host", reason: "'\(name)' is not a name of this server (see --allowed-host)", status: 403)
    }

    /// "example.com:7860" → "example.com"; "[::1]:7860" → "::1".
    static func hostName(_ authority: String) -> String {
        if authority.hasPrefix("["), let end = authority.firstIndex(of: "]") {
            return String(authority[authority.index(after: authority.startIndex)..<end])
        }
        return String(authority.split(separator: ":", maxSplits: 1).first ?? "")
    }

    func isAllowedCrossOrigin(_ origin: String) -> Bool {
        options.corsOrigins.contains { $0.lowercased() == origin.lowercased() }
    }

    /// The page the server itself serves: an origin naming the host the request was sent to.
    func isSameOrigin(_ origin: String, _ request: Request) -> Bool {
        guard let authority = request.head.authority else { return false }
        return ["http://", "https://"].contains { origin.lowercased() == $0 + authority.lowercased() }
    }

    /// OPTIONS: a CORS preflight from an allowed origin gets its permissions; from another origin, a 403;
    /// without an Origin, the methods there are.
    func preflight(_ request: Request, origin: String?, allowed: Bool) -> Response {
        let methods = "GET, HEAD, POST, DELETE, OPTIONS"
        guard let origin else { return Response(status: .noContent, headers: [.allow: methods]) }
        guard allowed || isSameOrigin(origin, request) else {
            return Routes.error(RequestError(field: "origin", reason: "\(origin) may not send requests to this server (see --cors-origin)", status: 403))
        }
        return Response(status: .noContent, headers: [
            .accessControlAllowOrigin: origin, .accessControlAllowMethods: methods,
            .accessControlAllowHeaders: "Authorization, Content-Type", .accessControlMaxAge: "600", .vary: "Origin",
        ])
    }
}
