import Foundation
import SluiceBackends
import SluiceCore
import SluiceModels
import SluiceWeights
#if canImport(Glibc)
import Glibc
#endif

/// `sluice bench disk-tier`: a stack of full-width Z-Image transformer blocks (dim 3840, 30 heads,
/// SwiGLU 10240, adaLN from a 256-wide embedding — the tensor shapes of diffusers'
/// `ZImageTransformerBlock`) with random bf16 weights, run on the CPU with its weights read from
/// the disk tier (a memory-mapped checkpoint whose pages were dropped from the page cache, the
/// next block's range read ahead with MADV_WILLNEED) and from RAM, in the same run.
/// The block is the real model's (SluiceModels' ZImageBlock, checked against diffusers in its tests);
/// what is measured is the cost of the tier, on identical arithmetic.
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

    /// The real model's block (SluiceModels' ZImageBlock) at full width.
    static let config: ZImageConfig = {
        var c = ZImageConfig()
        c.dim = dim; c.nHeads = heads; c.axesDims = [32, 48, 48]
        return c
    }()

    /// RoPE tables for `tokens` image tokens on a square-ish grid after a 512-token caption.
    static func rope(tokens: Int) -> (cos: Tensor, sin: Tensor) {
        let w = Int(Double(tokens).squareRoot().rounded(.up))
        return RoPE3D(theta: 256, axesDims: config.axesDims).tables((0..<tokens).map { (513, $0 / w, $0 % w) })
    }

    static func block(_ b: Int, x: Tensor, t: Tensor, rope: (cos: Tensor, sin: Tensor), w: @escaping (String) throws(SluiceError) -> Tensor,
                      on be: CPUBackend) throws -> Tensor {
        try ZImageBlock(config: config).forward(x, rope: rope, adaLN: t, ModuleWeights(prefix: "layers.\(b)", w), be)
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
        let x0 = Tensor(rng.floats(tokens * Self.dim), shape: [tokens, Self.dim])
        let t = Tensor(rng.floats(Self.adaln), shape: [1, Self.adaln])
        let rope = Self.rope(tokens: tokens)
        func stack(_ weight: @escaping (String) throws(SluiceError) -> Tensor, before: (Int) -> Void = { _ in }) throws -> Tensor {
            var x = x0
            for b in 0..<blocks {
                before(b)
                x = try Self.block(b, x: x, t: t, rope: rope, w: weight, on: be)
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
            ramSeconds.append(try Stopwatch.seconds { out = try stack({ k throws(SluiceError) in
                guard let t = ram[k] else { throw .missingTensor(key: k, file: path) }
                return t
            }) })
            reference = try out!.toFloats()
            // Disk tier: a fresh mapping of a file whose pages are not cached; the next block's
            // byte range is read ahead by the kernel while this block computes.
            Self.dropFromPageCache(path)
            let file = try SafetensorsFile(path: path)
            let ranges = (0..<blocks).map { b in Self.shapes(b).map { file.info($0.0)!.dataRange } }
            diskSeconds.append(try Stopwatch.seconds {
                out = try stack({ k throws(SluiceError) in try file.tensor(k) }, before: { b in
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
