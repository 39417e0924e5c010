"""Builds the tiny random-weight Stable Diffusion 1.5 and SDXL pipeline folders used by Sluice's tests.

Run from the repository root:  python3 tools/reference/make_sd_tiny.py
Needs the tiny CLIP tokenizer of tools/reference/make_flux_tokenizers.py (Tests/Fixtures/tokenizers/clip-tiny).
Writes (bf16 weights, as the real checkpoints ship):
  Tests/Fixtures/models/sd15-tiny/  a diffusers StableDiffusionPipeline folder: unet, vae, text_encoder
                                    (CLIPTextModel), tokenizer, scheduler (SD1.5's own PNDM config)
  Tests/Fixtures/models/sdxl-tiny/  a diffusers StableDiffusionXLPipeline folder: unet (text_time added
                                    conditioning), vae, text_encoder (CLIPTextModel), text_encoder_2
                                    (CLIPTextModelWithProjection), tokenizer, tokenizer_2 (pads with "!",
                                    id 0, as SDXL's), scheduler (SDXL's own Euler config)

The classes are diffusers' and transformers' own; only the sizes are tiny. Every block kind of the real
UNets is present: SD1.5's CrossAttnDown, CrossAttnDown, Down / Up, CrossAttnUp, CrossAttnUp with conv
proj_in/out; SDXL's Down, CrossAttnDown, CrossAttnDown / CrossAttnUp, CrossAttnUp, Up with linear
proj_in/out, more than one transformer layer per block, per-level head counts and the text_time
embedding. Widths never coincide (UNet 16/24/32, CLIP-L 24, bigG 40 projected to 16, cross-attention
24 and 64) so a transposed weight or a swapped stream cannot hide. The UNet and VAE configs keep SD's
names and defaults (attention_head_dim meaning heads, as in SD1.5's config).
"""
import json
import os
import shutil

import numpy as np
import torch
from diffusers import (AutoencoderKL, EulerDiscreteScheduler, PNDMScheduler, StableDiffusionPipeline,
                       StableDiffusionXLPipeline, UNet2DConditionModel)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
FIX = os.path.join(ROOT, "Tests", "Fixtures")
SD15 = os.path.join(FIX, "models", "sd15-tiny")
SDXL = os.path.join(FIX, "models", "sdxl-tiny")
TOKENIZER = os.path.join(FIX, "tokenizers", "clip-tiny")

# runwayml/stable-diffusion-v1-5's scheduler_config.json (diffusers 0.6.0: no timestep_spacing, so each
# sampler built from it takes its own class default) and stabilityai/stable-diffusion-xl-base-1.0's.
SD15_SCHEDULER = dict(beta_end=0.012, beta_schedule="scaled_linear", beta_start=0.00085, num_train_timesteps=1000,
                      set_alpha_to_one=False, skip_prk_steps=True, steps_offset=1, trained_betas=None, clip_sample=False)
SDXL_SCHEDULER = dict(beta_end=0.012, beta_schedule="scaled_linear", beta_start=0.00085, interpolation_type="linear",
                      num_train_timesteps=1000, prediction_type="epsilon", sample_max_value=1.0, set_alpha_to_one=False,
                      skip_prk_steps=True, steps_offset=1, timestep_spacing="leading", trained_betas=None,
                      use_karras_sigmas=False, clip_sample=False)

SD15_UNET = dict(sample_size=8, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(16, 24, 32),
                 down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
                 up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
                 cross_attention_dim=24, attention_head_dim=2, norm_num_groups=4, use_linear_projection=False)
SDXL_UNET = dict(sample_size=8, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(16, 24, 32),
                 down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                 up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                 transformer_layers_per_block=(1, 1, 2), attention_head_dim=(2, 2, 4), cross_attention_dim=64,
                 norm_num_groups=4, use_linear_projection=True, addition_embed_type="text_time",
                 addition_time_embed_dim=8, projection_class_embeddings_input_dim=16 + 6 * 8)
VAE = dict(in_channels=3, out_channels=3, block_out_channels=(16, 32), layers_per_block=1, latent_channels=4,
           norm_num_groups=8, sample_size=32, down_block_types=("DownEncoderBlock2D",) * 2,
           up_block_types=("UpDecoderBlock2D",) * 2)


def randomize(module, seed):
    """diffusers zero-initialises some layers (conv_out, proj_out): give every tensor random values so
    each one shows up in the output. Norm weights around 1."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            fan_in = int(np.prod(p.shape[1:])) if p.ndim > 1 else 1
            scale = 1.0 / np.sqrt(fan_in) if p.ndim > 1 else 0.1
            base = 1.0 if (("norm" in name or "layer_norm" in name) and "weight" in name) else 0.0
            p.copy_(base + torch.randn(p.shape, generator=g) * scale)


def round_bf16(module):
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(p.to(torch.bfloat16).float())


def tiny(module, seed):
    module = module.eval()
    randomize(module, seed)
    round_bf16(module)
    return module


def clip_config(tok, hidden, inter, layers, heads, **kw):
    # SD's and SDXL's text encoder configs keep the legacy eos id 2: pooling takes argmax(input_ids).
    return CLIPTextConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                          num_attention_heads=heads, max_position_embeddings=77, layer_norm_eps=1e-5,
                          bos_token_id=0, eos_token_id=2, pad_token_id=1, **kw)


def components():
    tok = CLIPTokenizer.from_pretrained(TOKENIZER)
    tok2 = CLIPTokenizer.from_pretrained(TOKENIZER, pad_token="!")
    assert tok2.pad_token_id == 0, tok2.pad_token_id
    clip_l = tiny(CLIPTextModel(clip_config(tok, 24, 40, 3, 2, hidden_act="quick_gelu", projection_dim=24)), 31)
    # SDXL's text_encoder_2 (OpenCLIP ViT-bigG in transformers' layout): GELU, projection without bias.
    big_g = tiny(CLIPTextModelWithProjection(clip_config(tok, 40, 56, 3, 2, hidden_act="gelu", projection_dim=16)), 32)
    sd15_vae = tiny(AutoencoderKL(scaling_factor=0.18215, **VAE), 33)
    sdxl_vae = tiny(AutoencoderKL(scaling_factor=0.13025, **VAE), 34)
    sd15_unet = tiny(UNet2DConditionModel(**SD15_UNET), 35)
    sdxl_unet = tiny(UNet2DConditionModel(**SDXL_UNET), 36)
    return tok, tok2, clip_l, big_g, sd15_vae, sdxl_vae, sd15_unet, sdxl_unet


def pipelines():
    tok, tok2, clip_l, big_g, sd15_vae, sdxl_vae, sd15_unet, sdxl_unet = components()
    sd15 = StableDiffusionPipeline(vae=sd15_vae, text_encoder=clip_l, tokenizer=tok, unet=sd15_unet,
                                   scheduler=PNDMScheduler.from_config(SD15_SCHEDULER), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    sdxl = StableDiffusionXLPipeline(vae=sdxl_vae, text_encoder=clip_l, text_encoder_2=big_g, tokenizer=tok,
                                     tokenizer_2=tok2, unet=sdxl_unet, scheduler=EulerDiscreteScheduler.from_config(SDXL_SCHEDULER))
    return sd15, sdxl


def save(pipe, folder):
    if os.path.isdir(folder):
        shutil.rmtree(folder)
    pipe.to(torch.bfloat16).save_pretrained(folder, safe_serialization=True)
    pipe.to(torch.float32)


if __name__ == "__main__":
    sd15, sdxl = pipelines()
    save(sd15, SD15)
    save(sdxl, SDXL)
    # One copy of what both share: SDXL's first text encoder and tokenizer are SD1.5's.
    for name in ("text_encoder", "tokenizer"):
        shutil.rmtree(os.path.join(SDXL, name))
        os.symlink(os.path.join("..", "sd15-tiny", name), os.path.join(SDXL, name))
    # The scheduler configs exactly as the real repositories ship them (keys a class ignores included).
    for folder, config, cls in ((SD15, SD15_SCHEDULER, "PNDMScheduler"), (SDXL, SDXL_SCHEDULER, "EulerDiscreteScheduler")):
        with open(os.path.join(folder, "scheduler", "scheduler_config.json"), "w") as f:
            json.dump({"_class_name": cls, **config}, f, indent=2, sort_keys=True)
    for folder in (SD15, SDXL):
        total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(folder) for f in fs)
        print(folder, f"{total / 1e6:.2f} MB")
