import Foundation
import SluiceBackends
import SluiceCore
import SluiceModels
import SluiceTestSupport
import SluiceWeights
import Testing

/// diffusers' AutoencoderKLQwenImage on one frame (tools/reference/make_qwen_image_vae.py): base_dim 12,
/// dim_mult [1, 2, 2, 2] (8× per side: downsample2d, two downsample3d and their mirrors), num_res_blocks 1,
/// random norm gammas and biases, bf16 weights run in f32 on both sides.
@Suite struct QwenImageVAETests {
    static func load() throws -> (QwenImageVAE, ModuleWeights, SafetensorsFile) {
        let f = try Fixtures.file("qwen_image_vae.safetensors")
        let config = try JSONDecoder().decode(QwenImageVAEConfig.self, from: Data(f.header.metadata["config"]!.utf8))
        return (QwenImageVAE(config: config), ModuleWeights { k throws(SluiceError) in try f.tensor(k) }, f)
    }

    /// `vae.decode(z).sample` on a random latent [1, 16, 1, 8, 8], and the decoder's output before its clamp
    /// (values in [−2.7, 2.1]; 32% of them clamped). Tolerance 2e-5 abs + 1e-4 rel: f32 on both sides through
    /// 30 convolutions and 22 RMS norms; measured max |error| 3.2e-6 (largest relative error 1.2e-3, at a value
    /// near 0, so the absolute term is the one that binds; diffusers' own Conv3d and the equivalent Conv2d
    /// differ by 2.7e-6 here).
    @Test func decodeMatchesDiffusers() throws {
        let (vae, w, f) = try Self.load()
        let z = try f.tensor("input.latents"), b = try CPUBackend()
        let raw = try vae.decodeUnclamped(z, w, b)
        #expect(raw.shape == [1, 3, 64, 64])
        let c = compare(try raw.toFloats(), try f.tensor("output.decode_raw").toFloats(), atol: 2e-5, rtol: 1e-4)
        #expect(c.ok, "unclamped: \(c)")
        // The 4-D frame [1, 16, 8, 8] is the same input as diffusers' [1, 16, 1, 8, 8].
        let sample = try vae.decode(z.reshaped([1, 16, 8, 8]), w, b)
        let s = compare(try sample.toFloats(), try f.tensor("output.decode").toFloats(), atol: 2e-5, rtol: 1e-4)
        #expect(s.ok, "sample: \(s)")
        #expect(try sample.toFloats().allSatisfy { abs($0) <= 1 })
    }

    /// diffusers' tiled_decode after `enable_tiling(64, 64, 48, 48)` — tiles of 8 latents every 6 — on a random
    /// [1, 16, 1, 25, 19] latent: 5 × 4 tiles, the last row and column 1 latent (8 pixels), narrower than the
    /// 16-pixel blend, so there the blend shrinks to the tile. Not clamped, as tiled_decode returns it (values
    /// in [−2.4, 2.2]). Tolerance as the whole decode's, 2e-5 abs + 1e-4 rel (the blend adds two f32 products a
    /// pixel); measured max |error| 3.2e-6.
    @Test func tiledDecodeMatchesDiffusers() throws {
        let (vae, w, _) = try Self.load()
        let f = try Fixtures.file("qwen_image_vae_tiled.safetensors"), b = try CPUBackend()
        let z = try f.tensor("input.latents")
        let got = try vae.decodeTiled(z, tileLatent: 8, w, b)
        #expect(got.shape == [1, 3, 200, 152])
        let c = compare(try got.toFloats(), try f.tensor("output.tiled_decode").toFloats(), atol: 2e-5, rtol: 1e-4)
        #expect(c.ok, "\(c)")
        // A different image from the whole frame's (the mid block's attention and the convolutions' edges see one
        // tile): mean |clamped tiled − whole| is 0.066 in diffusers.
        let tiled = try got.toFloats().map { min(max($0, -1), 1) }, whole = try vae.decode(z, w, b).toFloats()
        let mean = zip(tiled, whole).reduce(Float(0)) { $0 + abs($1.0 - $1.1) } / Float(whole.count)
        #expect(mean > 0.03 && mean < 0.1, "mean |tiled − whole| = \(mean)")
    }

    /// diffusers' tiled_encode after the same `enable_tiling(64, 64, 48, 48)` on a random 136 × 104 image: 3 × 3
    /// tiles, the last column 8 pixels (one latent, narrower than the 2-latent blend); mean and log-variance of
    /// latent_dist. Tolerance as the whole encode's, 2e-5 abs + 1e-4 rel (f32 on both sides through the encoder's
    /// convolutions and norms, then a two-term blend).
    @Test func tiledEncodeMatchesDiffusers() throws {
        let (vae, w, _) = try Self.load()
        let f = try Fixtures.file("qwen_image_vae_tiled_encode.safetensors"), b = try CPUBackend()
        let image = try f.tensor("input.image")
        let got = try vae.encodeMomentsTiled(image, tileLatent: 8, w, b)
        #expect(got.mean.shape == [1, 16, 17, 13])
        for (tensor, key) in [(got.mean, "output.tiled_encode_mean"), (got.logvar, "output.tiled_encode_logvar")] {
            let c = compare(try tensor.toFloats(), try f.tensor(key).toFloats(), atol: 2e-5, rtol: 1e-4)
            #expect(c.ok, "\(key): \(c)")
        }
        // Tiles change the result (each tile's encoder sees only its pixels)…
        let whole = try vae.encodeMoments(image, w, b).mean.toFloats(), tiled = try got.mean.toFloats()
        #expect(zip(whole, tiled).map { abs($0 - $1) }.max()! > 1e-2)
        // …and an image within one tile is encoded whole, as _encode does.
        let small = try image.sliced(dim: 3, 0..<64).sliced(dim: 4, 0..<64).contiguous()
        let one = try vae.encodeMomentsTiled(small, tileLatent: 8, w, b).mean.toFloats()
        #expect(try one == vae.encodeMoments(small, w, b).mean.toFloats())
    }

    /// `enable_tiling()`'s own tile is 256 pixels every 192: 32 latents every 24. A frame within one tile is
    /// decoded whole and clamped, as _decode does; a 1-latent tile would never step on.
    @Test func tileSizes() throws {
        let (vae, w, f) = try Self.load()
        #expect(vae.defaultTileLatent == 32 && QwenImageVAE.strideLatent(tile: 32) * vae.config.scale == 192)
        let z = try f.tensor("input.latents"), b = try CPUBackend()   // 8 × 8 latents
        #expect(try vae.decodeTiled(z, tileLatent: 8, w, b).toFloats() == vae.decode(z, w, b).toFloats())
        #expect(throws: SluiceError.self) { try vae.decodeTiled(z, tileLatent: 1, w, b) }
    }

    /// `vae.encode(x).latent_dist` mean and (clamped) log-variance on a random image [1, 3, 1, 64, 64].
    /// Tolerance 1e-5 abs + 1e-4 rel: values within ±0.5, f32 through 21 convolutions and 14 RMS norms;
    /// measured max |error| 2.7e-7 (mean) and 2.5e-7 (log-variance).
    @Test func encodeMatchesDiffusers() throws {
        let (vae, w, f) = try Self.load()
        let (mean, logvar) = try vae.encodeMoments(f.tensor("input.image"), w, CPUBackend())
        for (got, key) in [(mean, "output.encode_mean"), (logvar, "output.encode_logvar")] {
            #expect(got.shape == [1, 16, 8, 8])
            let c = compare(try got.toFloats(), try f.tensor(key).toFloats(), atol: 1e-5, rtol: 1e-4)
            #expect(c.ok, "\(key): \(c)")
        }
    }

    /// The pipeline's latents / (1 / std) + mean, to the bit; `normalize` undoes it.
    @Test func latentStatisticsAreThePipelines() throws {
        let (vae, _, f) = try Self.load()
        let z = try f.tensor("input.latents"), b = try CPUBackend()
        let denormalized = try vae.config.denormalize(z, b)
        #expect(try denormalized.toFloats() == f.tensor("output.denormalized").toFloats())
        let back = compare(try vae.config.normalize(denormalized, b).toFloats(), try z.toFloats(), atol: 1e-5, rtol: 1e-5)
        #expect(back.ok, "\(back)")
        #expect(throws: SluiceError.self) { try vae.config.denormalize(Tensor(zeros: [1, 4, 8, 8]), b) }
    }

    /// A Conv3d weight's frame kernel is its last temporal slice, viewed in the checkpoint's own bytes.
    @Test func frameKernelIsTheLastSliceWithoutACopy() throws {
        let (_, w, _) = try Self.load()
        let stored = try w("decoder.conv_in.weight")          // [24, 16, 3, 3, 3]
        let kernel = try QwenImageVAE.frameKernel(stored, key: "decoder.conv_in.weight")
        #expect(kernel.shape == [24, 16, 3, 3] && kernel.storage === stored.storage)
        let all = try stored.toFloats()
        var lastSlice: [Float] = []
        for pair in 0..<(24 * 16) { lastSlice += all[(pair * 27 + 18)..<(pair * 27 + 27)] }   // (out, in) pairs of 3×3×3
        #expect(try kernel.toFloats() == lastSlice)
        #expect(throws: SluiceError.self) { try QwenImageVAE.frameKernel(Tensor(zeros: [3, 3]), key: "x") }
    }

    @Test func wrongShapesAreErrors() throws {
        let (vae, w, _) = try Self.load()
        let b = try CPUBackend()
        #expect(throws: SluiceError.self) { try vae.decode(Tensor(zeros: [1, 4, 8, 8]), w, b) }
        #expect(throws: SluiceError.self) { try vae.decode(Tensor(zeros: [1, 16, 2, 8, 8]), w, b) }   // two frames
        #expect(throws: SluiceError.self) { try vae.encodeMoments(Tensor(zeros: [1, 3, 60, 64]), w, b) }
    }

    /// The fixture's config as read; an empty one is Qwen-Image's (diffusers' defaults).
    @Test func configIsRead() throws {
        let (vae, _, _) = try Self.load()
        let c = vae.config
        #expect(c.baseDim == 12 && c.zDim == 16 && c.dimMult == [1, 2, 2, 2] && c.numResBlocks == 1 && c.scale == 8)
        #expect(c.temperalDownsample == [false, true, true] && c.attnScales.isEmpty && c.latentsStd[15] == 1.916)
        #expect(try JSONDecoder().decode(QwenImageVAEConfig.self, from: Data("{}".utf8)) == .qwenImage)
    }

    /// Config errors name the field (`vae/config.json: FIELD`).
    @Test func badConfigsNameTheField() throws {
        let cases: [(String, String)] = [
            (#"{"z_dim": "sixteen"}"#, "z_dim"),
            (#"{"base_dim": 0}"#, "base_dim"),
            (#"{"num_res_blocks": 0}"#, "num_res_blocks"),
            (#"{"dim_mult": []}"#, "dim_mult"),
            (#"{"dim_mult": [1, 2]}"#, "temperal_downsample"),
            (#"{"z_dim": 4}"#, "latents_mean"),
            (#"{"latents_std": [1, 1]}"#, "latents_std"),
            (#"{"latents_std": [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0]}"#, "latents_std"),
            (#"{"dropout": 1.5}"#, "dropout"),
            (#"{"attn_scales": ["half"]}"#, "attn_scales"),
            (#"{"_class_name": "AutoencoderKLWan"}"#, "_class_name"),
        ]
        for (json, field) in cases {
            do {
                _ = try JSONDecoder().decode(QwenImageVAEConfig.self, from: Data(json.utf8))
                Issue.record("accepted \(json)")
            } catch let SluiceError.invalidArgument(name, reason) {
                #expect(name == "vae/config.json: \(field)", "\(json): \(name): \(reason)")
            } catch {
                Issue.record("\(json): not a SluiceError: \(error)")
            }
        }
    }

    /// attn_scales: decoding ignores it, as diffusers' decoder does; encoding refuses it, naming the field.
    @Test func attnScalesDecodeButDoNotEncode() throws {
        let (vae, w, f) = try Self.load()
        var config = vae.config
        config.attnScales = [0.5]
        let b = try CPUBackend()
        #expect(try QwenImageVAE(config: config).decodeUnclamped(f.tensor("input.latents"), w, b).toFloats()
                == vae.decodeUnclamped(f.tensor("input.latents"), w, b).toFloats())
        do {
            _ = try QwenImageVAE(config: config).encodeMoments(f.tensor("input.image"), w, b)
            Issue.record("encoded with attn_scales")
        } catch let SluiceError.invalidArgument(name, _) {
            #expect(name == "vae/config.json: attn_scales")
        }
    }
}
