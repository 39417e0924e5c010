import CKernels
import SluiceCore

extension CPUBackend {
    /// Convolution as GEMM over chunks of output pixels: im2col for a chunk gives
    /// col[pixels, Cin/g·kh·kw], and col · W_gᵀ gives out[pixels, Cout/g] (W stays in its storage
    /// type, read as a Linear weight). Chunking bounds the im2col buffer to `pixelChunk` rows.
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
        guard oh > 0, ow > 0 else {
            throw .shapeMismatch(operation: "conv2d", expected: "kernel no larger than the padded input", found: "x \(x.shape), kernel \(kh)×\(kw)")
        }
        if let bias, bias.count != cout {
            throw .shapeMismatch(operation: "conv2d bias", expected: "[\(cout)]", found: "\(bias.shape)")
        }
        let X = try f32(x), W = weight.contiguous()
        let B = try bias.map { (b: Tensor) throws(SluiceError) in try f32(b) }
        let out = output([n, cout, oh, ow])
        let coutG = cout / groups, K = cpg * kh * kw, pixels = oh * ow
        let pixelChunk = max(64, min(pixels, 65536 / max(1, K / 64 + 1)))
        let chunksPerImage = (pixels + pixelChunk - 1) / pixelChunk
        let jobs = n * groups * chunksPerImage
        let gemmFloats = Int(sk_gemm_workspace_floats_for(isa, Int64(coutG)))
        let perWorker = gemmFloats + 16 + pixelChunk * (K + coutG)
        let isa = self.isa, code = W.dtype.kernelCode!, es = W.dtype.byteSize
        withWorkspace(floats: perWorker, count: min(threads, jobs)) { wsBase in
        let ptrs = UnsafeSendable((X.f32, W.rawPointer, B?.f32, out.f32, wsBase))
        parallel(chunks: jobs) { job, worker in
            let (xp, wp, bp, op, wsBase) = ptrs.value
            let img = job / (groups * chunksPerImage), g = (job / chunksPerImage) % groups
            let p0 = (job % chunksPerImage) * pixelChunk, p1 = min(pixels, p0 + pixelChunk)
            let scratch = wsBase + worker * (perWorker + 16)
            let gemmWS = scratch, col = scratch + gemmFloats + 16, res = col + pixelChunk * K
            // im2col: col[p, (c, i, j)] = x[img, g·cpg + c, oy·s + i − pad, ox·s + j − pad]
            for p in p0..<p1 {
                let oy = p / ow, ox = p % ow
                var dst = col + (p - p0) * K
                for c in 0..<cpg {
                    let plane = xp + ((img * cin) + g * cpg + c) * h * w
                    for i in 0..<kh {
                        let iy = oy * stride + i - padding
                        for j in 0..<kw {
                            let ix = ox * stride + j - padding
                            dst.pointee = (iy >= 0 && iy < h && ix >= 0 && ix < w) ? plane[iy * w + ix] : 0
                            dst += 1
                        }
                    }
                }
            }
            let rows = p1 - p0
            sk_gemm(isa, 0, Int64(rows), 0, Int64(coutG), Int64(K), col, Int64(K), wp + g * coutG * K * es, code, Int64(K), 1,
                    res, Int64(coutG), nil, 0, gemmWS)
            for oc in 0..<coutG {
                let channel = g * coutG + oc
                let b = bp.map { $0[channel] } ?? 0
                let dst = op + (img * cout + channel) * pixels
                for r in 0..<rows { dst[p0 + r] = res[r * coutG + oc] + b }
            }
        }
        }
        return out
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
