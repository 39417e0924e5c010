import Foundation
import SluiceBackends
import SluiceCore
import SluiceModels
import SluiceWeights

/// `sluice bench block --family flux --kind double|single`: one full-size FLUX.1 block (dim 3072,
/// 24 heads of 128, MLP 12288, random bf16 weights) over a 1024² image's 4096 tokens and 512 T5
/// tokens, Sluice vs diffusers' FluxTransformerBlock / FluxSingleTransformerBlock on torch's CPU —
/// same weights, same inputs, same run (rounds interleaved). Both compute in f32 from the bf16
/// weights (torch upcasts them once, outside the timing; Sluice widens them as its GEMM packs them).
public struct FluxBlockBench {
    public enum Kind: String, CaseIterable, Sendable { case double, single }

    public var kind: Kind
    public var imageTokens = 4096
    public var textTokens = 512
    public var threads: Int
    public var rounds: Int
    public var directory: String

    public init(kind: Kind, threads: Int, rounds: Int = 3, directory: String = "bench/out") {
        self.kind = kind; self.threads = threads; self.rounds = rounds; self.directory = directory
    }

    /// FLUX.1's real widths (the blocks' shapes do not depend on the layer counts).
    static let config: FluxConfig = FluxConfig()

    /// diffusers' parameter names and shapes of one block, under "block.".
    static func shapes(_ kind: Kind) -> [(String, Shape)] {
        let d = config.dim, m = config.mlpDim, hd = config.headDim
        func linear(_ name: String, _ out: Int, _ inp: Int) -> [(String, Shape)] { [(name + ".weight", [out, inp]), (name + ".bias", [out])] }
        switch kind {
        case .double:
            var s = linear("norm1.linear", 6 * d, d) + linear("norm1_context.linear", 6 * d, d)
            for p in ["to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out"] { s += linear("attn." + p, d, d) }
            for n in ["norm_q", "norm_k", "norm_added_q", "norm_added_k"] { s.append(("attn.\(n).weight", [hd])) }
            for f in ["ff", "ff_context"] { s += linear(f + ".net.0.proj", m, d) + linear(f + ".net.2", d, m) }
            return s
        case .single:
            var s = linear("norm.linear", 3 * d, d) + linear("proj_mlp", m, d) + linear("proj_out", d, d + m)
            for p in ["to_q", "to_k", "to_v"] { s += linear("attn." + p, d, d) }
            for n in ["norm_q", "norm_k"] { s.append(("attn.\(n).weight", [hd])) }
            return s
        }
    }

    /// Writes the random block once (git-ignored folder).
    func ensureWeights(progress: (String) -> Void) throws -> String {
        let path = directory + "/flux-\(kind.rawValue)-block.safetensors", shapes = Self.shapes(kind)
        if FileManager.default.fileExists(atPath: path), (try? SafetensorsFile(path: path))?.names.count == shapes.count { return path }
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        progress("writing a random bf16 FLUX \(kind.rawValue) block to \(path)")
        var rng = BenchRandom(seed: 31)
        var tensors: [(String, Tensor)] = []
        for (name, shape) in shapes {
            // Norm weights near 1, projections small: activations stay finite.
            let isNorm = name.contains("norm_"), t = Tensor(uninitialized: shape, dtype: .f32), p = t.f32
            for i in 0..<shape.count { p[i] = isNorm ? 1 + 0.1 * rng.next() : 0.02 * rng.next() }
            tensors.append(("block." + name, try t.converted(to: .bf16)))
        }
        try SafetensorsWriter.write(tensors, to: path)
        return path
    }

    public func run(progress: (String) -> Void = { _ in }) throws -> [String: Any] {
        let weightsPath = try ensureWeights(progress: progress)
        let d = Self.config.dim, side = Int(Double(imageTokens).squareRoot())
        var rng = BenchRandom(seed: 33)
        let img = Tensor(rng.floats(imageTokens * d), shape: [imageTokens, d])
        let txt = Tensor(rng.floats(textTokens * d), shape: [textTokens, d])
        let temb = Tensor(rng.floats(d), shape: [1, d])
        let rope = FluxRoPE(axesDims: Self.config.axesDimsRope).tables(FluxRoPE.ids(textTokens: textTokens, rows: side, columns: imageTokens / side))
        let inputsPath = directory + "/flux-block-inputs.safetensors", outPath = directory + "/flux-\(kind.rawValue)-block-reference.safetensors"
        try SafetensorsWriter.write([("img", img), ("txt", txt), ("temb", temb), ("cos", rope.cos), ("sin", rope.sin)], to: inputsPath)

        let be = try CPUBackend(threads: threads)
        let file = try SafetensorsFile(path: weightsPath)
        var ram: [String: Tensor] = [:]
        for name in file.names { ram[name] = try file.tensor(name).ownedCopy() }
        let w = ModuleWeights(prefix: "block") { k throws(SluiceError) in
            guard let t = ram[k] else { throw .missingTensor(key: k, file: weightsPath) }
            return t
        }
        // The block takes SiLU(temb), computed once a call by the transformer.
        let siluTemb = try be.silu(temb)
        var out: Tensor?
        func ours() throws {
            switch kind {
            case .double:
                out = try FluxDoubleBlock(config: Self.config).forward(img: img, txt: txt, siluTemb: siluTemb, rope: rope, w, be).img
            case .single:
                let joint = try be.concat([txt, img], dim: 0)
                out = try FluxSingleBlock(config: Self.config).forward(joint, siluTemb: siluTemb, rope: rope, w, be).sliced(dim: 0, textTokens..<(textTokens + imageTokens))
            }
        }
        try ours()  // warm-up

        let make = kind == .double
            ? "FluxTransformerBlock(\(d), \(Self.config.numAttentionHeads), \(Self.config.headDim))"
            : "FluxSingleTransformerBlock(\(d), \(Self.config.numAttentionHeads), \(Self.config.headDim))"
        let comparison = BlockComparison(
            rounds: rounds, threads: threads, weights: weightsPath, inputs: inputsPath, referencePath: outPath,
            imports: "from diffusers.models.transformers.transformer_flux import FluxTransformerBlock, FluxSingleTransformerBlock",
            build: """
            blk = \(make).eval()
            blk.load_state_dict({k[len("block."):]: v.float() for k, v in w.items()})
            rope = (inp["cos"].repeat_interleave(2, dim=1), inp["sin"].repeat_interleave(2, dim=1))
            img, txt, temb = inp["img"][None], inp["txt"][None], inp["temb"]
            """,
            call: "blk(hidden_states=img, encoder_hidden_states=txt, temb=temb, image_rotary_emb=rope)", output: "y[1][0]")
        let samples = try comparison.run(ours, progress: progress)
        var result: [String: Any] = [
            "benchmark": "block", "family": "flux", "kind": kind.rawValue, "simulated": false, "threads": threads,
            "image_tokens": imageTokens, "text_tokens": textTokens, "dim": d, "heads": Self.config.numAttentionHeads,
            "weights": "random bf16 (same file for both)", "compute_dtype": "f32",
            "kernels": be.path.rawValue, "cpu": CPUInfo.model,
        ]
        result.merge(try comparison.fields(samples, output: out)) { $1 }
        return result
    }
}
