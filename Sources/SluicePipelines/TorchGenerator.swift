import CKernels
import SluiceCore

/// torch's CPU generator (`torch.Generator("cpu").manual_seed(seed)`): the same seed gives the same
/// initial noise as diffusers, bit for bit, on any machine (torch's x86 AVX2 normal sampler is what
/// we reproduce; ARM builds of torch use libm there and may differ in the last bit).
public struct TorchGenerator: Sendable {
    private var engine = sk_mt19937()

    public init(seed: UInt64) {
        sk_mt19937_seed(&engine, seed)
    }

    /// `torch.randn(shape, generator=g)` in f32. torch draws tensors of fewer than 16 elements through
    /// a different (double) path that latents never take; those sizes are refused rather than guessed.
    public mutating func randn(_ shape: Shape) throws(SluiceError) -> Tensor {
        guard shape.count >= 16 else {
            throw .invalidArgument(name: "randn shape \(shape)", reason: "fewer than 16 elements is not supported")
        }
        let t = Tensor(uninitialized: shape, dtype: .f32)
        sk_torch_randn(&engine, t.f32, Int64(shape.count))
        return t
    }

    /// The next raw 32-bit output of the engine (tests use it to check the engine against known values).
    public mutating func next32() -> UInt32 { sk_mt19937_next(&engine) }
}
