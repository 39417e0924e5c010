import CKernels
import SluiceCore

extension CPUBackend {
    /// One GEMM, C[M, N] = A[M, K] · B (+ bias), split across threads by columns (or rows when N
    /// is narrow). B keeps its storage type; CKernels widens it panel by panel.
    func gemm(M: Int, N: Int, K: Int, a: UnsafePointer<Float>, lda: Int,
              b: UnsafeRawPointer, btype: DType, ldb: Int, transB: Bool,
              c: UnsafeMutablePointer<Float>, ldc: Int, bias: UnsafePointer<Float>?, accumulate: Bool) {
        guard M > 0 && N > 0 else { return }
        let nr = Int(sk_gemm_nr(isa))
        let flops = 2 * M * N * max(K, 1)
        let want = min(threads, max(1, flops / 2_000_000))
        if want > 1 && M >= want * 48 && gemmTeam(width: min(want, WorkerPool.shared.capacity), M: M, N: N, K: K, a: a, lda: lda, b: b,
                                                   btype: btype, ldb: ldb, transB: transB, c: c, ldc: ldc, bias: bias, accumulate: accumulate) {
            return
        }
        // Split rows when there are enough (measured faster on 2 cores than splitting columns: each
        // thread packs only its rows of A, and C rows stay thread-local); otherwise split columns.
        let colBlocks = (N + nr - 1) / nr
        let splitColumns = M < want * 96
        let parts = splitColumns ? min(want, colBlocks) : min(want, (M + 31) / 32)
        let wsFloats = Int(sk_gemm_workspace_floats_for(isa, Int64(splitColumns ? (colBlocks + parts - 1) / parts * nr : N)))
        let code = btype.kernelCode!
        let isa = self.isa
        let args = UnsafeSendable((a, b, c, bias))
        withWorkspace(floats: wsFloats, count: parts) { base in
        parallel(chunks: parts) { part, worker in
            let (a, b, c, bias) = args.value
            var m0 = 0, m1 = M, n0 = 0, n1 = N
            if splitColumns {
                n0 = colBlocks * part / parts * nr
                n1 = min(N, colBlocks * (part + 1) / parts * nr)
            } else {
                m0 = M * part / parts
                m1 = M * (part + 1) / parts
            }
            sk_gemm(isa, Int64(m0), Int64(m1), Int64(n0), Int64(n1), Int64(K), a, Int32(SK_DT_F32), Int64(lda),
                    b, code, Int64(ldb), transB ? 1 : 0, c, Int64(ldc), bias, accumulate ? 1 : 0,
                    base + worker * (wsFloats + 16))
        }
        }
    }

    /// Threads share one packed panel of B and split the rows of C (see sk_gemm_team). Returns
    /// false if the worker pool cannot run the whole team at once.
    private func gemmTeam(width: Int, M: Int, N: Int, K: Int, a: UnsafePointer<Float>, lda: Int,
                          b: UnsafeRawPointer, btype: DType, ldb: Int, transB: Bool,
                          c: UnsafeMutablePointer<Float>, ldc: Int, bias: UnsafePointer<Float>?, accumulate: Bool) -> Bool {
        guard width > 1 else { return false }
        let isa = self.isa, code = btype.kernelCode!
        let panel = Int(sk_gemm_team_panel_floats(isa, Int64(N))), priv = Int(sk_gemm_team_private_floats(isa))
        let teamFloats = (Int(sk_gemm_team_bytes()) + 3) / 4 + 16
        return withWorkspace(floats: teamFloats + panel + width * (priv + 16), count: 1) { base in
            let team = UnsafeMutableRawPointer(base)
            sk_gemm_team_init(team, Int32(width), base + teamFloats)
            let args = UnsafeSendable((a, b, c, bias, team, base + teamFloats + panel))
            return WorkerPool.shared.run(width: width) { rank in
                let (a, b, c, bias, team, privateBase) = args.value
                sk_gemm_team(team, Int32(rank), isa, 0, Int64(M), 0, Int64(N), Int64(K), a, Int32(SK_DT_F32), Int64(lda),
                             b, code, Int64(ldb), transB ? 1 : 0, c, Int64(ldc), bias, accumulate ? 1 : 0,
                             privateBase + rank * (priv + 16))
            }
        }
    }

    public func matmul(_ a: Tensor, _ b: Tensor, transposeB: Bool) throws(SluiceError) -> Tensor {
        guard a.shape.rank >= 2, b.shape.rank >= 2 else {
            throw .shapeMismatch(operation: "matmul", expected: "rank ≥ 2 operands", found: "\(a.shape) × \(b.shape)")
        }
        guard b.dtype.isFloatStorage else { throw .unsupportedDType(operation: "matmul", dtype: b.dtype.rawValue) }
        let A = try f32(a)
        let B = b.contiguous()
        let M = a.shape[-2], K = a.shape[-1]
        let bK = transposeB ? b.shape[-1] : b.shape[-2]
        let N = transposeB ? b.shape[-2] : b.shape[-1]
        guard bK == K else {
            throw .shapeMismatch(operation: "matmul", expected: "inner dimensions equal", found: "\(a.shape) × \(b.shape)\(transposeB ? "ᵀ" : "")")
        }
        let batchDims = Array(a.shape.dims.dropLast(2))
        let batch = batchDims.reduce(1, *)
        let bBatch = b.shape.dims.dropLast(2).reduce(1, *)
        guard bBatch == 1 || bBatch == batch else {
            throw .shapeMismatch(operation: "matmul", expected: "b batch 1 or \(batch)", found: "\(b.shape)")
        }
        let out = output(Shape(batchDims + [M, N]))
        let es = B.dtype.byteSize
        for i in 0..<batch {
            gemm(M: M, N: N, K: K, a: A.f32 + i * M * K, lda: K,
                 b: B.rawPointer + (bBatch == 1 ? 0 : i * K * N * es), btype: B.dtype, ldb: transposeB ? K : N,
                 transB: transposeB, c: out.f32 + i * M * N, ldc: N, bias: nil, accumulate: false)
        }
        return out
    }

    public func linear(_ x: Tensor, weight: Tensor, bias: Tensor?) throws(SluiceError) -> Tensor {
        guard weight.shape.rank == 2, x.shape.rank >= 1, x.shape[-1] == weight.shape[1] else {
            throw .shapeMismatch(operation: "linear", expected: "x [..., \(weight.shape.rank == 2 ? weight.shape[1] : -1)], weight [out, in]",
                                 found: "x \(x.shape), weight \(weight.shape)")
        }
        return try linear(concatenating: [x], weight: weight, bias: bias)
    }

    /// Each part against its own columns of the weight, accumulating into one output: the
    /// concatenation is never made (a 4608 × 15360 f32 copy per FLUX single block at 1024²).
    public func linear(concatenating parts: [Tensor], weight: Tensor, bias: Tensor?) throws(SluiceError) -> Tensor {
        let widths = parts.map { $0.shape.rank >= 1 ? $0.shape[-1] : 0 }
        guard let first = parts.first, weight.shape.rank == 2, widths.reduce(0, +) == weight.shape[1],
              parts.allSatisfy({ $0.shape.rank == first.shape.rank && $0.count / max($0.shape[-1], 1) == first.count / max(first.shape[-1], 1) }) else {
            throw .shapeMismatch(operation: "linear(concatenating:)", expected: "parts [..., k_i] with Σ k_i = weight's in",
                                 found: "parts \(parts.map(\.shape)), weight \(weight.shape)")
        }
        guard weight.dtype.isFloatStorage else { throw .unsupportedDType(operation: "linear", dtype: weight.dtype.rawValue) }
        if compute == .bf16, let out = try linearBF16(parts.count == 1 ? first : concat(parts, dim: first.shape.rank - 1), weight: weight, bias: bias) {
            return out
        }
        let outFeatures = weight.shape[0], inFeatures = weight.shape[1]
        let biasF32 = try linearBias(bias, outFeatures)
        let W = weight.contiguous(), rows = first.count / max(widths[0], 1)
        let out = output(Shape(Array(first.shape.dims.dropLast()) + [outFeatures]))
        var column = 0
        for (i, part) in parts.enumerated() {
            let X = try f32(part)
            gemm(M: rows, N: outFeatures, K: widths[i], a: X.f32, lda: widths[i], b: W.rawPointer + column * W.dtype.byteSize, btype: W.dtype,
                 ldb: inFeatures, transB: true, c: out.f32, ldc: outFeatures, bias: i == 0 ? biasF32.map { UnsafePointer($0.f32) } : nil,
                 accumulate: i > 0)
            column += widths[i]
        }
        return out
    }

    /// A linear layer's bias as contiguous f32, checked against the layer's output width.
    func linearBias(_ bias: Tensor?, _ outFeatures: Int) throws(SluiceError) -> Tensor? {
        guard let bias else { return nil }
        guard bias.shape.count == outFeatures else { throw .shapeMismatch(operation: "linear bias", expected: "[\(outFeatures)]", found: "\(bias.shape)") }
        return try f32(bias)
    }
}
