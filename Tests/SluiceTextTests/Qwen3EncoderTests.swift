import Foundation
import SluiceBackends
import SluiceCore
import SluiceTestSupport
import SluiceText
import SluiceWeights
import Testing

@Suite struct Qwen3EncoderTests {
    /// hidden_states[-2] of transformers' Qwen3Model (3 layers, GQA 4:2, bf16 weights) for the prompt
    /// diffusers' ZImagePipeline built, masked to the real tokens. Tolerance 1e-5 abs + 1e-4 rel (f32).
    @Test func promptEmbeddingsMatchTransformers() throws {
        let dir = Fixtures.directory + "/models/z-image-tiny/text_encoder"
        let config = try JSONDecoder().decode(Qwen3Config.self, from: Data(contentsOf: URL(fileURLWithPath: dir + "/config.json")))
        let ckpt = try Checkpoint(path: dir + "/model.safetensors")
        let ref = try Fixtures.file("zimage_reference.safetensors")
        let idTensor = try ref.tensor("prompt_ids")
        let ids = (0..<idTensor.count).map { Int(idTensor.rawPointer.load(fromByteOffset: $0 * 8, as: Int64.self)) }
        let got = try Qwen3Encoder(config: config).encode(ids: ids, ModuleWeights { k throws(SluiceError) in try ckpt.tensor(k) }, CPUBackend())
        let c = compare(try got.toFloats(), try ref.tensor("prompt_embeds").toFloats(), atol: 1e-5, rtol: 1e-4)
        #expect(c.ok, "\(c)")
    }

    /// An encoder whose attention is wider than its hidden size (4 heads × 16 = 64 against 48, as
    /// Qwen3-4B's 32 × 128 against 2560), 2 key/value heads, random norm weights, bf16 weights:
    /// transformers' hidden_states[-2] for 11 random ids. Tolerance as above.
    @Test func attentionWiderThanHiddenMatchesTransformers() throws {
        let f = try Fixtures.file("qwen3_gqa.safetensors")
        let config = try JSONDecoder().decode(Qwen3Config.self, from: Data(f.header.metadata["config"]!.utf8))
        #expect(config.numAttentionHeads * config.headDim != config.hiddenSize)
        let idTensor = try f.tensor("input.ids")
        let ids = (0..<idTensor.count).map { Int(idTensor.rawPointer.load(fromByteOffset: $0 * 8, as: Int64.self)) }
        let got = try Qwen3Encoder(config: config).encode(ids: ids, ModuleWeights { k throws(SluiceError) in try f.tensor(k) }, CPUBackend())
        let c = compare(try got.toFloats(), try f.tensor("output").toFloats(), atol: 1e-5, rtol: 1e-4)
        #expect(c.ok, "\(c)")
    }
}
