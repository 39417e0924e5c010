import Foundation
import SluiceBackends
import SluiceCore
import SluiceModels
import SluiceWeights

/// `sluice bench block --family unet`: SDXL's UNet mid block at full width (1280 channels, a
/// Transformer2DModel of 10 layers with 20 heads, cross-attention to 77 tokens of 2048, two resnets;
/// random bf16 weights) on a 1024² image's bottom level (32 × 32 latents), Sluice vs diffusers'
/// UNetMidBlock2DCrossAttn on torch's CPU — same weights, same inputs, rounds interleaved. Both compute
/// in f32 from the bf16 weights. The mid block carries most of SDXL's parameters per position and all
/// the UNet's kinds of work: 3×3 convolutions, GroupNorm, self- and cross-attention, GEGLU.
public struct UNetBlockBench {
    public var side = 32
    public var textTokens = 77
    public var threads: Int
    public var rounds: Int
    public var directory: String

    public init(threads: Int, rounds: Int = 3, directory: String = "bench/out") {
        self.threads = threads; self.rounds = rounds; self.directory = directory
    }

    static let channels = 1280, timeDim = 1280, crossDim = 2048, heads = 20, layers = 10

    /// SDXL's level-2 settings (the tiny parts of the config do not reach the mid block).
    static var config: UNetConfig {
        var c = UNetConfig()
        c.blockOutChannels = [320, 640, 1280]
        c.downHasAttention = [false, true, true]
        c.upHasAttention = [true, true, false]
        c.attentionHeads = [5, 10, heads]
        c.transformerLayers = [1, 2, layers]
        c.crossAttentionDim = crossDim
        c.useLinearProjection = true
        return c
    }

    /// diffusers' names and shapes of UNetMidBlock2DCrossAttn's parameters, under "mid_block.".
    static var shapes: [(String, Shape)] {
        let c = channels
        func linear(_ name: String, _ out: Int, _ inp: Int, bias: Bool = true) -> [(String, Shape)] {
            [(name + ".weight", [out, inp])] + (bias ? [(name + ".bias", [out])] : [])
        }
        func norm(_ name: String) -> [(String, Shape)] { [(name + ".weight", [c]), (name + ".bias", [c])] }
        var s: [(String, Shape)] = []
        for r in 0..<2 {
            let p = "resnets.\(r)."
            s += norm(p + "norm1") + norm(p + "norm2") + linear(p + "time_emb_proj", c, timeDim)
            for conv in ["conv1", "conv2"] { s += [(p + conv + ".weight", [c, c, 3, 3]), (p + conv + ".bias", [c])] }
        }
        let a = "attentions.0."
        s += norm(a + "norm") + linear(a + "proj_in", c, c) + linear(a + "proj_out", c, c)
        for k in 0..<layers {
            let t = a + "transformer_blocks.\(k)."
            s += norm(t + "norm1") + norm(t + "norm2") + norm(t + "norm3")
            for q in ["to_q", "to_k", "to_v"] { s += linear(t + "attn1." + q, c, c, bias: false) }
            s += linear(t + "attn1.to_out.0", c, c) + linear(t + "attn2.to_q", c, c, bias: false)
            s += linear(t + "attn2.to_k", c, crossDim, bias: false) + linear(t + "attn2.to_v", c, crossDim, bias: false)
            s += linear(t + "attn2.to_out.0", c, c) + linear(t + "ff.net.0.proj", 8 * c, c) + linear(t + "ff.net.2", c, 4 * c)
        }
        return s.map { ("mid_block." + $0.0, $0.1) }
    }

    func ensureWeights(progress: (String) -> Void) throws -> String {
        let path = directory + "/sdxl-mid-block.safetensors", shapes = Self.shapes
        if FileManager.default.fileExists(atPath: path), (try? SafetensorsFile(path: path))?.names.count == shapes.count { return path }
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        progress("writing a random bf16 SDXL mid block to \(path)")
        var rng = BenchRandom(seed: 41)
        var tensors: [(String, Tensor)] = []
        for (name, shape) in shapes {
            // Norm weights near 1, the rest scaled by fan-in: activations stay finite through 10 layers.
            let isNorm = name.contains("norm"), fanIn = shape.rank > 1 ? shape.count / shape[0] : 1
            let scale = isNorm && name.hasSuffix("weight") ? 0.1 : 1 / Float(fanIn).squareRoot()
            let t = Tensor(uninitialized: shape, dtype: .f32), p = t.f32
            for i in 0..<shape.count { p[i] = (isNorm && name.hasSuffix("weight") ? 1 : 0) + scale * rng.next() }
            tensors.append((name, try t.converted(to: .bf16)))
        }
        try SafetensorsWriter.write(tensors, to: path)
        return path
    }

    public func run(progress: (String) -> Void = { _ in }) throws -> [String: Any] {
        let weightsPath = try ensureWeights(progress: progress)
        let c = Self.channels
        var rng = BenchRandom(seed: 43)
        let hidden = Tensor(rng.floats(c * side * side), shape: [1, c, side, side])
        let temb = Tensor(rng.floats(Self.timeDim), shape: [1, Self.timeDim])
        let context = Tensor(rng.floats(textTokens * Self.crossDim), shape: [textTokens, Self.crossDim])
        let inputsPath = directory + "/sdxl-mid-block-inputs.safetensors", outPath = directory + "/sdxl-mid-block-reference.safetensors"
        try SafetensorsWriter.write([("hidden", hidden), ("temb", temb), ("context", context)], to: inputsPath)

        let be = try CPUBackend(threads: threads)
        let file = try SafetensorsFile(path: weightsPath)
        var ram: [String: Tensor] = [:]
        for name in file.names { ram[name] = try file.tensor(name).ownedCopy() }
        let w = ModuleWeights { k throws(SluiceError) in
            guard let t = ram[k] else { throw .missingTensor(key: k, file: weightsPath) }
            return t
        }
        let unet = UNet2DCondition(config: Self.config)
        let siluEmb = try be.silu(temb)
        var out: Tensor?
        func ours() throws { out = try unet.midBlock(hidden, siluEmb: siluEmb, context: context, w, be) }
        try ours()  // warm-up

        let comparison = BlockComparison(
            rounds: rounds, threads: threads, weights: weightsPath, inputs: inputsPath, referencePath: outPath,
            imports: "from diffusers.models.unets.unet_2d_blocks import UNetMidBlock2DCrossAttn",
            build: """
            blk = UNetMidBlock2DCrossAttn(in_channels=\(c), temb_channels=\(Self.timeDim), transformer_layers_per_block=\(Self.layers), num_attention_heads=\(Self.heads), cross_attention_dim=\(Self.crossDim), use_linear_projection=True, resnet_groups=32).eval()
            blk.load_state_dict({k[len("mid_block."):]: v.float() for k, v in w.items()})
            hidden, temb, ctx = inp["hidden"], inp["temb"], inp["context"][None]
            """,
            call: "blk(hidden, temb, encoder_hidden_states=ctx)", output: "y[0]")
        let samples = try comparison.run(ours, progress: progress)
        var result: [String: Any] = [
            "benchmark": "block", "family": "unet", "kind": "sdxl-mid", "simulated": false, "threads": threads,
            "latent_side": side, "text_tokens": textTokens, "channels": c, "heads": Self.heads, "transformer_layers": Self.layers,
            "weights": "random bf16 (same file for both)", "compute_dtype": "f32",
            "kernels": be.path.rawValue, "cpu": CPUInfo.model,
        ]
        result.merge(try comparison.fields(samples, output: out)) { $1 }
        return result
    }
}
