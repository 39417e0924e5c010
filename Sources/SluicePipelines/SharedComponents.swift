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
