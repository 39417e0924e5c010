import Foundation
import SluiceBackends
import SluiceCore
import SluiceTestSupport
import SluiceText
import SluiceWeights
import Testing

/// The tiny T5EncoderModel of tools/reference/make_flux_text_encoders.py (3 blocks, 4 heads × 8,
/// gated-gelu, 32 buckets / 128 as T5-v1.1, bf16 weights as FLUX.1 ships them) against transformers run
/// in float64 on the same (widened) weights. Tolerance 5e-5 abs + 1e-5 rel, for the 300-token sequence:
/// T5 does not scale q·k, so its f32 logits reach ~10 and a softmax over 300 keys magnifies their
/// rounding — transformers' own f32 run is 1.5e-5 from float64 there, Sluice's 2.0e-5, over values up to
/// ~3.7. The 7- and 20-token sequences stay within 1.5e-6.
@Suite struct T5EncoderTests {
    static let directory = Fixtures.directory + "/text-encoders/t5-tiny"

    static func config() throws -> T5Config {
        try JSONDecoder().decode(T5Config.self, from: Data(contentsOf: URL(fileURLWithPath: directory + "/config.json")))
    }

    static func weights() throws -> ModuleWeights {
        let ckpt = try Checkpoint(path: directory + "/model.safetensors")
        return ModuleWeights { k throws(SluiceError) in try ckpt.tensor(k) }
    }

    static func check(_ got: Tensor, _ want: Tensor, atol: Float = 5e-5, rtol: Float = 1e-5) throws {
        #expect(got.shape == want.shape)
        let c = compare(try got.toFloats(), try want.toFloats(), atol: atol, rtol: rtol)
        #expect(c.ok, "\(c)")
    }

    /// 300 ids as FLUX.1 feeds them (words, eos, padding 0, no mask): relative distances up to 299 use
    /// every bucket, the log-spaced ones and the one past max_distance included.
    @Test(arguments: ["long", "short"]) func lastHiddenStateMatchesTransformers(sequence: String) throws {
        let ref = try Fixtures.file("flux_text_encoders.safetensors")
        let config = try Self.config()
        #expect(config.gatedFeedForward && config.feedForwardActivation == .geluTanh)
        let ids = try textEncoderIds(ref.tensor("t5.\(sequence).ids"))
        let got = try T5Encoder(config: config).encode(ids: ids, Self.weights(), CPUBackend())
        try Self.check(got, ref.tensor("t5.\(sequence).last_hidden_state"))
    }

    /// transformers' `_relative_position_bucket`, exactly, for relative positions −600...600 (T5's
    /// 32 buckets / 128, whose log buckets start exactly at 16, 32 and 64, and an odd 10 / 20).
    @Test func bucketsMatchTransformers() throws {
        let ref = try Fixtures.file("flux_text_encoders.safetensors")
        for (buckets, distance) in [(32, 128), (10, 20)] {
            let want = try textEncoderIds(ref.tensor("t5.buckets.\(buckets)_\(distance)"))
            let got = (-600...600).map { T5Encoder.relativePositionBucket($0, numBuckets: buckets, maxDistance: distance) }
            #expect(got == want, "\(buckets) buckets, max distance \(distance)")
        }
    }

    /// A checkpoint that saved the tied embedding as encoder.embed_tokens.weight (not shared.weight)
    /// gives the same output.
    @Test func embedTokensServesWhenSharedIsAbsent() throws {
        let ref = try Fixtures.file("flux_text_encoders.safetensors")
        let ids = try textEncoderIds(ref.tensor("t5.short.ids"))
        let w = try Self.weights()
        let renamed = ModuleWeights { k throws(SluiceError) in
            switch k {
            case "shared.weight": throw .missingTensor(key: k, file: "t5")
            case "encoder.embed_tokens.weight": return try w("shared.weight")
            default: return try w(k)
            }
        }
        let encoder = T5Encoder(config: try Self.config())
        let cpu = try CPUBackend()
        #expect(try encoder.encode(ids: ids, renamed, cpu).toFloats() == encoder.encode(ids: ids, w, cpu).toFloats())
        let neither = ModuleWeights { k throws(SluiceError) in
            if k.hasSuffix("embed_tokens.weight") || k == "shared.weight" { throw .missingTensor(key: k, file: "t5") }
            return try w(k)
        }
        #expect(throws: SluiceError.missingTensor(key: "shared.weight", file: "t5")) { try encoder.encode(ids: ids, neither, cpu) }
    }

    /// Every tensor T5EncoderModel.save_pretrained wrote is in a group (it writes shared.weight, not
    /// encoder.embed_tokens.weight), every group has tensors, and a full T5's decoder is not the encoder's.
    @Test func groupsCoverTheCheckpoint() throws {
        let encoder = T5Encoder(config: try Self.config())
        #expect(encoder.groupNames == ["embed", "block.0", "block.1", "block.2", "final"])
        let names = try SafetensorsFile(path: Self.directory + "/model.safetensors").names
        #expect(names.contains("shared.weight") && !names.contains("encoder.embed_tokens.weight"))
        var used = Set<String>()
        for name in names {
            let g = try #require(encoder.group(of: name), "\(name)")
            #expect(encoder.groupNames.contains(g))
            used.insert(g)
        }
        #expect(used == Set(encoder.groupNames))
        #expect(encoder.group(of: "encoder.embed_tokens.weight") == "embed")
        #expect(encoder.group(of: "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight") == "block.0")
        #expect(encoder.group(of: "decoder.block.0.layer.0.SelfAttention.q.weight") == nil && encoder.group(of: "lm_head.weight") == nil)
        #expect(encoder.group(of: "encoder.block.3.layer.0.layer_norm.weight") == nil)
    }

    /// feed_forward_proj "relu" (T5DenseActDense: wi, wo), whose relu is composed from Backend ops.
    @Test func reluFeedForwardMatchesTransformers() throws {
        let ref = try Fixtures.file("flux_text_encoders.safetensors")
        let config = try JSONDecoder().decode(T5Config.self, from: Data(try #require(ref.header.metadata["t5_relu_config"]).utf8))
        #expect(!config.gatedFeedForward && config.feedForwardActivation == .relu)
        let w = ModuleWeights { k throws(SluiceError) in try ref.tensor("t5_relu." + k) }
        let got = try T5Encoder(config: config).encode(ids: textEncoderIds(ref.tensor("t5_relu.ids")), w, CPUBackend())
        try Self.check(got, ref.tensor("t5_relu.last_hidden_state"))
    }

    @Test func badInputsAndWeightsAreNamedErrors() throws {
        let config = try Self.config()
        let encoder = T5Encoder(config: config)
        let w = try Self.weights()
        let cpu = try CPUBackend()
        let outside = #expect(throws: SluiceError.self) { try encoder.encode(ids: [0, 1000], w, cpu) }
        #expect(outside.map { "\($0)".hasPrefix("token id: 1000 is outside the vocabulary") } == true, "\(String(describing: outside))")
        #expect(throws: SluiceError.invalidArgument(name: "token ids", reason: "there are none")) { try encoder.encode(ids: [], w, cpu) }
        let key = "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"
        let missing = ModuleWeights { k throws(SluiceError) in
            if k == key { throw .missingTensor(key: k, file: "t5-tiny") }
            return try w(k)
        }
        #expect(throws: SluiceError.missingTensor(key: key, file: "t5-tiny")) { try encoder.encode(ids: [5, 6], missing, cpu) }
        var wide = config
        wide.dFF = 64
        #expect(throws: SluiceError.shapeMismatch(operation: "weight 'encoder.block.0.layer.1.DenseReluDense.wi_0.weight'",
                                                  expected: "[64, 32]", found: "[48, 32]")) {
            try T5Encoder(config: wide).encode(ids: [5, 6], w, cpu)
        }
        var moreBuckets = config
        moreBuckets.relativeAttentionNumBuckets = 64
        #expect(throws: SluiceError.shapeMismatch(operation: "weight '\(key)'", expected: "[64, 4]", found: "[32, 4]")) {
            try T5Encoder(config: moreBuckets).encode(ids: [5, 6], w, cpu)
        }
    }

    @Test func configReadsFeedForwardProj() throws {
        func decode(_ proj: String) throws -> T5Config {
            let json = #"{"d_model": 64, "d_kv": 16, "d_ff": 128, "num_layers": 2, "num_heads": 4, "feed_forward_proj": "\#(proj)"}"#
            return try JSONDecoder().decode(T5Config.self, from: Data(json.utf8))
        }
        let v11 = try decode("gated-gelu")
        #expect(v11.gatedFeedForward && v11.feedForwardActivation == .geluTanh)
        #expect(v11.relativeAttentionNumBuckets == 32 && v11.relativeAttentionMaxDistance == 128 && v11.layerNormEpsilon == 1e-6)
        let silu = try decode("gated-silu")
        #expect(silu.gatedFeedForward && silu.feedForwardActivation == .silu)
        let gelu = try decode("gelu")
        #expect(!gelu.gatedFeedForward && gelu.feedForwardActivation == .gelu)
        for bad in ["gated-mish", "fancy-gelu", "gated-gelu-x"] {
            #expect(throws: SluiceError.self, "\(bad)") { try decode(bad) }
        }
    }

    /// The activation formula bounds what the CPU backend really allocates in one call.
    @Test func activationBytesBoundTheCPUsAllocations() throws {
        let config = try Self.config()
        let counter = AllocationCounter()
        let cpu = try CPUBackend(allocations: counter)
        for count in [1, 7, 300] {
            counter.resetPeak()
            let before = counter.currentBytes
            _ = try T5Encoder(config: config).encode(ids: [Int](repeating: 7, count: count), Self.weights(), cpu)
            let used = counter.peakBytes - before
            #expect(used > 0 && used <= T5Encoder.activationBytes(config: config, tokens: count), "\(count) tokens: \(used) bytes")
        }
    }
}
