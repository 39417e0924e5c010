"""Builds tiny random-weight versions of the two text encoders FLUX.1 uses, and transformers' outputs
for them.

Run from the repository root:  python3 tools/reference/make_flux_text_encoders.py
Writes:
  Tests/Fixtures/text-encoders/clip-tiny/   transformers' CLIPTextModel (FLUX.1's text_encoder, CLIP-L),
                                            f32, keys under "text_model." as FLUX.1's checkpoint has them
                                            (transformers 4 wrote them so; 5 writes them without)
  Tests/Fixtures/text-encoders/t5-tiny/     transformers' T5EncoderModel (FLUX.1's text_encoder_2,
                                            T5-v1.1-XXL), bf16 as FLUX.1 ships it
  Tests/Fixtures/flux_text_encoders.safetensors
      clip.flux.*   a FLUX-style prompt (bos, words, eos, eos-padding to 77): last_hidden_state, pooled,
                    and hidden_states[-2] (the penultimate layer SDXL reads)
      clip.short.*  12 ids whose largest id is not the eos: pooled at argmax(ids) for the legacy config
                    (eos_token_id 2, as FLUX.1's) and at the first eos for a config with a real eos id
                    (clip.short.eos_token_id; same weights)
      t5.long.*     300 ids (words, eos 1, padding 0, unmasked as FLUX attends over it): relative
                    distances up to 299 reach the log-spaced buckets and the max_distance clamp
      t5.short.*    7 ids
      t5.buckets.*  transformers' _relative_position_bucket for relative positions -600...600
                    (num_buckets_max_distance: 32_128 as T5-v1.1's, 10_20)
      t5_relu.*     a one-block T5 with feed_forward_proj "relu" (bf16 weights, ids, output; its config
                    in the metadata t5_relu_config)

Ids and buckets are int32. All of it stays near 400 KB: the two vocabularies of 1000 are most of it.

Weights are random at scales that make every tensor show in the output (transformers initialises
norms to 1 and biases to 0). The references run in float64 on the stored weights (the bf16 ones
widened), so what remains in a comparison is Sluice's own f32 error.
"""
import json
import math
import os
import shutil

import torch
from safetensors.torch import load_file, save_file
from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel
from transformers.models.t5.modeling_t5 import T5Attention

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
FIX = os.path.join(ROOT, "Tests", "Fixtures")
CLIP_DIR = os.path.join(FIX, "text-encoders", "clip-tiny")
T5_DIR = os.path.join(FIX, "text-encoders", "t5-tiny")

CLIP_EOS = 500  # the real-eos variant's eos_token_id


def randomize(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            r = torch.randn(p.shape, generator=g)
            if p.ndim == 1:  # norm weights 1 ± 0.2, biases ± 0.2
                p.copy_((1.0 if ("norm" in name and name.endswith("weight")) else 0.0) + 0.2 * r)
            elif "embedding" in name or "shared" in name or "embed_tokens" in name:
                p.copy_(r)
            else:
                p.copy_(r / math.sqrt(p.shape[-1]))


def clip():
    cfg = CLIPTextConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                         max_position_embeddings=77, hidden_act="quick_gelu", layer_norm_eps=1e-5,
                         vocab_size=1000, bos_token_id=0, eos_token_id=2, pad_token_id=1,
                         attn_implementation="eager")
    torch.manual_seed(10)
    model = CLIPTextModel(cfg).eval()
    randomize(model, 11)

    if os.path.exists(CLIP_DIR):
        shutil.rmtree(CLIP_DIR)
    model.save_pretrained(CLIP_DIR, safe_serialization=True)
    path = os.path.join(CLIP_DIR, "model.safetensors")
    weights = load_file(path)
    save_file({"text_model." + k: v.contiguous() for k, v in weights.items()}, path, metadata={"format": "pt"})

    g = torch.Generator().manual_seed(12)
    words = torch.randint(3, 998, (18,), generator=g)
    flux_ids = torch.cat([torch.tensor([998]), words, torch.tensor([999] * 58)])  # bos, words, eos + eos padding
    assert flux_ids.numel() == 77
    short = torch.randint(3, 990, (12,), generator=g)
    short[short == CLIP_EOS] = 7
    short[4] = 990   # the largest id: where the legacy config pools
    short[8] = CLIP_EOS  # the first eos: where a real eos id pools
    short[10] = CLIP_EOS

    out = {}
    reference = CLIPTextModel.from_pretrained(CLIP_DIR, attn_implementation="eager").eval().double()
    for p, q in zip(reference.parameters(), model.parameters()):
        assert torch.equal(p.float(), q), "transformers did not load the text_model.-prefixed checkpoint"
    eos_cfg = CLIPTextConfig(**{**cfg.to_dict(), "eos_token_id": CLIP_EOS})
    eos_cfg._attn_implementation = "eager"
    eos_model = CLIPTextModel(eos_cfg).eval().double()
    eos_model.load_state_dict(reference.state_dict())
    with torch.no_grad():
        r = reference(input_ids=flux_ids[None], output_hidden_states=True)
        out["clip.flux.ids"] = flux_ids
        out["clip.flux.last_hidden_state"] = r.last_hidden_state[0]
        out["clip.flux.pooled"] = r.pooler_output
        out["clip.flux.hidden_states_-2"] = r.hidden_states[-2][0]
        r = reference(input_ids=short[None])
        out["clip.short.ids"] = short
        out["clip.short.last_hidden_state"] = r.last_hidden_state[0]
        out["clip.short.pooled_legacy"] = r.pooler_output
        assert torch.equal(r.pooler_output[0], r.last_hidden_state[0, 4])
        e = eos_model(input_ids=short[None])
        out["clip.short.pooled_eos"] = e.pooler_output
        out["clip.short.eos_token_id"] = torch.tensor([CLIP_EOS])
        assert torch.allclose(e.pooler_output[0], r.last_hidden_state[0, 8], atol=1e-12), (e.pooler_output[0] - r.last_hidden_state[0, 8]).abs().max()
    return out


def t5():
    cfg = T5Config(d_model=32, d_kv=8, d_ff=48, num_layers=3, num_heads=4, relative_attention_num_buckets=32,
                   relative_attention_max_distance=128, feed_forward_proj="gated-gelu", layer_norm_epsilon=1e-6,
                   vocab_size=1000, pad_token_id=0, eos_token_id=1, attn_implementation="eager")
    torch.manual_seed(20)
    model = T5EncoderModel(cfg).eval()
    randomize(model, 21)
    with torch.no_grad():  # stored as bf16 (FLUX.1's text_encoder_2 is): the reference uses those values
        for p in model.parameters():
            p.copy_(p.to(torch.bfloat16).float())
    if os.path.exists(T5_DIR):
        shutil.rmtree(T5_DIR)
    model.to(torch.bfloat16).save_pretrained(T5_DIR, safe_serialization=True)
    keys = set(load_file(os.path.join(T5_DIR, "model.safetensors")).keys())
    assert "shared.weight" in keys and "encoder.embed_tokens.weight" not in keys, sorted(keys)

    g = torch.Generator().manual_seed(22)
    long_ids = torch.cat([torch.randint(2, 1000, (40,), generator=g), torch.tensor([1]), torch.zeros(259, dtype=torch.long)])
    short = torch.randint(2, 1000, (7,), generator=g)
    reference = model.double()
    out = {}
    with torch.no_grad():
        for name, ids in (("long", long_ids), ("short", short)):
            out[f"t5.{name}.ids"] = ids
            out[f"t5.{name}.last_hidden_state"] = reference(input_ids=ids[None]).last_hidden_state[0]
    rel = torch.arange(-600, 601)
    out["t5.buckets.32_128"] = T5Attention._relative_position_bucket(rel, bidirectional=True, num_buckets=32, max_distance=128)
    out["t5.buckets.10_20"] = T5Attention._relative_position_bucket(rel, bidirectional=True, num_buckets=10, max_distance=20)
    return out


def t5_relu():
    cfg = T5Config(d_model=32, d_kv=8, d_ff=40, num_layers=1, num_heads=4, relative_attention_num_buckets=16,
                   relative_attention_max_distance=32, feed_forward_proj="relu", layer_norm_epsilon=1e-6,
                   vocab_size=48, attn_implementation="eager")
    torch.manual_seed(30)
    model = T5EncoderModel(cfg).eval()
    randomize(model, 31)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(torch.bfloat16).float())
    ids = torch.randint(0, 48, (20,), generator=torch.Generator().manual_seed(32))
    with torch.no_grad():
        weights = {"t5_relu." + k: v.to(torch.bfloat16) for k, v in model.state_dict().items() if k != "encoder.embed_tokens.weight"}
        output = model.double()(input_ids=ids[None]).last_hidden_state[0]
    weights["t5_relu.ids"] = ids
    weights["t5_relu.last_hidden_state"] = output
    return weights, cfg.to_json_string()


def main():
    out = {**clip(), **t5()}
    relu, relu_config = t5_relu()
    out.update(relu)
    tensors = {k: (v.to(torch.int32) if not v.is_floating_point() else v if v.dtype == torch.bfloat16 else v.to(torch.float32)).contiguous()
               for k, v in out.items()}
    save_file(tensors, os.path.join(FIX, "flux_text_encoders.safetensors"),
              metadata={"t5_relu_config": relu_config})  # one key: safetensors writes several in a random order
    for d in (CLIP_DIR, T5_DIR):
        for f in os.listdir(d):
            print(os.path.join(d, f), os.path.getsize(os.path.join(d, f)))
    print("flux_text_encoders.safetensors", os.path.getsize(os.path.join(FIX, "flux_text_encoders.safetensors")))


if __name__ == "__main__":
    main()
