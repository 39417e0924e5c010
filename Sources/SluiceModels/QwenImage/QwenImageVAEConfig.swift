import Foundation
import SluiceCore

/// vae/config.json of diffusers' AutoencoderKLQwenImage (Qwen-Image's VAE, fine-tuned from Wan 2.1's video VAE).
/// A missing field takes the class's default, as diffusers' `from_config` does; those defaults are Qwen-Image's
/// own config (`.qwenImage`).
public struct QwenImageVAEConfig: Sendable, Equatable, Decodable {
    public var baseDim: Int
    public var zDim: Int
    public var dimMult: [Int]
    public var numResBlocks: Int
    /// Scales of the encoder's down-block attentions. The decoder never builds them (diffusers' decoder ignores
    /// the field); a non-empty list cannot be encoded (see `QwenImageVAE.encodeMoments`).
    public var attnScales: [Double]
    /// Per downsampler, whether it also halves time (its `time_conv`); one frame never meets a time_conv.
    public var temperalDownsample: [Bool]
    /// Training only; read so that a malformed value is reported.
    public var dropout: Double
    public var inputChannels: Int
    /// Per latent channel, the statistics QwenImagePipeline undoes before decoding (`denormalize`).
    public var latentsMean: [Float]
    public var latentsStd: [Float]

    /// Pixels per latent along a side: 2 per downsampler (diffusers' spatial_compression_ratio).
    public var scale: Int { 1 << (dimMult.count - 1) }

    /// diffusers' AutoencoderKLQwenImage.__init__ defaults (autoencoder_kl_qwenimage.py), which Qwen/Qwen-Image's
    /// vae/config.json repeats.
    public static let qwenImage = QwenImageVAEConfig(
        baseDim: 96, zDim: 16, dimMult: [1, 2, 4, 4], numResBlocks: 2, attnScales: [], temperalDownsample: [false, true, true],
        dropout: 0, inputChannels: 3,
        latentsMean: [-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
                      0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921],
        latentsStd: [2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
                     3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160])

    public init(baseDim: Int, zDim: Int, dimMult: [Int], numResBlocks: Int, attnScales: [Double], temperalDownsample: [Bool],
                dropout: Double, inputChannels: Int, latentsMean: [Float], latentsStd: [Float]) {
        self.baseDim = baseDim
        self.zDim = zDim
        self.dimMult = dimMult
        self.numResBlocks = numResBlocks
        self.attnScales = attnScales
        self.temperalDownsample = temperalDownsample
        self.dropout = dropout
        self.inputChannels = inputChannels
        self.latentsMean = latentsMean
        self.latentsStd = latentsStd
    }

    enum Keys: String, CodingKey {
        case className = "_class_name", baseDim = "base_dim", zDim = "z_dim", dimMult = "dim_mult", numResBlocks = "num_res_blocks"
        case attnScales = "attn_scales", temperalDownsample = "temperal_downsample", dropout, inputChannels = "input_channels"
        case latentsMean = "latents_mean", latentsStd = "latents_std"
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: Keys.self)
        func field<T: Decodable>(_ key: Keys, _ fallback: T, _ expected: String) throws -> T {
            do { return try c.decodeIfPresent(T.self, forKey: key) ?? fallback } catch {
                throw Self.invalid(key, "expected \(expected)")
            }
        }
        let d = Self.qwenImage
        let name = try field(.className, "AutoencoderKLQwenImage", "a string")
        if name != "AutoencoderKLQwenImage" {
            throw Self.invalid(.className, "'\(name)' is not AutoencoderKLQwenImage")
        }
        baseDim = try field(.baseDim, d.baseDim, "an integer")
        zDim = try field(.zDim, d.zDim, "an integer")
        dimMult = try field(.dimMult, d.dimMult, "a list of integers")
        numResBlocks = try field(.numResBlocks, d.numResBlocks, "an integer")
        attnScales = try field(.attnScales, d.attnScales, "a list of numbers")
        temperalDownsample = try field(.temperalDownsample, d.temperalDownsample, "a list of booleans")
        dropout = try field(.dropout, d.dropout, "a number")
        inputChannels = try field(.inputChannels, d.inputChannels, "an integer")
        // Read as doubles then rounded, as torch.tensor(config.latents_std) rounds Python's floats.
        latentsMean = try field(.latentsMean, d.latentsMean.map(Double.init), "a list of numbers").map(Float.init)
        latentsStd = try field(.latentsStd, d.latentsStd.map(Double.init), "a list of numbers").map(Float.init)

        for (key, value) in [(Keys.baseDim, baseDim), (.zDim, zDim), (.numResBlocks, numResBlocks), (.inputChannels, inputChannels)] where value < 1 {
            throw Self.invalid(key, "must be at least 1, found \(value)")
        }
        guard !dimMult.isEmpty, dimMult.allSatisfy({ $0 >= 1 }) else {
            throw Self.invalid(.dimMult, "must be a non-empty list of positive multipliers, found \(dimMult)")
        }
        guard temperalDownsample.count == dimMult.count - 1 else {
            throw Self.invalid(.temperalDownsample, "needs one entry per downsampler (\(dimMult.count - 1) for dim_mult \(dimMult)), found \(temperalDownsample.count)")
        }
        guard (0..<1).contains(dropout) else { throw Self.invalid(.dropout, "must be in [0, 1), found \(dropout)") }
        guard latentsMean.count == zDim else { throw Self.invalid(.latentsMean, "needs z_dim = \(zDim) values, found \(latentsMean.count)") }
        guard latentsStd.count == zDim else { throw Self.invalid(.latentsStd, "needs z_dim = \(zDim) values, found \(latentsStd.count)") }
        guard latentsStd.allSatisfy({ $0.isFinite && $0 > 0 }) else { throw Self.invalid(.latentsStd, "must be positive, found \(latentsStd)") }
    }

    static func invalid(_ key: Keys, _ reason: String) -> SluiceError {
        .invalidArgument(name: "vae/config.json: \(key.rawValue)", reason: reason)
    }
}
