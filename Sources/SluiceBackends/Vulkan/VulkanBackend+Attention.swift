import SluiceCore

/// Tiled attention with an online softmax.
extension VulkanBackend {

    public func attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor?, scale: Float?) throws(SluiceError) -> Tensor {
        guard q.shape.rank == 4, k.shape.rank == 4, v.shape == k.shape, q.dtype == .f32, k.dtype == .f32, v.dtype == .f32,
              q.shape[0] == k.shape[0], q.shape[1] == k.shape[1], q.shape[3] == k.shape[3], q.count > 0, k.count > 0,
              q.shape[3] <= 128, q.shape[0] * q.shape[1] <= 65535, fits([q, k, v]) else {
            return try cpu.attention(q: q, k: k, v: v, mask: mask, scale: scale)
        }
        let (B, H, Lq, D) = (q.shape[0], q.shape[1], q.shape[2], q.shape[3]), Lk = k.shape[2]
        // The mask as additive f32 (bool: 0 where attended, −inf elsewhere) with broadcast strides.
        var additive: Tensor?
        var strides = [0, 0, 0, 0]
        if let mask {
            let dims = [Int](repeating: 1, count: max(4 - mask.shape.rank, 0)) + mask.shape.dims
            let full = [B, H, Lq, Lk]
            guard dims.count == 4, (0..<4).allSatisfy({ dims[$0] == 1 || dims[$0] == full[$0] }), mask.dtype == .f32 || mask.dtype == .bool else {
                return try cpu.attention(q: q, k: k, v: v, mask: mask, scale: scale)
            }
            let m: Tensor
            if mask.dtype == .bool {
                let src = mask.contiguous(), p = src.rawPointer.assumingMemoryBound(to: UInt8.self)
                m = Tensor(uninitialized: mask.shape, dtype: .f32)
                for i in 0..<m.count { m.f32[i] = p[i] != 0 ? 0 : -Float.infinity }
            } else {
                m = mask.contiguous()
            }
            let contiguous = Shape(dims).contiguousStrides
            strides = (0..<4).map { dims[$0] == 1 ? 0 : contiguous[$0] }
            additive = m
        }
        guard fits(bytes: B * H * Lq * D * 4), additive.map({ fits([$0]) }) ?? true else {
            return try cpu.attention(q: q, k: k, v: v, mask: mask, scale: scale)
        }
        let s = scale ?? 1 / Float(D).squareRoot()
        // As the kernel divides its 64 invocations: one per row up to D = 64, two per row up to 128.
        let rowsPerGroup = 64 / ((D + 63) / 64)
        return try op { () throws(SluiceError) -> Tensor in
            let bq = try input(contiguous(q)), bk = try input(contiguous(k)), bv = try input(contiguous(v))
            let bm = try additive.map { m throws(SluiceError) in try input(m) } ?? bq
            let bo = try context.transient(bytes: B * H * Lq * D * 4)
            try context.dispatch(.attention, bindings: [bq, bk, bv, bm, bo],
                                 push: [UInt32(Lq), UInt32(Lk), UInt32(D), UInt32(H), s.bitPattern, additive == nil ? 0 : 1] + strides.map { UInt32($0) },
                                 groups: ((Lq + rowsPerGroup - 1) / rowsPerGroup, B * H, 1))
            return try read(bo, [B, H, Lq, D])
        }
    }
}
