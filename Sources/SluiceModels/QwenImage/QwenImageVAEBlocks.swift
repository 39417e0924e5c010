import SluiceBackends
import SluiceCore
import SluiceWeights

/// The blocks of AutoencoderKLQwenImage's encoder and decoder, for one frame (T = 1) in NCHW.
///
/// Why a frame is 2-D (diffusers' autoencoder_kl_qwenimage.py): QwenImageCausalConv3d pads time by
/// (2·p, 0), zeros before the frame, and the first chunk passes no cache (`feat_cache[idx]` is None), so a
/// kernel of kT = 3 sees [0, 0, frame] and only its last temporal slice meets the frame; a 1×1×1 conv has
/// kT = 1. The frame's later entries in the cache are never read. The resamplers' `time_conv` is skipped for
/// the first chunk (upsample3d marks its cache "Rep", downsample3d only stores the frame), and every other
/// layer (RMS norm, attention, the 2-D resample convs) already works frame by frame.
extension QwenImageVAE {
    /// QwenImageCausalConv3d (or a plain Conv2d) on one frame: a 2-D conv with the frame's kernel, padded
    /// by half the kernel (1 for 3×3, 0 for 1×1) unless `padding` says otherwise.
    func conv(_ x: Tensor, _ w: ModuleWeights, _ b: any Backend, stride: Int = 1, padding: Int? = nil) throws(SluiceError) -> Tensor {
        let kernel = try Self.frameKernel(w("weight"), key: w.prefix + ".weight")
        return try b.conv2d(x, weight: kernel, bias: w.optional("bias"), stride: stride, padding: padding ?? kernel.shape[3] / 2, groups: 1)
    }

    /// A Conv3d weight [out, in, kT, kH, kW] as the 2-D kernel [out, in, kH, kW] one frame meets: its last
    /// temporal slice, as a strided view of the stored bytes (no copy here). Backends that need a packed
    /// kernel make it contiguous as they read it (the CPU GEMM takes one leading dimension, and the slice's
    /// input channels are kT·kH·kW apart, not kH·kW), so each call copies that third of the weight; kT = 1
    /// (1×1×1 convs) is contiguous already. A 4-D weight (the resamplers' Conv2d) is returned as it is.
    public static func frameKernel(_ w: Tensor, key: String) throws(SluiceError) -> Tensor {
        switch w.shape.rank {
        case 4:
            return w
        case 5:
            let d = w.shape.dims, s = w.strides
            return Tensor(storage: w.storage, dtype: w.dtype, shape: [d[0], d[1], d[3], d[4]], strides: [s[0], s[1], s[3], s[4]],
                          offset: w.offset + (d[2] - 1) * s[2])
        default:
            throw .shapeMismatch(operation: key, expected: "[out, in, kT, kH, kW] or [out, in, kH, kW]", found: "\(w.shape)")
        }
    }

    /// QwenImageRMS_norm on one frame: F.normalize over channels · √C · γ, which per pixel is an RMS norm of
    /// the channel vector (‖x‖/√C is its RMS). Returned as tokens [h·w, C], channels last, as the backend's
    /// rmsNorm takes them. F.normalize divides by max(‖x‖, 1e-12); ε = 1e-24/C under the RMS's square root
    /// is the same floor and keeps an all-zero pixel at zero. The VAE's norms have no bias.
    func normTokens(_ x: Tensor, gamma: Tensor, _ b: any Backend) throws(SluiceError) -> Tensor {
        let C = x.shape[1], L = x.shape[2] * x.shape[3]
        let tokens = try b.contiguous(x.reshaped([C, L]).permuted([1, 0]))
        return try b.rmsNorm(tokens, weight: gamma.reshaped([gamma.count]), eps: 1e-24 / Float(C))
    }

    /// The same norm, back in NCHW.
    func norm(_ x: Tensor, gamma: Tensor, _ b: any Backend) throws(SluiceError) -> Tensor {
        try tokensToImage(normTokens(x, gamma: gamma, b), like: x, b)
    }

    func tokensToImage(_ tokens: Tensor, like x: Tensor, _ b: any Backend) throws(SluiceError) -> Tensor {
        try b.contiguous(tokens.permuted([1, 0])).reshaped([1, tokens.shape[1], x.shape[2], x.shape[3]])
    }

    /// QwenImageResidualBlock.forward: RMS norm → SiLU → conv1 → RMS norm → SiLU → (dropout) → conv2, plus the
    /// input (through a 1×1×1 conv_shortcut when the channel count changes).
    func resnet(_ x: Tensor, _ w: ModuleWeights, _ b: any Backend) throws(SluiceError) -> Tensor {
        let shortcut = w.optional("conv_shortcut.weight") != nil ? try conv(x, w.scoped("conv_shortcut"), b) : x
        var h = try b.silu(norm(x, gamma: w("norm1.gamma"), b))
        h = try conv(h, w.scoped("conv1"), b)
        h = try b.silu(norm(h, gamma: w("norm2.gamma"), b))
        h = try conv(h, w.scoped("conv2"), b)
        return try b.add(h, shortcut)
    }

    /// QwenImageAttentionBlock.forward on one frame: single-head self-attention over the h·w positions of
    /// the RMS-normed frame; q, k and v are the 1×1 conv to_qkv's three channel thirds, `proj` a 1×1 conv;
    /// plus the input. SDPA's default scale 1/√C.
    func attention(_ x: Tensor, _ w: ModuleWeights, _ b: any Backend) throws(SluiceError) -> Tensor {
        let C = x.shape[1], L = x.shape[2] * x.shape[3]
        let tokens = try normTokens(x, gamma: w("norm.gamma"), b)                       // [L, C]
        let qkvWeight = try w("to_qkv.weight"), projWeight = try w("proj.weight")    // [3C, C, 1, 1], [C, C, 1, 1]
        let qkv = try b.linear(tokens, weight: qkvWeight.reshaped([3 * C, C]), bias: w("to_qkv.bias")).reshaped([1, 1, L, 3 * C])
        let o = try b.attention(q: qkv.sliced(dim: 3, 0..<C), k: qkv.sliced(dim: 3, C..<(2 * C)), v: qkv.sliced(dim: 3, (2 * C)..<(3 * C)),
                                mask: nil, scale: nil).reshaped([L, C])
        let out = try b.linear(o, weight: projWeight.reshaped([C, C]), bias: w("proj.bias"))
        return try b.add(x, tokensToImage(out, like: x, b))
    }

    /// QwenImageMidBlock.forward (num_layers 1): resnet, attention, resnet.
    func midBlock(_ x: Tensor, _ w: ModuleWeights, _ b: any Backend) throws(SluiceError) -> Tensor {
        let h = try resnet(x, w.scoped("resnets.0"), b)
        return try resnet(attention(h, w.scoped("attentions.0"), b), w.scoped("resnets.1"), b)
    }
}
