import Foundation
import SluiceCore
import SluiceWeights

/// What the text encoders' key tables need from text_encoder/config.json or text_encoder_2/config.json
/// (transformers' CLIPTextConfig).
public struct SDTextEncoderShapes: Sendable, Equatable, Decodable {
    public var hiddenSize: Int
    public var intermediateSize: Int
    public var numHiddenLayers: Int
    public var vocabSize: Int
    public var maxPositionEmbeddings: Int
    /// The width CLIPTextModelWithProjection projects the pooled output to.
    public var projectionDim: Int

    enum CodingKeys: String, CodingKey {
        case hiddenSize = "hidden_size", intermediateSize = "intermediate_size", numHiddenLayers = "num_hidden_layers"
        case vocabSize = "vocab_size", maxPositionEmbeddings = "max_position_embeddings", projectionDim = "projection_dim"
    }

    /// Absent fields take transformers' CLIPTextConfig defaults.
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        hiddenSize = try c.decodeIfPresent(Int.self, forKey: .hiddenSize) ?? 512
        intermediateSize = try c.decodeIfPresent(Int.self, forKey: .intermediateSize) ?? 2048
        numHiddenLayers = try c.decodeIfPresent(Int.self, forKey: .numHiddenLayers) ?? 12
        vocabSize = try c.decodeIfPresent(Int.self, forKey: .vocabSize) ?? 49408
        maxPositionEmbeddings = try c.decodeIfPresent(Int.self, forKey: .maxPositionEmbeddings) ?? 77
        projectionDim = try c.decodeIfPresent(Int.self, forKey: .projectionDim) ?? 512
    }
}

/// CLIP-L as Stable Diffusion's checkpoints store it: transformers' CLIPTextModel names as they were
/// when LDM saved them (under "text_model."; some older files have none). Mirrors diffusers'
/// `convert_ldm_clip_checkpoint` (diffusers/loaders/single_file_utils.py), which only strips the prefix,
/// and `create_diffusers_clip_model_from_ldm`, which drops "text_model." for transformers ≥ 5.6's
/// CLIPTextModel: the presented names are those a text_encoder/ folder written by transformers 5 holds
/// (`embeddings.token_embedding.weight`; ComponentRunner also accepts them under "text_model.").
enum SDCLIPKeyTable {
    /// `storedPrefix`: what the file puts between the component's prefix and transformers' names.
    static func specs(for c: SDTextEncoderShapes, storedPrefix: String) -> [SDTensorSpec] {
        var t = SDKeyTableBuilder()
        let h = c.hiddenSize, s = storedPrefix
        t.add("embeddings.token_embedding.weight", Shape([c.vocabSize, h]), s + "embeddings.token_embedding.weight")
        t.add("embeddings.position_embedding.weight", Shape([c.maxPositionEmbeddings, h]), s + "embeddings.position_embedding.weight")
        for i in 0..<c.numHiddenLayers {
            let k = "encoder.layers.\(i)."
            for p in ["q_proj", "k_proj", "v_proj", "out_proj"] {
                t.linear(k + "self_attn." + p, s + k + "self_attn." + p, out: h, in: h)
            }
            t.norm(k + "layer_norm1", s + k + "layer_norm1", width: h)
            t.linear(k + "mlp.fc1", s + k + "mlp.fc1", out: c.intermediateSize, in: h)
            t.linear(k + "mlp.fc2", s + k + "mlp.fc2", out: h, in: c.intermediateSize)
            t.norm(k + "layer_norm2", s + k + "layer_norm2", width: h)
        }
        t.norm("final_layer_norm", s + "final_layer_norm", width: h)
        return t.specs
    }
}

/// OpenCLIP ViT-bigG (SDXL's second text encoder) as SDXL's checkpoints store it, presented as
/// transformers' CLIPTextModelWithProjection. Mirrors diffusers' `convert_open_clip_checkpoint`
/// (diffusers/loaders/single_file_utils.py):
///
///     token_embedding.weight, positional_embedding      text_model.embeddings.token_embedding / position_embedding.weight
///     transformer.resblocks.i.ln_1 / ln_2               text_model.encoder.layers.i.layer_norm1 / layer_norm2
///     transformer.resblocks.i.attn.in_proj_weight/bias  …self_attn.q_proj, k_proj, v_proj (rows of one tensor: views)
///     transformer.resblocks.i.attn.out_proj             …self_attn.out_proj
///     transformer.resblocks.i.mlp.c_fc / c_proj         …mlp.fc1 / fc2
///     ln_final                                          text_model.final_layer_norm
///     text_projection [width, proj]                     text_projection.weight [proj, width] (transposed: a copy)
enum SDOpenCLIPKeyTable {
    static func specs(for c: SDTextEncoderShapes) -> [SDTensorSpec] {
        var t = SDKeyTableBuilder()
        let h = c.hiddenSize, p = "text_model."
        t.add(p + "embeddings.token_embedding.weight", Shape([c.vocabSize, h]), "token_embedding.weight")
        t.add(p + "embeddings.position_embedding.weight", Shape([c.maxPositionEmbeddings, h]), "positional_embedding")
        for i in 0..<c.numHiddenLayers {
            let k = p + "encoder.layers.\(i).", r = "transformer.resblocks.\(i)."
            t.fused([k + "self_attn.q_proj", k + "self_attn.k_proj", k + "self_attn.v_proj"], r + "attn.in_proj", rows: h, in: h)
            t.linear(k + "self_attn.out_proj", r + "attn.out_proj", out: h, in: h)
            t.norm(k + "layer_norm1", r + "ln_1", width: h)
            t.linear(k + "mlp.fc1", r + "mlp.c_fc", out: c.intermediateSize, in: h)
            t.linear(k + "mlp.fc2", r + "mlp.c_proj", out: h, in: c.intermediateSize)
            t.norm(k + "layer_norm2", r + "ln_2", width: h)
        }
        t.norm(p + "final_layer_norm", "ln_final", width: h)
        t.add("text_projection.weight", Shape([c.projectionDim, h]), "text_projection", Shape([h, c.projectionDim]), .transposed)
        return t.specs
    }
}
