import Foundation
import SluiceBackends
import SluiceCore
import SluiceMemory
import SluiceModels
import SluiceWeights

/// Seconds each component took to open, as `TextToImagePipeline.loadSeconds` reports them.
struct LoadClock {
    private var clock = Date()
    private(set) var laps: [(component: String, seconds: Double)] = []

    mutating func lap(_ name: String) {
        laps.append((name, Date().timeIntervalSince(clock)))
        clock = Date()
    }
}

/// The FLUX VAE both flow-matching families share: its decoder and its runner (decode phase), the
/// weights checked at load.
struct VAEComponent {
    let decoder: VAEDecoder
    let runner: ComponentRunner

    /// The folder's VAE, its weights from `checkpoint` where given (a single file's).
    init(_ folder: DiffusersFolder, checkpoint: Checkpoint? = nil) throws {
        decoder = VAEDecoder(config: try folder.config(AutoencoderKLConfig.self, "vae/config.json"))
        let v = decoder
        runner = try ComponentRunner(name: "vae", phase: .decode, checkpoint: checkpoint ?? ModelLocator.checkpoint(component: folder.folder("vae")),
                                     groupNames: v.groupNames, groupOf: { v.group(of: $0) })
        try decoder.checkWeights(try runner.execGroups()[0].tensors.map(\.key), file: folder.path + "/vae")
    }

    /// The decode phase of `run`: latents [1, C, H, W] as the denoiser left them → the image [3, H·s, W·s]
    /// in [0, 1], in tiles when the plan chose a tile size.
    func decode(_ latents: Tensor, run: PipelineRun, on backend: any Backend, progress: (GenerationProgress) -> Void) throws -> Tensor {
        let tile = run.plan?.component(runner.name)?.tileLatent, v = decoder
        return try run.phase(.decode) { () throws -> Tensor in
            progress(run.withDevice(GenerationProgress(phase: .decode, step: 0, total: 1, elapsed: 0)))
            let decoded = try runner.run(v.unscale(latents)) { _, w, z in
                if let tile { return try v.decodeTiled(z, tileLatent: tile, w, backend) }
                return try v.decode(z, w, backend)
            }
            return try ImageOutput.fromDecoder(decoded)
        }
    }
}

/// The VAE's encoder half, for image to image: its own runner on the VAE's weights, in the text phase
/// (it runs before denoising and, under a tight plan, leaves the device with the text encoders). For a
/// request without an init image it reserves no activations.
struct VAEEncoderComponent {
    let encoder: VAEEncoder
    let runner: ComponentRunner

    init(config: AutoencoderKLConfig, checkpoint: Checkpoint) throws {
        encoder = VAEEncoder(config: config)
        runner = try ComponentRunner(name: "vae_encoder", phase: .text, checkpoint: checkpoint, groupNames: ["encoder"],
                                     groupOf: { $0.hasPrefix("encoder.") || $0.hasPrefix("quant_conv.") ? "encoder" : nil })
    }

    /// The folder's VAE encoder; nil when its file holds only the decoder (no image to image then).
    static func optional(_ folder: DiffusersFolder) throws -> VAEEncoderComponent? {
        let checkpoint = try ModelLocator.checkpoint(component: folder.folder("vae"))
        guard checkpoint.names.contains(where: { $0.hasPrefix("encoder.") }) else { return nil }
        return try VAEEncoderComponent(config: try folder.config(AutoencoderKLConfig.self, "vae/config.json"), checkpoint: checkpoint)
    }

    func describe(_ r: GenerationRequest) throws(SluiceError) -> ComponentDescription {
        let e = encoder, encodes = r.initImage != nil
        // The encoder's activations are about the decoder's at the same size (mirror-image blocks).
        // Under a budget too small for the whole image it encodes in tiles, as the decoder decodes.
        let decoder = VAEDecoder(config: e.config)
        return try runner.describe(activationBytes: { w in encodes ? decoder.activationBytes(pixels: w.width * w.height) * w.batch : 0 },
                                   rows: { w in Double(w.width * w.height) / 4 }, tiling: encodes ? decoder.tiling : nil)
    }

    /// A sample of the image's latent distribution, z = mean + exp(logvar / 2) · noise with the noise from
    /// `generator` (diffusers' retrieve_latents(sample_mode="sample")), before any scale or shift.
    func sample(_ image: InitImage, generator: inout TorchGenerator, run: PipelineRun, on be: any Backend) throws -> Tensor {
        let e = encoder, tile = run.plan?.component(runner.name)?.tileLatent
        return try Self.sample(image, runner: runner, generator: &generator, run: run, on: be) { x, w in
            try tile.map { t throws(SluiceError) in try e.encodeMomentsTiled(x, tileLatent: t, w, be) } ?? e.encodeMoments(x, w, be)
        }
    }

    /// The encoder's phase of a run for any VAE: `moments` on the image through `runner`, then a sample
    /// with the run's generator; the runner is marked finished.
    static func sample(_ image: InitImage, runner: ComponentRunner, generator: inout TorchGenerator, run: PipelineRun, on be: any Backend,
                       moments: (Tensor, ModuleWeights) throws -> (mean: Tensor, logvar: Tensor)) throws -> Tensor {
        // The runner passes one tensor from group to group: mean and log-variance side by side.
        let both = try runner.run(image.tensor) { _, w, x in
            let m = try moments(x, w)
            return try be.concat([m.mean, m.logvar], dim: 1)
        }
        let c = both.shape[1] / 2
        let z = try sample(mean: both.sliced(dim: 1, 0..<c), logvar: both.sliced(dim: 1, c..<(2 * c)), generator: &generator)
        run.finished(component: runner.name)
        return z
    }

    /// z = mean + exp(logvar / 2) · noise, the noise from `generator` in the mean's shape (diffusers'
    /// DiagonalGaussianDistribution.sample).
    static func sample(mean: Tensor, logvar: Tensor, generator: inout TorchGenerator) throws -> Tensor {
        let m = try mean.contiguous().toFloats(), l = try logvar.contiguous().toFloats()
        let noise = try generator.randn(mean.shape).toFloats()
        var z = [Float](repeating: 0, count: m.count)
        for i in z.indices {
            let std: Float = Foundation.exp(0.5 * l[i])
            z[i] = m[i] + std * noise[i]
        }
        return Tensor(z, shape: mean.shape)
    }
}

/// Image to image for the flow-matching families, as diffusers' FluxImg2ImgPipeline and
/// ZImageImg2ImgPipeline do it: the schedule is the text-to-image one, entered at
/// `ImageToImageStart.flowMatching`, from σ·noise + (1 − σ)·(z − shift)·scale at that step's σ
/// (scale_noise).
enum FlowMatchImageToImage {
    static func noised(_ z: Tensor, noise: Tensor, sigma: Float, vae: AutoencoderKLConfig) throws(SluiceError) -> Tensor {
        try noised(z, noise: noise, sigma: sigma) { x, _ in (x - vae.shiftFactor) * vae.scalingFactor }
    }

    /// σ·noise + (1 − σ)·normalise(z) elementwise; `normalise` gets the value and its flat index.
    static func noised(_ z: Tensor, noise: Tensor, sigma: Float, normalise: (Float, Int) -> Float) throws(SluiceError) -> Tensor {
        let x = try z.toFloats(), e = try noise.toFloats()
        guard x.count == e.count else { throw .shapeMismatch(operation: "image to image", expected: "\(z.shape)", found: "\(noise.shape)") }
        var out = [Float](repeating: 0, count: x.count)
        for i in out.indices { out[i] = sigma * e[i] + (1 - sigma) * normalise(x[i], i) }
        return Tensor(out, shape: noise.shape)
    }
}
