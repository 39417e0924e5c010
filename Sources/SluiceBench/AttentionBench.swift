import Foundation
import SluiceBackends
import SluiceCore

/// `sluice bench attention`: Sluice's tiled attention against torch's
/// `scaled_dot_product_attention` on CPU, same shapes, same run.
public struct AttentionBench {
    public var seq: Int, heads: Int, headDim: Int, threads: Int, rounds: Int, repeats: Int

    public init(seq: Int, heads: Int, headDim: Int, threads: Int, rounds: Int = 3, repeats: Int = 2) {
        self.seq = seq; self.heads = heads; self.headDim = headDim; self.threads = threads; self.rounds = rounds; self.repeats = repeats
    }

    public func run(progress: (String) -> Void = { _ in }) throws -> [String: Any] {
        let backend = try CPUBackend(threads: threads)
        var rng = BenchRandom(seed: 2)
        let shape: Shape = [1, heads, seq, headDim]
        let q = Tensor(rng.floats(shape.count), shape: shape), k = Tensor(rng.floats(shape.count), shape: shape)
        let v = Tensor(rng.floats(shape.count), shape: shape)
        let bench = ComparisonBench(
            name: "attention", threads: threads, rounds: rounds, repeats: repeats,
            flops: 4 * Double(heads) * Double(seq) * Double(seq) * Double(headDim),
            referenceSetup: """
            torch.set_num_threads(\(threads))
            g = torch.Generator().manual_seed(2)
            q, k, v = (torch.randn(1, \(heads), \(seq), \(headDim), generator=g) for _ in range(3))
            def info(): return "torch " + torch.__version__ + " scaled_dot_product_attention, f32, " + str(torch.get_num_threads()) + " threads"
            """,
            referenceCall: "torch.nn.functional.scaled_dot_product_attention(q, k, v)", referenceModule: "torch")
        var result = try bench.run(ours: { _ = try backend.attention(q: q, k: k, v: v, mask: nil, scale: nil) }, progress: progress)
        result["shape"] = ["batch": 1, "heads": heads, "seq": seq, "head_dim": headDim]
        result["sluice_kernel"] = backend.path.rawValue
        result["sluice_scratch_bytes"] = backend.attentionWorkspaceBytes(headDim: headDim)
        return result
    }
}

/// `sluice bench conv2d`: Sluice's conv2d against torch's on CPU, same shapes, same run.
/// With `compute: .bf16`, Sluice convolves on VDPBF16PS and torch runs conv2d on bf16 tensors.
public struct Conv2dBench {
    public var channels: Int, outChannels: Int, size: Int, kernel: Int, threads: Int, dtype: DType, compute: DType, rounds: Int, repeats: Int

    public init(channels: Int, outChannels: Int, size: Int, kernel: Int, threads: Int, dtype: DType, compute: DType = .f32,
                rounds: Int = 3, repeats: Int = 2) {
        self.channels = channels; self.outChannels = outChannels; self.size = size; self.kernel = kernel
        self.threads = threads; self.dtype = dtype; self.compute = compute; self.rounds = rounds; self.repeats = repeats
    }

    public func run(progress: (String) -> Void = { _ in }) throws -> [String: Any] {
        let backend = try CPUBackend(threads: threads, compute: compute)
        let torchType = compute == .bf16 ? "bfloat16" : "float32"
        var rng = BenchRandom(seed: 3)
        let x = Tensor(rng.floats(channels * size * size), shape: [1, channels, size, size])
        let w = try Tensor(rng.floats(outChannels * channels * kernel * kernel), shape: [outChannels, channels, kernel, kernel]).converted(to: dtype)
        let pad = kernel / 2
        let bench = ComparisonBench(
            name: "conv2d", threads: threads, rounds: rounds, repeats: repeats,
            flops: 2 * Double(outChannels) * Double(channels * kernel * kernel) * Double(size * size),
            referenceSetup: """
            torch.set_num_threads(\(threads))
            g = torch.Generator().manual_seed(3)
            x = torch.randn(1, \(channels), \(size), \(size), generator=g).to(torch.\(torchType))
            w = torch.randn(\(outChannels), \(channels), \(kernel), \(kernel), generator=g).to(torch.\(torchType))
            def info(): return "torch " + torch.__version__ + " conv2d, \(torchType), " + str(torch.get_num_threads()) + " threads"
            """,
            referenceCall: "torch.nn.functional.conv2d(x, w, padding=\(pad))", referenceModule: "torch")
        var result = try bench.run(ours: { _ = try backend.conv2d(x, weight: w, bias: nil, stride: 1, padding: pad, groups: 1) }, progress: progress)
        result["shape"] = ["in_channels": channels, "out_channels": outChannels, "size": size, "kernel": kernel]
        result["dtype"] = dtype.rawValue
        result["compute_dtype"] = compute.rawValue
        result["sluice_kernel"] = compute == .bf16 ? "avx512bf16" : backend.path.rawValue
        return result
    }
}
