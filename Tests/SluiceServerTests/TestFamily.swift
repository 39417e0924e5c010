import Foundation
import SluiceBackends
import SluiceCore
import SluiceMemory
import SluiceModels
import SluicePipelines
import SluiceTestSupport
import SluiceWeights

/// A family that exists only in this test target: "denoising" is a seeded walk of the latents toward a
/// prompt-dependent value, decoded by a real VAE through the same runner, planner and run machinery a
/// real family uses. It proves the server names no model: registered here, it runs through `Engine`
/// and the routes with no change to either.
final class NoiseDecoderPipeline: TextToImagePipeline, @unchecked Sendable {
    static let className = "TestNoiseDecoderPipeline"
    static let family = PipelineRegistry.Family(name: "Noise decoder (test)", pipelineClasses: [className],
                                                load: { folder, device in try NoiseDecoderPipeline(folder: folder, device: device) })

    let family = "Noise decoder (test)"
    let directory: String
    let device: ComputeDevice
    let vae: VAEDecoder
    let vaeRunner: ComponentRunner
    let components: PipelineComponents
    let loadSeconds: [(component: String, seconds: Double)] = []
    var defaults: PipelineDefaults {
        PipelineDefaults(steps: 3, guidance: 0, width: 64, height: 64, sizeMultiple: vae.config.scale, maxPromptTokens: 64)
    }
    let sampler = (name: "Walk", schedule: "Linear")
    let samplerAliases: Set<String> = ["", "walk"]

    init(folder: DiffusersFolder, device: ComputeDevice) throws {
        directory = folder.path
        self.device = device
        vae = VAEDecoder(config: try folder.config(AutoencoderKLConfig.self, "vae/config.json"))
        let v = vae
        vaeRunner = try ComponentRunner(name: "vae", phase: .decode, checkpoint: try ModelLocator.checkpoint(component: folder.folder("vae")),
                                        groupNames: v.groupNames, groupOf: { v.group(of: $0) })
        components = PipelineComponents([vaeRunner], device: device)
    }

    func validate(_ r: GenerationRequest) throws(SluiceError) { try validateCommon(r) }

    func descriptions() throws(SluiceError) -> [ComponentDescription] {
        let v = vae
        return [try vaeRunner.describe(activationBytes: { v.activationBytes(pixels: $0.width * $0.height) },
                                       rows: { Double($0.width * $0.height) / 4 }, tiling: v.tiling)]
    }

    func plan(_ r: GenerationRequest, memory: MemoryOptions) throws(SluiceError) -> Plan? {
        try validate(r)
        return try components.plan(descriptions(), workload: r.workload, memory: memory)
    }

    func generate(_ r: GenerationRequest, memory: MemoryOptions, progress: (GenerationProgress) -> Void,
                  afterStep: (Int, Tensor) -> Void, isCancelled: () -> Bool) throws -> GenerationResult {
        try validate(r)
        let run = try components.start(descriptions(), workload: r.workload, memory: memory)
        defer { run.end() }
        // The prompt's "embedding": a value per prompt.
        let target = try run.phase(.text) { () -> Float in
            progress(run.withDevice(GenerationProgress(phase: .text, step: 0, total: 1, elapsed: 0)))
            return Float(r.prompt.unicodeScalars.reduce(0) { ($0 &* 31 &+ Int($1.value)) % 1000 }) / 500 - 1
        }
        var generator = TorchGenerator(seed: r.seed)
        let latents = try generator.randn([1, vae.config.latentChannels, vae.latentSide(r.height), vae.latentSide(r.width)])
        try run.phase(.denoise) { () throws in
            for i in 0..<r.steps {
                if isCancelled() { throw SluiceError.cancelled(stage: "before step \(i + 1) of \(r.steps)") }
                for j in 0..<latents.count { latents.f32[j] += (target - latents.f32[j]) / Float(r.steps - i + 1) }
                afterStep(i, latents)
                progress(run.withDevice(GenerationProgress(phase: .denoise, step: i + 1, total: r.steps, elapsed: 0)))
            }
        }
        let tile = run.plan?.component(vaeRunner.name)?.tileLatent, v = vae, be = device.backend
        let image = try run.phase(.decode) { () throws -> Tensor in
            progress(run.withDevice(GenerationProgress(phase: .decode, step: 0, total: 1, elapsed: 0)))
            let decoded = try vaeRunner.run(v.unscale(latents)) { _, w, z in
                if let tile { return try v.decodeTiled(z, tileLatent: tile, w, be) }
                return try v.decode(z, w, be)
            }
            return try ImageOutput.fromDecoder(decoded)
        }
        return GenerationResult(image: image, latents: latents, report: run.complete())
    }

    /// A model folder for this family: its own model_index.json, the tiny fixture's VAE.
    static func folder() throws -> String {
        let dir = NSTemporaryDirectory() + "sluice-noise-decoder-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try #"{"_class_name": "\#(className)", "vae": ["diffusers", "AutoencoderKL"]}"#.write(toFile: dir + "/model_index.json", atomically: true, encoding: .utf8)
        try FileManager.default.createSymbolicLink(atPath: dir + "/vae", withDestinationPath: Fixtures.directory + "/models/z-image-tiny/vae")
        return dir
    }

    /// Registers the family once per test process.
    static let registered: Bool = {
        PipelineRegistry.shared.register(family)
        return true
    }()
}
