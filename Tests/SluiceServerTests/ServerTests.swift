import CPNG
import Foundation
import Hummingbird
import HummingbirdTesting
import NIOCore
import SluiceBackends
import SluiceMemory
import SluicePipelines
import SluiceServer
import SluiceTestSupport
import Testing

/// Route tests on the tiny fixture model, through Hummingbird's router test client.
@Suite(.serialized) struct ServerRouteTests {
    static let model = Fixtures.directory + "/models/z-image-tiny"

    static func makeState(queueSize: Int = 16, apiKey: String? = nil, ready: Bool = true) async throws -> ServerState {
        var o = ServeOptions()
        o.queueSize = queueSize
        o.apiKey = apiKey
        let gallery = try Gallery(directory: NSTemporaryDirectory() + "sluice-gallery-\(UUID().uuidString)")
        let state = ServerState(options: o, gallery: gallery)
        if ready {
            let engine = try SluiceServerMain.load(model: model, memory: MemoryOptions(), log: { _ in })
            await state.becomeReady(engine: engine)
        }
        return state
    }

    static func json(_ b: ByteBuffer) -> [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(b.readableBytesView))) as? [String: Any] ?? [:]
    }

    static func body(_ s: String) -> ByteBuffer { ByteBuffer(string: s) }

    /// API writes must say they are JSON.
    static let jsonType: HTTPFields = [.contentType: "application/json"]

    /// Decodes with libpng; returns (width, height). libpng keeps the pointer it was given until the
    /// read finishes, so both calls happen while the bytes are pinned.
    static func decodePNG(_ data: Data) -> (Int, Int)? {
        let bytes = [UInt8](data)
        return bytes.withUnsafeBytes { buf -> (Int, Int)? in
            var image = png_image()
            image.version = UInt32(PNG_IMAGE_VERSION)
            guard png_image_begin_read_from_memory(&image, buf.baseAddress, buf.count) != 0 else { return nil }
            image.format = UInt32(PNG_FORMAT_RGB)
            var px = [UInt8](repeating: 0, count: Int(image.width * image.height * 3))
            guard px.withUnsafeMutableBytes({ png_image_finish_read(&image, nil, $0.baseAddress, 0, nil) }) != 0 else { return nil }
            return (Int(image.width), Int(image.height))
        }
    }

    @Test func eachAPIReturnsADecodablePNG() async throws {
        let state = try await Self.makeState()
        let app = Application(router: Routes.router(state))
        try await app.test(.router) { client in
            // Sluice's own API: submit, follow, fetch from the gallery.
            let id = try await client.execute(uri: "/api/jobs", method: .post, headers: ServerRouteTests.jsonType,
                                              body: Self.body(#"{"prompt":"a red fox","width":64,"height":64,"steps":3,"seed":7}"#)) { r in
                #expect(r.status == .accepted)
                return Self.json(r.body)["id"] as? String ?? ""
            }
            let job = await state.queue!.wait(id)
            #expect(job?.state == .done, "\(String(describing: job?.error))")
            try await client.execute(uri: "/api/gallery/\(id).png", method: .get) { r in
                #expect(r.status == .ok)
                #expect(Self.decodePNG(Data(r.body.readableBytesView)).map { $0 == (64, 64) } == true)
            }
            try await client.execute(uri: "/api/jobs/\(id)", method: .get) { r in
                #expect(Self.json(r.body)["state"] as? String == "done")
            }
            // OpenAI.
            try await client.execute(uri: "/v1/images/generations", method: .post, headers: ServerRouteTests.jsonType,
                                     body: Self.body(#"{"model":"x","prompt":"a fox","n":2,"size":"64x64","response_format":"b64_json","quality":"hd"}"#)) { r in
                #expect(r.status == .ok)
                let data = Self.json(r.body)["data"] as? [[String: Any]] ?? []
                #expect(data.count == 2)
                for d in data {
                    let png = Data(base64Encoded: d["b64_json"] as? String ?? "") ?? Data()
                    #expect(Self.decodePNG(png).map { $0 == (64, 64) } == true)
                }
            }
            // AUTOMATIC1111.
            try await client.execute(uri: "/sdapi/v1/txt2img", method: .post, headers: ServerRouteTests.jsonType,
                                     body: Self.body(#"{"prompt":"a fox","negative_prompt":"","width":64,"height":128,"steps":2,"cfg_scale":0,"seed":5,"sampler_name":"Euler","batch_size":1,"n_iter":1,"restore_faces":false}"#)) { r in
                #expect(r.status == .ok)
                let obj = Self.json(r.body)
                let images = obj["images"] as? [String] ?? []
                #expect(images.count == 1)
                #expect(Self.decodePNG(Data(base64Encoded: images.first ?? "") ?? Data()).map { $0 == (64, 128) } == true)
                let info = (try? JSONSerialization.jsonObject(with: Data((obj["info"] as? String ?? "").utf8))) as? [String: Any]
                #expect((info?["all_seeds"] as? [Int]) == [5])
            }
            for uri in ["/sdapi/v1/progress", "/sdapi/v1/sd-models", "/sdapi/v1/options", "/api/status", "/health", "/ready", "/", "/app.js"] {
                try await client.execute(uri: uri, method: .get) { r in #expect(r.status == .ok, "\(uri)") }
            }
        }
    }

    /// Each bad request is a 400 naming the field at fault.
    @Test func badRequestsNameTheField() async throws {
        let state = try await Self.makeState()
        let app = Application(router: Routes.router(state))
        // Past the image body limit (32 MiB: the tiny Z-Image takes init images, so /api/jobs allows that much).
        let huge = "{\"prompt\":\"" + String(repeating: "x", count: 33 << 20) + "\"}"
        let cases: [(String, String, String)] = [
            ("/api/jobs", "{not json", "body"),
            ("/api/jobs", huge, "body"),  // 413, below
            ("/api/jobs", "[1,2]", "body"),
            ("/api/jobs", #"{"steps":4}"#, "prompt"),
            ("/api/jobs", #"{"prompt":"   "}"#, "prompt"),
            ("/api/jobs", #"{"prompt":"x","width":0}"#, "width"),
            ("/api/jobs", #"{"prompt":"x","height":100000}"#, "height"),
            ("/api/jobs", #"{"prompt":"x","width":66}"#, "width"),
            ("/api/jobs", #"{"prompt":"x","steps":-1}"#, "steps"),
            ("/api/jobs", #"{"prompt":"x","steps":"many"}"#, "steps"),
            ("/api/jobs", #"{"prompt":"x","steps":true}"#, "steps"),
            ("/api/jobs", #"{"prompt":"x","seed":-2}"#, "seed"),
            ("/api/jobs", #"{"prompt":"x","guidance":-1}"#, "guidance"),
            ("/api/jobs", "{\"prompt\":\"" + String(repeating: "y", count: 9000) + "\"}", "prompt"),
            ("/v1/images/generations", #"{"prompt":"x","size":"0x0"}"#, "size"),
            ("/v1/images/generations", #"{"prompt":"x","size":"big"}"#, "size"),
            ("/v1/images/generations", #"{"prompt":"x","response_format":"gif"}"#, "response_format"),
            ("/v1/images/generations", #"{"size":"64x64"}"#, "prompt"),
            ("/sdapi/v1/txt2img", #"{"prompt":"x","sampler_name":"DPM++ 2M Karras"}"#, "sampler_name"),
            ("/sdapi/v1/txt2img", #"{"prompt":"x","steps":0}"#, "steps"),
            ("/sdapi/v1/txt2img", #"{"prompt":"x","width":100000}"#, "width"),
            ("/sdapi/v1/txt2img", #"{"prompt":"x","batch_size":9}"#, "batch_size"),
            ("/sdapi/v1/txt2img", #"{"prompt":"x","sampler_index":"DDIM"}"#, "sampler_index"),
            ("/api/jobs", #"{"prompt":"x","sampler":"DDIM"}"#, "sampler"),
            // Z-Image has no image to image: an init image is refused, naming the field.
            ("/api/jobs", #"{"prompt":"x","init_image":"iVBORw0KGgo="}"#, "init_image"),
            ("/api/jobs", #"{"prompt":"x","strength":0.5}"#, "strength"),
            ("/sdapi/v1/img2img", #"{"prompt":"x","init_images":["iVBORw0KGgo="]}"#, "init_images"),
        ]
        try await app.test(.router) { client in
            for (uri, body, field) in cases {
                try await client.execute(uri: uri, method: .post, headers: ServerRouteTests.jsonType, body: Self.body(body)) { r in
                    #expect(r.status == (body == huge ? .contentTooLarge : .badRequest), "\(uri) \(body.prefix(60)): \(r.status)")
                    let err = Self.json(r.body)["error"] as? [String: Any]
                    #expect(err?["field"] as? String == field, "\(uri) \(body.prefix(60)): \(String(describing: err))")
                }
            }
        }
    }

    @Test func fullQueueAnswers429AndCancelFreesTheJob() async throws {
        let state = try await Self.makeState(queueSize: 1)
        let app = Application(router: Routes.router(state))
        try await app.test(.router) { client in
            let id = try await client.execute(uri: "/api/jobs", method: .post, headers: ServerRouteTests.jsonType,
                                              body: Self.body(#"{"prompt":"slow","width":64,"height":64,"steps":150}"#)) { r in
                Self.json(r.body)["id"] as? String ?? ""
            }
            try await client.execute(uri: "/api/jobs", method: .post, headers: ServerRouteTests.jsonType, body: Self.body(#"{"prompt":"one more","width":64,"height":64}"#)) { r in
                #expect(r.status == .tooManyRequests)
                #expect(r.headers[.retryAfter] != nil)
            }
            // Cancel once it is running (mid-job, between steps).
            let events = await state.queue!.events(id)!
            for await e in events where e.state == .running && e.step >= 1 { break }
            try await client.execute(uri: "/api/jobs/\(id)", method: .delete) { r in #expect(r.status == .ok) }
            let job = await state.queue!.wait(id)
            #expect(job?.state == .cancelled)
            #expect(await state.queue!.length == 0)
            #expect(state.gallery.list(page: 0, perPage: 10).total == 0)
            // The queue has room again.
            try await client.execute(uri: "/api/jobs", method: .post, headers: ServerRouteTests.jsonType, body: Self.body(#"{"prompt":"after","width":64,"height":64,"steps":1}"#)) { r in
                #expect(r.status == .accepted)
            }
        }
    }

    /// A listener that goes away (a closed SSE connection) neither stops nor breaks the job.
    @Test func droppedListenerDoesNotStopTheJob() async throws {
        let state = try await Self.makeState()
        let q = state.queue!
        let (id, _) = try await q.submit(JobParameters(prompt: "fox", seed: 1, steps: 20, width: 64, height: 64, guidance: 0))
        let listener = Task {
            var seen = 0
            for await _ in await q.events(id)! {
                seen += 1
                if seen == 2 { break }   // the client disconnects
            }
            return seen
        }
        #expect(await listener.value == 2)
        let job = await q.wait(id)
        #expect(job?.state == .done)
        #expect(job?.results.count == 1)
        // Over HTTP: the SSE body of a finished job replays its final event.
        let app = Application(router: Routes.router(state))
        try await app.test(.router) { client in
            try await client.execute(uri: "/api/jobs/\(id)/events", method: .get) { r in
                #expect(r.headers[.contentType] == "text/event-stream")
                #expect(String(buffer: r.body).contains("event: done"))
            }
        }
    }

    /// With a device budget, progress events carry the (simulated) device's memory, within the budget.
    @Test func progressReportsDeviceMemoryUnderABudget() async throws {
        var o = ServeOptions()
        o.queueSize = 4
        let state = ServerState(options: o, gallery: try Gallery(directory: NSTemporaryDirectory() + "sluice-gallery-\(UUID().uuidString)"))
        let budget = 8 << 20
        // Device memory twice the budget: the samples show whether the plans kept to it.
        var memory = MemoryOptions(deviceBudget: budget, profile: .rtx3060)
        memory.deviceCapBytes = 2 * budget
        let engine = try SluiceServerMain.load(model: Self.model, memory: memory, log: { _ in })
        await state.becomeReady(engine: engine)
        let q = state.queue!
        let (id, _) = try await q.submit(JobParameters(prompt: "fox", seed: 3, steps: 4, width: 64, height: 64, guidance: 0))
        var deviceSamples: [Int] = []
        for await e in await q.events(id)! {
            if let d = e.memory?.deviceBytes { deviceSamples.append(d) }
        }
        #expect(await q.job(id)?.state == .done)
        // A job the budget cannot hold (a 2048² image's VAE even in tiles) fails alone, with the numbers;
        // the next job runs.
        let (big, _) = try await q.submit(JobParameters(prompt: "too big", seed: 1, steps: 1, width: 2048, height: 2048, guidance: 0))
        let failed = await q.wait(big)
        #expect(failed?.state == .failed && (failed?.error ?? "").contains("--vram-limit"), "\(String(describing: failed?.error))")
        let (after, _) = try await q.submit(JobParameters(prompt: "fits", seed: 2, steps: 1, width: 64, height: 64, guidance: 0))
        #expect(await q.wait(after)?.state == .done)
        #expect((deviceSamples.max() ?? 0) > 0 && deviceSamples.allSatisfy { $0 >= 0 && $0 <= budget }, "\(deviceSamples)")
    }

    /// `serve --device vulkan`: the engine computes on the Vulkan device (lavapipe in CI), warms up
    /// there with the weights in real device buffers, says so in /api/status, and runs a job (the
    /// image's agreement with the CPU is VulkanPipelineTests').
    @Test(.enabled(if: Vulkan.unavailableReason == nil && ((try? Vulkan.devices().count) ?? 0) > 0, "no Vulkan device"))
    func servesOnVulkan() async throws {
        var o = ServeOptions()
        o.device = "vulkan"
        let state = ServerState(options: o, gallery: try Gallery(directory: NSTemporaryDirectory() + "sluice-gallery-\(UUID().uuidString)"))
        var log: [String] = []
        let engine = try SluiceServerMain.load(model: Self.model, memory: MemoryOptions(), device: "vulkan", log: { log.append($0) })
        #expect(log.contains { $0.hasPrefix("computing on vulkan") }, "\(log)")
        #expect(engine.lastReport?.device.hasPrefix("vulkan") == true)
        await state.becomeReady(engine: engine)
        let app = Application(router: Routes.router(state))
        try await app.test(.router) { client in
            try await client.execute(uri: "/api/status", method: .get) { r in
                let obj = try JSONSerialization.jsonObject(with: Data(buffer: r.body)) as? [String: Any]
                #expect((obj?["device"] as? String)?.hasPrefix("vulkan") == true)
                #expect(obj?["device_memory"] as? String == "vulkan")
                #expect(obj?["device_budget_bytes"] as? Int == engine.pipeline.device.vulkan?.info.deviceBudget)
            }
        }
        let q = state.queue!
        let (id, _) = try await q.submit(JobParameters(prompt: "fox", seed: 3, steps: 2, width: 64, height: 64, guidance: 0))
        let job = await q.wait(id)
        #expect(job?.state == .done, "\(String(describing: job?.error))")
        // The last preview stays with the job for /sdapi/v1/progress, whatever the latest event carries.
        #expect(job?.latestPreview != nil && job?.last?.preview == nil)
        // The heap holds the tiny model whole: its weights stay on the device from job to job.
        let (next, _) = try await q.submit(JobParameters(prompt: "fox", seed: 4, steps: 2, width: 64, height: 64, guidance: 0))
        #expect(await q.wait(next)?.state == .done)
        #expect(engine.lastReport?.phases.allSatisfy { $0.bytesHostToDevice == 0 } == true, "\(engine.lastReport?.phases.map(\.bytesHostToDevice) ?? [])")
        try await app.test(.router) { client in
            try await client.execute(uri: "/api/status", method: .get) { r in
                let kept = (try? JSONSerialization.jsonObject(with: Data(buffer: r.body)) as? [String: Any])?["kept_on_device"] as? [String]
                #expect(kept == ["text_encoder", "vae_encoder", "transformer", "vae"], "\(String(describing: kept))")
            }
        }
    }

    /// Live previews come every `previewEvery` steps and at the last (none with 0): between them the
    /// latents are not read (on a GPU they stay on the device).
    @Test func previewsComeEveryKSteps() throws {
        let engine = try SluiceServerMain.load(model: Self.model, memory: MemoryOptions(), log: { _ in })
        #expect(engine.preview != nil, "the warm-up fits the preview map")
        for (every, want) in [(0, [Int]()), (2, [2, 4]), (3, [3, 4]), (1, [1, 2, 3, 4])] {
            engine.previewEvery = every
            var steps: [Int] = []
            _ = try engine.run(JobParameters(prompt: "fox", seed: 3, steps: 4, width: 64, height: 64, guidance: 0), job: "t",
                               report: { e in if e.preview != nil { steps.append(e.step) } }, isCancelled: { false })
            #expect(steps == want, "every \(every)")
        }
    }

    @Test func healthAndReadyDifferWhileLoading() async throws {
        let state = try await Self.makeState(ready: false)
        let app = Application(router: Routes.router(state))
        try await app.test(.router) { client in
            try await client.execute(uri: "/health", method: .get) { r in #expect(r.status == .ok) }
            try await client.execute(uri: "/ready", method: .get) { r in #expect(r.status == .serviceUnavailable) }
            try await client.execute(uri: "/api/jobs", method: .post, headers: ServerRouteTests.jsonType, body: Self.body(#"{"prompt":"x"}"#)) { r in
                #expect(r.status == .serviceUnavailable)
            }
        }
    }

    @Test func apiKeyIsRequiredWhenSet() async throws {
        let state = try await Self.makeState(apiKey: "s3cret")
        let app = Application(router: Routes.router(state))
        try await app.test(.router) { client in
            try await client.execute(uri: "/health", method: .get) { r in #expect(r.status == .ok) }
            try await client.execute(uri: "/api/status", method: .get) { r in #expect(r.status == .unauthorized) }
            try await client.execute(uri: "/api/status", method: .get, headers: [.authorization: "Bearer wrong"]) { r in #expect(r.status == .unauthorized) }
            try await client.execute(uri: "/api/status", method: .get, headers: [.authorization: "Bearer s3cret"]) { r in #expect(r.status == .ok) }
            try await client.execute(uri: "/sdapi/v1/txt2img", method: .post, headers: ServerRouteTests.jsonType, body: Self.body(#"{"prompt":"x"}"#)) { r in #expect(r.status == .unauthorized) }
        }
        var o = ServeOptions()
        o.host = "0.0.0.0"
        #expect(throws: RequestError.self) { try SluiceServerMain.checkSafety(o) }
        o.apiKey = "k"
        try SluiceServerMain.checkSafety(o)
    }
}

@Suite struct GalleryTests {
    @Test func pagingDeleteAndRestart() throws {
        let dir = NSTemporaryDirectory() + "sluice-gallery-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let g = try Gallery(directory: dir)
        let p = JobParameters(prompt: "p", seed: 1, steps: 1, width: 64, height: 64, guidance: 0)
        for i in 0..<5 {
            try g.add(png: [137, 80, 78, 71], entry: .init(id: "img-\(i)", created: Double(i), parameters: p, seconds: 0.1, model: "m"))
        }
        // A write cut short leaves a temp file, and an orphan PNG without its JSON: neither is listed,
        // and the temp file is gone after a restart.
        try Data([1, 2, 3]).write(to: URL(fileURLWithPath: dir + "/.img-9.png.tmp"))
        try Data([1, 2, 3]).write(to: URL(fileURLWithPath: dir + "/img-8.png"))
        let page0 = g.list(page: 0, perPage: 2)
        #expect(page0.total == 5 && page0.entries.map(\.id) == ["img-4", "img-3"])
        #expect(g.list(page: 2, perPage: 2).entries.map(\.id) == ["img-0"])
        #expect(g.delete("img-3"))
        #expect(!g.delete("img-3"))
        #expect(!g.delete("../etc/passwd"))
        let again = try Gallery(directory: dir)
        #expect(again.list(page: 0, perPage: 10).entries.map(\.id) == ["img-4", "img-2", "img-1", "img-0"])
        #expect(!FileManager.default.fileExists(atPath: dir + "/.img-9.png.tmp"))
    }
}
