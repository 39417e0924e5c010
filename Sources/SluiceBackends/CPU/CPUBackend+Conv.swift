import CKernels
import SluiceCore

extension CPUBackend {
    /// Convolution as GEMM, output rows at a time: out_g[Cout/g, pixels] = W_g[Cout/g, K] ·
    /// col[K, pixels] with K = Cin/g·kh·kw. The weights are the GEMM's A operand and stay in their
    /// storage type (widened block by block while packed); col is built for a band of output rows
    /// (bounded to ~4 MiB per worker), and the result lands directly in NCHW. A 1×1, stride-1,
    /// unpadded convolution reads its input as col without copying.
    public func conv2d(_ x: Tensor, weight: Tensor, bias: Tensor?, stride: Int, padding: Int, groups: Int) throws(SluiceError) -> Tensor {
        guard x.shape.rank == 4, weight.shape.rank == 4 else {
            throw .shapeMismatch(operation: "conv2d", expected: "x [N, C, H, W], weight [Cout, Cin/g, kh, kw]", found: "x \(x.shape), weight \(weight.shape)")
        }
        guard stride >= 1 else { throw .invalidArgument(name: "stride", reason: "must be ≥ 1, got \(stride)") }
        guard padding >= 0 else { throw .invalidArgument(name: "padding", reason: "must be ≥ 0, got \(padding)") }
        let (n, cin, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let (cout, cpg, kh, kw) = (weight.shape[0], weight.shape[1], weight.shape[2], weight.shape[3])
        guard groups >= 1, cin % groups == 0, cout % groups == 0, cpg == cin / groups else {
            throw .shapeMismatch(operation: "conv2d", expected: "Cin/groups = weight dim 1 with groups dividing Cin and Cout",
                                 found: "x \(x.shape), weight \(weight.shape), groups \(groups)")
        }
        guard weight.dtype.isFloatStorage else { throw .unsupportedDType(operation: "conv2d", dtype: weight.dtype.rawValue) }
        let oh = (h + 2 * padding - kh) / stride + 1, ow = (w + 2 * padding - kw) / stride + 1
        guard h + 2 * padding >= kh, w + 2 * padding >= kw, oh > 0, ow > 0 else {
            throw .shapeMismatch(operation: "conv2d", expected: "kernel no larger than the padded input", found: "x \(x.shape), kernel \(kh)×\(kw)")
        }
        if let bias, bias.count != cout {
            throw .shapeMismatch(operation: "conv2d bias", expected: "[\(cout)]", found: "\(bias.shape)")
        }
        // With bf16 compute the products run on VDPBF16PS like the linears': the weights (widened to
        // f32 once, then rounded to bf16 as packed) are A, each band's columns are rounded as packed.
        let bf16 = compute == .bf16 && KernelPath.hasAVX512BF16
        let X = try f32(x), W = bf16 ? try f32(weight) : weight.contiguous()
        let B = try bias.map { (b: Tensor) throws(SluiceError) in try f32(b) }
        let out = output([n, cout, oh, ow])
        let coutG = cout / groups, K = cpg * kh * kw, pixels = oh * ow
        let direct = kh == 1 && kw == 1 && stride == 1 && padding == 0
        // Bands of output rows: col stays ≤ 1 Mi floats, and there are enough bands for every thread.
        var bandRows = max(1, min(oh, (1 << 20) / max(1, K * ow)))
        if n * groups * ((oh + bandRows - 1) / bandRows) < threads { bandRows = max(1, (oh + threads - 1) / threads) }
        let bands = (oh + bandRows - 1) / bandRows
        let jobs = n * groups * bands
        let bandPixels = bandRows * ow
        let bf16Packed = (Int(sk_gemm_bf16_packed_b_bytes(Int64(K), Int64(bandPixels))) + 3) / 4
        let gemmFloats = bf16 ? bf16Packed + 16 + (Int(sk_gemm_bf16_workspace_bytes()) + 3) / 4
                              : Int(sk_gemm_workspace_floats_for(isa, Int64(bandPixels)))
        let perWorker = gemmFloats + 16 + (direct ? 0 : K * bandPixels)
        let isa = self.isa, code = W.dtype.kernelCode!, es = W.dtype.byteSize
        withWorkspace(floats: perWorker, count: min(threads, jobs)) { wsBase in
        let ptrs = UnsafeSendable((X.f32, W.rawPointer, B?.f32, out.f32, wsBase))
        parallel(chunks: jobs) { job, worker in
            let (xp, wp, bp, op, wsBase) = ptrs.value
            let img = job / (groups * bands), g = (job / bands) % groups
            let oy0 = (job % bands) * bandRows, oy1 = min(oh, oy0 + bandRows)
            let np = (oy1 - oy0) * ow
            let scratch = wsBase + worker * (perWorker + 16)
            let input = xp + (img * cin + g * cpg) * h * w
            let col: UnsafePointer<Float>, ldb: Int
            if direct {
                col = UnsafePointer(input + oy0 * ow)
                ldb = pixels
            } else {
                let dst = scratch + gemmFloats + 16
                im2colBand(input, channels: cpg, h: h, w: w, kh: kh, kw: kw, stride: stride, padding: padding,
                           oy0: oy0, oy1: oy1, ow: ow, into: dst)
                col = UnsafePointer(dst)
                ldb = np
            }
            let c = op + (img * cout + g * coutG) * pixels + oy0 * ow
            if bf16 {
                sk_gemm_bf16_pack_b(col, Int32(SK_DT_F32), Int64(ldb), 0, Int64(K), Int64(np), 0, Int64((np + 31) / 32), scratch)
                _ = sk_gemm_bf16(0, Int64(coutG), Int64(np), Int64(K), (wp + g * coutG * K * es).assumingMemoryBound(to: Float.self),
                                 Int64(K), scratch, c, Int64(pixels), nil, scratch + bf16Packed + 16)
            } else {
                sk_gemm(isa, 0, Int64(coutG), 0, Int64(np), Int64(K), wp + g * coutG * K * es, code, Int64(K),
                        col, Int32(SK_DT_F32), Int64(ldb), 0, c, Int64(pixels), nil, 0, scratch)
            }
            if let bp {
                for oc in 0..<coutG {
                    let row = c + oc * pixels
                    sk_scale_shift(isa, row, row, Int64(np), 1, bp[g * coutG + oc])
                }
            }
        }
        }
        return out
    }

    /// col[(c, i, j), (oy − oy0)·ow + ox] = x[c, oy·s + i − pad, ox·s + j − pad] (0 outside).
    private func im2colBand(_ x: UnsafePointer<Float>, channels: Int, h: Int, w: Int, kh: Int, kw: Int, stride: Int,
                            padding: Int, oy0: Int, oy1: Int, ow: Int, into col: UnsafeMutablePointer<Float>) {
        let np = (oy1 - oy0) * ow
        var row = col
        for c in 0..<channels {
            let plane = x + c * h * w
            for i in 0..<kh {
                for j in 0..<kw {
                    for oy in oy0..<oy1 {
                        let d = row + (oy - oy0) * ow
                        let iy = oy * stride + i - padding
                        guard iy >= 0 && iy < h else { d.update(repeating: 0, count: ow); continue }
                        let src = plane + iy * w
                        if stride == 1 {
                            // ix = ox + j − pad is inside [0, w) for ox in [lo, hi)
                            let lo = min(ow, max(0, padding - j)), hi = max(lo, min(ow, w + padding - j))
                            if lo > 0 { d.update(repeating: 0, count: lo) }
                            if hi > lo { (d + lo).update(from: src + lo + j - padding, count: hi - lo) }
                            if hi < ow { (d + hi).update(repeating: 0, count: ow - hi) }
                        } else {
                            for ox in 0..<ow {
                                let ix = ox * stride + j - padding
                                d[ox] = ix >= 0 && ix < w ? src[ix] : 0
                            }
                        }
                    }
                    row += np
                }
            }
        }
    }

    public func upsampleNearest2x(_ x: Tensor) throws(SluiceError) -> Tensor {
        guard x.shape.rank == 4 else { throw .shapeMismatch(operation: "upsampleNearest2x", expected: "[N, C, H, W]", found: "\(x.shape)") }
        let X = try f32(x)
        let (planes, h, w) = (x.shape[0] * x.shape[1], x.shape[2], x.shape[3])
        let out = output([x.shape[0], x.shape[1], 2 * h, 2 * w])
        let ptrs = UnsafeSendable((X.f32, out.f32))
        parallel(chunks: planes) { plane, _ in
            let (src, dst) = ptrs.value
            for y in 0..<h {
                let s = src + (plane * h + y) * w
                let d0 = dst + (plane * 2 * h + 2 * y) * 2 * w
                for xi in 0..<w { d0[2 * xi] = s[xi]; d0[2 * xi + 1] = s[xi] }
                (d0 + 2 * w).update(from: d0, count: 2 * w)
            }
        }
        return out
    }
}
