import Foundation
import SluiceCore

/// How the pairs of a rotary embedding are laid out along the head dimension.
public enum RotaryLayout: Sendable {
    /// Pairs (2i, 2i+1): FLUX, Z-Image (complex multiplication on the reshaped last dim).
    case interleaved
    /// Pairs (i, i + D/2): `rotate_half` in Qwen/LLaMA-style text encoders.
    case halves
}

public enum BinaryOp: Sendable { case add, sub, mul, div }

/// The operations model code is written against. Every backend computes in f32; weights may be
/// stored in any float storage type and are widened as they are used. Model code never branches
/// on the backend (docs/architecture.md).
public protocol Backend: Sendable {
    var name: String { get }

    /// a [..., M, K] × b: b is [K, N] (or [N, K] with `transposeB`), shared across a's batch, or
    /// batched like a ([..., K, N]). Result [..., M, N] in f32.
    func matmul(_ a: Tensor, _ b: Tensor, transposeB: Bool) throws(SluiceError) -> Tensor
    /// x [..., in] · weight[out, in]ᵀ + bias[out]; weight in any float storage type.
    func linear(_ x: Tensor, weight: Tensor, bias: Tensor?) throws(SluiceError) -> Tensor
    /// NCHW convolution; weight [Cout, Cin/groups, kh, kw].
    func conv2d(_ x: Tensor, weight: Tensor, bias: Tensor?, stride: Int, padding: Int, groups: Int) throws(SluiceError) -> Tensor
    func groupNorm(_ x: Tensor, groups: Int, weight: Tensor?, bias: Tensor?, eps: Float) throws(SluiceError) -> Tensor
    func layerNorm(_ x: Tensor, weight: Tensor?, bias: Tensor?, eps: Float) throws(SluiceError) -> Tensor
    func rmsNorm(_ x: Tensor, weight: Tensor?, eps: Float) throws(SluiceError) -> Tensor
    func softmax(_ x: Tensor) throws(SluiceError) -> Tensor
    func silu(_ x: Tensor) throws(SluiceError) -> Tensor
    func gelu(_ x: Tensor, approximateTanh: Bool) throws(SluiceError) -> Tensor
    /// Element-wise with numpy broadcasting.
    func binary(_ op: BinaryOp, _ a: Tensor, _ b: Tensor) throws(SluiceError) -> Tensor
    /// NCHW nearest-neighbour 2× upsampling.
    func upsampleNearest2x(_ x: Tensor) throws(SluiceError) -> Tensor
    func concat(_ tensors: [Tensor], dim: Int) throws(SluiceError) -> Tensor
    /// x [..., L, ..., D] rotated by angle tables cos/sin [L, D/2]; `seqDim` is the axis of L.
    func rotaryEmbedding(_ x: Tensor, cos: Tensor, sin: Tensor, seqDim: Int, layout: RotaryLayout) throws(SluiceError) -> Tensor
    /// q [B, H, Lq, D], k/v [B, H, Lk, D] (any strides with a contiguous last dim) → [B, H, Lq, D].
    /// `mask` is additive f32 or bool (true = attend), broadcastable to [B, H, Lq, Lk].
    func attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor?, scale: Float?) throws(SluiceError) -> Tensor
    /// A strided view (a permutation, a slice) as a contiguous tensor, where the backend keeps it (on a
    /// device, the copy stays on the device).
    func contiguous(_ x: Tensor) throws(SluiceError) -> Tensor
    /// x + scale·y over same-shaped tensors, rounded after the product (no fused multiply-add): a
    /// sampler's step and the CFG combine, which keep the latents where the backend keeps them.
    func axpy(_ x: Tensor, _ y: Tensor, scale: Float) throws(SluiceError) -> Tensor
    /// Element-wise tanh (adaLN gates).
    func tanh(_ x: Tensor) throws(SluiceError) -> Tensor
    /// residual + rmsNorm(x) · weight: a block's norm and its residual add in one pass on a device.
    func rmsNorm(_ x: Tensor, weight: Tensor?, eps: Float, adding residual: Tensor) throws(SluiceError) -> Tensor
    /// silu(gate) · up over same-shaped tensors: a SwiGLU feed-forward's middle, one pass on a device.
    func siluGated(_ gate: Tensor, _ up: Tensor) throws(SluiceError) -> Tensor
    /// concat(parts, last dim) · weightᵀ + bias, where the backend can without the concatenation (FLUX's
    /// single blocks project attention and MLP through one weight).
    func linear(concatenating parts: [Tensor], weight: Tensor, bias: Tensor?) throws(SluiceError) -> Tensor
}

extension Backend {
    public func contiguous(_ x: Tensor) throws(SluiceError) -> Tensor { x.contiguous() }
    public func siluGated(_ gate: Tensor, _ up: Tensor) throws(SluiceError) -> Tensor { try mul(silu(gate), up) }
    public func linear(concatenating parts: [Tensor], weight: Tensor, bias: Tensor?) throws(SluiceError) -> Tensor {
        guard let first = parts.first else { throw .invalidArgument(name: "linear(concatenating:)", reason: "no parts") }
        return try linear(concat(parts, dim: first.shape.rank - 1), weight: weight, bias: bias)
    }
    public func rmsNorm(_ x: Tensor, weight: Tensor?, eps: Float, adding residual: Tensor) throws(SluiceError) -> Tensor {
        try add(residual, rmsNorm(x, weight: weight, eps: eps))
    }
    public func tanh(_ x: Tensor) throws(SluiceError) -> Tensor {
        let a = try x.converted(to: .f32).contiguous()
        let out = Tensor(uninitialized: x.shape, dtype: .f32)
        let pa = a.f32, po = out.f32
        for j in 0..<out.count { po[j] = Foundation.tanh(pa[j]) }
        return out
    }
    public func axpy(_ x: Tensor, _ y: Tensor, scale: Float) throws(SluiceError) -> Tensor {
        guard x.shape == y.shape else { throw .shapeMismatch(operation: "axpy", expected: "\(x.shape)", found: "\(y.shape)") }
        let a = try x.converted(to: .f32).contiguous(), b = try y.converted(to: .f32).contiguous()
        let out = Tensor(uninitialized: x.shape, dtype: .f32)
        let pa = a.f32, pb = b.f32, po = out.f32
        for j in 0..<out.count { po[j] = pa[j] + scale * pb[j] }
        return out
    }
    public func add(_ a: Tensor, _ b: Tensor) throws(SluiceError) -> Tensor { try binary(.add, a, b) }
    public func sub(_ a: Tensor, _ b: Tensor) throws(SluiceError) -> Tensor { try binary(.sub, a, b) }
    public func mul(_ a: Tensor, _ b: Tensor) throws(SluiceError) -> Tensor { try binary(.mul, a, b) }
    public func div(_ a: Tensor, _ b: Tensor) throws(SluiceError) -> Tensor { try binary(.div, a, b) }
}
