import ArgumentParser
import Foundation
import SluiceBackends
import SluiceBench
import SluiceCore
import SluiceMemory
import SluicePipelines

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure Sluice against a reference implementation in the same run (JSON out).",
        subcommands: [Gemm.self, Attention.self, Conv2d.self, Offload.self, DiskTier.self, ZImageBlock.self, Block.self, Denoise.self]
    )
}

struct BenchOutput: ParsableArguments {
    @Option(help: "Write the result as JSON here.") var json: String?
    @Option(help: "Threads (default: every core).") var threads: Int?

    func finish(_ result: [String: Any]) throws {
        var result = result
        if result["cpu"] == nil { result["cpu"] = CPUInfo.model }
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


extension Bench {
    struct Gemm: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Square matmul: Sluice vs numpy (OpenBLAS).")
        @Option(help: "Matrix size N (N×N · N×N).") var size = 2048
        @Option(help: "Weight storage dtype: f32, bf16, f16, f8e4m3fn.") var dtype: DType = .f32
        @Option(help: "Compute type: f32 (against numpy/OpenBLAS), or bf16 (AVX512-BF16, against torch's bf16 matmul).") var compute: DType = .f32
        @Option(help: "Rounds (each times Sluice then the reference).") var rounds = 5
        @OptionGroup var output: BenchOutput

        func validate() throws {
            guard size >= 1 && size <= 16384 else { throw ValidationError("--size must be in 1...16384") }
            guard dtype.isFloatStorage else { throw ValidationError("--dtype must be a float storage type") }
            guard compute == .f32 || compute == .bf16 else { throw ValidationError("--compute must be f32 or bf16") }
        }

        func run() throws {
            try output.finish(try GemmBench(size: size, threads: output.threadCount, dtype: dtype, compute: compute, rounds: rounds).run(progress: stderrLine))
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
        @Option(help: "Compute type: f32, or bf16 (AVX512-BF16, against torch's conv2d on bf16 tensors).") var compute: DType = .f32
        @Option(help: "Rounds.") var rounds = 3
        @OptionGroup var output: BenchOutput

        func validate() throws {
            guard channels >= 1, size >= 1, kernel >= 1, kernel <= size, (outChannels ?? 1) >= 1 else {
                throw ValidationError("--channels, --out-channels, --size, --kernel must be positive and kernel ≤ size")
            }
        }

        func run() throws {
            let bench = Conv2dBench(channels: channels, outChannels: outChannels ?? channels, size: size, kernel: kernel,
                                    threads: output.threadCount, dtype: dtype, compute: compute, rounds: rounds)
            try output.finish(try bench.run(progress: stderrLine))
        }
    }
}

extension Bench {
    struct Offload: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "SIMULATION: one denoising step under four offload policies on a modelled device.")
        @Option(help: "Model table: a name (\(ModelTable.known.joined(separator: ", "))) or a JSON path.") var table: String
        @OptionGroup var options: TableOptions
        @Option(help: "Write the result as JSON here.") var json: String?
        @Option(help: "Write the run's telemetry report (docs/telemetry.md) here.") var report: String?

        func run() throws {
            let t = try ModelTable.resolve(table)
            let result = try withFlags {
                try OffloadBench(table: t, components: try PipelineRegistry.shared.describe(t), profile: try options.deviceProfile(),
                                 request: try options.request()).run()
            }
            if let json { try writeJSON(result.json, to: json) }
            if let report { try result.report.write(to: report) }
            let data = try JSONSerialization.data(withJSONObject: result.json, options: [.prettyPrinted, .sortedKeys])
            print(String(decoding: data, as: UTF8.self))
        }
    }
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
        @Option(help: "f32 (both upcast), or bf16: Sluice's AVX512-BF16 linear layers against torch running the block in bf16.") var compute: DType = .f32
        @OptionGroup var output: BenchOutput

        func run() throws {
            try output.finish(try ZImageBlockBench(threads: output.threadCount, rounds: rounds, directory: dir, compute: compute).run(progress: stderrLine))
        }
    }
}

extension Bench {
    struct Block: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "One full-size block, Sluice vs diffusers/torch CPU, same weights: --family flux --kind double|single or --family zimage (4096 image + 512 text tokens), or --family unet (SDXL's mid block at 1024²).")
        @Option(help: "Model family: flux, zimage or unet.") var family = "flux"
        @Option(help: "FLUX block kind: double (FluxTransformerBlock) or single (FluxSingleTransformerBlock).") var kind = "double"
        @Option(help: "Rounds (each times Sluice, then torch in a fresh process).") var rounds = 3
        @Option(help: "Where the random weights and inputs are written (git-ignored).") var dir = "bench/out"
        @OptionGroup var output: BenchOutput

        func validate() throws {
            guard ["flux", "zimage", "unet"].contains(family) else { throw ValidationError("--family must be flux, zimage or unet") }
            guard FluxBlockBench.Kind(rawValue: kind) != nil else { throw ValidationError("--kind must be double or single") }
        }

        func run() throws {
            if family == "unet" {
                return try output.finish(try UNetBlockBench(threads: output.threadCount, rounds: rounds, directory: dir).run(progress: stderrLine))
            }
            if family == "zimage" {
                return try output.finish(try ZImageBlockBench(threads: output.threadCount, rounds: rounds, directory: dir).run(progress: stderrLine))
            }
            try output.finish(try FluxBlockBench(kind: FluxBlockBench.Kind(rawValue: kind)!, threads: output.threadCount, rounds: rounds,
                                                 directory: dir).run(progress: stderrLine))
        }
    }
}

extension Bench {
    struct Denoise: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Steady-state denoising steps of a full-width random-weight Z-Image (N main blocks) on a device, optionally against diffusers on the same weights.")
        @Option(help: "Compute device: cpu, vulkan or vulkan:N.") var device = "cpu"
        @Option(parsing: .unconditional, help: "Image width.") var width = 1024
        @Option(parsing: .unconditional, help: "Image height.") var height = 1024
        @Option(parsing: .unconditional, help: "Main transformer blocks (the real model has 30; 2 + 2 refiners are always there).") var layers = 6
        @Option(parsing: .unconditional, help: "Model width (3840 is the real one; smaller for quick checks).") var dim = 3840
        @Option(parsing: .unconditional, help: "Timed steps after one warm-up step.") var steps = 3
        @Option(help: "Device memory budget (streams what does not fit).") var vramLimit: ByteSize?
        @Option(help: "Device profile for the planner's cost model.") var profile = "rtx4090-24g"
        @Option(help: "Reference to run in the same process tree: diffusers (CUDA when torch sees a GPU, else CPU), or none.") var reference = "none"
        @Option(help: "Where the random model is written once (git-ignored).") var dir = "bench/out"
        @OptionGroup var output: BenchOutput

        func validate() throws {
            guard width % 16 == 0, height % 16 == 0, width >= 16, height >= 16, width <= 4096, height <= 4096 else {
                throw ValidationError("--width and --height must be multiples of 16 in 16...4096")
            }
            guard (1...30).contains(layers), (1...20).contains(steps), dim >= 128, dim % 128 == 0 || dim < 3840 else {
                throw ValidationError("--layers 1...30, --steps 1...20, --dim a multiple of 128 (or below 3840 for quick checks)")
            }
            guard ["none", "diffusers"].contains(reference) else { throw ValidationError("--reference must be diffusers or none") }
        }

        func run() throws {
            guard let p = DeviceProfile.named(profile) else { throw ValidationError("unknown --profile \(profile)") }
            let bench = DenoiseBench(device: device, width: width, height: height, layers: layers, dim: dim, steps: steps,
                                     budget: vramLimit?.bytes, profile: p, reference: reference == "diffusers",
                                     threads: output.threadCount, directory: dir)
            try output.finish(try withFlags { try bench.run(progress: stderrLine) })
        }
    }
}
