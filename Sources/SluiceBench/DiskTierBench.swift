import Foundation
import SluiceBackends
import SluiceCore
import SluiceWeights
#if canImport(Glibc)
import Glibc
#endif

/// `sluice bench disk-tier`: a stack of full-width Z-Image transformer blocks (dim 3840, 30 heads,
/// SwiGLU 10240, adaLN from a 256-wide embedding — the tensor shapes of diffusers'
/// `ZImageTransformerBlock`) with random bf16 weights, run on the CPU with its weights read from
/// the disk tier (a memory-mapped checkpoint whose pages were dropped from the page cache, the
/// next block's range read ahead with MADV_WILLNEED) and from RAM, in the same run.
/// The block follows diffusers' structure but is not checked against it numerically (issue 5
/// brings the real model); what is measured is the cost of the tier, on identical arithmetic.
public struct DiskTierBench {
    public static let dim = 3840, heads = 30, ffn = 10240, adaln = 256

    public var blocks: Int
    public var tokens: Int
    public var directory: String
    public var threads: Int
    public var rounds: Int

    public init(blocks: Int, tokens: Int, directory: String, threads: Int, rounds: Int = 2) {
        self.blocks = blocks; self.tokens = tokens; self.directory = directory; self.threads = threads; self.rounds = rounds
    }

    static func shapes(_ b: Int) -> [(String, Shape)] {
        let p = "layers.\(b)."
        let d = dim, hd = dim / heads
        return [
            (p + "adaLN_modulation.0.weight", [4 * d, adaln]), (p + "adaLN_modulation.0.bias", [4 * d]),
            (p + "attention_norm1.weight", [d]), (p + "attention_norm2.weight", [d]),
            (p + "ffn_norm1.weight", [d]), (p + "ffn_norm2.weight", [d]),
            (p + "attention.to_q.weight", [d, d]), (p + "attention.to_k.weight", [d, d]),
            (p + "attention.to_v.weight", [d, d]), (p + "attention.to_out.0.weight", [d, d]),
            (p + "attention.norm_q.weight", [hd]), (p + "attention.norm_k.weight", [hd]),
            (p + "feed_forward.w1.weight", [ffn, d]), (p + "feed_forward.w2.weight", [d, ffn]),
            (p + "feed_forward.w3.weight", [ffn, d]),
        ]
    }

    /// Writes the random checkpoint once (git-ignored folder), one block at a time.
    func ensureCheckpoint(progress: (String) -> Void) throws -> String {
        let path = directory + "/zimage-blocks-\(blocks).safetensors"
        if FileManager.default.fileExists(atPath: path), (try? SafetensorsFile(path: path))?.names.count == blocks * 15 { return path }
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        progress("writing \(blocks) random bf16 Z-Image blocks to \(path)")
        var rng = BenchRandom(seed: 11)
        var tensors: [(String, Tensor)] = []
        for b in 0..<blocks {
            for (name, shape) in Self.shapes(b) {
                // Norm weights near 1, projections small: activations stay finite through the stack.
                let isNorm = name.contains("norm")
                let t = Tensor(uninitialized: shape, dtype: .f32)
                let p = t.f32
                for i in 0..<shape.count { p[i] = isNorm ? 1 + 0.1 * rng.next() : 0.02 * rng.next() }
                tensors.append((name, try t.converted(to: .bf16)))
            }
        }
        try SafetensorsWriter.write(tensors, to: path)
        return path
    }

    /// One block: adaLN modulation, attention with per-head RMS-normed q/k and tanh gates, SwiGLU FFN.
    static func block(_ b: Int, x: Tensor, t: Tensor, w: (String) throws -> Tensor, on be: CPUBackend) throws -> Tensor {
        let p = "layers.\(b).", L = x.shape[1], d = dim, h = Self.heads, hd = dim / Self.heads
        let mod = try be.linear(t, weight: w(p + "adaLN_modulation.0.weight"), bias: w(p + "adaLN_modulation.0.bias"))  // [1, 4d]
        func chunk(_ i: Int) throws -> Tensor { try mod.sliced(dim: 1, (i * d)..<((i + 1) * d)).contiguous().reshaped([1, 1, d]) }
        let one = Tensor([1], shape: [1])
        let scaleMSA = try be.add(chunk(0), one), gateMSA = try chunk(1), scaleMLP = try be.add(chunk(2), one), gateMLP = try chunk(3)
        func tanh(_ v: Tensor) throws -> Tensor {  // the gates are 3840 values: computed on the host
            let values = try v.toFloats().map { Foundation.tanh($0) }
            return Tensor(values, shape: v.shape)
        }
        let n1 = try be.mul(be.rmsNorm(x, weight: w(p + "attention_norm1.weight"), eps: 1e-5), scaleMSA)
        func splitHeads(_ v: Tensor, norm: String) throws -> Tensor {
            let r = try be.rmsNorm(v.reshaped([1, L, h, hd]), weight: w(p + norm), eps: 1e-5)
            return try r.permuted([0, 2, 1, 3])
        }
        let q = try splitHeads(be.linear(n1, weight: w(p + "attention.to_q.weight"), bias: nil), norm: "attention.norm_q.weight")
        let k = try splitHeads(be.linear(n1, weight: w(p + "attention.to_k.weight"), bias: nil), norm: "attention.norm_k.weight")
        let v = try be.linear(n1, weight: w(p + "attention.to_v.weight"), bias: nil).reshaped([1, L, h, hd]).permuted([0, 2, 1, 3])
        let a = try be.attention(q: q, k: k, v: v, mask: nil, scale: nil).permuted([0, 2, 1, 3]).reshaped([1, L, d])
        let o = try be.linear(a, weight: w(p + "attention.to_out.0.weight"), bias: nil)
        let x1 = try be.add(x, be.mul(tanh(gateMSA), be.rmsNorm(o, weight: w(p + "attention_norm2.weight"), eps: 1e-5)))
        let n2 = try be.mul(be.rmsNorm(x1, weight: w(p + "ffn_norm1.weight"), eps: 1e-5), scaleMLP)
        let f = try be.linear(be.mul(be.silu(be.linear(n2, weight: w(p + "feed_forward.w1.weight"), bias: nil)),
                                     be.linear(n2, weight: w(p + "feed_forward.w3.weight"), bias: nil)),
                              weight: w(p + "feed_forward.w2.weight"), bias: nil)
        return try be.add(x1, be.mul(tanh(gateMLP), be.rmsNorm(f, weight: w(p + "ffn_norm2.weight"), eps: 1e-5)))
    }

    /// Drops the file's pages from the page cache, so the next reads come from the disk.
    static func dropFromPageCache(_ path: String) {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { return }
        fdatasync(fd)
        _ = posix_fadvise(fd, 0, 0, Int32(POSIX_FADV_DONTNEED))
        close(fd)
    }

    public func run(progress: (String) -> Void = { _ in }) throws -> [String: Any] {
        let path = try ensureCheckpoint(progress: progress)
        let be = try CPUBackend(threads: threads)
        var rng = BenchRandom(seed: 5)
        let x0 = Tensor(rng.floats(tokens * Self.dim), shape: [1, tokens, Self.dim])
        let t = Tensor(rng.floats(Self.adaln), shape: [1, Self.adaln])
        func stack(_ weight: (String) throws -> Tensor, before: (Int) -> Void = { _ in }) throws -> Tensor {
            var x = x0
            for b in 0..<blocks {
                before(b)
                x = try Self.block(b, x: x, t: t, w: weight, on: be)
            }
            return x
        }
        // RAM tier: every tensor copied into owned host memory first (not timed).
        let ramFile = try SafetensorsFile(path: path)
        var ram: [String: Tensor] = [:]
        for name in ramFile.names { ram[name] = try ramFile.tensor(name).ownedCopy() }
        var ramSeconds = [Double](), diskSeconds = [Double]()
        var reference: [Float] = [], fromDisk: [Float] = []
        let bytes = ramFile.header.tensors.reduce(0) { $0 + $1.dataRange.count }
        for round in 0..<rounds {
            var out: Tensor?
            ramSeconds.append(try Stopwatch.seconds { out = try stack({ ram[$0]! }) })
            reference = try out!.toFloats()
            // Disk tier: a fresh mapping of a file whose pages are not cached; the next block's
            // byte range is read ahead by the kernel while this block computes.
            Self.dropFromPageCache(path)
            let file = try SafetensorsFile(path: path)
            let ranges = (0..<blocks).map { b in Self.shapes(b).map { file.info($0.0)!.dataRange } }
            diskSeconds.append(try Stopwatch.seconds {
                out = try stack({ try file.tensor($0) }, before: { b in
                    if b + 1 < blocks { file.adviseWillNeed(ranges[b + 1]) }
                })
            })
            fromDisk = try out!.toFloats()
            progress("round \(round + 1)/\(rounds): RAM \(String(format: "%.2f", ramSeconds.last!)) s, disk \(String(format: "%.2f", diskSeconds.last!)) s")
        }
        return [
            "benchmark": "disk-tier", "simulated": false, "blocks": blocks, "tokens": tokens, "threads": threads,
            "weights_bytes": bytes, "ram_seconds": median(ramSeconds), "disk_seconds": median(diskSeconds),
            "ratio": median(diskSeconds) / median(ramSeconds),
            "identical_output": reference == fromDisk,
            "samples": ["ram": ramSeconds, "disk": diskSeconds],
            "method": "median of \(rounds) rounds, RAM then disk each round; disk = page cache dropped (posix_fadvise DONTNEED) and a fresh mmap, next block read ahead with MADV_WILLNEED",
        ]
    }
}
