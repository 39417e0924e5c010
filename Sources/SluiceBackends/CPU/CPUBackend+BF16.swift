import CKernels
import Foundation
import SluiceCore

extension CPUBackend {
    /// x · weightᵀ + bias computed in bf16 where the CPU has AVX512-BF16 (VDPBF16PS): x and the weight
    /// rounded to bf16 (nearest even) as they are packed, products accumulated in f32 — the rounding
    /// torch's bf16 matmul makes at its inputs; the output stays f32. nil where the CPU lacks the
    /// instructions. `linear` routes here when the backend's `compute` is bf16 (`--compute bf16`).
    public func linearBF16(_ x: Tensor, weight: Tensor, bias: Tensor?) throws(SluiceError) -> Tensor? {
        guard KernelPath.hasAVX512BF16 else { return nil }
        guard weight.shape.rank == 2, x.shape.rank >= 1, x.shape[-1] == weight.shape[1] else {
            throw .shapeMismatch(operation: "linearBF16", expected: "x [..., \(weight.shape.rank == 2 ? weight.shape[1] : -1)], weight [out, in]",
                                 found: "x \(x.shape), weight \(weight.shape)")
        }
        guard weight.dtype.isFloatStorage else { throw .unsupportedDType(operation: "linearBF16", dtype: weight.dtype.rawValue) }
        let n = weight.shape[0], k = weight.shape[1], rows = x.count / max(k, 1)
        let biasF32 = try linearBias(bias, n)
        let X = try f32(x), W = weight.contiguous(), out = output(Shape(Array(x.shape.dims.dropLast()) + [n]))
        let dtype = W.dtype.kernelCode!, slivers = (n + 31) / 32
        // Four row bands a thread, of equal height in multiples of the micro-tile's 12 rows: every worker
        // gets the same share (240-row bands left one of two threads a band more: 0.74× torch, now 0.89×).
        let band = max(12, ((rows + 4 * threads - 1) / (4 * threads) + 11) / 12 * 12), bands = (rows + band - 1) / band
        // Pooled scratch like every CPU kernel's: B packed once into the kernel's pair layout (threads
        // share the slivers), then a workspace per worker for its row bands' packed A.
        let packedFloats = (sk_gemm_bf16_packed_b_bytes(Int64(k), Int64(n)) + 3) / 4, wsFloats = (sk_gemm_bf16_workspace_bytes() + 3) / 4
        let workers = min(threads, bands)
        withWorkspace(floats: packedFloats + workers * (wsFloats + 16), count: 1) { base in
            let p = UnsafeSendable((X.f32, W.rawPointer, out.f32, biasF32?.f32, base))
            let chunk = max(1, slivers / (4 * threads))
            parallel(chunks: (slivers + chunk - 1) / chunk) { c, _ in
                let (_, wp, _, _, pk) = p.value
                sk_gemm_bf16_pack_b(wp, dtype, Int64(k), 1, Int64(k), Int64(n), Int64(c * chunk), Int64(min(slivers, (c + 1) * chunk)), pk)
            }
            parallel(chunks: bands) { b, worker in
                let (xp, _, op, bp, pk) = p.value
                _ = sk_gemm_bf16(Int64(b * band), Int64(min(rows, (b + 1) * band)), Int64(n), Int64(k), xp, Int64(k), pk,
                                 op, Int64(n), bp.map { UnsafePointer($0) }, pk + packedFloats + worker * (wsFloats + 16))
            }
        }
        return out
    }
}
