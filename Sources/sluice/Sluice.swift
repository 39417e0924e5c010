import ArgumentParser
import Foundation
import SluiceBackends
import SluiceBench
import SluiceCore
import SluiceMemory

@main
struct Sluice: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sluice",
        abstract: "Diffusion image generation for models larger than your device's memory.",
        subcommands: [Generate.self, Serve.self, Models.self, Devices.self, Bench.self, PlanCommand.self, Info.self]
    )
}

/// Parses a dtype as users type it (`fp8`, `bf16`, …).
extension DType: ExpressibleByArgument {
    public init?(argument: String) { self.init(userName: argument) }
}

struct Info: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show the CPU kernel paths this machine supports.")
    func run() throws {
        print("kernel paths supported: \(KernelPath.supported.map(\.rawValue).joined(separator: ", "))")
        print("avx512bf16: \(KernelPath.hasAVX512BF16 ? "yes" : "no")")
        print("selected: \(try KernelPath.fromEnvironment().rawValue) (SLUICE_KERNELS overrides)")
        print("cores: \(CPUBackend.coreCount)")
    }
}

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure Sluice against a reference implementation in the same run (JSON out).",
        subcommands: [Gemm.self, Attention.self, Conv2d.self, Offload.self, DiskTier.self, ZImageBlock.self]
    )
}

struct BenchOutput: ParsableArguments {
    @Option(help: "Write the result as JSON here.") var json: String?
    @Option(help: "Threads (default: every core).") var threads: Int?

    func finish(_ result: [String: Any]) throws {
        let data = try JSONSerialization.data(withJSONObject: result, options: [.prettyPrinted, .sortedKeys])
        if let json {
            try writeJSON(result, to: json)
            FileHandle.standardError.write(Data("wrote \(json)\n".utf8))
        }
        print(String(decoding: data, as: UTF8.self))
    }

    var threadCount: Int { threads ?? CPUBackend.coreCount }

    func validate() throws {
        if let threads, threads < 1 { throw ValidationError("--threads must be at least 1") }
    }
}

func stderrLine(_ s: String) { FileHandle.standardError.write(Data((s + "\n").utf8)) }

extension Bench {
    struct Gemm: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Square matmul: Sluice vs numpy (OpenBLAS).")
        @Option(help: "Matrix size N (N×N · N×N).") var size = 2048
        @Option(help: "Weight storage dtype: f32, bf16, f16, f8e4m3fn.") var dtype: DType = .f32
        @Option(help: "Rounds (each times Sluice then the reference).") var rounds = 5
        @OptionGroup var output: BenchOutput

        func validate() throws {
            guard size >= 1 && size <= 16384 else { throw ValidationError("--size must be in 1...16384") }
            guard dtype.isFloatStorage else { throw ValidationError("--dtype must be a float storage type") }
        }

        func run() throws {
            try output.finish(try GemmBench(size: size, threads: output.threadCount, dtype: dtype, rounds: rounds).run(progress: stderrLine))
        }
    }

    struct Attention: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Self-attention: Sluice vs torch scaled_dot_product_attention.")
        @Option(help: "Sequence length.") var seq = 4096
        @Option(help: "Heads.") var heads = 24
        @Option(help: "Head dimension.") var headDim = 128
        @Option(help: "Rounds.") var rounds = 3
        @OptionGroup var output: BenchOutput

        func validate() throws {
            guard seq >= 1, heads >= 1, headDim >= 1, seq * heads * headDim <= 1 << 28 else {
                throw ValidationError("--seq, --heads, --head-dim must be positive, with seq·heads·head-dim ≤ 2^28")
            }
        }

        func run() throws {
            try output.finish(try AttentionBench(seq: seq, heads: heads, headDim: headDim, threads: output.threadCount, rounds: rounds).run(progress: stderrLine))
        }
    }

    struct Conv2d: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "3×3 convolution: Sluice vs torch conv2d.")
        @Option(help: "Input channels.") var channels = 256
        @Option(help: "Output channels (default: same as input).") var outChannels: Int?
        @Option(help: "Spatial size (H = W).") var size = 128
        @Option(help: "Kernel size.") var kernel = 3
        @Option(help: "Weight storage dtype.") var dtype: DType = .f32
        @Option(help: "Rounds.") var rounds = 3
        @OptionGroup var output: BenchOutput

        func validate() throws {
            guard channels >= 1, size >= 1, kernel >= 1, kernel <= size, (outChannels ?? 1) >= 1 else {
                throw ValidationError("--channels, --out-channels, --size, --kernel must be positive and kernel ≤ size")
            }
        }

        func run() throws {
            let bench = Conv2dBench(channels: channels, outChannels: outChannels ?? channels, size: size, kernel: kernel,
                                    threads: output.threadCount, dtype: dtype, rounds: rounds)
            try output.finish(try bench.run(progress: stderrLine))
        }
    }
}

/// `--vram-limit 8G` and friends.
struct ByteSize: ExpressibleByArgument {
    let bytes: Int
    init?(argument: String) {
        guard let b = parseByteSize(argument) else { return nil }
        bytes = b
    }
}

/// The options `sluice plan` and `sluice bench offload` share.
struct PlanOptions: ParsableArguments {
    @Option(help: "Model table: a name (\(ModelTable.known.joined(separator: ", "))) or a JSON path.") var table: String
    @Option(help: "Device memory budget, e.g. 8G (powers of 1024; default: the profile's memory less a reserve).") var vramLimit: ByteSize?
    @Option(help: "Host RAM budget for weights, e.g. 16G.") var ramLimit: ByteSize?
    @Option(help: "Storage type of text encoder and denoiser weights: bf16, f16, fp8, f32.") var storage: DType = .bf16
    @Option(help: "Image width.") var width = 1024
    @Option(help: "Image height.") var height = 1024
    @Option(help: "Prefetch depth (default: chosen by the cost model).") var prefetchDepth: Int?
    @Option(help: "Images per call; a batch that does not fit runs one image at a time.") var batch = 1

    func validate() throws {
        guard width >= 64, height >= 64, width <= 16384, height <= 16384, width % 16 == 0, height % 16 == 0 else {
            throw ValidationError("--width and --height must be multiples of 16 in 64...16384")
        }
        if let d = prefetchDepth, d < 1 || d > 16 { throw ValidationError("--prefetch-depth must be in 1...16") }
        guard storage.isFloatStorage else { throw ValidationError("--storage must be bf16, f16, fp8 or f32") }
        guard batch >= 1 && batch <= 64 else { throw ValidationError("--batch must be in 1...64") }
    }

    func request(profile: DeviceProfile) -> PlanRequest {
        var r = PlanRequest(deviceBudget: vramLimit?.bytes ?? profile.defaultBudget, hostBudget: ramLimit?.bytes, storage: storage,
                            width: width, height: height, prefetchDepth: prefetchDepth, profile: profile)
        r.batch = batch
        return r
    }

    func loadTable() throws -> ModelTable { try ModelTable.resolve(table, directory: ModelTable.defaultDirectory) }
}

struct PlanCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "plan", abstract: "Show where every weight group lives under a memory budget.")
    @OptionGroup var options: PlanOptions
    @Option(help: "Device profile for the cost model: \(DeviceProfile.all.map(\.name).joined(separator: ", ")).") var profile = "rtx4090-24g"
    @Flag(help: "Print the plan as JSON.") var json = false

    func run() throws {
        guard let prof = DeviceProfile.named(profile) else { throw ValidationError("unknown --profile \(profile)") }
        let t = try options.loadTable()
        let plan: Plan
        do { plan = try PipelinePlanner.plan(t, options.request(profile: prof), allowOneByOne: true) } catch {
            throw CommandError(message: "\(error)")
        }
        if json {
            let e = JSONEncoder()
            e.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try e.encode(plan), as: UTF8.self))
            return
        }
        print("\(t.model) at \(options.width)×\(options.height), \(options.storage.rawValue) weights, device budget \(formatBytes(plan.deviceBudget))")
        for c in plan.components {
            let ring = c.slotCount > 0 ? ", ring \(c.slotCount) × \(formatBytes(c.slotBytes)) (prefetch depth \(c.prefetchDepth))" : ""
            print("  \(c.component) [\(c.phase)]: \(c.resident.count) groups resident (\(formatBytes(c.residentBytes))), " +
                  "\(c.streamed.count) streamed (\(formatBytes(c.streamedBytesPerCall)) per call)\(ring), " +
                  "activations \(formatBytes(c.activationBytes))\(c.tiled ? ", VAE tiled" : "") → \(formatBytes(c.deviceBytes)) on device")
        }
        print("  swapped between phases: \(plan.swappedBetweenPhases.isEmpty ? "none (everything stays)" : plan.swappedBetweenPhases.joined(separator: ", "))")
        print("  peak device memory: \(formatBytes(plan.peakDeviceBytes)) of \(formatBytes(plan.deviceBudget))")
        if plan.oneByOne { print("  batch of \(options.batch) does not fit: images run one at a time") }
    }
}

extension Bench {
    struct Offload: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "SIMULATION: one denoising step under four offload policies on a modelled device.")
        @OptionGroup var options: PlanOptions
        @Option(help: "Device profile: \(DeviceProfile.all.map(\.name).joined(separator: ", ")).") var profile = "rtx4090-24g"
        @Option(help: "Write the result as JSON here.") var json: String?
        @Option(help: "Write the run's telemetry report (docs/telemetry.md) here.") var report: String?

        func run() throws {
            guard let prof = DeviceProfile.named(profile) else { throw ValidationError("unknown --profile \(profile)") }
            let result = try OffloadBench(table: try options.loadTable(), profile: prof, request: options.request(profile: prof)).run()
            if let json { try writeJSON(result.json, to: json) }
            if let report { try result.report.write(to: report) }
            let data = try JSONSerialization.data(withJSONObject: result.json, options: [.prettyPrinted, .sortedKeys])
            print(String(decoding: data, as: UTF8.self))
        }
    }
}

/// An error for a person: printed as "Error: message", without the usage text.
struct CommandError: Error, CustomStringConvertible {
    let message: String
    var description: String { message }
}

extension Bench {
    struct DiskTier: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Full-width Z-Image blocks on the CPU: weights from the disk tier vs from RAM.")
        @Option(help: "Blocks in the stack (each ~380 MB of bf16 weights).") var blocks = 8
        @Option(help: "Tokens per block.") var tokens = 256
        @Option(help: "Where the random checkpoint is written (git-ignored).") var dir = "bench/out"
        @Option(help: "Rounds.") var rounds = 2
        @OptionGroup var output: BenchOutput

        func validate() throws {
            guard blocks >= 1 && blocks <= 64, tokens >= 1 && tokens <= 16384 else { throw ValidationError("--blocks in 1...64, --tokens in 1...16384") }
        }

        func run() throws {
            try output.finish(try DiskTierBench(blocks: blocks, tokens: tokens, directory: dir, threads: output.threadCount, rounds: rounds).run(progress: stderrLine))
        }
    }
}

extension Bench {
    struct ZImageBlock: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "zimage-block",
            abstract: "One full-size Z-Image block (4096 image + 512 caption tokens), Sluice vs diffusers/torch CPU, same weights.")
        @Option(help: "Rounds (each times Sluice, then torch in a fresh process).") var rounds = 3
        @Option(help: "Where the random weights and inputs are written (git-ignored).") var dir = "bench/out"
        @OptionGroup var output: BenchOutput

        func run() throws {
            try output.finish(try ZImageBlockBench(threads: output.threadCount, rounds: rounds, directory: dir).run(progress: stderrLine))
        }
    }
}
