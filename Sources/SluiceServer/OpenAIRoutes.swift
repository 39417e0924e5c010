import Foundation
import Hummingbird
import SluicePipelines

/// OpenAI's images API: `POST /v1/images/generations` (prompt, n, size, response_format b64_json|url;
/// other fields ignored). Synchronous: it answers when the images are done.
enum OpenAIRoutes {
    struct Image: Encodable { var b64Json: String?; var url: String?; let revisedPrompt: String }
    struct Generated: Encodable { let created: Int; let data: [Image] }
    struct Model: Encodable { let id: String; let object = "model"; let created: Int; let ownedBy = "sluice" }
    struct Models: Encodable { let object = "list"; let data: [Model] }

    static func collection(_ state: ServerState) -> RouteCollection<SluiceRequestContext> {
        let routes = RouteCollection(context: SluiceRequestContext.self)
        routes.post("images/generations") { request, context in
            await Routes.handle {
                var request = request
                let (q, engine) = try Routes.ready(state)
                let (p, base64) = try await Routes.parser(&request, state, engine).openAI()
                let job = try await Routes.run(p, on: q, client: Routes.client(context))
                let host = request.head.authority ?? "\(state.options.host):\(state.options.port)"
                let data = job.results.map { gid in
                    base64 ? Image(b64Json: state.gallery.png(gid)?.base64EncodedString() ?? "", url: nil, revisedPrompt: p.prompt)
                        : Image(b64Json: nil, url: "http://\(host)/api/gallery/\(gid).png", revisedPrompt: p.prompt)
                }
                return Routes.json(Generated(created: Int(job.submitted), data: data))
            }
        }
        // The models a client may name: the one this server runs.
        routes.get("models") { _, _ in
            await Routes.handle {
                let (_, engine) = try Routes.ready(state)
                return Routes.json(Models(data: [Model(id: engine.modelName, created: Int(state.started.timeIntervalSince1970))]))
            }
        }
        return routes
    }
}
