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

/// A family registered only here (`NoiseDecoderPipeline`) runs through the registry, `Engine`, the
/// job queue and every API: nothing in the server names a model.
@Suite struct TestFamilyTests {
    @Test func aFamilyRegisteredInATestRunsThroughEngineAndRoutes() async throws {
        #expect(NoiseDecoderPipeline.registered)
        let model = try NoiseDecoderPipeline.folder()
        defer { try? FileManager.default.removeItem(atPath: model) }
        var log: [String] = []
        let engine = try SluiceServerMain.load(model: model, memory: MemoryOptions(), log: { log.append($0) })
        #expect(engine.pipeline is NoiseDecoderPipeline)
        #expect(log.contains { $0.contains("Noise decoder (test)") }, "\(log)")
        let state = ServerState(options: ServeOptions(), gallery: try Gallery(directory: NSTemporaryDirectory() + "sluice-gallery-\(UUID().uuidString)"))
        await state.becomeReady(engine: engine)
        let app = Application(router: Routes.router(state))
        try await app.test(.router) { client in
            // Sluice's API with the family's defaults (64×64, 3 steps): a PNG of that size in the gallery.
            let id = try await client.execute(uri: "/api/jobs", method: .post, headers: ServerRouteTests.jsonType, body: ByteBuffer(string: #"{"prompt":"a red fox","seed":3}"#)) { r in
                #expect(r.status == .accepted)
                return ServerRouteTests.json(r.body)["id"] as? String ?? ""
            }
            let job = await state.queue!.wait(id)
            #expect(job?.state == .done, "\(String(describing: job?.error))")
            #expect(job?.parameters.steps == 3 && job?.parameters.width == 64)
            try await client.execute(uri: "/api/gallery/\(id).png", method: .get) { r in
                #expect(ServerRouteTests.decodePNG(Data(r.body.readableBytesView)).map { $0 == (64, 64) } == true)
            }
            // The A1111 API takes the family's own sampler and refuses another, naming the field.
            try await client.execute(uri: "/sdapi/v1/txt2img", method: .post, headers: ServerRouteTests.jsonType, body: ByteBuffer(string: #"{"prompt":"x","sampler_name":"Walk","width":32,"height":32}"#)) { r in
                #expect(r.status == .ok)
                let info = ServerRouteTests.json(r.body)["info"] as? String ?? ""
                #expect(info.contains("Sampler: Walk, Schedule type: Linear"), "\(info)")
            }
            try await client.execute(uri: "/sdapi/v1/txt2img", method: .post, headers: ServerRouteTests.jsonType, body: ByteBuffer(string: #"{"prompt":"x","sampler_name":"Euler"}"#)) { r in
                #expect(r.status == .badRequest)
                #expect((ServerRouteTests.json(r.body)["error"] as? [String: Any])?["field"] as? String == "sampler_name")
            }
            // Sizes follow the family's multiple (the tiny VAE scales by 2).
            try await client.execute(uri: "/api/jobs", method: .post, headers: ServerRouteTests.jsonType, body: ByteBuffer(string: #"{"prompt":"x","width":33}"#)) { r in
                #expect(r.status == .badRequest)
            }
            try await client.execute(uri: "/v1/images/generations", method: .post, headers: ServerRouteTests.jsonType, body: ByteBuffer(string: #"{"prompt":"x","size":"32x48"}"#)) { r in
                #expect(r.status == .ok)
            }
        }
    }

    /// The shared battery holds for the test family too (it plans and streams through the same machinery).
    @Test func sharedPipelineBattery() throws {
        #expect(NoiseDecoderPipeline.registered)
        let model = try NoiseDecoderPipeline.folder()
        defer { try? FileManager.default.removeItem(atPath: model) }
        let r = GenerationRequest(prompt: "a red fox", seed: 7, steps: 3, width: 64, height: 64, guidance: 0)
        // 8 MiB holds the decoder and a 64² image's activations; 2 MiB makes it tile.
        try PipelineBattery(request: r, budgets: [8 << 20, 2 << 20]) { try PipelineRegistry.shared.load(model: model, device: "cpu") }.runAll()
    }
}
