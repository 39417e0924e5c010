import ArgumentParser
import Foundation
import SluiceBackends
import SluiceCore
import SluiceMemory
import SluicePipelines
import SluiceWeights

struct Generate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Text to image (Z-Image-Turbo). Loads from a diffusers folder or the Hugging Face cache; never downloads.")

    @Option(help: "A diffusers folder, or a repo id in the Hugging Face cache (e.g. Tongyi-MAI/Z-Image-Turbo).") var model: String
    @Option(help: "What to draw.") var prompt: String
    @Option(help: "What to steer away from (used when --guidance > 0).") var negativePrompt = ""
    @Option(help: "Seed: the same seed gives diffusers' torch.Generator(\"cpu\").manual_seed(seed) noise.") var seed: UInt64 = 42
    @Option(help: "Denoising steps (Turbo: 8).") var steps = ZImagePipeline.defaultSteps
    @Option(help: "Image width in pixels (a multiple of 16 for real models).") var width = 1024
    @Option(help: "Image height in pixels.") var height = 1024
    @Option(help: "Classifier-free guidance scale; on whenever > 0 (Turbo: 0).") var guidance: Float = ZImagePipeline.defaultGuidance
    @Option(help: "Device memory budget (e.g. 8G): weights go through the sluice — on the simulated device with --device cpu, in real buffers with --device vulkan (whose default budget is the device's heap); without it, the CPU runs everything from the mapped files.") var vramLimit: ByteSize?
    @Option(help: "Host RAM budget for weights, e.g. 16G.") var ramLimit: ByteSize?
    @Option(help: "Device profile whose modelled clock times the run (a simulation, also on Vulkan): \(DeviceProfile.all.map(\.name).joined(separator: ", ")).") var profile = "rtx4090-24g"
    @Option(help: "Write the run's telemetry (docs/telemetry.md) as JSON here.") var report: String?
    @Option(help: "Compute device: cpu, vulkan or vulkan:N (see `sluice devices`; a discrete GPU is preferred; without a usable Vulkan device the CPU is used, with one line saying why).") var device = "cpu"
    @Option(help: "The PNG to write (atomically; generation parameters in its 'parameters' text chunk).") var out: String

    func run() throws {
        guard out.lowercased().hasSuffix(".png") else { throw CommandError(message: "--out \(out): must end in .png") }
        guard let deviceProfile = DeviceProfile.named(profile) else { throw CommandError(message: "--profile \(profile): unknown (\(DeviceProfile.all.map(\.name).joined(separator: ", ")))") }
        let started = Date()
        let dir = try ModelLocator.resolve(model)
        let pipe = try ZImagePipeline(directory: dir, device: device)
        if let note = pipe.deviceNote { FileHandle.standardError.write(Data((note + "\n").utf8)) }
        let loaded = Date().timeIntervalSince(started)
        let request = GenerationRequest(prompt: prompt, negativePrompt: negativePrompt, seed: seed, steps: steps,
                                        width: width, height: height, guidance: guidance)
        try pipe.validate(request)
        let memory = MemoryOptions(deviceBudget: vramLimit?.bytes, hostBudget: ramLimit?.bytes, profile: deviceProfile)
        let bar = ProgressBar()
        let result = try pipe.generate(request, memory: memory, progress: { bar.show($0) })
        bar.finish()
        let name = (model as NSString).lastPathComponent
        let params = PNGParameters.text(request, model: name, shift: pipe.schedulerConfig.shift)
        try PNGWriter.write(result.image, to: out, text: [("parameters", params)])
        if let report, let r = result.report { try r.write(to: report) }
        else if let report { try CPUReport(phases: result.phases).write(to: report) }
        printSummary(result, loadSeconds: loaded)
        FileHandle.standardError.write(Data("wrote \(out)\n".utf8))
    }

    func printSummary(_ r: GenerationResult, loadSeconds: Double) {
        var lines = ["load \(String(format: "%.2f", loadSeconds)) s"]
        for p in r.phases {
            var s = "\(p.phase) \(String(format: "%.2f", p.wallSeconds)) s"
            if p.realDeviceMemory {
                s += " (device peak \(formatBytes(p.peakDeviceBytes)) of Vulkan buffers, \(formatBytes(p.bytesHostToDevice)) copied in; modelled clock \(String(format: "%.3f", p.modelledSeconds)) s SIMULATED)"
            } else if p.simulated {
                s += " (device peak \(formatBytes(p.peakDeviceBytes)), \(formatBytes(p.bytesHostToDevice)) uploaded, modelled \(String(format: "%.3f", p.modelledSeconds)) s SIMULATED)"
            }
            lines.append(s)
        }
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        lines.append("peak RSS \(formatBytes(usage.ru_maxrss * 1024))")
        if let t = r.vaeTileLatent { lines.append("VAE tiled (\(t)-latent tiles) to fit the budget") }
        FileHandle.standardError.write(Data((lines.joined(separator: " · ") + "\n").utf8))
    }
}

/// The report of a run without a device: phases only.
struct CPUReport: Encodable {
    let schema = "sluice.report/1"
    let device = "cpu"
    let phases: [PhaseReport]
    func write(to path: String) throws {
        let e = JSONEncoder()
        e.outputFormatting = [.prettyPrinted, .sortedKeys]
        try e.encode(self).write(to: URL(fileURLWithPath: path), options: .atomic)
    }
}


/// One line on stderr, redrawn: phase, step i/N, s/it, ETA.
final class ProgressBar {
    private var lastPhase = ""
    private let tty = isatty(2) != 0

    func show(_ p: SluicePipelines.Progress) {
        var line: String
        if p.phase == "denoise", p.step > 0 {
            let perStep = p.elapsed / Double(p.step)
            let eta = perStep * Double(p.total - p.step)
            let width = 24, filled = width * p.step / max(p.total, 1)
            line = "denoise [" + String(repeating: "=", count: filled) + String(repeating: " ", count: width - filled) + "] "
            line += "step \(p.step)/\(p.total)  \(String(format: "%.2f", perStep)) s/it  ETA \(String(format: "%.0f", eta)) s"
        } else {
            line = "\(p.phase)…"
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

struct Models: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List the models in the Hugging Face cache: components present or missing, files, size.")
    @Option(help: "Cache folder (default: $HF_HUB_CACHE, $HF_HOME/hub or ~/.cache/huggingface/hub).") var cache: String?
    @Flag(help: "Print JSON.") var json = false

    func run() throws {
        let dir = cache ?? ModelLocator.hubCache()
        let models = HubCacheScanner.scan(cache: dir)
        if json {
            let e = JSONEncoder()
            e.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try e.encode(models), as: UTF8.self))
            return
        }
        if models.isEmpty { print("no models in \(dir)"); return }
        for m in models {
            print("\(m.id)  rev \(m.revision.map { String($0.prefix(12)) } ?? "-")  \(m.pipeline ?? "no model_index.json")  \(m.fileCount) files  \(formatBytes(m.bytes))")
            if !m.present.isEmpty { print("    present: \(m.present.joined(separator: ", "))") }
            if !m.missing.isEmpty { print("    MISSING: \(m.missing.joined(separator: ", "))") }
            for p in m.problems { print("    problem: \(p)") }
        }
    }
}
