import SluiceBackends
import SluiceCore

/// The activation a text encoder's feed-forward applies, by the name transformers' configs give it
/// (CLIP's `hidden_act`, T5's `feed_forward_proj` after its "gated-"), composed from Backend ops.
public enum FeedForwardActivation: String, Sendable {
    /// x·σ(1.702x): CLIP's (transformers' QuickGELUActivation).
    case quickGELU = "quick_gelu"
    /// 0.5·x·(1 + erf(x/√2)): transformers' "gelu".
    case gelu
    /// The tanh approximation: transformers' "gelu_new" and "gelu_pytorch_tanh" (T5-v1.1's "gated-gelu").
    case geluTanh = "gelu_new"
    case relu
    case silu

    /// transformers' ACT2FN name; nil for one Sluice does not compose.
    public init?(transformersName name: String) {
        switch name {
        case "quick_gelu": self = .quickGELU
        case "gelu": self = .gelu
        case "gelu_new", "gelu_pytorch_tanh": self = .geluTanh
        case "relu": self = .relu
        case "silu", "swish": self = .silu
        default: return nil
        }
    }

    /// f32 tensors of the input's size this makes, its output included (activation-byte formulas count them).
    var tensorsMade: Int {
        switch self {
        case .quickGELU: 3
        case .relu: 5
        case .gelu, .geluTanh, .silu: 1
        }
    }

    func callAsFunction(_ x: Tensor, _ b: any Backend) throws(SluiceError) -> Tensor {
        switch self {
        case .quickGELU:
            // x·σ(1.702x) = silu(1.702x) / 1.702: within a few ulps of transformers' product.
            let k = Tensor([1.702], shape: [1])
            return try b.div(b.silu(b.mul(x, k)), k)
        case .gelu: return try b.gelu(x, approximateTanh: false)
        case .geluTanh: return try b.gelu(x, approximateTanh: true)
        case .silu: return try b.silu(x)
        case .relu:
            // No relu op: x·(1 + tanh(10²⁰·x))·½. tanh rounds to ±1 in f32 once |10²⁰·x| > 9, so this is
            // exactly x or −0 for |x| > 10⁻¹⁹ and within 10⁻¹⁹ of relu below; the Vulkan kernel clamps
            // tanh's argument, so an infinite product gives ±1 there too.
            let s = try b.tanh(b.mul(x, Tensor([1e20], shape: [1])))
            return try b.mul(b.mul(x, b.add(s, Tensor([1], shape: [1]))), Tensor([0.5], shape: [1]))
        }
    }
}
