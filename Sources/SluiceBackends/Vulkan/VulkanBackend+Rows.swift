import SluiceCore

/// Row-wise kernels: group/layer/RMS norm and softmax.
extension VulkanBackend {

    public func groupNorm(_ x: Tensor, groups: Int, weight: Tensor?, bias: Tensor?, eps: Float) throws(SluiceError) -> Tensor {
        guard x.shape.rank >= 3, groups > 0, x.shape[1] % groups == 0, x.count > 0 else {
            return try cpu.groupNorm(x, groups: groups, weight: weight, bias: bias, eps: eps)
        }
        let c = x.shape[1], hw = x.shape.dims.dropFirst(2).reduce(1, *)
        return try rows(x, rowLength: (c / groups) * hw, mode: 3, weight: weight, bias: bias, featureCount: c, eps: eps, groups: groups, hw: hw) {
            () throws(SluiceError) in try cpu.groupNorm(x, groups: groups, weight: weight, bias: bias, eps: eps)
        }
    }

    public func layerNorm(_ x: Tensor, weight: Tensor?, bias: Tensor?, eps: Float) throws(SluiceError) -> Tensor {
        let D = x.shape.rank > 0 ? x.shape[-1] : 0
        return try rows(x, rowLength: D, mode: 1, weight: weight, bias: bias, featureCount: D, eps: eps) { () throws(SluiceError) in
            try cpu.layerNorm(x, weight: weight, bias: bias, eps: eps)
        }
    }

    public func rmsNorm(_ x: Tensor, weight: Tensor?, eps: Float) throws(SluiceError) -> Tensor {
        let D = x.shape.rank > 0 ? x.shape[-1] : 0
        return try rows(x, rowLength: D, mode: 0, weight: weight, bias: nil, featureCount: D, eps: eps) { () throws(SluiceError) in
            try cpu.rmsNorm(x, weight: weight, eps: eps)
        }
    }

    public func rmsNorm(_ x: Tensor, weight: Tensor?, eps: Float, adding residual: Tensor) throws(SluiceError) -> Tensor {
        let D = x.shape.rank > 0 ? x.shape[-1] : 0
        guard residual.shape == x.shape, residual.dtype == .f32 else { return try add(residual, rmsNorm(x, weight: weight, eps: eps)) }
        return try rows(x, rowLength: D, mode: 0, weight: weight, bias: nil, residual: residual, featureCount: D, eps: eps) { () throws(SluiceError) in
            try cpu.add(residual, cpu.rmsNorm(x, weight: weight, eps: eps))
        }
    }

    public func softmax(_ x: Tensor) throws(SluiceError) -> Tensor {
        let D = x.shape.rank > 0 ? x.shape[-1] : 0
        return try rows(x, rowLength: D, mode: 2, weight: nil, bias: nil, featureCount: D, eps: 0) { () throws(SluiceError) in try cpu.softmax(x) }
    }

    /// The row kernel over contiguous rows of `rowLength` values, with a per-feature weight and bias
    /// (widened to f32 as operands) or a residual of x's shape added at the end. Falls back to `onCPU` for what it does not take.
    func rows(_ x: Tensor, rowLength D: Int, mode: UInt32, weight: Tensor?, bias: Tensor?, residual: Tensor? = nil, featureCount: Int, eps: Float,
              groups: Int = 1, hw: Int = 1, onCPU: () throws(SluiceError) -> Tensor) throws(SluiceError) -> Tensor {
        // A row's 256 invocations each loop over D / 256 values; llvmpipe stops loops at 65,535 iterations.
        guard x.dtype == .f32, D > 0, D <= 256 * 65_000, x.count > 0, x.count % D == 0, fits([x]), weight.map({ $0.count == featureCount }) ?? true,
              bias.map({ $0.count == featureCount }) ?? true else {
            return try onCPU()
        }
        let rowCount = x.count / D
        return try op { () throws(SluiceError) -> Tensor in
            let bx = try input(contiguous(x))
            let bw = try weight.map { w throws(SluiceError) in try f32Input(w) } ?? bx
            var bb = try bias.map { b throws(SluiceError) in try f32Input(b) } ?? bx
            if let residual { bb = try input(contiguous(residual)) }
            let bo = try context.transient(bytes: x.count * 4)
            // One workgroup per row.
            try context.dispatch(.rows, bindings: [bx, bw, bb, bo],
                                 push: [UInt32(rowCount), UInt32(D), mode, eps.bitPattern, weight == nil ? 0 : 1, residual != nil ? 2 : bias == nil ? 0 : 1,
                                        UInt32(groups), UInt32(hw)], groups: Self.groups(rowCount, size: 1))
            return try read(bo, x.shape)
        }
    }
}
