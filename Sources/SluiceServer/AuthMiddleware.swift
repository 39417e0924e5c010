import Hummingbird

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
            return Routes.error(RequestError(field: "authorization", reason: "a valid bearer token is required", status: 401),
                                headers: [.wwwAuthenticate: "Bearer"])
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
