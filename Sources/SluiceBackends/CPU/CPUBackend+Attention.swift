import CKernels
import SluiceCore

extension CPUBackend {
    /// Scaled dot-product attention computed in tiles with an online softmax (flash-style): each
    /// worker holds one scores tile and one output accumulator, never the Lq × Lk matrix.
    public func attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor?, scale: Float?) throws(SluiceError) -> Tensor {
        guard q.shape.rank == 4, k.shape.rank == 4, v.shape.rank == 4,
              k.shape == v.shape, q.shape[0] == k.shape[0], q.shape[1] == k.shape[1], q.shape[3] == k.shape[3] else {
            throw .shapeMismatch(operation: "attention", expected: "q [B, H, Lq, D], k and v [B, H, Lk, D]",
                                 found: "q \(q.shape), k \(k.shape), v \(v.shape)")
        }
        let (B, H, Lq, D) = (q.shape[0], q.shape[1], q.shape[2], q.shape[3]), Lk = k.shape[2]
        // Keep the caller's layout when the last dimension is contiguous: [B, L, H, D] permuted
        // to [B, H, L, D] is read in place with a row stride of H·D.
        func strided(_ t: Tensor) throws(SluiceError) -> Tensor {
            if t.dtype == .f32 && t.strides[3] == 1 { return t }
            return try f32(t)
        }
        let Q = try strided(q), K = try strided(k), V = try strided(v)
        var M: Tensor?
        var maskStrides = (b: 0, h: 0)
        if let mask {
            let dims = [Int](repeating: 1, count: max(0, 4 - mask.shape.rank)) + mask.shape.dims
            guard dims.count == 4, dims[2] == Lq, dims[3] == Lk, dims[0] == 1 || dims[0] == B, dims[1] == 1 || dims[1] == H else {
                throw .shapeMismatch(operation: "attention mask", expected: "broadcastable to [\(B), \(H), \(Lq), \(Lk)]", found: "\(mask.shape)")
            }
            let additive: Tensor
            if mask.dtype == .bool {
                let bytes = mask.contiguous()
                additive = output(mask.shape)
                let src = bytes.rawPointer.assumingMemoryBound(to: UInt8.self)
                for i in 0..<mask.count { additive.f32[i] = src[i] != 0 ? 0 : -Float.infinity }
            } else {
                additive = try f32(mask)
            }
            M = additive
            maskStrides = (b: dims[0] == 1 ? 0 : dims[1] * Lq * Lk, h: dims[1] == 1 ? 0 : Lq * Lk)
        }
        let out = output([B, H, Lq, D])
        let sc = scale ?? 1 / Float(D).squareRoot()
        let blockQ = Int(sk_attention_block_q())
        let qBlocks = (Lq + blockQ - 1) / blockQ
        let jobs = B * H * qBlocks
        let wsFloats = Int(sk_attention_workspace_floats(isa, Int64(D)))
        let isa = self.isa
        withWorkspace(floats: wsFloats, count: min(threads, jobs)) { wsBase in
        let p = UnsafeSendable((Q, K, V, M?.f32, out.f32, wsBase))
        parallel(chunks: jobs) { job, worker in
            let (Q, K, V, mp, op, wsBase) = p.value
            let bh = job / qBlocks, b = bh / H, h = bh % H
            let q0 = (job % qBlocks) * blockQ, q1 = min(Lq, q0 + blockQ)
            let qp = Q.rawPointer.assumingMemoryBound(to: Float.self) + b * Q.strides[0] + h * Q.strides[1]
            let kp = K.rawPointer.assumingMemoryBound(to: Float.self) + b * K.strides[0] + h * K.strides[1]
            let vp = V.rawPointer.assumingMemoryBound(to: Float.self) + b * V.strides[0] + h * V.strides[1]
            let mh = mp.map { $0 + b * maskStrides.b + h * maskStrides.h }
            sk_attention_head(isa, Int64(q0), Int64(q1), Int64(Lk), Int64(D),
                              qp, Int64(Q.strides[2]), kp, Int64(K.strides[2]), vp, Int64(V.strides[2]),
                              mh, Int64(Lk), sc, op + (b * H + h) * Lq * D, Int64(D), wsBase + worker * (wsFloats + 16))
        }
        }
        return out
    }

    /// Bytes of scratch one attention call holds at most, independent of sequence length.
    public func attentionWorkspaceBytes(headDim: Int) -> Int {
        (threads * (Int(sk_attention_workspace_floats(isa, Int64(headDim))) + 16) + 16) * 4
    }
}
