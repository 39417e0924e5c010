import Foundation
import SluiceBackends
import SluiceCore
import SluiceModels
import SluiceWeights

/// `sluice bench zimage-block`: one full-size Z-Image transformer block (dim 3840, 30 heads, SwiGLU
/// 10240, random bf16 weights) over a 1024² image's 4096 tokens plus a 512-token caption, Sluice vs
/// diffusers' ZImageTransformerBlock on torch's CPU, same weights, same inputs, same run (rounds
/// interleaved). Both compute in f32 from the bf16 weights (torch upcasts them once, outside the timing;
/// Sluice widens them as its GEMM packs them). Outputs are compared too.
public struct ZImageBlockBench {
    public var imageTokens = 4096
    public var captionTokens = 512
    public var threads: Int
    public var rounds: Int
    public var directory: String
    /// f32: both compute in f32 (torch upcasts the weights). bf16: Sluice's AVX512-BF16 linear layers
    /// against torch running the block in bf16 (no upcast).
    public var compute: DType

    public init(threads: Int, rounds: Int = 3, directory: String = "bench/out", compute: DType = .f32) {
        self.threads = threads; self.rounds = rounds; self.directory = directory; self.compute = compute
    }

    public func run(progress: (String) -> Void = { _ in }) throws -> [String: Any] {
        let weightsPath = try DiskTierBench(blocks: 1, tokens: 0, directory: directory, threads: threads).ensureCheckpoint(progress: progress)
        let L = imageTokens + captionTokens, d = DiskTierBench.dim
        var rng = BenchRandom(seed: 21)
        let x = Tensor(rng.floats(L * d), shape: [L, d])
        let t = Tensor(rng.floats(DiskTierBench.adaln), shape: [1, DiskTierBench.adaln])
        // The unified sequence's positions: image patches on a 64×64 grid, then the caption.
        let side = Int(Double(imageTokens).squareRoot())
        var positions: [(Int, Int, Int)] = (0..<imageTokens).map { (captionTokens + 1, $0 / side, $0 % side) }
        positions += (0..<captionTokens).map { (1 + $0, 0, 0) }
        let rope = RoPE3D(theta: 256, axesDims: DiskTierBench.config.axesDims).tables(positions)
        let inputsPath = directory + "/zimage-block-inputs.safetensors", outPath = directory + "/zimage-block-reference.safetensors"
        try SafetensorsWriter.write([("x", x), ("t", t), ("cos", rope.cos), ("sin", rope.sin)], to: inputsPath)

        let be = try CPUBackend(threads: threads, compute: compute)
        let torchType = compute == .bf16 ? "bfloat16" : "float32"
        let file = try SafetensorsFile(path: weightsPath)
        var ram: [String: Tensor] = [:]
        for name in file.names { ram[name] = try file.tensor(name).ownedCopy() }
        let weights: (String) throws(SluiceError) -> Tensor = { k throws(SluiceError) in
            guard let w = ram[k] else { throw .missingTensor(key: k, file: weightsPath) }
            return w
        }
        var out: Tensor?
        func ours() throws { out = try DiskTierBench.block(0, x: x, t: t, rope: rope, w: weights, on: be) }
        try ours()  // warm-up

        let comparison = BlockComparison(
            rounds: rounds, threads: threads, weights: weightsPath, inputs: inputsPath, referencePath: outPath,
            imports: "from diffusers.models.transformers.transformer_z_image import ZImageTransformerBlock",
            build: """
            blk = ZImageTransformerBlock(0, \(d), \(DiskTierBench.heads), \(DiskTierBench.heads), 1e-5, True, modulation=True).eval()
            blk.load_state_dict({k[len("layers.0."):]: v.float() for k, v in w.items()})
            blk = blk.to(torch.\(torchType))
            x = inp["x"][None].to(torch.\(torchType)); t = inp["t"].to(torch.\(torchType)); f = torch.complex(inp["cos"], inp["sin"])[None]
            """,
            call: "blk(x, None, f, t)", output: "y[0]")
        let samples = try comparison.run(ours, progress: progress)
        var result: [String: Any] = [
            "benchmark": "zimage-block", "simulated": false, "threads": threads, "tokens": L,
            "image_tokens": imageTokens, "caption_tokens": captionTokens, "dim": d, "heads": DiskTierBench.heads,
            "weights": "random bf16 (same file for both)", "compute_dtype": compute.rawValue,
            "kernels": be.path.rawValue + (compute == .bf16 ? " + avx512bf16" : ""),
        ]
        result.merge(try comparison.fields(samples, output: out)) { $1 }
        return result
    }
}
