"""Builds the tiny random-weight Z-Image used by Sluice's tests, and diffusers' outputs for it.

Run from the repository root:  python3 tools/reference/make_zimage_tiny.py
Writes:
  Tests/Fixtures/models/z-image-tiny/        the diffusers folder layout (model_index.json, scheduler/,
                                            text_encoder/, tokenizer/, transformer/, vae/)
  Tests/Fixtures/zimage_reference.safetensors  diffusers' ZImagePipeline outputs for one prompt/seed
  Tests/Fixtures/zimage_wide.safetensors       a transformer with dim > 256 (the adaLN width is
                                            min(dim, 256): dim 32 would hide a mistake there)
  Tests/Fixtures/randn.safetensors             torch.randn for several shapes and seeds
  Tests/Fixtures/tokenizer_ids.json            ids transformers gives for assorted strings

The architecture is diffusers' own (ZImageTransformer2DModel, AutoencoderKL, transformers' Qwen3Model);
only the sizes are tiny. The tokenizer is a byte-level BPE with Qwen2's pre-tokenizer, trained here on a
small multilingual text, with Qwen's special tokens and a chat template that renders a user turn as
Qwen3's does.
"""
import json
import os
import shutil

import numpy as np
import torch
from safetensors.torch import save_file

from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, ZImagePipeline, ZImageTransformer2DModel
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast, Qwen3Config, Qwen3Model

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
FIX = os.path.join(ROOT, "Tests", "Fixtures")
MODEL = os.path.join(FIX, "models", "z-image-tiny")

QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")

# Qwen3's template renders a user turn and the generation prompt like this; with enable_thinking=False
# it would append an empty think block (ZImagePipeline passes True, so it never does).
CHAT_TEMPLATE = (
    "{%- for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>' + '\\n' }}{%- endfor %}{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}{{ '<think>\\n\\n</think>\\n\\n' }}"
    "{%- endif %}{%- endif %}"
)

CORPUS = [
    "a red fox jumps over the lazy dog in the snowy forest at dawn",
    "A photograph of an astronaut riding a horse on the moon, high detail, 8k",
    "The quick brown fox's tail wasn't there; they'll say it's gone. We've seen I'm sure you'd agree.",
    "一只红色的狐狸在雪地里奔跑，背景是冬日的森林和远山。",
    "一幅为名为“造相「Z-IMAGE-TURBO」”的项目设计的创意海报。",
    "Café naïve façade — déjà vu, Straße, Ångström, ÉCOLE, 東京タワー, 서울",
    "emoji 🦊🔥🌲 and numbers 1234567890, 3.14159, 2026-11-23 12:00",
    "tabs\tand   multiple    spaces\n\nnew lines\r\nwindows",
    "<html><body>code: x = f(y) + g[z] * 2; // comment</body></html>",
] * 20


def build_tokenizer():
    tok = Tokenizer(models.BPE(byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    trainer = trainers.BpeTrainer(vocab_size=600, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    from tokenizers import AddedToken
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t in ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in ["<think>", "</think>"]])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   model_max_length=131072)
    fast.chat_template = CHAT_TEMPLATE
    return fast


TOKEN_STRINGS = [
    "a red fox", "", " ", "  leading and trailing  ", "Hello, world!", "HELLO it's I'M we'LL",
    "一只红色的狐狸", "造相「Z-IMAGE-TURBO」", "🦊🔥", "👨‍👩‍👧 family", "1234567890", "x=1.5e-3",
    "tabs\tand\ttabs", "a\n\nb\r\nc", "   \n  ", "Café vs Cafe\u0301 (NFC)", "<|im_start|>user\nhi<|im_end|>",
    "<think>\n\n</think>", "unknown ☃ snowman ∑ math", "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz",
]


def main():
    torch.manual_seed(0)
    if os.path.exists(MODEL):
        shutil.rmtree(MODEL)
    os.makedirs(MODEL)

    tokenizer = build_tokenizer()
    tokenizer.save_pretrained(os.path.join(MODEL, "tokenizer"))
    tokenizer = AutoTokenizer.from_pretrained(os.path.join(MODEL, "tokenizer"))
    ids = {s: tokenizer(s)["input_ids"] for s in TOKEN_STRINGS}
    with open(os.path.join(FIX, "tokenizer_ids.json"), "w", encoding="utf-8") as f:
        json.dump({"vocabulary": "z-image-tiny", "cases": [{"text": s, "ids": i} for s, i in ids.items()]},
                  f, ensure_ascii=False, indent=0)

    text_config = Qwen3Config(hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4,
                              num_key_value_heads=2, head_dim=8, vocab_size=len(tokenizer),
                              max_position_embeddings=1024, rope_theta=1000000.0, rms_norm_eps=1e-6,
                              tie_word_embeddings=False)
    text_encoder = Qwen3Model(text_config).eval()
    with torch.no_grad():  # random init leaves norms at 1: perturb them so a missing norm shows
        for name, p in text_encoder.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.2)

    transformer = ZImageTransformer2DModel(
        all_patch_size=(2,), all_f_patch_size=(1,), in_channels=16, dim=32, n_layers=2, n_refiner_layers=1,
        n_heads=2, n_kv_heads=2, norm_eps=1e-5, qk_norm=True, cap_feat_dim=32, rope_theta=256.0,
        t_scale=1000.0, axes_dims=[8, 4, 4], axes_lens=[256, 32, 32]).eval()
    randomize(transformer)

    vae = AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2, block_out_channels=[32, 64], layers_per_block=1,
        latent_channels=16, norm_num_groups=32, sample_size=32, scaling_factor=0.3611, shift_factor=0.1159,
        use_quant_conv=False, use_post_quant_conv=False, force_upcast=True).eval()
    randomize(vae)

    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=False)
    pipe = ZImagePipeline(scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                          transformer=transformer)
    for m in (text_encoder, transformer, vae):  # stored as bf16, like the real checkpoints
        with torch.no_grad():
            for p in m.parameters():
                p.copy_(p.to(torch.bfloat16).float())

    reference(pipe, tokenizer)
    pipe.to(torch.bfloat16).save_pretrained(MODEL, safe_serialization=True)
    wide_transformer()
    qwen3_gqa()
    randn_fixtures()


def randomize(module):
    """diffusers zero-initialises some layers (adaLN, final layer): give every tensor random values so
    each one shows up in the output."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in module.named_parameters():
            fan_in = p.shape[-1] if p.ndim > 1 else 1
            if p.ndim == 4:
                fan_in = p.shape[1] * p.shape[2] * p.shape[3]
            scale = 1.0 / np.sqrt(fan_in) if p.ndim > 1 else 0.1
            base = 1.0 if ("norm" in name and "weight" in name) else 0.0
            p.copy_(base + torch.randn(p.shape, generator=g) * scale)


def reference(pipe, tokenizer):
    prompt, seed, steps, size = "a red fox", 7, 4, 64
    out = {}
    captured = {}

    template = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                             add_generation_prompt=True, enable_thinking=True)
    enc = tokenizer([template], padding="max_length", max_length=512, truncation=True, return_tensors="pt")
    out["prompt_ids"] = enc.input_ids[0][enc.attention_mask[0].bool()].to(torch.int64)
    with torch.no_grad():
        embeds = pipe.encode_prompt(prompt, do_classifier_free_guidance=True, negative_prompt="blurry")
    out["prompt_embeds"] = embeds[0][0].float()
    out["negative_embeds"] = embeds[1][0].float()

    calls = []

    def hook(module, args, kwargs, output):
        calls.append((args[0][0].detach().clone(), args[1].detach().clone(), output[0][0].detach().clone()))

    handle = pipe.transformer.register_forward_hook(hook, with_kwargs=True)

    latents_seen = []

    def on_step(p, i, t, kw):
        latents_seen.append(kw["latents"].detach().clone())
        return {}

    for cfg, tag in [(0.0, ""), (2.5, "cfg_")]:
        calls.clear()
        latents_seen.clear()
        gen = torch.Generator("cpu").manual_seed(seed)
        with torch.no_grad():
            img = pipe(prompt, negative_prompt="blurry" if cfg > 0 else None, height=size, width=size,
                       num_inference_steps=steps, guidance_scale=cfg, generator=gen, output_type="pt",
                       callback_on_step_end=on_step).images
        out[tag + "image"] = img[0].float()  # [3, H, W] in [0, 1]
        for i, lat in enumerate(latents_seen):
            out[f"{tag}latents_{i}"] = lat[0].float()
        out[tag + "transformer_in_0"] = calls[0][0].float()
        out[tag + "transformer_t_0"] = calls[0][1].float()
        out[tag + "transformer_out_0"] = calls[0][2].float()
        # A later call too: at step 0 t is 0 (pure noise), which hides a wrong timestep embedding.
        out[tag + "transformer_in_2"] = calls[2][0].float()
        out[tag + "transformer_t_2"] = calls[2][1].float()
        out[tag + "transformer_out_2"] = calls[2][2].float()
    handle.remove()
    gen = torch.Generator("cpu").manual_seed(seed)
    out["initial_latents"] = torch.randn((1, 16, 32, 32), generator=gen)[0]
    pipe.scheduler.set_timesteps(sigmas=torch.linspace(1.0, 1 / steps, steps).tolist())
    out["sigmas"] = pipe.scheduler.sigmas.float()
    # The VAE alone on the last latents, scaled as the pipeline does: whole, and tiled as diffusers tiles
    # (a quarter overlap, linear blending) at the tile sizes Sluice's planner picks for this image
    # (32 latents → 24 → 18, as budgets shrink) and at 16.
    vae_in = latents_seen[-1] / pipe.vae.config.scaling_factor + pipe.vae.config.shift_factor
    with torch.no_grad():
        out["vae_in"] = vae_in[0].float()
        out["vae_out"] = pipe.vae.decode(vae_in, return_dict=False)[0][0].float()
        pipe.vae.enable_tiling()
        for tile in (16, 18, 24):
            pipe.vae.tile_sample_min_size = tile * 2
            pipe.vae.tile_latent_min_size = tile
            out[f"vae_tiled_{tile}_out"] = pipe.vae.decode(vae_in, return_dict=False)[0][0].float()
        pipe.vae.disable_tiling()
        # The encoder (image-to-image later): the posterior mean of a random image in [-1, 1].
        image = torch.rand((1, 3, 64, 64), generator=torch.Generator().manual_seed(9)) * 2 - 1
        out["vae_encode_in"] = image[0]
        out["vae_encode_mean"] = pipe.vae.encode(image).latent_dist.mean[0].float()
    save_file({k: v.contiguous() for k, v in out.items()}, os.path.join(FIX, "zimage_reference.safetensors"),
              metadata={"prompt": prompt, "seed": str(seed), "steps": str(steps), "size": str(size),
                        "negative_prompt": "blurry", "cfg_guidance": "2.5"})


def qwen3_gqa():
    """A Qwen3 text encoder whose attention width differs from its hidden size, as in the real
    Qwen3-4B (32 heads x 128 = 4096 against 2560): here 4 heads x 16 = 64 against 48, with 2 key/value
    heads, random norm weights, bf16 weights. The reference is hidden_states[-2] for random ids."""
    from safetensors.torch import save_file
    cfg = Qwen3Config(hidden_size=48, intermediate_size=80, num_hidden_layers=3, num_attention_heads=4,
                      num_key_value_heads=2, head_dim=16, vocab_size=97, max_position_embeddings=256,
                      rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=False)
    torch.manual_seed(5)
    model = Qwen3Model(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.2)
            p.copy_(p.to(torch.bfloat16).float())
        ids = torch.randint(0, cfg.vocab_size, (1, 11), generator=torch.Generator().manual_seed(6))
        hidden = model(input_ids=ids, output_hidden_states=True).hidden_states[-2][0].float()
    weights = {k: v.to(torch.bfloat16).contiguous() for k, v in model.state_dict().items()}
    weights["input.ids"] = ids[0].to(torch.int64)
    weights["output"] = hidden.contiguous()
    save_file(weights, os.path.join(FIX, "qwen3_gqa.safetensors"), metadata={"config": cfg.to_json_string()})


def wide_transformer():
    """dim 264 > 256: the adaLN input is 256 wide, the blocks 264. Stored as fp8 (e4m3fn) to stay small;
    the reference runs diffusers on the same fp8 values widened to f32."""
    torch.manual_seed(3)
    t = ZImageTransformer2DModel(all_patch_size=(2,), all_f_patch_size=(1,), in_channels=16, dim=264, n_layers=1,
                                 n_refiner_layers=0, n_heads=2, n_kv_heads=2, norm_eps=1e-5, qk_norm=True,
                                 cap_feat_dim=24, rope_theta=256.0, t_scale=1000.0, axes_dims=[36, 48, 48],
                                 axes_lens=[64, 16, 16]).eval()
    randomize(t)
    with torch.no_grad():
        for p in t.parameters():
            p.copy_(p.to(torch.float8_e4m3fn).float())
    weights = {k: v.to(torch.float8_e4m3fn) for k, v in t.state_dict().items()}
    g = torch.Generator().manual_seed(4)
    x = torch.randn((16, 1, 8, 12), generator=g)
    cap = torch.randn((19, 24), generator=g)
    tt = torch.tensor([0.3])
    with torch.no_grad():
        y = t([x], tt, [cap], return_dict=False)[0][0]
    weights.update({"input.x": x, "input.cap": cap, "input.t": tt, "output": y.float()})
    save_file({k: v.contiguous() for k, v in weights.items()}, os.path.join(FIX, "zimage_wide.safetensors"),
              metadata={"config": json.dumps(dict(t.config))})


def randn_fixtures():
    out = {}
    for seed in [0, 7, 42, 2**32 + 5, 123456789012]:
        for shape in [(16,), (17,), (1, 16, 8, 8), (2, 4, 5, 7), (1, 16, 32, 32), (1, 16, 128, 128)]:
            if shape[-1] == 128 and seed != 42:
                continue
            g = torch.Generator("cpu").manual_seed(seed)
            out[f"seed{seed}_" + "x".join(map(str, shape))] = torch.randn(shape, generator=g)
    save_file(out, os.path.join(FIX, "randn.safetensors"))


if __name__ == "__main__":
    main()
