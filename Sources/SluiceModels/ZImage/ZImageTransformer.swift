import Foundation
import SluiceBackends
import SluiceCore
import SluiceWeights

/// Z-Image's S3-DiT (diffusers' ZImageTransformer2DModel), run as a sequence of weight groups so the
/// memory manager can stream it:
///
///     embedders          t → adaLN input; 2×2 patches → x tokens; caption features → cap tokens
///     noise_refiner.i    modulated blocks over the image tokens
///     context_refiner.i  unmodulated blocks over the caption tokens
///     layers.i           modulated blocks over [image tokens, caption tokens]
///     all_final_layer    LayerNorm · (1 + adaLN(SiLU(c))) → Linear → un-patchify
///
/// Caption and image runs are each padded to a multiple of 32 (the last token repeated, then replaced
/// by the learned pad token — padding is not masked). Positions: caption token i at (1+i, 0, 0); image
/// patch (h, w) at (captionLength+1, h, w); image padding at (0, 0, 0).
public struct ZImageTransformer: Sendable {
    public let config: ZImageConfig

    public init(config: ZImageConfig) { self.config = config }

    public var groupNames: [String] {
        ["embedders"] + (0..<config.nRefinerLayers).map { "noise_refiner.\($0)" }
            + (0..<config.nRefinerLayers).map { "context_refiner.\($0)" }
            + (0..<config.nLayers).map { "layers.\($0)" } + ["all_final_layer"]
    }

    /// The group a checkpoint tensor belongs to.
    public func group(of key: String) -> String {
        for stack in ["noise_refiner", "context_refiner", "layers"] where key.hasPrefix(stack + ".") {
            let rest = key.dropFirst(stack.count + 1)
            if let dot = rest.firstIndex(of: ".") { return "\(stack).\(rest[..<dot])" }
        }
        if key.hasPrefix("all_final_layer.") { return "all_final_layer" }
        return "embedders"
    }

    /// What flows between groups.
    public struct State: @unchecked Sendable {
        public var latents: Tensor       // [C, 1, H, W]
        public var t: Float              // diffusers' t in [0, 1] (0 = noise)
        public var caption: Tensor       // [Lc, cap_feat_dim]
        var adaLN: Tensor?
        var x: Tensor?
        var cap: Tensor?
        var unified: Tensor?
        var imageRope: (cos: Tensor, sin: Tensor)?
        var captionRope: (cos: Tensor, sin: Tensor)?
        public var output: Tensor?       // [C, 1, H, W]

        public init(latents: Tensor, t: Float, caption: Tensor) {
            self.latents = latents
            self.t = t
            self.caption = caption
        }
    }

    /// Peak activation bytes of one call (f32) over `imageTokens` (padded) + `captionTokens` tokens: the
    /// unified stream, its norm, q/k/v, attention output and adaLN-modulated copies (10 × dim) and the
    /// feed-forward's two inputs and product (3 × its hidden width).
    public static func activationBytes(config: ZImageConfig, imageTokens: Int, captionTokens: Int) -> Int {
        4 * (imageTokens + captionTokens) * (10 * config.dim + 3 * config.ffnDim)
    }

    public static func padded(_ n: Int) -> Int { (n + ZImageConfig.sequenceMultiple - 1) / ZImageConfig.sequenceMultiple * ZImageConfig.sequenceMultiple }

    /// Runs group `index` (in `groupNames` order) with that group's weights.
    public func run(group index: Int, _ w: ModuleWeights, _ s: State, _ b: any Backend) throws(SluiceError) -> State {
        var s = s
        let name = groupNames[index]
        let block = ZImageBlock(config: config)
        if name == "embedders" {
            try embed(&s, w, b)
        } else if name.hasPrefix("noise_refiner.") {
            s.x = try block.forward(s.x!, rope: s.imageRope!, adaLN: s.adaLN, w.scoped(name), b)
        } else if name.hasPrefix("context_refiner.") {
            s.cap = try block.forward(s.cap!, rope: s.captionRope!, adaLN: nil, w.scoped(name), b)
        } else if name.hasPrefix("layers.") {
            if s.unified == nil {
                s.unified = try b.concat([s.x!, s.cap!], dim: 0)
                let rope = (try b.concat([s.imageRope!.cos, s.captionRope!.cos], dim: 0),
                            try b.concat([s.imageRope!.sin, s.captionRope!.sin], dim: 0))
                s.imageRope = rope
            }
            s.unified = try block.forward(s.unified!, rope: s.imageRope!, adaLN: s.adaLN, w.scoped(name), b)
        } else {
            try final(&s, w.scoped("all_final_layer.2-1"), b)
        }
        return s
    }

    /// The whole forward with weights from one source (no streaming).
    public func forward(_ s: State, _ w: ModuleWeights, _ b: any Backend) throws(SluiceError) -> Tensor {
        var s = s
        for i in groupNames.indices { s = try run(group: i, w, s, b) }
        return s.output!
    }

    func embed(_ s: inout State, _ w: ModuleWeights, _ b: any Backend) throws(SluiceError) {
        let C = config.inChannels, lat = s.latents
        guard lat.shape.rank == 4, lat.shape[0] == C, lat.shape[1] == 1, lat.shape[2] % 2 == 0, lat.shape[3] % 2 == 0 else {
            throw .shapeMismatch(operation: "Z-Image latents", expected: "[\(C), 1, even H, even W]", found: "\(lat.shape)")
        }
        guard s.caption.shape.rank == 2, s.caption.shape[1] == config.capFeatDim, s.caption.shape[0] > 0 else {
            throw .shapeMismatch(operation: "Z-Image caption features", expected: "[L>0, \(config.capFeatDim)]", found: "\(s.caption.shape)")
        }
        s.adaLN = try TimestepEmbedder.forward(s.t * config.tScale, w.scoped("t_embedder"), b)

        // Caption: pad to a multiple of 32, embed (RMSNorm → Linear), pads become the learned pad token.
        let capLen = s.caption.shape[0], capPadded = Self.padded(capLen)
        let capIn = try padByRepeatingLast(b.contiguous(s.caption), to: capPadded, b)
        var cap = try b.rmsNorm(capIn, weight: w("cap_embedder.0.weight"), eps: config.normEps)
        cap = try b.linear(cap, weight: w("cap_embedder.1.weight"), bias: w("cap_embedder.1.bias"))
        s.cap = try replaceRows(cap, from: capLen, with: w("cap_pad_token"), b)

        // Image: 2×2 patches, features ordered (ph, pw, c); pad, embed, pads → pad token.
        let Ht = lat.shape[2] / 2, Wt = lat.shape[3] / 2, n = Ht * Wt, nPadded = Self.padded(n)
        let patches = try patchify(lat, b)
        var x = try b.linear(padByRepeatingLast(patches, to: nPadded, b), weight: w("all_x_embedder.2-1.weight"), bias: w("all_x_embedder.2-1.bias"))
        x = try replaceRows(x, from: n, with: w("x_pad_token"), b)
        s.x = x

        let rope = RoPE3D(theta: config.ropeTheta, axesDims: config.axesDims)
        s.captionRope = rope.tables((0..<capPadded).map { (1 + $0, 0, 0) })
        var imagePositions: [(Int, Int, Int)] = []
        for h in 0..<Ht { for c in 0..<Wt { imagePositions.append((capPadded + 1, h, c)) } }
        imagePositions += [(Int, Int, Int)](repeating: (0, 0, 0), count: nPadded - n)
        s.imageRope = rope.tables(imagePositions)
    }

    func final(_ s: inout State, _ w: ModuleWeights, _ b: any Backend) throws(SluiceError) {
        let scale = try b.linear(b.silu(s.adaLN!), weight: w("adaLN_modulation.1.weight"), bias: w("adaLN_modulation.1.bias"))
        let unified = s.unified ?? s.x!
        var h = try b.layerNorm(unified, weight: nil, bias: nil, eps: 1e-6)
        h = try b.mul(h, b.add(scale, Tensor([1], shape: [1])))
        h = try b.linear(h, weight: w("linear.weight"), bias: w("linear.bias"))
        let Ht = s.latents.shape[2] / 2, Wt = s.latents.shape[3] / 2
        s.output = try unpatchify(h.sliced(dim: 0, 0..<(Ht * Wt)), Ht: Ht, Wt: Wt, b)
    }

    /// [C, 1, H, W] → [(H/2)(W/2), 4C], feature index (ph·2 + pw)·C + c: two permutations on the
    /// backend ([C, H·W] → [H·W, C] = [Ht, 2, Wt, 2C] → [Ht, Wt, 2, 2C]), each within 4 axes.
    func patchify(_ lat: Tensor, _ b: any Backend) throws(SluiceError) -> Tensor {
        let C = lat.shape[0], H = lat.shape[2], W = lat.shape[3], Ht = H / 2, Wt = W / 2
        let src = try lat.dtype == .f32 ? lat : lat.converted(to: .f32)
        let hwc = try b.contiguous(src.reshaped([C, H * W]).permuted([1, 0]))
        return try b.contiguous(hwc.reshaped([Ht, 2, Wt, 2 * C]).permuted([0, 2, 1, 3])).reshaped([Ht * Wt, 4 * C])
    }

    /// patchify's inverse: [Ht·Wt, 4C] → [C, 1, 2Ht, 2Wt].
    func unpatchify(_ tokens: Tensor, Ht: Int, Wt: Int, _ b: any Backend) throws(SluiceError) -> Tensor {
        let C = config.inChannels, H = Ht * 2, W = Wt * 2
        let hwc = try b.contiguous(tokens.reshaped([Ht, Wt, 2, 2 * C]).permuted([0, 2, 1, 3]))
        return try b.contiguous(hwc.reshaped([H * W, C]).permuted([1, 0])).reshaped([C, 1, H, W])
    }

    /// x [n, d] padded to `rows` rows by repeating its last row.
    func padByRepeatingLast(_ x: Tensor, to rows: Int, _ b: any Backend) throws(SluiceError) -> Tensor {
        let n = x.shape[0]
        let src = try x.dtype == .f32 ? x : x.converted(to: .f32)
        if n == rows { return src }
        return try b.concat([src, repeating(src.sliced(dim: 0, (n - 1)..<n), rows - n, b)], dim: 0)
    }

    /// Rows `start...` of x [rows, d] replaced by the learned pad token [1, d].
    func replaceRows(_ x: Tensor, from start: Int, with token: Tensor, _ b: any Backend) throws(SluiceError) -> Tensor {
        let rows = x.shape[0], d = x.shape[1]
        guard token.count == d else { throw .shapeMismatch(operation: "pad token", expected: "[1, \(d)]", found: "\(token.shape)") }
        if start == rows { return x }
        return try b.concat([x.sliced(dim: 0, 0..<start), repeating(token.reshaped([1, d]), rows - start, b)], dim: 0)
    }

    /// `count` copies of one row [1, d] as [count, d]: row + 0 broadcast on the backend (a weight in
    /// bf16 is widened there too).
    func repeating(_ row: Tensor, _ count: Int, _ b: any Backend) throws(SluiceError) -> Tensor {
        try b.add(row, Tensor([Float](repeating: 0, count: count), shape: [count, 1]))
    }
}
