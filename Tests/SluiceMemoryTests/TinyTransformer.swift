import SluiceBackends
import SluiceCore
import SluiceMemory
import SluiceTestSupport

/// A tiny pre-norm transformer with the real structure of a DiT block stack (LayerNorm, fused QKV,
/// multi-head attention, output projection, GELU MLP, residuals), plus an input embedding and a
/// final projection of other sizes — 26 groups, for proving the executor's promises.
struct TinyTransformer {
    static let width = 64, heads = 4, mlp = 192, tokens = 24, inDim = 40, outDim = 16, blocks = 24

    let storage: DType
    /// Group name → its tensors by module-path key, in forward order.
    let groups: [(name: String, tensors: [(key: String, tensor: Tensor)])]

    init(storage: DType, seed: UInt64 = 7) throws {
        self.storage = storage
        var rng = SplitMix(seed: seed)
        func param(_ shape: Shape, scale: Float) throws -> Tensor {
            try Tensor((0..<shape.count).map { _ in rng.uniform() * scale }, shape: shape).converted(to: storage)
        }
        // Norm weights near 1 and biases near 0, but not exactly: a norm or bias read from the wrong
        // place (or not at all) changes the output. They stay f32, as checkpoints keep them.
        func near(_ base: Float, _ n: Int) -> Tensor { Tensor((0..<n).map { _ in base + rng.uniform() * 0.2 }, shape: [n]) }
        let w = Self.width
        var g: [(String, [(key: String, tensor: Tensor)])] = []
        g.append(("embed", [("embed.weight", try param([w, Self.inDim], scale: 0.2)), ("embed.bias", near(0, w))]))
        for b in 0..<Self.blocks {
            let p = "blocks.\(b)."
            g.append(("blocks.\(b)", [
                (p + "norm1.weight", near(1, w)), (p + "norm1.bias", near(0, w)),
                (p + "attn.qkv.weight", try param([3 * w, w], scale: 0.15)), (p + "attn.qkv.bias", try param([3 * w], scale: 0.05)),
                (p + "attn.proj.weight", try param([w, w], scale: 0.15)),
                (p + "norm2.weight", near(1, w)), (p + "norm2.bias", near(0, w)),
                (p + "mlp.fc1.weight", try param([Self.mlp, w], scale: 0.15)), (p + "mlp.fc2.weight", try param([w, Self.mlp], scale: 0.1)),
            ]))
        }
        g.append(("final", [("final.weight", try param([Self.outDim, w], scale: 0.2))]))
        groups = g
    }

    /// Modelled cost of group `i` at `tokens`: 2·params·tokens for the projections, 4·T²·width for attention.
    func flops(_ i: Int) -> Double {
        let params = groups[i].tensors.reduce(0) { $0 + $1.tensor.count }
        let attention = (i == 0 || i == groups.count - 1) ? 0 : 4 * Double(Self.tokens * Self.tokens * Self.width)
        return 2 * Double(params * Self.tokens) + attention
    }

    func execGroups(flopsScale: Double = 1) -> [ExecGroup] {
        groups.indices.map { ExecGroup(name: groups[$0].name, tensors: groups[$0].tensors, flops: flops($0) * flopsScale) }
    }

    /// Sizes as the device holds them (each tensor 64-byte aligned).
    var sizes: [GroupSize] { execGroups().map { GroupSize(name: $0.name, bytes: $0.stagedBytes) } }
    var totalBytes: Int { sizes.reduce(0) { $0 + $1.bytes } }

    func input() -> Tensor {
        var rng = SplitMix(seed: 99)
        return Tensor((0..<(Self.tokens * Self.inDim)).map { _ in rng.uniform() }, shape: [1, Self.tokens, Self.inDim])
    }

    /// One group's forward, reading weights through `w` (host tensors or device views).
    static func forward(group i: Int, name: String, w: (String) throws -> Tensor, x: Tensor, on be: CPUBackend) throws -> Tensor {
        if name == "embed" { return try be.linear(x, weight: w("embed.weight"), bias: w("embed.bias")) }
        if name == "final" { return try be.linear(x, weight: w("final.weight"), bias: nil) }
        let p = name + "."
        let (t, c, h) = (tokens, width, heads)
        let n1 = try be.layerNorm(x, weight: w(p + "norm1.weight"), bias: w(p + "norm1.bias"), eps: 1e-6)
        let qkv = try be.linear(n1, weight: w(p + "attn.qkv.weight"), bias: w(p + "attn.qkv.bias"))  // [1, T, 3C]
        let split = try qkv.reshaped([1, t, 3, h, c / h])
        func part(_ k: Int) throws -> Tensor { try split.sliced(dim: 2, k..<(k + 1)).reshaped([1, t, h, c / h]).permuted([0, 2, 1, 3]) }
        let a = try be.attention(q: part(0), k: part(1), v: part(2), mask: nil, scale: nil)  // [1, H, T, D]
        let merged = try a.permuted([0, 2, 1, 3]).reshaped([1, t, c])
        let x1 = try be.add(x, be.linear(merged, weight: w(p + "attn.proj.weight"), bias: nil))
        let n2 = try be.layerNorm(x1, weight: w(p + "norm2.weight"), bias: w(p + "norm2.bias"), eps: 1e-6)
        let m = try be.linear(be.gelu(be.linear(n2, weight: w(p + "mlp.fc1.weight"), bias: nil), approximateTanh: true),
                              weight: w(p + "mlp.fc2.weight"), bias: nil)
        return try be.add(x1, m)
    }

    /// The all-CPU reference: every weight read where it lives on the host.
    func runOnCPU(_ be: CPUBackend) throws -> Tensor {
        var x = input()
        for (i, g) in groups.enumerated() {
            let table = Dictionary(uniqueKeysWithValues: g.tensors.map { ($0.key, $0.tensor) })
            x = try Self.forward(group: i, name: g.name, w: { table[$0]! }, x: x, on: be)
        }
        return x
    }

    func run(on executor: StreamingExecutor, _ be: CPUBackend) throws -> Tensor {
        try executor.run(input()) { i, weights, x in
            try Self.forward(group: i, name: groups[i].name, w: { try weights($0) }, x: x, on: be)
        }
    }
}

func bits(_ t: Tensor) throws -> [UInt32] { try t.toFloats().map(\.bitPattern) }
