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

/// `sluice serve` with Stable Diffusion 1.5 (the tiny fixture): samplers chosen by AUTOMATIC1111's
/// names and image to image, through AUTOMATIC1111's API and Sluice's, each giving the image the
/// pipeline gives for the same request called directly.
@Suite(.serialized) struct StableDiffusionServerTests {
    static let model = Fixtures.directory + "/models/sd15-tiny"

    /// A 48 × 32 init image (a smooth gradient: any picture will do, the pipeline gets the same one).
    static let initImage: InitImage = {
        let w = 48, h = 32
        var px = [UInt8](repeating: 0, count: w * h * 3)
        for y in 0..<h { for x in 0..<w {
            px[(y * w + x) * 3] = UInt8(x * 5); px[(y * w + x) * 3 + 1] = UInt8(y * 7); px[(y * w + x) * 3 + 2] = UInt8((x + y) * 3)
        } }
        return InitImage(pixels: px, width: w, height: h)
    }()
    static var initBase64: String {
        Data(try! PNGWriter.encode(pixels: initImage.pixels, width: initImage.width, height: initImage.height)).base64EncodedString()
    }

    static func makeState() async throws -> (ServerState, Engine) {
        let engine = try SluiceServerMain.load(model: model, memory: MemoryOptions(), log: { _ in })
        let state = ServerState(options: ServeOptions(), gallery: try Gallery(directory: NSTemporaryDirectory() + "sluice-gallery-\(UUID().uuidString)"))
        await state.becomeReady(engine: engine)
        return (state, engine)
    }

    /// The pipeline's own image for `r`, as the PNG's 8-bit pixels.
    static func direct(_ engine: Engine, _ r: GenerationRequest) throws -> [UInt8] {
        try PNGWriter.rgb8(try engine.pipeline.generate(r).image).pixels
    }

    static func pixels(_ png: Data) throws -> [UInt8] { try PNGReader.decode([UInt8](png), name: "response").pixels }

    static func errorField(_ b: ByteBuffer) -> String? { (ServerRouteTests.json(b)["error"] as? [String: Any])?["field"] as? String }

    @Test func samplersAndImageToImageThroughTheAPIs() async throws {
        let (state, engine) = try await Self.makeState()
        #expect(engine.pipeline is StableDiffusionPipeline)
        let app = Application(router: Routes.router(state))
        try await app.test(.router) { client in
            // Every sampler, by A1111's names, the model's default first.
            try await client.execute(uri: "/sdapi/v1/samplers", method: .get) { r in
                let list = (try? JSONSerialization.jsonObject(with: Data(r.body.readableBytesView))) as? [[String: Any]] ?? []
                let names = list.compactMap { $0["name"] as? String }
                #expect(names == engine.pipeline.samplerNames)
                #expect(Set(names) == ["Euler", "Euler a", "DPM++ 2M", "DPM++ 2M Karras", "DDIM"])
                #expect(list.allSatisfy { $0["aliases"] is [String] && $0["options"] is [String: Any] })
            }

            // txt2img with a chosen sampler: the pipeline's image for that sampler.
            var r = GenerationRequest(prompt: "a red fox", negativePrompt: "blurry", seed: 5, steps: 3, width: 48, height: 32, guidance: 7)
            r.sampler = "DPM++ 2M Karras"
            let karras = try Self.direct(engine, r)
            let body = #"{"prompt":"a red fox","negative_prompt":"blurry","seed":5,"steps":3,"width":48,"height":32,"cfg_scale":7,"sampler_name":"DPM++ 2M Karras"}"#
            try await client.execute(uri: "/sdapi/v1/txt2img", method: .post, headers: ServerRouteTests.jsonType, body: ByteBuffer(string: body)) { resp in
                #expect(resp.status == .ok)
                let obj = ServerRouteTests.json(resp.body)
                let png = Data(base64Encoded: (obj["images"] as? [String])?.first ?? "") ?? Data()
                let got = try Self.pixels(png)
                #expect(got == karras)
                #expect((obj["parameters"] as? [String: Any])?["sampler_name"] as? String == "DPM++ 2M Karras")
                let info = obj["info"] as? String ?? ""
                #expect(info.contains("Sampler: DPM++ 2M Karras, Schedule type: Karras"), "\(info)")
            }
            // sampler_index is a name too (A1111 takes either), aliases included; the default is the model's.
            try await client.execute(uri: "/sdapi/v1/txt2img", method: .post, headers: ServerRouteTests.jsonType,
                                     body: ByteBuffer(string: #"{"prompt":"x","steps":1,"width":48,"height":32,"sampler_index":"dpmpp_2m"}"#)) { resp in
                #expect(resp.status == .ok)
                #expect((ServerRouteTests.json(resp.body)["parameters"] as? [String: Any])?["sampler_name"] as? String == "DPM++ 2M")
            }
            try await client.execute(uri: "/sdapi/v1/txt2img", method: .post, headers: ServerRouteTests.jsonType,
                                     body: ByteBuffer(string: #"{"prompt":"x","steps":1,"width":48,"height":32,"sampler_name":""}"#)) { resp in
                #expect((ServerRouteTests.json(resp.body)["parameters"] as? [String: Any])?["sampler_name"] as? String == engine.pipeline.sampler.name)
            }

            // img2img as AUTOMATIC1111 takes it: a data: URL PNG, its size the job's, A1111's default strength.
            var i2i = GenerationRequest(prompt: "a red fox", seed: 11, steps: 3, width: 48, height: 32, guidance: 7)
            i2i.sampler = "Euler a"
            i2i.initImage = Self.initImage
            i2i.strength = 0.75
            let expected = try Self.direct(engine, i2i)
            let img2img = #"{"prompt":"a red fox","seed":11,"steps":3,"cfg_scale":7,"sampler_name":"Euler a","init_images":["data:image/png;base64,"# + Self.initBase64 + #""]}"#
            try await client.execute(uri: "/sdapi/v1/img2img", method: .post, headers: ServerRouteTests.jsonType, body: ByteBuffer(string: img2img)) { resp in
                #expect(resp.status == .ok, "\(String(buffer: resp.body))")
                let obj = ServerRouteTests.json(resp.body)
                let png = Data(base64Encoded: (obj["images"] as? [String])?.first ?? "") ?? Data()
                let got = try Self.pixels(png)
                #expect(got == expected)
                let parameters = obj["parameters"] as? [String: Any] ?? [:]
                #expect(parameters["denoising_strength"] as? Double == 0.75)
                #expect(parameters["width"] as? Int == 48 && parameters["height"] as? Int == 32)
                #expect(parameters["init_images"] is NSNull)
                #expect((obj["info"] as? String ?? "").contains(#"Denoising strength: 0.75"#))
            }

            // Sluice's API: init_image (bare base64) and strength; the records keep the strength, never the pixels.
            var own = GenerationRequest(prompt: "a red fox", seed: 3, steps: 3, width: 48, height: 32, guidance: 7)
            own.sampler = "DDIM"
            own.initImage = Self.initImage
            own.strength = 0.5
            let ownExpected = try Self.direct(engine, own)
            let jobBody = #"{"prompt":"a red fox","seed":3,"steps":3,"guidance":7,"sampler":"ddim","strength":0.5,"init_image":""# + Self.initBase64 + #""}"#
            let id = try await client.execute(uri: "/api/jobs", method: .post, headers: ServerRouteTests.jsonType, body: ByteBuffer(string: jobBody)) { resp in
                #expect(resp.status == .accepted, "\(String(buffer: resp.body))")
                return ServerRouteTests.json(resp.body)["id"] as? String ?? ""
            }
            let job = await state.queue!.wait(id)
            #expect(job?.state == .done, "\(String(describing: job?.error))")
            #expect(job?.parameters.initImage == nil)  // the queue keeps no pixels once a job ends
            #expect(job?.parameters.sampler == "DDIM" && job?.parameters.strength == 0.5)
            try await client.execute(uri: "/api/gallery/\(id).png", method: .get) { resp in
                let got = try Self.pixels(Data(resp.body.readableBytesView))
                #expect(got == ownExpected)
            }
            try await client.execute(uri: "/api/jobs/\(id)", method: .get) { resp in
                let text = String(buffer: resp.body)
                let parameters = ServerRouteTests.json(resp.body)["parameters"] as? [String: Any] ?? [:]
                #expect(parameters["strength"] as? Double == 0.5 && parameters["sampler"] as? String == "DDIM")
                #expect(!text.contains("init_image") && !text.contains("pixels"), "\(text)")
            }
            let saved = try String(contentsOfFile: state.gallery.directory + "/\(id).json", encoding: .utf8)
            #expect(saved.contains("\"strength\"") && !saved.contains("init_image") && !saved.contains("pixels") && saved.count < 2000, "\(saved)")
        }
    }

    /// Samplers and init images the model cannot take are 400s naming the field, never a crash.
    @Test func badSamplersAndInitImagesNameTheField() async throws {
        let (state, _) = try await Self.makeState()
        let app = Application(router: Routes.router(state))
        let png = try PNGWriter.encode(pixels: Self.initImage.pixels, width: 48, height: 32)
        var huge = png
        huge.replaceSubrange(16..<24, with: [0, 0, 0x10, 0, 0, 0, 0x10, 0])  // the header says 4096 × 4096
        let truncated = Data(png.prefix(png.count / 2)).base64EncodedString()
        let image = Self.initBase64
        let cases: [(String, String, String)] = [
            ("/sdapi/v1/txt2img", #"{"prompt":"x","sampler_name":"LMS"}"#, "sampler_name"),
            ("/api/jobs", #"{"prompt":"x","sampler_name":"UniPC"}"#, "sampler_name"),
            ("/api/jobs", #"{"prompt":"x","sampler":"Euler","sampler_name":"DDIM"}"#, "sampler_name"),
            ("/sdapi/v1/img2img", #"{"prompt":"x","init_images":["%%% not base64 %%%"]}"#, "init_images"),
            ("/sdapi/v1/img2img", #"{"prompt":"x","init_images":["aGVsbG8gd29ybGQ="]}"#, "init_images"),
            ("/sdapi/v1/img2img", #"{"prompt":"x","init_images":[""# + truncated + #""]}"#, "init_images"),
            ("/sdapi/v1/img2img", #"{"prompt":"x","init_images":[""# + Data(huge).base64EncodedString() + #""]}"#, "init_images"),
            ("/sdapi/v1/img2img", #"{"prompt":"x","init_images":[]}"#, "init_images"),
            ("/sdapi/v1/img2img", #"{"prompt":"x","init_images":[7]}"#, "init_images"),
            ("/sdapi/v1/img2img", #"{"prompt":"x"}"#, "init_images"),
            ("/sdapi/v1/img2img", #"{"prompt":"x","width":64,"height":64,"init_images":[""# + image + #""]}"#, "init_images"),
            ("/sdapi/v1/img2img", #"{"prompt":"x","denoising_strength":1.5,"init_images":[""# + image + #""]}"#, "denoising_strength"),
            ("/sdapi/v1/img2img", #"{"prompt":"x","steps":2,"denoising_strength":0.2,"init_images":[""# + image + #""]}"#, "denoising_strength"),
            ("/api/jobs", #"{"prompt":"x","init_image":"data:image/png,abc"}"#, "init_image"),
            ("/api/jobs", #"{"prompt":"x","init_image":12}"#, "init_image"),
        ]
        try await app.test(.router) { client in
            for (uri, body, field) in cases {
                try await client.execute(uri: uri, method: .post, headers: ServerRouteTests.jsonType, body: ByteBuffer(string: body)) { r in
                    #expect(r.status == .badRequest, "\(uri) \(body.prefix(80)): \(r.status)")
                    #expect(Self.errorField(r.body) == field, "\(uri) \(body.prefix(80)): \(String(buffer: r.body))")
                }
            }
        }
        #expect(state.gallery.list(page: 0, perPage: 10).total == 0)
    }
}
