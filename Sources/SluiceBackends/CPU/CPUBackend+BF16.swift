import CKernels
import Foundation
import SluiceCore

extension CPUBackend {
    /// x · weightᵀ + bias computed in bf16 where the CPU has AVX512-BF16 (VDPBF16PS): x and the weight
    /// rounded to bf16 (nearest even) as they are packed, products accumulated in f32 — the rounding
    /// torch's bf16 matmul makes at its inputs; the output stays f32. nil where the CPU lacks the
    /// instructions. The first piece of issue 16's `--compute bf16`: not yet chosen by any pipeline.
    public func linearBF16(_ x: Tensor, weight: Tensor, bias: Tensor?) throws(SluiceError) -> Tensor? {
        guard KernelPath.hasAVX512BF16 else { return nil }
        guard weight.shape.rank == 2, x.shape.rank >= 1, x.shape[-1] == weight.shape[1] else {
            throw .shapeMismatch(operation: "linearBF16", expected: "x [..., \(weight.shape.rank == 2 ? weight.shape[1] : -1)], weight [out, in]",
                                 found: "x \(x.shape), weight \(weight.shape)")
        }
        guard weight.dtype.isFloatStorage else { throw .unsupportedDType(operation: "linearBF16", dtype: weight.dtype.rawValue) }
        let n = weight.shape[0], k = weight.shape[1], rows = x.count / max(k, 1)
        var biasF32: Tensor?
        if let bias {
            guard bias.shape.count == n else { throw .shapeMismatch(operation: "linearBF16 bias", expected: "[\(n)]", found: "\(bias.shape)") }
            biasF32 = try f32(bias)
        }
        let X = try f32(x), W = weight.contiguous(), out = output(Shape(Array(x.shape.dims.dropLast()) + [n]))
        // B packed once into the kernel's pair layout (threads share the slivers), then row bands, one
        // workspace per band.
        let packedBytes = sk_gemm_bf16_packed_b_bytes(Int64(k), Int64(n))
        let packed = UnsafeMutableRawPointer.allocate(byteCount: packedBytes, alignment: 64)
        defer { packed.deallocate() }
        let dtype = W.dtype.kernelCode!, wsBytes = sk_gemm_bf16_workspace_bytes(), slivers = (n + 31) / 32
        let p = UnsafeSendable((X.f32, W.rawPointer, out.f32, biasF32?.f32, packed))
        let chunk = max(1, slivers / (4 * max(threads, 1)))
        parallel(chunks: (slivers + chunk - 1) / chunk) { c, _ in
            let (_, wp, _, _, pk) = p.value
            sk_gemm_bf16_pack_b(wp, dtype, Int64(k), 1, Int64(k), Int64(n), Int64(c * chunk), Int64(min(slivers, (c + 1) * chunk)), pk)
        }
        // Row bands in multiples of the micro-tile's 12 rows, four per thread so a busier core takes fewer.
        let band = max(12, ((rows + 4 * threads - 1) / (4 * threads) + 11) / 12 * 12), bands = (rows + band - 1) / band
        parallel(chunks: bands) { b, _ in
            let (xp, _, op, bp, pk) = p.value
            let ws = UnsafeMutableRawPointer.allocate(byteCount: wsBytes, alignment: 64)
            defer { ws.deallocate() }
            _ = sk_gemm_bf16(Int64(b * band), Int64(min(rows, (b + 1) * band)), Int64(n), Int64(k), xp, Int64(k), pk,
                             op, Int64(n), bp.map { UnsafePointer($0) }, ws)
        }
        return out
    }
}
