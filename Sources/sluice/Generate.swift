import ArgumentParser
import Foundation
import SluiceBackends
import SluiceCore
import SluiceMemory
import SluicePipelines

/// The memory options `generate`, `serve` and `plan --model` share.
struct MemoryFlags: ParsableArguments {
    @Option(help: "Device memory budget (e.g. 8G): weights go through the sluice — on the simulated device with --device cpu, in real buffers with --device vulkan (whose default budget is the device's heap); without it, the CPU runs everything from the mapped files.") var vramLimit: ByteSize?
    @Option(help: "Host RAM budget for weights, e.g. 16G.") var ramLimit: ByteSize?
    @Option(help: "Device profile whose modelled clock times the run and chooses the prefetch depth (a simulation, also on Vulkan): \(DeviceProfile.all.map(\.name).joined(separator: ", ")).") var profile = "rtx4090-24g"

    func options() throws -> MemoryOptions {
        guard let p = DeviceProfile.named(profile) else {
            throw CommandError(message: "--profile \(profile): unknown (\(DeviceProfile.all.map(\.name).joined(separator: ", ")))")
        }
        return MemoryOptions(deviceBudget: vramLimit?.bytes, hostBudget: ramLimit?.bytes, profile: p)
    }
}

struct Generate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Text to image. Loads from a diffusers folder or the Hugging Face cache; never downloads.")

    @Option(help: "A diffusers folder, or a repo id in the Hugging Face cache (e.g. Tongyi-MAI/Z-Image-Turbo).") var model: String
    @Option(help: "What to draw.") var prompt: String
    @Option(help: "What to steer away from (used when --guidance > 0).") var negativePrompt = ""
    @Option(help: "Seed: the same seed gives diffusers' torch.Generator(\"cpu\").manual_seed(seed) noise.") var seed: UInt64 = 42
    @Option(help: "Denoising steps (default: the model's; Z-Image-Turbo 8).") var steps: Int?
    @Option(help: "Image width in pixels (default: the model's; a multiple of its size step, 16 for Z-Image).") var width: Int?
    @Option(help: "Image height in pixels (default: the model's).") var height: Int?
    @Option(help: "Classifier-free guidance scale (default: the model's; Z-Image-Turbo 0, and CFG runs whenever it is > 0).") var guidance: Float?
    @OptionGroup var memory: MemoryFlags
    @Option(help: "Write the run's telemetry (docs/telemetry.md) as JSON here.") var report: String?
    @Option(help: "Compute device: cpu, vulkan or vulkan:N (see `sluice devices`; a discrete GPU is preferred; without a usable Vulkan device the CPU is used, with one line saying why).") var device = "cpu"
    @Option(help: "The PNG to write (atomically; generation parameters in its 'parameters' text chunk).") var out: String

    func run() throws {
        guard out.lowercased().hasSuffix(".png") else { throw CommandError(message: "--out \(out): must end in .png") }
        let memory = try self.memory.options()
        let started = Date()
        try withFlags {
            let pipe = try PipelineRegistry.shared.load(model: model, device: device)
            if let note = pipe.device.note { stderrLine(note) }
            let loaded = Date().timeIntervalSince(started)
            let request = pipe.request(prompt: prompt, negativePrompt: negativePrompt, seed: seed, steps: steps,
                                       width: width, height: height, guidance: guidance)
            try pipe.validate(request)
            let bar = ProgressBar()
            let result = try pipe.generate(request, memory: memory, progress: { bar.show($0) }, afterStep: { _, _ in }, isCancelled: { false })
            bar.finish()
            let params = PNGParameters.text(request, model: (model as NSString).lastPathComponent, sampler: pipe.sampler)
            try PNGWriter.write(result.image, to: out, text: [("parameters", params)])
            if let report { try result.report.write(to: report) }
            stderrLine(result.report.summary(loadSeconds: loaded, peakResidentBytes: HostMemory.peakResidentBytes()))
            stderrLine("wrote \(out)")
        }
    }
}

/// One line on stderr, redrawn: phase, step i/N, s/it, ETA.
final class ProgressBar {
    private var lastPhase: Phase?
    private let tty = isatty(2) != 0

    func show(_ p: GenerationProgress) {
        var line: String
        if p.phase == .denoise, p.step > 0 {
            let perStep = p.elapsed / Double(p.step)
            let eta = perStep * Double(p.total - p.step)
            let width = 24, filled = width * p.step / max(p.total, 1)
            line = "denoise [" + String(repeating: "=", count: filled) + String(repeating: " ", count: width - filled) + "] "
            line += "step \(p.step)/\(p.total)  \(String(format: "%.2f", perStep)) s/it  ETA \(String(format: "%.0f", eta)) s"
        } else {
            line = "\(p.phase.rawValue)…"
        }
        if tty {
            FileHandle.standardError.write(Data(("\r\u{1B}[K" + line).utf8))
        } else if p.phase != lastPhase || p.step == p.total {
            FileHandle.standardError.write(Data((line + "\n").utf8))
        }
        lastPhase = p.phase
    }

    func finish() { if tty { FileHandle.standardError.write(Data("\n".utf8)) } }
}
