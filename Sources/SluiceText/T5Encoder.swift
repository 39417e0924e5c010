import Foundation
import SluiceBackends
import SluiceCore
import SluiceWeights

/// text_encoder_2/config.json of a T5 encoder (transformers' T5Config).
public struct T5Config: Sendable, Decodable {
    public var dModel: Int
    public var dKV: Int
    public var dFF: Int
    public var numLayers: Int
    public var numHeads: Int
    public var relativeAttentionNumBuckets: Int
    public var relativeAttentionMaxDistance: Int
    public var layerNormEpsilon: Float
    public var vocabSize: Int
    /// `feed_forward_proj` "gated-act": wo(act(wi_0 x) · wi_1 x) (T5-v1.1, FLUX.1's); "act": wo(act(wi x)).
    public var gatedFeedForward: Bool
    public var feedForwardActivation: FeedForwardActivation

    public var innerDim: Int { numHeads * dKV }

    enum CodingKeys: String, CodingKey {
        case dModel = "d_model", dKV = "d_kv", dFF = "d_ff", numLayers = "num_layers", numHeads = "num_heads"
        case relativeAttentionNumBuckets = "relative_attention_num_buckets", relativeAttentionMaxDistance = "relative_attention_max_distance"
        case layerNormEpsilon = "layer_norm_epsilon", vocabSize = "vocab_size", feedForwardProj = "feed_forward_proj"
    }

    /// Absent fields take transformers' T5Config defaults.
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        dModel = try c.decode(Int.self, forKey: .dModel)
        dKV = try c.decode(Int.self, forKey: .dKV)
        dFF = try c.decode(Int.self, forKey: .dFF)
        numLayers = try c.decode(Int.self, forKey: .numLayers)
        numHeads = try c.decode(Int.self, forKey: .numHeads)
        relativeAttentionNumBuckets = try c.decodeIfPresent(Int.self, forKey: .relativeAttentionNumBuckets) ?? 32
        relativeAttentionMaxDistance = try c.decodeIfPresent(Int.self, forKey: .relativeAttentionMaxDistance) ?? 128
        layerNormEpsilon = try c.decodeIfPresent(Float.self, forKey: .layerNormEpsilon) ?? 1e-6
        vocabSize = try c.decodeIfPresent(Int.self, forKey: .vocabSize) ?? 32128
        // As T5Config.__post_init__ reads it; "gated-gelu" means gelu_new there, for backward compatibility.
        let proj = try c.decodeIfPresent(String.self, forKey: .feedForwardProj) ?? "relu"
        let parts = proj.split(separator: "-", omittingEmptySubsequences: false).map(String.init)
        gatedFeedForward = parts.count == 2 && parts[0] == "gated"
        let act = proj == "gated-gelu" ? "gelu_new" : parts[parts.count - 1]
        guard parts.count == 1 || gatedFeedForward, let activation = FeedForwardActivation(transformersName: act) else {
            throw SluiceError.invalidArgument(name: "text_encoder_2/config.json: feed_forward_proj", reason: "'\(proj)' is not supported")
        }
        feedForwardActivation = activation
        // The log-spaced buckets need max_distance beyond the exact ones (num_buckets / 4 each way).
        guard relativeAttentionNumBuckets >= 4, relativeAttentionMaxDistance > relativeAttentionNumBuckets / 4 else {
            throw SluiceError.invalidArgument(name: "text_encoder_2/config.json: relative_attention_num_buckets",
                                              reason: "needs at least 4 buckets and relative_attention_max_distance above a quarter of them")
        }
    }
}

/// transformers' T5EncoderModel (modeling_t5.py: T5Stack, T5Block): FLUX.1's text_encoder_2
/// (T5-v1.1-XXL). Token embeddings (`shared`), then pre-norm blocks
///
///     x = x + o(Attention(q(n), k(n), v(n)) + position bias)   n = layer.0.layer_norm(x)   no 1/√d_kv scaling
///     x = x + wo(act(wi_0(n)) · wi_1(n))                        n = layer.1.layer_norm(x)   act: gelu (tanh) for v1.1
///
/// and final_layer_norm. The norms are RMS norms without a bias. The position bias [H, L, L] comes from
/// block 0's relative_attention_bias and serves every block. No attention mask: FLUX.1 attends over
/// all max_sequence_length tokens, padding included.
public struct T5Encoder: Sendable {
    public let config: T5Config
    public init(config: T5Config) { self.config = config }

    public var groupNames: [String] { ["embed"] + (0..<config.numLayers).map { "block.\($0)" } + ["final"] }

    /// Keys as T5EncoderModel saves them. It ties encoder.embed_tokens to shared and saves one of the
    /// two (transformers: shared.weight, as FLUX.1's checkpoint has it); either is read. A checkpoint
    /// holding both stages both.
    public func group(of key: String) -> String? {
        if key == "shared.weight" || key == "encoder.embed_tokens.weight" { return "embed" }
        if let i = ModulePath.blockIndex(key, in: "encoder.block") { return i < config.numLayers ? "block.\(i)" : nil }
        if key.hasPrefix("encoder.final_layer_norm.") { return "final" }
        return nil   // a T5ForConditionalGeneration's decoder and lm_head
    }

    public struct State: @unchecked Sendable {
        public var ids: [Int]
        /// [L, d_model] f32: the residual stream; last_hidden_state after the final group.
        public var hidden: Tensor?
        /// [1, H, L, L] f32, made in block 0 and added to every block's attention scores.
        var positionBias: Tensor?
        public init(ids: [Int]) { self.ids = ids }
    }

    /// Peak activation bytes of encoding `tokens` tokens (f32), bounded by all that one block makes
    /// living until it returns: its input, two norms, the output projection, two residual sums
    /// (6 × d_model); q, k, v, the attention output and its merged heads (5 × heads·d_kv); the
    /// feed-forward's projections, activation and product (d_ff wide) and its output (d_model); and
    /// beside every block the position bias [H, L, L] — in block 0 also the bf16 one-hot [L², buckets]
    /// it is gathered with.
    public static func activationBytes(config c: T5Config, tokens L: Int) -> Int {
        let ff = c.feedForwardActivation.tensorsMade + (c.gatedFeedForward ? 3 : 1)
        return 4 * L * (7 * c.dModel + 5 * c.innerDim + ff * c.dFF) + 4 * c.numHeads * L * L + 2 * c.relativeAttentionNumBuckets * L * L
    }

    public func run(group index: Int, _ w: ModuleWeights, _ s: State, _ b: any Backend) throws(SluiceError) -> State {
        var s = s
        if index == 0 {
            guard !s.ids.isEmpty else { throw .invalidArgument(name: "token ids", reason: "there are none") }
            s.hidden = try HostMath.embed(embeddingTable(w), ids: s.ids, name: "shared", expectedShape: [config.vocabSize, config.dModel])
        } else if index <= config.numLayers {
            let block = w.scoped("encoder.block.\(index - 1)")
            if index == 1 { s.positionBias = try positionBias(count: s.ids.count, block.scoped("layer.0.SelfAttention"), b) }
            s.hidden = try self.block(s.hidden!, bias: s.positionBias!, block, b)
        } else {
            s.hidden = try b.rmsNorm(s.hidden!, weight: w("encoder.final_layer_norm.weight", shape: [config.dModel]), eps: config.layerNormEpsilon)
            s.positionBias = nil
        }
        return s
    }

    /// last_hidden_state for `ids`: [ids.count, d_model].
    public func encode(ids: [Int], _ w: ModuleWeights, _ b: any Backend) throws(SluiceError) -> Tensor {
        var s = State(ids: ids)
        for i in groupNames.indices { s = try run(group: i, w, s, b) }
        return s.hidden!
    }

    /// shared.weight, or encoder.embed_tokens.weight where only that was saved.
    func embeddingTable(_ w: ModuleWeights) throws(SluiceError) -> Tensor {
        do {
            return try w("shared.weight")
        } catch {
            guard case .missingTensor = error, let table = try? w("encoder.embed_tokens.weight") else { throw error }
            return table
        }
    }

    /// transformers' T5Attention._relative_position_bucket, bidirectional, in its arithmetic: the
    /// log-spaced buckets are log(n / max_exact) / log(max_distance / max_exact) · (half − max_exact)
    /// in f32 (the second log in double, rounded to f32 as torch does with a Python scalar), truncated.
    /// For T5's 32 buckets / 128 the quotient is exactly an integer at n = 16, 32, 64, where a different
    /// rounding would move a boundary.
    public static func relativePositionBucket(_ relative: Int, numBuckets: Int, maxDistance: Int) -> Int {
        let half = numBuckets / 2, maxExact = half / 2
        let base = relative > 0 ? half : 0, n = abs(relative)
        if n < maxExact { return base + n }
        let ratio = Float(Foundation.log(Double(maxDistance) / Double(maxExact)))
        let large = Foundation.log(Float(n) / Float(maxExact)) / ratio * Float(half - maxExact)
        return base + min(maxExact + Int(large), half - 1)
    }

    /// T5Attention.compute_bias for L positions: bias[0, h, i, j] = relative_attention_bias[bucket(j − i), h].
    /// The gather is a product of the table with a one-hot [L², buckets] matrix — exact, one term per
    /// sum — so the bias is made where the backend keeps activations (a device keeps it for every block)
    /// instead of on the host. The one-hot is bf16: 0 and 1 are exact in it, at half the bytes of f32.
    func positionBias(count L: Int, _ w: ModuleWeights, _ b: any Backend) throws(SluiceError) -> Tensor {
        let nb = config.relativeAttentionNumBuckets, H = config.numHeads
        let table = try HostMath.floats(w("relative_attention_bias.weight", shape: [nb, H]))
        var perHead = [Float](repeating: 0, count: H * nb)
        for k in 0..<nb { for h in 0..<H { perHead[h * nb + k] = table[k * H + h] } }
        let buckets = (-(L - 1)...(L - 1)).map { Self.relativePositionBucket($0, numBuckets: nb, maxDistance: config.relativeAttentionMaxDistance) }
        let oneHot = Tensor(zeros: [L * L, nb], dtype: .bf16)
        let p = oneHot.rawPointer.assumingMemoryBound(to: UInt16.self)
        for i in 0..<L {
            for j in 0..<L { p[(i * L + j) * nb + buckets[j - i + L - 1]] = 0x3F80 }   // bf16 1.0
        }
        return try b.linear(Tensor(perHead, shape: [H, nb]), weight: oneHot, bias: nil).reshaped([1, H, L, L])
    }

    func block(_ x: Tensor, bias: Tensor, _ w: ModuleWeights, _ b: any Backend) throws(SluiceError) -> Tensor {
        let L = x.shape[0], D = config.dModel, H = config.numHeads, inner = config.innerDim, eps = config.layerNormEpsilon
        let n = try b.rmsNorm(x, weight: w("layer.0.layer_norm.weight", shape: [D]), eps: eps)
        func heads(_ name: String) throws(SluiceError) -> Tensor {
            try b.linear(n, weight: w("layer.0.SelfAttention.\(name).weight", shape: [inner, D]), bias: nil)
                .reshaped([1, L, H, config.dKV]).permuted([0, 2, 1, 3])
        }
        // T5 does not scale q·k (its initialisation scales q instead).
        let o = try b.attention(q: heads("q"), k: heads("k"), v: heads("v"), mask: bias, scale: 1)
        let merged = try b.contiguous(o.permuted([0, 2, 1, 3])).reshaped([L, inner])
        let x1 = try b.add(x, b.linear(merged, weight: w("layer.0.SelfAttention.o.weight", shape: [D, inner]), bias: nil))
        let m = try b.rmsNorm(x1, weight: w("layer.1.layer_norm.weight", shape: [D]), eps: eps)
        return try b.add(x1, feedForward(m, w.scoped("layer.1.DenseReluDense"), b))
    }

    /// T5DenseGatedActDense (wi_0, wi_1, wo) or T5DenseActDense (wi, wo).
    func feedForward(_ x: Tensor, _ w: ModuleWeights, _ b: any Backend) throws(SluiceError) -> Tensor {
        let D = config.dModel, F = config.dFF, act = config.feedForwardActivation
        func project(_ name: String) throws(SluiceError) -> Tensor { try b.linear(x, weight: w("\(name).weight", shape: [F, D]), bias: nil) }
        let hidden = config.gatedFeedForward ? try b.mul(act(project("wi_0"), b), project("wi_1")) : try act(project("wi"), b)
        return try b.linear(hidden, weight: w("wo.weight", shape: [D, F]), bias: nil)
    }
}
