import Foundation
import SluiceBackends
import SluiceCore
import SluiceTestSupport
import SluiceText
import SluiceWeights
import Testing

/// The tiny CLIPTextModel of tools/reference/make_flux_text_encoders.py (2 layers, 4 heads, quick_gelu,
/// f32 weights under FLUX.1's "text_model." prefix) against transformers run in float64 on the same
/// weights. Tolerance 1e-5 abs + 1e-5 rel: what remains is Sluice's f32 rounding through two layers and
/// three layer norms over values up to ~3 (measured: at most 1e-6; transformers' own f32 run is 7e-7 off).
@Suite struct CLIPTextEncoderTests {
    static let directory = Fixtures.directory + "/text-encoders/clip-tiny"

    static func config() throws -> CLIPTextConfig {
        try JSONDecoder().decode(CLIPTextConfig.self, from: Data(contentsOf: URL(fileURLWithPath: directory + "/config.json")))
    }

    /// The checkpoint's keys carry "text_model."; ComponentRunner strips it, as this lookup does.
    static func weights() throws -> ModuleWeights {
        let ckpt = try Checkpoint(path: directory + "/model.safetensors")
        return ModuleWeights { k throws(SluiceError) in try ckpt.tensor("text_model." + k) }
    }

    static func check(_ got: Tensor, _ want: Tensor, atol: Float = 1e-5, rtol: Float = 1e-5) throws {
        #expect(got.shape == want.shape)
        let c = compare(try got.toFloats(), try want.toFloats(), atol: atol, rtol: rtol)
        #expect(c.ok, "\(c)")
    }

    @Test func lastHiddenStateAndPooledMatchTransformers() throws {
        let ref = try Fixtures.file("flux_text_encoders.safetensors")
        let config = try Self.config()
        #expect(config.eosTokenId == 2 && config.hiddenAct == .quickGELU)
        let ids = try textEncoderIds(ref.tensor("clip.flux.ids"))
        let (hidden, pooled) = try CLIPTextEncoder(config: config).encode(ids: ids, Self.weights(), CPUBackend())
        try Self.check(hidden, ref.tensor("clip.flux.last_hidden_state"))
        try Self.check(try #require(pooled), ref.tensor("clip.flux.pooled"))
    }

    /// hidden_states[-2] (SDXL's choice): layer 1's output without the final norm. With pooling the
    /// last layer and the final norm still run for the pooled output; without, they are not groups at all.
    @Test func penultimateLayer() throws {
        let ref = try Fixtures.file("flux_text_encoders.safetensors")
        let config = try Self.config()
        let ids = try textEncoderIds(ref.tensor("clip.flux.ids"))
        let both = try CLIPTextEncoder(config: config, skipLastLayers: 1)
        #expect(both.groupNames == ["embeddings", "layers.0", "layers.1", "final"])
        let (hidden, pooled) = try both.encode(ids: ids, Self.weights(), CPUBackend())
        try Self.check(hidden, ref.tensor("clip.flux.hidden_states_-2"))
        try Self.check(try #require(pooled), ref.tensor("clip.flux.pooled"))

        let hiddenOnly = try CLIPTextEncoder(config: config, skipLastLayers: 1, pooling: false)
        #expect(hiddenOnly.groupNames == ["embeddings", "layers.0"])
        #expect(hiddenOnly.group(of: "encoder.layers.1.mlp.fc1.weight") == nil && hiddenOnly.group(of: "final_layer_norm.weight") == nil)
        let alone = try hiddenOnly.encode(ids: ids, Self.weights(), CPUBackend())
        #expect(alone.pooled == nil)
        #expect(try alone.hidden.toFloats() == hidden.toFloats())
        #expect(throws: SluiceError.self) { try CLIPTextEncoder(config: config, skipLastLayers: 2) }
    }

    /// Ids whose largest (990, position 4) is not the eos: the legacy config (eos_token_id 2) pools
    /// there, at argmax(ids); a config with a real eos id (500) pools at its first occurrence (8 of 8, 10).
    @Test func poolingFollowsTheConfigsEosId() throws {
        let ref = try Fixtures.file("flux_text_encoders.safetensors")
        var config = try Self.config()
        let ids = try textEncoderIds(ref.tensor("clip.short.ids"))
        let legacy = CLIPTextEncoder(config: config)
        #expect(legacy.poolingPosition(ids: ids) == 4)
        let (hidden, pooled) = try legacy.encode(ids: ids, Self.weights(), CPUBackend())
        try Self.check(hidden, ref.tensor("clip.short.last_hidden_state"))
        try Self.check(try #require(pooled), ref.tensor("clip.short.pooled_legacy"))

        config.eosTokenId = try textEncoderIds(ref.tensor("clip.short.eos_token_id"))[0]
        let withEos = CLIPTextEncoder(config: config)
        #expect(withEos.poolingPosition(ids: ids) == 8)
        #expect(withEos.poolingPosition(ids: [5, 6, 7]) == 0)
        try Self.check(try #require(withEos.encode(ids: ids, Self.weights(), CPUBackend()).pooled), ref.tensor("clip.short.pooled_eos"))
    }

    /// Every tensor of the checkpoint (less "text_model.") is in a group and every group has tensors;
    /// the position-id buffer old checkpoints kept and a projection head are not the encoder's.
    @Test func groupsCoverTheCheckpoint() throws {
        let encoder = CLIPTextEncoder(config: try Self.config())
        #expect(encoder.groupNames == ["embeddings", "layers.0", "layers.1", "final"])
        let names = try SafetensorsFile(path: Self.directory + "/model.safetensors").names
        var used = Set<String>()
        for name in names {
            #expect(name.hasPrefix("text_model."))
            let g = try #require(encoder.group(of: String(name.dropFirst("text_model.".count))), "\(name)")
            #expect(encoder.groupNames.contains(g))
            used.insert(g)
        }
        #expect(used == Set(encoder.groupNames))
        #expect(encoder.group(of: "embeddings.position_ids") == nil && encoder.group(of: "text_projection.weight") == nil)
        #expect(encoder.group(of: "encoder.layers.2.mlp.fc1.weight") == nil)
    }

    @Test func badInputsAndWeightsAreNamedErrors() throws {
        let config = try Self.config()
        let encoder = CLIPTextEncoder(config: config)
        let w = try Self.weights()
        let cpu = try CPUBackend()
        let outside = #expect(throws: SluiceError.self) { try encoder.encode(ids: [3, 1000, 4], w, cpu) }
        #expect(outside.map { "\($0)".hasPrefix("token id: 1000 is outside the vocabulary") } == true, "\(String(describing: outside))")
        let negative = #expect(throws: SluiceError.self) { try encoder.encode(ids: [3, -1], w, cpu) }
        #expect(negative.map { "\($0)".hasPrefix("token id: -1 ") } == true)
        let long = #expect(throws: SluiceError.self) { try encoder.encode(ids: [Int](repeating: 5, count: 78), w, cpu) }
        #expect(long.map { "\($0)".contains("max_position_embeddings") } == true)
        #expect(throws: SluiceError.self) { try encoder.encode(ids: [], w, cpu) }
        let missing = ModuleWeights { k throws(SluiceError) in
            if k == "encoder.layers.1.mlp.fc2.bias" { throw .missingTensor(key: "text_model." + k, file: "clip-tiny") }
            return try w(k)
        }
        #expect(throws: SluiceError.missingTensor(key: "text_model.encoder.layers.1.mlp.fc2.bias", file: "clip-tiny")) {
            try encoder.encode(ids: [3, 4], missing, cpu)
        }
        // A config from another model size: the first tensor that disagrees is named.
        var wide = config
        wide.intermediateSize = 64
        #expect(throws: SluiceError.shapeMismatch(operation: "weight 'encoder.layers.0.mlp.fc1.weight'", expected: "[64, 32]", found: "[48, 32]")) {
            try CLIPTextEncoder(config: wide).encode(ids: [3, 4], w, cpu)
        }
    }

    @Test func configDecodesTransformersFields() throws {
        let json = #"{"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12, "hidden_act": "gelu"}"#
        let c = try JSONDecoder().decode(CLIPTextConfig.self, from: Data(json.utf8))
        #expect(c.hiddenAct == .gelu && c.headDim == 64 && c.maxPositionEmbeddings == 77 && c.eosTokenId == 49407 && c.vocabSize == 49408)
        let bad = #"{"hidden_size": 32, "intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 4, "hidden_act": "mish"}"#
        #expect(throws: SluiceError.invalidArgument(name: "text_encoder/config.json: hidden_act", reason: "'mish' is not supported")) {
            try JSONDecoder().decode(CLIPTextConfig.self, from: Data(bad.utf8))
        }
    }

    /// The activation formula bounds what the CPU backend really allocates in one call.
    @Test func activationBytesBoundTheCPUsAllocations() throws {
        let config = try Self.config()
        let counter = AllocationCounter()
        let cpu = try CPUBackend(allocations: counter)
        for count in [1, 12, 77] {
            counter.resetPeak()
            let before = counter.currentBytes
            _ = try CLIPTextEncoder(config: config).encode(ids: [Int](repeating: 7, count: count), Self.weights(), cpu)
            let used = counter.peakBytes - before
            #expect(used > 0 && used <= CLIPTextEncoder.activationBytes(config: config, tokens: count), "\(count) tokens: \(used) bytes")
        }
    }
}

/// Ids a fixture stores as int32.
func textEncoderIds(_ t: Tensor) throws -> [Int] {
    guard t.dtype == .i32 else { throw SluiceError.unsupportedDType(operation: "fixture ids", dtype: t.dtype.rawValue) }
    return (0..<t.count).map { Int(t.rawPointer.load(fromByteOffset: $0 * 4, as: Int32.self)) }
}
