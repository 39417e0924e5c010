import Foundation
import Hummingbird
import HummingbirdTesting
import NIOCore
import SluiceCore
import SluiceMemory
import SluicePipelines
import SluiceServer
import SluiceTestSupport
import Testing

/// `sluice serve` with FLUX.1 (the tiny dev model): loaded through the registry, warmed, and driven
/// through Sluice's API (with FLUX's true_cfg_scale and max_sequence_length), OpenAI's and
/// AUTOMATIC1111's — nothing in the server names the family.
@Suite struct FluxServerTests {
    @Test func fluxServesThroughEveryAPI() async throws {
        var log: [String] = []
        let engine = try SluiceServerMain.load(model: Fixtures.directory + "/models/flux-tiny-dev", memory: MemoryOptions(), log: { log.append($0) })
        #expect(engine.pipeline is FluxPipeline)
        #expect(log.contains { $0.contains("FLUX.1") }, "\(log)")
        let state = ServerState(options: ServeOptions(), gallery: try Gallery(directory: NSTemporaryDirectory() + "sluice-gallery-\(UUID().uuidString)"))
        await state.becomeReady(engine: engine)
        let app = Application(router: Routes.router(state))
        try await app.test(.router) { client in
            let body = #"{"prompt":"a red fox","negative_prompt":"blurry","seed":8,"steps":2,"width":48,"height":32,"true_cfg_scale":2,"max_sequence_length":24}"#
            let id = try await client.execute(uri: "/api/jobs", method: .post, headers: ServerRouteTests.jsonType, body: ByteBuffer(string: body)) { r in
                #expect(r.status == .accepted)
                return ServerRouteTests.json(r.body)["id"] as? String ?? ""
            }
            let job = await state.queue!.wait(id)
            #expect(job?.state == .done, "\(String(describing: job?.error))")
            #expect(job?.parameters.trueCFGScale == 2 && job?.parameters.maxSequenceLength == 24)
            try await client.execute(uri: "/api/gallery/\(id).png", method: .get) { r in
                #expect(ServerRouteTests.decodePNG(Data(r.body.readableBytesView)).map { $0 == (48, 32) } == true)
            }
            // The model refuses what it cannot take, naming the field.
            try await client.execute(uri: "/api/jobs", method: .post, headers: ServerRouteTests.jsonType,
                                     body: ByteBuffer(string: #"{"prompt":"x","max_sequence_length":600}"#)) { r in
                #expect(r.status == .badRequest)
                #expect((ServerRouteTests.json(r.body)["error"] as? [String: Any])?["field"] as? String == "max_sequence_length")
            }
            try await client.execute(uri: "/v1/images/generations", method: .post, headers: ServerRouteTests.jsonType,
                                     body: ByteBuffer(string: #"{"prompt":"x","size":"48x32"}"#)) { r in
                #expect(r.status == .ok)
            }
            try await client.execute(uri: "/sdapi/v1/txt2img", method: .post, headers: ServerRouteTests.jsonType,
                                     body: ByteBuffer(string: #"{"prompt":"x","steps":1,"width":32,"height":32,"sampler_name":"Euler"}"#)) { r in
                #expect(r.status == .ok)
                let info = ServerRouteTests.json(r.body)["info"] as? String ?? ""
                #expect(info.contains("Schedule type: Flow match (dynamic shift)"), "\(info)")
            }
        }
    }
}
