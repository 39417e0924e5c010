"""Builds the tiny random-weight FLUX.1 dev and schnell pipelines used by Sluice's tests, and diffusers'
outputs for them.

Run from the repository root:  python3 tools/reference/make_flux_tiny.py
Needs the tiny tokenizers of tools/reference/make_flux_tokenizers.py (Tests/Fixtures/tokenizers/).
Writes:
  Tests/Fixtures/models/flux-tiny-dev/      a diffusers FluxPipeline folder (guidance embedder: "dev")
  Tests/Fixtures/models/flux-tiny-schnell/  the same without the guidance embedder; its text encoders,
                                            tokenizers and VAE are symlinks into flux-tiny-dev (one copy)
  Tests/Fixtures/flux_transformer_reference.safetensors  direct calls of both transformers
  Tests/Fixtures/flux_reference.safetensors               whole-pipeline runs: every step's latents, images
  Tests/Fixtures/flux-single-file/tiny-dev-bfl-*.safetensors  the dev transformer in Black Forest Labs'
                                            layout (bf16; fp8 with ComfyUI's prefix)

The classes are diffusers' and transformers' own (FluxTransformer2DModel, CLIPTextModel, T5EncoderModel,
AutoencoderKL, FluxPipeline); only the sizes are tiny. The sizes are chosen so that no two widths
coincide (transformer 32, T5 40 with 4×8 attention, CLIP 24), the head dim (16) splits into RoPE axes
(4, 6, 6) of different sizes, and the image is not square — a transposed weight or a swapped axis
cannot hide. The VAE is z-image-tiny's (FLUX.1 and Z-Image share the VAE's architecture and config).
"""
import json
import os
import shutil
import sys

import numpy as np
import torch
from safetensors.torch import save_file

from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer, T5Config, T5EncoderModel, T5TokenizerFast

sys.path.insert(0, os.path.dirname(__file__))

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
FIX = os.path.join(ROOT, "Tests", "Fixtures")
DEV = os.path.join(FIX, "models", "flux-tiny-dev")
SCHNELL = os.path.join(FIX, "models", "flux-tiny-schnell")
TOKENIZERS = os.path.join(FIX, "tokenizers")

TRANSFORMER = dict(patch_size=1, in_channels=64, num_layers=2, num_single_layers=2, attention_head_dim=16,
                   num_attention_heads=2, joint_attention_dim=40, pooled_projection_dim=24,
                   axes_dims_rope=(4, 6, 6))
# FLUX.1-dev's and -schnell's scheduler configs.
DEV_SCHEDULER = dict(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True, base_image_seq_len=256,
                     max_image_seq_len=4096, base_shift=0.5, max_shift=1.15)
SCHNELL_SCHEDULER = dict(num_train_timesteps=1000, shift=1.0, use_dynamic_shifting=False, base_image_seq_len=256,
                         max_image_seq_len=4096, base_shift=0.5, max_shift=1.15)
HEIGHT, WIDTH = 32, 48


def randomize(module, seed):
    """diffusers zero-initialises some layers (adaLN, final layer): give every tensor random values so
    each one shows up in the output. Norm weights around 1."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            fan_in = p.shape[-1] if p.ndim > 1 else 1
            scale = 1.0 / np.sqrt(fan_in) if p.ndim > 1 else 0.1
            base = 1.0 if (("norm" in name or "layer_norm" in name) and "weight" in name) else 0.0
            p.copy_(base + torch.randn(p.shape, generator=g) * scale)


def round_bf16(module):
    """Stored as bf16, like the real checkpoints; computed in f32 from the rounded values."""
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(p.to(torch.bfloat16).float())


def transformer(guidance, seed):
    t = FluxTransformer2DModel(guidance_embeds=guidance, **TRANSFORMER).eval()
    randomize(t, seed)
    round_bf16(t)
    return t


def transformer_reference(dev, schnell):
    """Direct calls with random inputs: isolates the transformer from the pipeline. A mid-schedule
    timestep (0 would hide a wrong timestep embedding) and a guidance of 3.5."""
    out = {}
    g = torch.Generator().manual_seed(3)
    lt, h, w = 7, 4, 6
    x = torch.randn((1, h * w, 64), generator=g)
    ctx = torch.randn((1, lt, 40), generator=g)
    pooled = torch.randn((1, 24), generator=g)
    img_ids = torch.zeros(h, w, 3)
    img_ids[..., 1] += torch.arange(h)[:, None]
    img_ids[..., 2] += torch.arange(w)[None, :]
    img_ids = img_ids.reshape(h * w, 3)
    txt_ids = torch.zeros(lt, 3)
    t = torch.tensor([0.6431], dtype=torch.float32)
    out["x"], out["context"], out["pooled"], out["t"] = x[0], ctx[0], pooled[0], t
    with torch.no_grad():
        out["dev_out"] = dev(hidden_states=x, encoder_hidden_states=ctx, pooled_projections=pooled, timestep=t,
                             img_ids=img_ids, txt_ids=txt_ids, guidance=torch.tensor([3.5]), return_dict=False)[0][0]
        out["schnell_out"] = schnell(hidden_states=x, encoder_hidden_states=ctx, pooled_projections=pooled,
                                     timestep=t, img_ids=img_ids, txt_ids=txt_ids, return_dict=False)[0][0]
    save_file({k: v.contiguous().float() for k, v in out.items()}, os.path.join(FIX, "flux_transformer_reference.safetensors"))


def text_encoders(clip_tok, t5_tok):
    clip = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(clip_tok), hidden_size=24, intermediate_size=40, num_hidden_layers=2, num_attention_heads=2,
        max_position_embeddings=77, hidden_act="quick_gelu", layer_norm_eps=1e-5,
        # FLUX.1's text_encoder config keeps the legacy ids (eos 2): pooling takes argmax(input_ids).
        bos_token_id=0, eos_token_id=2, pad_token_id=1, projection_dim=24)).eval()
    randomize(clip, 11)
    round_bf16(clip)
    t5 = T5EncoderModel(T5Config(
        vocab_size=len(t5_tok), d_model=40, d_kv=8, d_ff=56, num_layers=2, num_heads=4,
        relative_attention_num_buckets=32, relative_attention_max_distance=128, feed_forward_proj="gated-gelu",
        layer_norm_epsilon=1e-6, dropout_rate=0.0, is_encoder_decoder=False, use_cache=False,
        tie_word_embeddings=False)).eval()
    randomize(t5, 12)
    round_bf16(t5)
    return clip, t5


def link(src_folder, dst_folder, name):
    path = os.path.join(dst_folder, name)
    if os.path.lexists(path):
        os.remove(path) if os.path.islink(path) else shutil.rmtree(path)
    os.symlink(os.path.relpath(os.path.join(src_folder, name), dst_folder), path)


def run(pipe, out, tag, **kw):
    """One pipeline run: the latents after every step, the number of transformer calls, the image."""
    latents_seen, calls = [], []

    def on_step(p, i, t, k):
        latents_seen.append(k["latents"].detach().clone())
        return {}

    def hook(module, args, kwargs, output):
        calls.append({k: v.detach().clone() for k, v in kwargs.items() if isinstance(v, torch.Tensor)} | {"out": output[0].detach().clone()})

    handle = pipe.transformer.register_forward_hook(hook, with_kwargs=True)
    gen = torch.Generator("cpu").manual_seed(kw.pop("seed"))
    with torch.no_grad():
        img = pipe(height=HEIGHT, width=WIDTH, generator=gen, output_type="pt", callback_on_step_end=on_step, **kw).images
    handle.remove()
    out[tag + "image"] = img[0]
    for i, lat in enumerate(latents_seen):
        # Unpacked to [16, H/8·…, W/…] as Sluice reports a step's latents (and previews them).
        out[f"{tag}latents_{i}"] = FluxPipeline._unpack_latents(lat, HEIGHT, WIDTH, pipe.vae_scale_factor)[0]
    out[tag + "calls"] = torch.tensor([float(len(calls))])


def pipelines():
    clip_tok = CLIPTokenizer.from_pretrained(os.path.join(TOKENIZERS, "clip-tiny"))
    t5_tok = T5TokenizerFast.from_pretrained(os.path.join(TOKENIZERS, "t5-tiny"))
    clip, t5 = text_encoders(clip_tok, t5_tok)
    vae = AutoencoderKL.from_pretrained(os.path.join(FIX, "models", "z-image-tiny", "vae")).float().eval()
    dev, schnell = transformer(True, 21), transformer(False, 22)
    transformer_reference(dev, schnell)

    out = {}
    pipe = FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(**DEV_SCHEDULER), vae=vae, text_encoder=clip,
                        tokenizer=clip_tok, text_encoder_2=t5, tokenizer_2=t5_tok, transformer=dev)
    with torch.no_grad():
        pe, pooled, _ = pipe.encode_prompt("a red fox", prompt_2=None, max_sequence_length=24)
    out["dev_prompt_embeds"], out["dev_pooled"] = pe[0], pooled[0]
    out["clip_ids"] = clip_tok("a red fox", padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids[0].float()
    out["t5_ids"] = t5_tok("a red fox", padding="max_length", max_length=24, truncation=True, return_tensors="pt").input_ids[0].float()
    # Embedded guidance (3.5, dev's default), 4 steps, T5 padded to 24 tokens.
    run(pipe, out, "dev_", prompt="a red fox", num_inference_steps=4, guidance_scale=3.5, max_sequence_length=24, seed=7)
    # True CFG: a negative prompt and true_cfg_scale > 1 — two transformer calls a step.
    run(pipe, out, "cfg_", prompt="a red fox", negative_prompt="blurry", true_cfg_scale=2.0, num_inference_steps=3,
        guidance_scale=3.5, max_sequence_length=24, seed=8)
    # The T5 length changes the image (padding is attended): the same as dev_ at 32 tokens.
    run(pipe, out, "len32_", prompt="a red fox", num_inference_steps=2, guidance_scale=3.5, max_sequence_length=32, seed=7)
    # The vae is a symlink into z-image-tiny (written by an earlier run): never write through it.
    if os.path.islink(os.path.join(DEV, "vae")):
        os.remove(os.path.join(DEV, "vae"))
    pipe.to(torch.bfloat16).save_pretrained(DEV, safe_serialization=True)
    pipe.to(torch.float32)
    round_bf16(dev)  # (already bf16 values: the float round trip above changes nothing)

    spipe = FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(**SCHNELL_SCHEDULER), vae=vae, text_encoder=clip,
                         tokenizer=clip_tok, text_encoder_2=t5, tokenizer_2=t5_tok, transformer=schnell)
    run(spipe, out, "schnell_", prompt="a red fox", num_inference_steps=2, guidance_scale=0.0, max_sequence_length=16, seed=5)
    os.makedirs(SCHNELL, exist_ok=True)
    spipe.transformer.to(torch.bfloat16).save_pretrained(os.path.join(SCHNELL, "transformer"), safe_serialization=True)
    spipe.scheduler.save_pretrained(os.path.join(SCHNELL, "scheduler"))
    shutil.copy(os.path.join(DEV, "model_index.json"), os.path.join(SCHNELL, "model_index.json"))
    # One copy of the shared components: the vae is z-image-tiny's, the text side is dev's.
    for name in ("text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2"):
        link(DEV, SCHNELL, name)
    link(os.path.join(FIX, "models", "z-image-tiny"), DEV, "vae")
    link(DEV, SCHNELL, "vae")
    # The tokenizers: the tiny ones of make_flux_tokenizers.py, as FluxPipeline saved them.

    single_files(dev, pipe, out)
    save_file({k: v.contiguous().float() for k, v in out.items()}, os.path.join(FIX, "flux_reference.safetensors"))


def single_files(dev, pipe, out):
    """The dev transformer as a finetune ships: one file in Black Forest Labs' layout (the inverse of
    diffusers' converter, tools/reference/flux_bfl.py), bf16 and fp8 with ComfyUI's prefix (Sluice's
    test derives the unprefixed fp8 file from it). The fp8 file's reference is the dev run with every
    transformer weight rounded through float8_e4m3fn."""
    import flux_bfl
    sd = {k: v.to(torch.bfloat16) for k, v in dev.state_dict().items()}
    bfl = flux_bfl.diffusers_to_bfl(sd, TRANSFORMER["num_layers"], TRANSFORMER["num_single_layers"])
    folder = os.path.join(FIX, "flux-single-file")
    os.makedirs(folder, exist_ok=True)
    save_file({k: v.contiguous() for k, v in bfl.items()}, os.path.join(folder, "tiny-dev-bfl-bf16.safetensors"))
    save_file({flux_bfl.COMFY_PREFIX + k: v.to(torch.float8_e4m3fn).contiguous() for k, v in bfl.items()},
              os.path.join(folder, "tiny-dev-bfl-fp8-comfy.safetensors"))
    with torch.no_grad():
        for p in dev.parameters():
            p.copy_(p.to(torch.float8_e4m3fn).float())
    pipe.transformer = dev.float()
    run(pipe, out, "fp8_", prompt="a red fox", num_inference_steps=4, guidance_scale=3.5, max_sequence_length=24, seed=7)

if __name__ == "__main__":
    torch.manual_seed(0)
    if "--transformer-only" in sys.argv:
        dev, schnell = transformer(True, 21), transformer(False, 22)
        transformer_reference(dev, schnell)
        dev.to(torch.bfloat16).save_pretrained(os.path.join(DEV, "transformer"), safe_serialization=True)
        schnell.to(torch.bfloat16).save_pretrained(os.path.join(SCHNELL, "transformer"), safe_serialization=True)
    else:
        pipelines()
