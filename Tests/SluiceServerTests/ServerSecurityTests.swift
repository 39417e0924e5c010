import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import SluiceCore
import SluiceMemory
import SluicePipelines
import SluiceServer
import SluiceTestSupport
import Testing

/// What a web page the user visits must not be able to do to the server on their machine, the key's
/// handling, the gallery's cap, the per-client limit, and HTTP as clients expect it.
@Suite(.serialized) struct ServerSecurityTests {
    static func state(_ configure: (inout ServeOptions) -> Void = { _ in }) async throws -> ServerState {
        var o = ServeOptions()
        configure(&o)
        let state = ServerState(options: o, gallery: try Gallery(directory: NSTemporaryDirectory() + "sluice-gallery-\(UUID().uuidString)"))
        let engine = try SluiceServerMain.load(model: ServerRouteTests.model, memory: MemoryOptions(), log: { _ in })
        await state.becomeReady(engine: engine)
        return state
    }

    static func field(_ r: TestResponse) -> String? { (ServerRouteTests.json(r.body)["error"] as? [String: Any])?["field"] as? String }

    /// A page on another origin cannot queue work: not as text/plain or a form (which browsers send
    /// cross-site without asking), not with an Origin of its own; same-origin JSON works.
    @Test func crossSiteWritesAreRefused() async throws {
        let app = Application(router: Routes.router(try await Self.state()))
        let body = ByteBuffer(string: #"{"prompt":"a fox","width":64,"height":64,"steps":1}"#)
        try await app.test(.router) { client in
            for uri in ["/api/jobs", "/v1/images/generations", "/sdapi/v1/txt2img"] {
                for type in ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"] {
                    try await client.execute(uri: uri, method: .post, headers: [.contentType: type], body: body) { r in
                        #expect(r.status == .unsupportedMediaType && Self.field(r) == "content-type", "\(uri) \(type): \(r.status)")
                    }
                    try await client.execute(uri: uri, method: .post, headers: [.contentType: type, .origin: "http://evil.example"], body: body) { r in
                        #expect(r.status == .forbidden && Self.field(r) == "origin", "\(uri) \(type) cross-origin: \(r.status)")
                    }
                }
                try await client.execute(uri: uri, method: .post, headers: [.contentType: "application/json", .origin: "http://evil.example"], body: body) { r in
                    #expect(r.status == .forbidden, "\(uri) JSON from another origin: \(r.status)")
                }
            }
            try await client.execute(uri: "/api/jobs/x", method: .delete, headers: [.origin: "http://evil.example"]) { r in #expect(r.status == .forbidden) }
            try await client.execute(uri: "/api/jobs", method: .post, headers: [.contentType: "application/json", .origin: "http://localhost"], body: body) { r in
                #expect(r.status == .accepted, "same-origin JSON: \(r.status)")
            }
            // A preflight from a foreign origin is refused; plain OPTIONS lists the methods.
            try await client.execute(uri: "/api/jobs", method: .options, headers: [.origin: "http://evil.example"]) { r in #expect(r.status == .forbidden) }
            try await client.execute(uri: "/api/jobs", method: .options) { r in
                #expect(r.status == .noContent && (r.headers[.allow] ?? "").contains("POST"))
            }
        }
    }

    /// `--cors-origin` lets one origin in: its preflight gets the permissions, its requests the header.
    @Test func allowedOriginsPass() async throws {
        let app = Application(router: Routes.router(try await Self.state { $0.corsOrigins = ["https://app.example"] }))
        try await app.test(.router) { client in
            try await client.execute(uri: "/api/jobs", method: .options, headers: [.origin: "https://app.example"]) { r in
                #expect(r.status == .noContent)
                #expect(r.headers[.accessControlAllowOrigin] == "https://app.example")
                #expect((r.headers[.accessControlAllowHeaders] ?? "").contains("Content-Type"))
            }
            try await client.execute(uri: "/api/jobs", method: .post, headers: [.contentType: "application/json", .origin: "https://app.example"],
                                     body: ByteBuffer(string: #"{"prompt":"x","width":64,"height":64,"steps":1}"#)) { r in
                #expect(r.status == .accepted && r.headers[.accessControlAllowOrigin] == "https://app.example")
            }
            try await client.execute(uri: "/api/jobs", method: .options, headers: [.origin: "https://other.example"]) { r in #expect(r.status == .forbidden) }
        }
    }

    /// DNS rebinding: on a loopback bind a request naming a foreign host is refused; loopback names,
    /// the bound address and `--allowed-host` names pass. (Over a real connection: the router test
    /// client always says "localhost".)
    @Test func foreignHostsAreRefusedOnLoopback() async throws {
        let app = Application(router: Routes.router(try await Self.state { $0.allowedHosts = ["sluice.lan"] }))
        try await app.test(.ahc(.http)) { client in
            for (host, ok) in [("evil.example:18777", false), ("evil.example", false), ("127.0.0.1:7860", true), ("localhost", true),
                               ("[::1]:7860", true), ("sluice.lan:7860", true)] {
                try await client.execute(uri: "/api/status", method: .get, headers: [HTTPField.Name("Host")!: host]) { r in
                    #expect((r.status == .ok) == ok, "Host \(host): \(r.status)")
                    if !ok { #expect(Self.field(r) == "host") }
                }
            }
        }
    }

    /// The key from the environment or a file (never needed on the command line), a login that sets
    /// an HttpOnly SameSite=Strict session cookie, no keys in URLs, and the model's folder only to a
    /// caller who proved the key.
    @Test func keyHandling() async throws {
        let state = try await Self.state { $0.apiKey = "s3cret" }
        let app = Application(router: Routes.router(state))
        try await app.test(.router) { client in
            try await client.execute(uri: "/api/status?key=s3cret", method: .get) { r in #expect(r.status == .unauthorized) }
            try await client.execute(uri: "/api/session", method: .get) { r in
                #expect(ServerRouteTests.json(r.body)["key_required"] as? Bool == true)
            }
            try await client.execute(uri: "/api/login", method: .post, headers: ServerRouteTests.jsonType, body: ByteBuffer(string: #"{"key":"nope"}"#)) { r in
                #expect(r.status == .unauthorized && r.headers[.setCookie] == nil)
            }
            let cookie = try await client.execute(uri: "/api/login", method: .post, headers: ServerRouteTests.jsonType,
                                                  body: ByteBuffer(string: #"{"key":"s3cret"}"#)) { r in
                #expect(r.status == .ok)
                let c = r.headers[.setCookie] ?? ""
                #expect(c.contains("HttpOnly") && c.contains("SameSite=Strict") && !c.contains("s3cret"), "\(c)")
                return String(c.split(separator: ";")[0])
            }
            try await client.execute(uri: "/api/status", method: .get, headers: [.cookie: cookie]) { r in #expect(r.status == .ok) }
            try await client.execute(uri: "/api/gallery", method: .get, headers: [.cookie: "sluice_session=forged"]) { r in #expect(r.status == .unauthorized) }
            // Paths: a name to everyone, the folder only with the key.
            try await client.execute(uri: "/sdapi/v1/sd-models", method: .get, headers: [.cookie: cookie]) { r in
                let filename = (try? JSONSerialization.jsonObject(with: Data(r.body.readableBytesView)) as? [[String: Any]])?.first?["filename"] as? String
                #expect(filename == ServerRouteTests.model)
            }
            try await client.execute(uri: "/api/status", method: .get, headers: [.authorization: "Bearer s3cret"]) { r in
                let text = String(buffer: r.body)
                #expect(!text.contains(Fixtures.directory), "status shows a path: \(text.prefix(300))")
            }
            try await client.execute(uri: "/api/logout", method: .post, headers: [.cookie: cookie]) { r in #expect(r.status == .ok) }
            try await client.execute(uri: "/api/status", method: .get, headers: [.cookie: cookie]) { r in #expect(r.status == .unauthorized) }
        }
        let open = Application(router: Routes.router(try await Self.state()))
        try await open.test(.router) { client in
            try await client.execute(uri: "/sdapi/v1/sd-models", method: .get) { r in
                #expect(!String(buffer: r.body).contains("/"), "an unauthenticated caller sees a path: \(String(buffer: r.body))")
            }
        }
    }

    /// The gallery keeps at most its cap of images (and bytes), evicting the oldest.
    @Test func galleryCapEvictsTheOldest() throws {
        let dir = NSTemporaryDirectory() + "sluice-gallery-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let g = try Gallery(directory: dir, maxImages: 3)
        let p = JobParameters(prompt: "p", seed: 1, steps: 1, width: 64, height: 64, guidance: 0)
        for i in 0..<5 { try g.add(png: [137, 80, 78, 71], entry: .init(id: "img-\(i)", created: Double(i), parameters: p, seconds: 0.1, model: "m")) }
        #expect(g.list(page: 0, perPage: 10).entries.map(\.id) == ["img-4", "img-3", "img-2"])
        #expect(!FileManager.default.fileExists(atPath: dir + "/img-0.png") && !FileManager.default.fileExists(atPath: dir + "/img-1.json"))
        let small = try Gallery(directory: dir, maxBytes: 1200)
        try small.add(png: [UInt8](repeating: 1, count: 700), entry: .init(id: "img-5", created: 5, parameters: p, seconds: 0.1, model: "m"))
        #expect(small.list(page: 0, perPage: 10).entries.map(\.id) == ["img-5"])
        #expect(throws: SluiceError.self) { try Gallery(directory: "/proc/sluice-gallery") }
    }

    /// One client cannot fill the queue: past `--max-jobs-per-client` it gets 429 while others still queue.
    @Test func perClientJobLimit() async throws {
        let state = try await Self.state { $0.maxJobsPerClient = 2 }
        let q = try #require(state.queue)
        let slow = JobParameters(prompt: "slow", seed: 1, steps: 150, width: 64, height: 64, guidance: 0)
        let a = try await q.submit(slow, client: "10.0.0.1")
        _ = try await q.submit(slow, client: "10.0.0.1")
        await #expect(throws: RequestError.self) { try await q.submit(slow, client: "10.0.0.1") }
        let other = try await q.submit(slow, client: "10.0.0.2")
        for id in [a.id, other.id] { _ = await q.cancel(id) }
        for job in await [q.job(a.id)] { #expect(job != nil) }
    }

    /// HTTP as clients expect it: HEAD on GET routes, a JSON 404, 413 for an oversized body, query
    /// parameters out of range refused (not clamped), unknown /api/jobs fields named, A1111's names
    /// accepted there, and the listing routes OpenAI and AUTOMATIC1111 clients call.
    @Test func httpAsClientsExpect() async throws {
        let state = try await Self.state { $0.maxBodyBytes = 1000; $0.maxImageBodyBytes = 1000 }
        let app = Application(router: Routes.router(state))
        try await app.test(.router) { client in
            for uri in ["/health", "/api/status", "/api/gallery", "/"] {
                try await client.execute(uri: uri, method: .head) { r in #expect(r.status == .ok && r.body.readableBytes == 0, "HEAD \(uri): \(r.status)") }
            }
            try await client.execute(uri: "/no/such/route", method: .get) { r in
                #expect(r.status == .notFound && Self.field(r) == "route" && r.headers[.contentType]?.hasPrefix("application/json") == true)
            }
            try await client.execute(uri: "/api/jobs", method: .post, headers: ServerRouteTests.jsonType,
                                     body: ByteBuffer(string: "{\"prompt\":\"" + String(repeating: "x", count: 2000) + "\"}")) { r in
                #expect(r.status == .contentTooLarge && Self.field(r) == "body")
            }
            for (query, field) in [("page=-1", "page"), ("per_page=0", "per_page"), ("per_page=1000", "per_page"), ("page=abc", "page")] {
                try await client.execute(uri: "/api/gallery?\(query)", method: .get) { r in
                    #expect(r.status == .badRequest && Self.field(r) == field, "\(query): \(r.status)")
                }
            }
            try await client.execute(uri: "/api/jobs", method: .post, headers: ServerRouteTests.jsonType, body: ByteBuffer(string: #"{"prompt":"x","stepz":4}"#)) { r in
                #expect(r.status == .badRequest && Self.field(r) == "stepz")
            }
            let id = try await client.execute(uri: "/api/jobs", method: .post, headers: ServerRouteTests.jsonType,
                                              body: ByteBuffer(string: #"{"prompt":"x","width":64,"height":64,"steps":1,"cfg_scale":1.5,"sampler":"Euler"}"#)) { r in
                #expect(r.status == .accepted)
                return ServerRouteTests.json(r.body)["id"] as? String ?? ""
            }
            #expect(await state.queue!.job(id)?.parameters.guidance == 1.5)
            try await client.execute(uri: "/api/jobs", method: .post, headers: ServerRouteTests.jsonType, body: ByteBuffer(string: #"{"prompt":"x","sampler":"DDIM"}"#)) { r in
                #expect(r.status == .badRequest && Self.field(r) == "sampler")
            }
            try await client.execute(uri: "/v1/models", method: .get) { r in
                let data = ServerRouteTests.json(r.body)["data"] as? [[String: Any]]
                #expect(r.status == .ok && data?.first?["id"] as? String == "z-image-tiny")
            }
            try await client.execute(uri: "/sdapi/v1/samplers", method: .get) { r in
                let list = (try? JSONSerialization.jsonObject(with: Data(r.body.readableBytesView))) as? [[String: Any]]
                #expect(r.status == .ok && list?.first?["name"] as? String == "Euler")
            }
            try await client.execute(uri: "/sdapi/v1/schedulers", method: .get) { r in
                let list = (try? JSONSerialization.jsonObject(with: Data(r.body.readableBytesView))) as? [[String: Any]]
                #expect(r.status == .ok && (list?.first?["label"] as? String ?? "").contains("Flow match"))
            }
        }
    }
}
