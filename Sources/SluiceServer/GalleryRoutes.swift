import Foundation
import Hummingbird
import NIOCore

/// The gallery under /api/gallery: pages of finished images newest first, one image's parameters or
/// PNG, deletion.
enum GalleryRoutes {
    struct Page: Encodable { let items: [Gallery.Entry]; let total: Int; let page: Int; let perPage: Int }
    struct Deleted: Encodable { let id: String; let deleted: Bool }

    static func collection(_ state: ServerState) -> RouteCollection<SluiceRequestContext> {
        let routes = RouteCollection(context: SluiceRequestContext.self)
        routes.get { request, _ in
            await Routes.handle {
                let page = try query(request, "page", default: 0, range: 0...1_000_000)
                let perPage = try query(request, "per_page", default: 24, range: 1...200)
                let (entries, total) = state.gallery.list(page: page, perPage: perPage)
                return Routes.json(Page(items: entries, total: total, page: page, perPage: perPage))
            }
        }
        routes.get(":id") { _, context in
            await Routes.handle {
                var id = context.parameters.get("id") ?? ""
                if id.hasSuffix(".png") {
                    id = String(id.dropLast(4))
                    guard let png = state.gallery.png(id) else { throw RequestError(field: "id", reason: "no such image", status: 404) }
                    return Response(status: .ok, headers: [.contentType: "image/png", .cacheControl: "max-age=31536000, immutable"],
                                    body: .init(byteBuffer: ByteBuffer(bytes: png)))
                }
                guard let entry = state.gallery.entry(id) else { throw RequestError(field: "id", reason: "no such image", status: 404) }
                return Routes.json(entry)
            }
        }
        routes.delete(":id") { _, context in
            await Routes.handle {
                let id = context.parameters.get("id") ?? ""
                guard state.gallery.delete(id) else { throw RequestError(field: "id", reason: "no such image", status: 404) }
                return Routes.json(Deleted(id: id, deleted: true))
            }
        }
        return routes
    }

    /// An integer query parameter in `range`; anything else is a 400 naming it (never silently clamped).
    static func query(_ request: Request, _ name: String, default value: Int, range: ClosedRange<Int>) throws(RequestError) -> Int {
        guard let raw = request.uri.queryParameters.get(name) else { return value }
        guard let n = Int(raw), range.contains(n) else {
            throw RequestError(field: name, reason: "must be an integer in \(range.lowerBound)…\(range.upperBound), got '\(raw)'")
        }
        return n
    }
}
