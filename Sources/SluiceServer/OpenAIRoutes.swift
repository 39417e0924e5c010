import Foundation
import Hummingbird
import SluicePipelines

/// OpenAI's images API: `POST /v1/images/generations` (prompt, n, size, response_format b64_json|url;
/// other fields ignored). Synchronous: it answers when the images are done.
enum OpenAIRoutes {
    struct Image: Encodable { var b64Json: String?; var url: String?; let revisedPrompt: String }
    struct Generated: Encodable { let created: Int; let data: [Image] }

    static func collection(_ state: ServerState) -> RouteCollection<BasicRequestContext> {
        let routes = RouteCollection(context: BasicRequestContext.self)
        routes.post("images/generations") { request, _ in
            await Routes.handle {
                var request = request
                let (q, engine) = try Routes.ready(state)
                let (p, base64) = try await Routes.parser(&request, state, engine).openAI()
                let job = try await Routes.run(p, on: q)
                let host = request.head.authority ?? "\(state.options.host):\(state.options.port)"
                let data = job.results.map { gid in
                    base64 ? Image(b64Json: state.gallery.png(gid)?.base64EncodedString() ?? "", url: nil, revisedPrompt: p.prompt)
                        : Image(b64Json: nil, url: "http://\(host)/api/gallery/\(gid).png", revisedPrompt: p.prompt)
                }
                return Routes.json(Generated(created: Int(job.submitted), data: data))
            }
        }
        return routes
    }
}
