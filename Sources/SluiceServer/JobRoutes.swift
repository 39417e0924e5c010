import Foundation
import Hummingbird
import NIOCore

/// Sluice's own job API under /api/jobs: submit, look up, cancel, follow (server-sent events).
enum JobRoutes {
    struct Submitted: Encodable { let id: String; let position: Int; let seed: UInt64; let warnings: [String] }
    struct Record: Encodable {
        let id: String
        let state: JobState
        let results: [String]
        let parameters: JobParameters
        let position: Int?
        let error: String?
        let lastEvent: JobEvent?
    }
    struct Cancelled: Encodable { let id: String; let cancelled: Bool }

    static func collection(_ state: ServerState) -> RouteCollection<SluiceRequestContext> {
        let routes = RouteCollection(context: SluiceRequestContext.self)
        routes.post { request, context in
            await Routes.handle {
                var request = request
                let (q, engine) = try Routes.ready(state)
                let p = try await Routes.parser(&request, state, engine, images: true).sluice()
                try Routes.validate(p, engine)
                let (id, position) = try await q.submit(p, client: Routes.client(context))
                return Routes.json(Submitted(id: id, position: position, seed: p.seed, warnings: engine.pipeline.warnings(p.request)), status: .accepted)
            }
        }
        routes.get(":id") { _, context in
            await Routes.handle {
                let (q, _) = try Routes.ready(state)
                let id = context.parameters.get("id") ?? ""
                guard let job = await q.job(id) else { throw RequestError(field: "id", reason: "no such job", status: 404) }
                return Routes.json(Record(id: id, state: job.state, results: job.results, parameters: job.parameters,
                                          position: await q.position(id), error: job.error, lastEvent: job.last))
            }
        }
        routes.delete(":id") { _, context in
            await Routes.handle {
                let (q, _) = try Routes.ready(state)
                let id = context.parameters.get("id") ?? ""
                guard await q.cancel(id) else { throw RequestError(field: "id", reason: "no such job, or it has already ended", status: 404) }
                return Routes.json(Cancelled(id: id, cancelled: true))
            }
        }
        routes.get(":id/events") { _, context in
            await Routes.handle {
                let (q, _) = try Routes.ready(state)
                let id = context.parameters.get("id") ?? ""
                guard let stream = await q.events(id) else { throw RequestError(field: "id", reason: "no such job", status: 404) }
                // Server-sent events. A client that goes away ends this writer only: the job goes on.
                let body = ResponseBody { writer in
                    for await event in stream {
                        let data = String(decoding: Routes.encode(event), as: UTF8.self)
                        try await writer.write(ByteBuffer(string: "event: \(event.state.rawValue)\ndata: " + data + "\n\n"))
                    }
                    try await writer.finish(nil)
                }
                return Response(status: .ok, headers: [.contentType: "text/event-stream", .cacheControl: "no-cache"], body: body)
            }
        }
        return routes
    }
}
