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
    @Option(help: "Device profile whose modelled clock times the run and chooses the prefetch depth — a simulation; it matters only with --vram-limit or a Vulkan device: \(DeviceProfile.all.map(\.name).joined(separator: ", ")).") var profile = "rtx4090-24g"

    /// `device` is where the run computes: --ram-limit needs a device budget to apply to (on the CPU
    /// without --vram-limit every weight is read in place from the mapped files), so alone it is refused.
    func options(device: String) throws -> MemoryOptions {
        guard let p = DeviceProfile.named(profile) else {
            throw CommandError(message: "--profile \(profile): unknown (\(DeviceProfile.all.map(\.name).joined(separator: ", ")))")
        }
        if ramLimit != nil, vramLimit == nil, device.lowercased() == "cpu" {
            throw CommandError(message: "--ram-limit applies to weights streamed under --vram-limit; without it the CPU reads every weight in place from the memory-mapped files")
        }
        return MemoryOptions(deviceBudget: vramLimit?.bytes, hostBudget: ramLimit?.bytes, profile: p)
    }
}

struct Generate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Text to image. Loads from a diffusers folder or the Hugging Face cache; never downloads.")

    @Option(name: [.customShort("m"), .long], help: "A diffusers folder, a repo id in the Hugging Face cache (e.g. Tongyi-MAI/Z-Image-Turbo), or an SD1.5/SDXL single-file checkpoint (.safetensors, AUTOMATIC1111/ComfyUI layout; see --config).") var model: String
    @Option(name: [.customShort("p"), .long], help: "What to draw.") var prompt: String
    @Option(name: [.customShort("n"), .long], help: "What to steer away from (Z-Image: used when the guidance is > 0; FLUX.1: with --true-cfg-scale > 1; Qwen-Image: true CFG runs only with one, even \" \").") var negativePrompt = ""
    @Option(name: [.customShort("s"), .long], parsing: .unconditional,
            help: "Seed; -1 (the default) draws one, printed and stored in the PNG. The same seed gives diffusers' torch.Generator(\"cpu\").manual_seed(seed) noise.") var seed: Int64 = -1
    @Option(parsing: .unconditional, help: "Denoising steps (default: the model's; Z-Image-Turbo 8).") var steps: Int?
    @Option(name: [.customShort("W"), .long], parsing: .unconditional, help: "Image width in pixels (default: the model's; a multiple of its size step, 16 for Z-Image).") var width: Int?
    @Option(name: [.customShort("H"), .long], parsing: .unconditional, help: "Image height in pixels (default: the model's).") var height: Int?
    @Option(name: [.customLong("guidance"), .customLong("cfg-scale")], parsing: .unconditional,
            help: "Guidance scale (default: the model's). Z-Image: classifier-free guidance, run whenever it is > 0 (Turbo's default 0). FLUX.1-dev: the embedded (distilled) guidance, default 3.5; schnell ignores it.") var guidance: Float?
    @Option(parsing: .unconditional, help: "FLUX.1: real classifier-free guidance with --negative-prompt when > 1 (diffusers' true_cfg_scale; two transformer calls a step). Default 1: off. Qwen-Image: its CFG scale (default 4, also --cfg-scale), with --negative-prompt.") var trueCfgScale: Float = 1
    @Option(parsing: .unconditional, help: "Text encoder length (diffusers' max_sequence_length): FLUX.1's T5 is padded to it and attends the padding, so it changes the image (default: dev 512, schnell 256); Z-Image's prompt cut-off (default 512).") var maxSequenceLength: Int?
    @Option(help: "Sampler, by AUTOMATIC1111's name (Stable Diffusion: Euler, \"Euler a\", \"DPM++ 2M\", \"DPM++ 2M Karras\", DDIM; default: the model's scheduler config). Flow-matching models (Z-Image, FLUX.1) have one: Euler.") var sampler: String?
    @Option(help: "Image to image: a PNG to start from (its size is the default --width/--height).") var initImage: String?
    @Option(parsing: .unconditional, help: "Image to image: how much of the schedule runs on the noised init image, in (0, 1] (diffusers' strength, AUTOMATIC1111's denoising strength).") var strength: Double = 0.8
    @Option(help: "What linear layers compute in: f32 (default; the image matches diffusers' f32 output) or bf16 (CPU with AVX512-BF16: operands rounded to bf16, sums in f32, as torch's bf16 matmul — faster, slightly different image).") var compute: DType = .f32
    @Option(help: "A single-file SD1.5/SDXL checkpoint's configs and tokenizers: a diffusers folder or a repo id in the Hugging Face cache (default: the base model's repository, e.g. stabilityai/stable-diffusion-xl-base-1.0, when cached).") var config: String?
    @Option(help: "A single .safetensors file whose weights replace the model's transformer (FLUX.1 finetunes such as majicflus, in Black Forest Labs' or diffusers' key layout, bf16 or fp8); the folder gives the config and everything else.") var transformer: String?
    @Option(parsing: .unconditional, help: "Images to make, with seeds seed, seed+1, … (written as NAME-1.png, NAME-2.png, …).") var count = 1
    @OptionGroup var memory: MemoryFlags
    @Option(help: "Write the run's telemetry (docs/telemetry.md) as JSON here.") var report: String?
    @Option(help: "Compute device: cpu, vulkan or vulkan:N (see `sluice devices`; a discrete GPU is preferred; plain vulkan falls back to the CPU with one line saying why, a numbered device that cannot be used is an error).") var device = "cpu"
    @Option(name: [.customShort("o"), .long], help: "The PNG to write (atomically; generation parameters in its 'parameters' text chunk). Default: the next free sluice-NNNNN.png here.") var out: String?

    func validate() throws {
        guard seed >= -1 else { throw ValidationError("--seed must be -1 (random) or a number from 0 to 2^63-1") }
        guard (1...64).contains(count) else { throw ValidationError("--count must be 1…64") }
    }

    func run() throws {
        if let out, !out.lowercased().hasSuffix(".png") { throw CommandError(message: "--out \(out): must end in .png") }
        // Where results go is checked before anything loads: a real model takes minutes to get there.
        if let out { try OutputPaths.checkWritable(out, flag: "--out") } else { try OutputPaths.checkWritable("./x.png", flag: "--out") }
        if let report { try OutputPaths.checkWritable(report, flag: "--report") }
        let memory = try self.memory.options(device: device)
        let seed = self.seed < 0 ? UInt64.random(in: 0...UInt64(UInt32.max)) : UInt64(self.seed)
        let started = Date()
        try withFlags {
            let pipe = try PipelineRegistry.shared.load(model: model, device: device, transformer: transformer, compute: compute, config: config)
            if let note = pipe.device.note { stderrLine(note) }
            stderrLine("computing on \(pipe.device.description)")
            let loaded = Date().timeIntervalSince(started)
            let initial = try initImage.map { path throws -> InitImage in
                do { return try InitImage(path: path) } catch { throw CommandError(message: "--init-image \(path): \(error)") }
            }
            var request = pipe.request(prompt: prompt, negativePrompt: negativePrompt, seed: seed, steps: steps,
                                       width: width ?? initial?.width, height: height ?? initial?.height, guidance: guidance)
            request.trueCFGScale = trueCfgScale
            request.maxSequenceLength = maxSequenceLength
            request.sampler = sampler
            request.initImage = initial
            request.strength = strength
            try pipe.validate(request)
            for w in pipe.warnings(request) { stderrLine("warning: " + w) }
            for i in 1...count {
                request.seed = seed &+ UInt64(i - 1)
                stderrLine("seed \(request.seed)" + (count > 1 ? " (image \(i) of \(count))" : ""))
                let bar = ProgressBar()
                let result = try pipe.generate(request, memory: memory, progress: { bar.show($0) }, afterStep: { _, _ in }, isCancelled: { false })
                bar.finish()
                let params = PNGParameters.text(request, model: (model as NSString).lastPathComponent, sampler: pipe.sampler(for: request))
                let path = out.map { OutputPaths.numbered($0, i, of: count) } ?? OutputPaths.nextNumbered()
                try PNGWriter.write(result.image, to: path, text: [("parameters", params)])
                if let report { try result.report.write(to: OutputPaths.numbered(report, i, of: count)) }
                stderrLine(result.report.summary(loadSeconds: loaded, peakResidentBytes: HostMemory.peakResidentBytes()))
                stderrLine("wrote \(path)")
            }
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
