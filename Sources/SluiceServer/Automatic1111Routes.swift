import Foundation
import Hummingbird
import SluiceCore
import SluicePipelines

/// AUTOMATIC1111's web API, the parts image clients use: txt2img, img2img, progress, interrupt,
/// sd-models, samplers, options. Its JSON names are its own (snake_case, and one capitalised key),
/// spelled out here.
enum Automatic1111Routes {
    /// img2img's answer adds denoising_strength, and init_images as null (A1111 leaves them out unless
    /// asked: they are the request's own).
    struct Parameters: Encodable {
        let prompt: String, negative_prompt: String, seed: Int, steps: Int, width: Int, height: Int
        let cfg_scale: Double, sampler_name: String, batch_size: Int, n_iter: Int
        var denoising_strength: Double?, init_images: Nullable<[String]>?
    }
    struct Info: Encodable {
        let prompt: String, negative_prompt: String, seed: Int, steps: Int, width: Int, height: Int
        let cfg_scale: Double, sampler_name: String, batch_size: Int, n_iter: Int
        let all_prompts: [String], all_seeds: [Int], sd_model_name: String, infotexts: [String]
        var denoising_strength: Double?
    }
    struct Txt2Img: Encodable { let images: [String]; let parameters: Parameters; let info: String }
    struct ProgressState: Encodable {
        let skipped: Bool, interrupted: Bool, job: String, job_count: Int, job_timestamp: String, job_no: Int
        let sampling_step: Int, sampling_steps: Int
    }
    struct Progress: Encodable {
        let progress: Double, eta_relative: Double, state: ProgressState
        let current_image: Nullable<String>, textinfo: Nullable<String>
    }
    struct Model: Encodable {
        let title: String, model_name: String, hash: Nullable<String>, sha256: Nullable<String>, filename: String, config: Nullable<String>
    }
    struct Options: Encodable {
        let sd_model_checkpoint: String, samples_format: String, sd_checkpoint_hash: Nullable<String>, CLIP_stop_at_last_layers: Int
    }
    struct Empty: Encodable {}
    struct Sampler: Encodable { let name: String; let aliases: [String]; let options: [String: String] }
    struct Scheduler: Encodable { let name: String; let label: String; let aliases: Nullable<[String]>; let default_rho: Double; let need_inner_model: Bool }

    static func json<T: Encodable>(_ value: T) -> Response { Routes.json(value, snakeCase: false) }

    /// txt2img and img2img: the job runs to its end, and the answer carries the images as base64
    /// PNGs with A1111's parameters and info (infotexts as the PNGs' own).
    static func generate(_ request: Request, _ context: SluiceRequestContext, _ state: ServerState, imageToImage: Bool) async throws -> Response {
        var request = request
        let (q, engine) = try Routes.ready(state)
        // Before the body is read: an image-sized body is only taken by a model that can use it.
        if imageToImage && !engine.pipeline.supportsImageToImage {
            throw RequestError(field: "init_images", reason: "this model (\(engine.pipeline.family)) does not take an init image (no image to image)")
        }
        let p = try await Routes.parser(&request, state, engine, images: imageToImage).automatic1111(imageToImage: imageToImage)
        try Routes.validate(p, engine, fields: [.sampler: "sampler_name", .initImage: "init_images", .strength: "denoising_strength", .guidance: "cfg_scale"])
        let job = try await Routes.run(p, on: q, client: Routes.client(context))
        let images = job.results.compactMap { state.gallery.png($0)?.base64EncodedString() }
        let seeds = (0..<p.count).map { Int(p.seed &+ UInt64($0)) }
        let sampler = engine.pipeline.sampler(for: p.request)
        let infotexts = seeds.map { seed -> String in
            var r = p.request
            r.seed = UInt64(seed)
            return PNGParameters.text(r, model: engine.modelName, sampler: sampler)
        }
        let strength = p.strength.map { Double($0) }
        var info = Info(prompt: p.prompt, negative_prompt: p.negativePrompt, seed: Int(p.seed), steps: p.steps, width: p.width,
                        height: p.height, cfg_scale: Double(p.guidance), sampler_name: sampler.name, batch_size: p.count, n_iter: 1,
                        all_prompts: Array(repeating: p.prompt, count: p.count), all_seeds: seeds, sd_model_name: engine.modelName,
                        infotexts: infotexts)
        info.denoising_strength = strength
        var parameters = Parameters(prompt: p.prompt, negative_prompt: p.negativePrompt, seed: Int(p.seed), steps: p.steps,
                                    width: p.width, height: p.height, cfg_scale: Double(p.guidance), sampler_name: sampler.name,
                                    batch_size: p.count, n_iter: 1)
        if imageToImage {
            parameters.denoising_strength = strength
            parameters.init_images = Nullable(nil)
        }
        return json(Txt2Img(images: images, parameters: parameters, info: String(decoding: Routes.encode(info, snakeCase: false), as: UTF8.self)))
    }

    static func collection(_ state: ServerState) -> RouteCollection<SluiceRequestContext> {
        let routes = RouteCollection(context: SluiceRequestContext.self)
        routes.post("txt2img") { request, context in
            await Routes.handle { try await generate(request, context, state, imageToImage: false) }
        }
        routes.post("img2img") { request, context in
            await Routes.handle { try await generate(request, context, state, imageToImage: true) }
        }
        routes.get("progress") { _, _ in
            await Routes.handle {
                let (q, _) = try Routes.ready(state)
                let current = await q.current
                let event = current?.last
                let steps = max(event?.steps ?? 0, 1), images = max(event?.images ?? 1, 1)
                let done = Double((max(event?.image ?? 1, 1) - 1) * steps + (event?.step ?? 0))
                let s = ProgressState(skipped: false, interrupted: false, job: current?.id ?? "", job_count: await q.length,
                                      job_timestamp: current.map { String(Int($0.submitted)) } ?? "0", job_no: 0,
                                      sampling_step: event?.step ?? 0, sampling_steps: event?.steps ?? 0)
                return json(Progress(progress: current == nil ? 0 : done / Double(steps * images), eta_relative: event?.etaSeconds ?? 0,
                                     state: s, current_image: Nullable(current?.latestPreview), textinfo: Nullable(nil)))
            }
        }
        routes.post("interrupt") { _, _ in
            await Routes.handle {
                let (q, _) = try Routes.ready(state)
                if let cur = await q.current { _ = await q.cancel(cur.id) }
                return json(Empty())
            }
        }
        routes.get("sd-models") { request, _ in
            await Routes.handle {
                let (_, engine) = try Routes.ready(state)
                // The model's folder only to a caller who proved the key; others see its name.
                let auth = AuthMiddleware<SluiceRequestContext>(apiKey: state.options.apiKey, sessions: state.sessions)
                let filename = auth.isAuthenticated(request) ? engine.pipeline.directory : engine.modelName
                return json([Model(title: engine.modelName, model_name: engine.modelName, hash: Nullable(nil), sha256: Nullable(nil),
                                   filename: filename, config: Nullable(nil))])
            }
        }
        routes.get("samplers") { _, _ in
            await Routes.handle {
                let (_, engine) = try Routes.ready(state)
                let pipeline = engine.pipeline, model = ModelAbilities(pipeline)
                // Each alias under the sampler it means ("" and "default" are no sampler's name).
                var aliases: [String: [String]] = [:]
                for alias in pipeline.samplerAliases.sorted() where !alias.isEmpty && alias != "default" {
                    let name = model.canonicalSampler(alias)
                    if alias != name.lowercased() { aliases[name, default: []].append(alias) }
                }
                return json(pipeline.samplerNames.map { Sampler(name: $0, aliases: aliases[$0] ?? [], options: [:]) })
            }
        }
        routes.get("schedulers") { _, _ in
            await Routes.handle {
                let (_, engine) = try Routes.ready(state)
                let schedule = engine.pipeline.sampler.schedule
                return json([Scheduler(name: "automatic", label: schedule, aliases: Nullable(nil), default_rho: -1, need_inner_model: false)])
            }
        }
        routes.get("options") { _, _ in
            await Routes.handle {
                let (_, engine) = try Routes.ready(state)
                return json(Options(sd_model_checkpoint: engine.modelName, samples_format: "png", sd_checkpoint_hash: Nullable(nil),
                                    CLIP_stop_at_last_layers: 1))
            }
        }
        return routes
    }
}
