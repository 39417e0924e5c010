import Foundation
import Hummingbird
import NIOCore
import SluicePipelines

/// OpenAI's images API: `POST /v1/images/generations` (prompt, n, size, response_format b64_json|url;
/// other fields ignored). Synchronous: it answers when the images are done.
enum OpenAIRoutes {
    static func add(to router: Router<BasicRequestContext>, _ state: ServerState) {
        let limit = state.options.maxBodyBytes
        router.post("/v1/images/generations") { request, _ in
            await Routes.handle {
                var request = request
                let (q, engine) = try Routes.ready(state)
                let fields = try ParameterParser.object(try await Routes.body(&request, limit: limit))
                let (p, base64) = try Routes.parser(fields, engine).openAI()
                let job = try await Routes.run(p, on: q)
                let host = request.head.authority ?? "\(state.options.host):\(state.options.port)"
                let data: [[String: Any]] = job.results.map { gid in
                    if base64 { return ["b64_json": state.gallery.png(gid)?.base64EncodedString() ?? "", "revised_prompt": p.prompt] }
                    return ["url": "http://\(host)/api/gallery/\(gid).png", "revised_prompt": p.prompt]
                }
                return Routes.json(["created": Int(job.submitted), "data": data])
            }
        }
    }
}

/// AUTOMATIC1111's web API, the parts image clients use: txt2img, progress, interrupt, sd-models, options.
enum Automatic1111Routes {
    static func add(to router: Router<BasicRequestContext>, _ state: ServerState) {
        let limit = state.options.maxBodyBytes
        router.post("/sdapi/v1/txt2img") { request, _ in
            await Routes.handle {
                var request = request
                let (q, engine) = try Routes.ready(state)
                let fields = try ParameterParser.object(try await Routes.body(&request, limit: limit))
                let p = try Routes.parser(fields, engine).automatic1111()
                let job = try await Routes.run(p, on: q)
                let images = job.results.compactMap { state.gallery.png($0)?.base64EncodedString() }
                let seeds = (0..<p.count).map { Int(p.seed &+ UInt64($0)) }
                let parameters: [String: Any] = [
                    "prompt": p.prompt, "negative_prompt": p.negativePrompt, "seed": Int(p.seed), "steps": p.steps,
                    "width": p.width, "height": p.height, "cfg_scale": Double(p.guidance), "sampler_name": engine.pipeline.sampler.name,
                    "batch_size": p.count, "n_iter": 1,
                ]
                var info = parameters
                info["all_prompts"] = Array(repeating: p.prompt, count: p.count)
                info["all_seeds"] = seeds
                info["sd_model_name"] = engine.modelName
                info["infotexts"] = seeds.map { seed -> String in
                    var r = p.request
                    r.seed = UInt64(seed)
                    return PNGParameters.text(r, model: engine.modelName, sampler: engine.pipeline.sampler)
                }
                let infoText = String(decoding: (try? JSONSerialization.data(withJSONObject: info, options: [.sortedKeys])) ?? Data(), as: UTF8.self)
                return Routes.json(["images": images, "parameters": parameters, "info": infoText])
            }
        }
        router.get("/sdapi/v1/progress") { _, _ in
            await Routes.handle {
                let (q, _) = try Routes.ready(state)
                let current = await q.current
                let event = current?.last
                let steps = max(event?.steps ?? 0, 1), images = max(event?.images ?? 1, 1)
                let done = Double((max(event?.image ?? 1, 1) - 1) * steps + (event?.step ?? 0))
                let progress = current == nil ? 0.0 : done / Double(steps * images)
                let stateObj: [String: Any] = [
                    "skipped": false, "interrupted": false, "job": current?.id ?? "", "job_count": await q.length,
                    "job_timestamp": current.map { String(Int($0.submitted)) } ?? "0", "job_no": 0,
                    "sampling_step": event?.step ?? 0, "sampling_steps": event?.steps ?? 0,
                ]
                return Routes.json(["progress": progress, "eta_relative": event?.etaSeconds ?? 0, "state": stateObj,
                                    "current_image": event?.preview.map { $0 as Any } ?? NSNull(), "textinfo": NSNull()])
            }
        }
        router.post("/sdapi/v1/interrupt") { _, _ in
            await Routes.handle {
                let (q, _) = try Routes.ready(state)
                if let cur = await q.current { _ = await q.cancel(cur.id) }
                return Routes.json([:] as [String: Any])
            }
        }
        router.get("/sdapi/v1/sd-models") { _, _ in
            await Routes.handle {
                let (_, engine) = try Routes.ready(state)
                return Routes.json([["title": engine.modelName, "model_name": engine.modelName, "hash": NSNull(), "sha256": NSNull(),
                                     "filename": engine.pipeline.directory, "config": NSNull()]])
            }
        }
        router.get("/sdapi/v1/options") { _, _ in
            await Routes.handle {
                let (_, engine) = try Routes.ready(state)
                return Routes.json(["sd_model_checkpoint": engine.modelName, "samples_format": "png",
                                    "sd_checkpoint_hash": NSNull(), "CLIP_stop_at_last_layers": 1])
            }
        }
    }
}
