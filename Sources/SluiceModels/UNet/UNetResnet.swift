import SluiceBackends
import SluiceCore
import SluiceWeights

/// diffusers' ResnetBlock2D (resnet.py) as the UNet builds it (time_scale_shift "default", output scale 1):
///
///     h = conv1(SiLU(norm1(x)))  +  time_emb_proj(SiLU(emb)) per channel
///     h = conv2(SiLU(norm2(h)))
///     out = shortcut(x) + h          shortcut: conv_shortcut (1×1) when the width changes
struct UNetResnet {
    let groups: Int
    let eps: Float

    /// x [1, Cin, H, W], siluEmb = SiLU(emb) [1, E] → [1, Cout, H, W].
    func forward(_ x: Tensor, siluEmb: Tensor, _ w: ModuleWeights, _ b: any Backend) throws(SluiceError) -> Tensor {
        var h = try b.silu(b.groupNorm(x, groups: groups, weight: w("norm1.weight"), bias: w("norm1.bias"), eps: eps))
        h = try unetConv(h, w.scoped("conv1"), b)
        let cout = h.shape[1]
        let t = try b.linear(siluEmb, weight: w("time_emb_proj.weight"), bias: w("time_emb_proj.bias")).reshaped([1, cout, 1, 1])
        h = try b.add(h, t)
        h = try b.silu(b.groupNorm(h, groups: groups, weight: w("norm2.weight"), bias: w("norm2.bias"), eps: eps))
        h = try unetConv(h, w.scoped("conv2"), b)
        let shortcut = w.optional("conv_shortcut.weight") != nil ? try unetConv(x, w.scoped("conv_shortcut"), b) : x
        return try b.add(shortcut, h)
    }
}

/// A convolution with stride 1 and "same" padding ((k − 1)/2: 1 for 3×3, 0 for 1×1), weight and bias
/// from `w`.
func unetConv(_ x: Tensor, _ w: ModuleWeights, _ b: any Backend, stride: Int = 1) throws(SluiceError) -> Tensor {
    let weight = try w("weight")
    return try b.conv2d(x, weight: weight, bias: w.optional("bias"), stride: stride, padding: (weight.shape[2] - 1) / 2, groups: 1)
}

/// diffusers' Downsample2D with use_conv and padding 1: a 3×3 convolution of stride 2 (H, W even).
func unetDownsample(_ x: Tensor, _ w: ModuleWeights, _ b: any Backend) throws(SluiceError) -> Tensor {
    try unetConv(x, w.scoped("conv"), b, stride: 2)
}

/// diffusers' Upsample2D with use_conv: nearest-neighbour 2× then a 3×3 convolution.
func unetUpsample(_ x: Tensor, _ w: ModuleWeights, _ b: any Backend) throws(SluiceError) -> Tensor {
    try unetConv(b.upsampleNearest2x(x), w.scoped("conv"), b)
}
