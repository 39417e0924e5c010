import SluiceCore

/// diffusers' spatial tiling of a VAE, shared by AutoencoderKL's `tiled_decode` and `_tiled_encode` and
/// AutoencoderKLQwenImage's `tiled_decode`: overlapping square tiles of the input, each run alone; then,
/// row by row, each tile blended linearly with its top and left neighbours as they already are
/// (`blend_v`, `blend_h`, in place) and its first `keep` rows and columns placed in the output.
enum VAETiles {
    /// `body` on each tile of x [1, C, h, w]: `size` a side (cut short at the bottom and right edges), one
    /// every `step` each way. Rows of results, each contiguous.
    static func run(_ x: Tensor, size: Int, step: Int, _ body: (Tensor) throws(SluiceError) -> Tensor) throws(SluiceError) -> [[Tensor]] {
        let h = x.shape[2], w = x.shape[3]
        var rows: [[Tensor]] = []
        for i in stride(from: 0, to: h, by: step) {
            var row: [Tensor] = []
            for j in stride(from: 0, to: w, by: step) {
                let tile = try x.sliced(dim: 2, i..<min(h, i + size)).sliced(dim: 3, j..<min(w, j + size)).contiguous()
                row.append(try body(tile).contiguous())
            }
            rows.append(row)
        }
        return rows
    }

    /// The tiles of `run` ([1, C, th, tw] each, f32) blended over `blend` rows and columns and assembled:
    /// tile (r, c)'s first `keep` rows and columns at (r·step, c·step) of [1, C, height, width], cut at its
    /// edges. The tiles are blended in place, as diffusers does, so a later tile meets its neighbours blended.
    static func assemble(_ rows: [[Tensor]], blend: Int, keep: Int, step: Int, height H: Int, width W: Int) -> Tensor {
        let C = rows[0][0].shape[1]
        let out = Tensor(zeros: [1, C, H, W], dtype: .f32)
        for (ri, row) in rows.enumerated() {
            for (ci, t) in row.enumerated() {
                if ri > 0 { Self.blend(from: rows[ri - 1][ci], into: t, extent: blend, vertical: true) }
                if ci > 0 { Self.blend(from: row[ci - 1], into: t, extent: blend, vertical: false) }
                let th = t.shape[2], tw = t.shape[3], y0 = ri * step, x0 = ci * step
                for c in 0..<C { for y in 0..<min(keep, th) where y0 + y < H { for x in 0..<min(keep, tw) where x0 + x < W {
                    out.f32[(c * H + y0 + y) * W + x0 + x] = t.f32[(c * th + y) * tw + x]
                } } }
            }
        }
        return out
    }

    /// Activation bytes of a tiled decode of a width × height image, `channels` f32 channels at `scale` pixels a
    /// latent, in tiles of t latents every ⌊3t/4⌋: one tile's decode (`decodeBytes` of its pixels), beside
    /// every decoded tile (all are held until they are blended, as diffusers does), the output and the image
    /// made from it.
    static func decodeActivationBytes(tileLatent t: Int, width: Int, height: Int, scale s: Int, channels: Int,
                                      decodeBytes: (Int) -> Int) -> Int {
        let step = max(1, t * 3 / 4), tileSample = t * s, pixelBytes = 4 * channels
        let tiles = ((height / s + step - 1) / step) * ((width / s + step - 1) / step)
        return decodeBytes(tileSample * tileSample) + tiles * pixelBytes * tileSample * tileSample + 2 * pixelBytes * width * height
    }

    /// diffusers' blend_v / blend_h: over the first n rows (columns) of `b`, mix in the last n rows
    /// (columns) of `a` with weight 1 − y/n, where n is `extent` cut to the shorter tile (a last tile
    /// narrower than the overlap blends over its whole width, its weights spread over that width).
    static func blend(from a: Tensor, into b: Tensor, extent: Int, vertical: Bool) {
        let C = b.shape[1], ah = a.shape[2], aw = a.shape[3], bh = b.shape[2], bw = b.shape[3]
        let n = vertical ? min(ah, bh, extent) : min(aw, bw, extent)
        let A = a.contiguous()
        for c in 0..<C {
            for k in 0..<n {
                let wB = Float(k) / Float(n), wA = 1 - wB
                if vertical {
                    for x in 0..<bw {
                        let bi = (c * bh + k) * bw + x, ai = (c * ah + ah - n + k) * aw + x
                        b.f32[bi] = A.f32[ai] * wA + b.f32[bi] * wB
                    }
                } else {
                    for y in 0..<bh {
                        let bi = (c * bh + y) * bw + k, ai = (c * ah + y) * aw + aw - n + k
                        b.f32[bi] = A.f32[ai] * wA + b.f32[bi] * wB
                    }
                }
            }
        }
    }
}
