import ArgumentParser
import Foundation
import SluiceBackends
import SluiceBench
import SluiceCore

@main
struct Sluice: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sluice",
        abstract: "Diffusion image generation for models larger than your device's memory.",
        subcommands: [Bench.self, Info.self]
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
        subcommands: [Gemm.self, Attention.self, Conv2d.self]
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
