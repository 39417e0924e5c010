"""Writes the group-size tables of the real models (Tests/Fixtures/tables/*.json).

Run from the repository root:  python3 tools/reference/make_tables.py
Needs torch, diffusers and transformers (no weights, no network): every component is built from its
published config on torch's meta device, so parameter counts are exact. The groups are the module
tree cut so that no group exceeds 16M parameters or 1/24 of its component (a DiT block splits into
its attention, feed-forward and modulation modules; a UNet attention into its transformer blocks):
fine enough that streaming slots stay small beside what must stream. A group's name is its module
path, which is its checkpoint key prefix.

FLOPs and activations at the reference resolution (1024 x 1024, batch 1) are analytic estimates,
stated here so they can be checked:
- a group's linear part: 2 x parameters x tokens it processes (convolutions: pixels at its level);
- attention: 4 x Lq x Lk x width per attention layer (scores and their product with V);
- peak activations (bf16): DiT/text encoders tokens x (4 x width + 2 x MLP width) x 2 bytes;
  UNet 8 x the largest feature map; VAE decoder 6 x its full-resolution feature map.
"""
import json
import os
import re

import torch

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "Sources", "SluiceMemory", "Tables")
RES = 1024
BF16 = 2


def build(cls, **config):
    with torch.device("meta"):
        return cls(**config)


def groups_of(module, max_params):
    """Cut the module tree: a module with more than max_params parameters is split into its
    children (its own direct parameters, if any, become a group of their own). A parameter shared
    by two modules (T5's tied embedding) is counted once, in the first group that holds it."""
    out = []
    seen = set()

    def fresh(params):
        n = 0
        for p in params:
            if id(p) not in seen:
                seen.add(id(p))
                n += p.numel()
        return n

    def visit(m, prefix):
        total = sum(p.numel() for p in m.parameters() if id(p) not in seen)
        if total == 0:
            return
        children = list(m.named_children())
        if total <= max_params or not children:
            out.append((prefix, fresh(m.parameters())))
            return
        own = fresh(m.parameters(recurse=False))
        if own:
            out.append((prefix + ".__self__" if prefix else "__self__", own))
        for name, child in children:
            visit(child, f"{prefix}.{name}" if prefix else name)

    visit(module, "")
    return out


def config_of(module):
    """The component's config as its config.json holds it (diffusers' FrozenDict or a transformers
    config), private keys dropped: the Swift side reads it with the same decoders as a model folder."""
    cfg = getattr(module, "config", None)
    if cfg is None:
        return None  # a submodule (the VAE's decoder): its owner's config is recorded instead
    d = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
    return json.loads(json.dumps({k: v for k, v in d.items() if not k.startswith("_")}, default=str))


def component(name, phase, module, prefix, tokens_of, attention_of, activation, scaling):
    """attention_of(module_path) gives the attention FLOPs of an attention module (0 for others);
    they are booked on the group that holds that module (or its first piece, if it was cut)."""
    total = sum(p.numel() for p in module.parameters())
    cut = max(min(total // 24, 16_000_000), 2_000_000)
    groups = []
    for path, params in groups_of(module, cut):
        groups.append({"name": path, "parameters": params, "linearFlops": float(2 * params * tokens_of(path)),
                       "attentionFlops": 0.0})
    for path, _ in module.named_modules():
        flops = attention_of(path) if path else 0
        if not flops:
            continue
        owner = next((g for g in groups if path == g["name"] or path.startswith(g["name"] + ".")
                      or g["name"].startswith(path + ".")), None)
        assert owner is not None, path
        owner["attentionFlops"] += float(flops)
    for g in groups:
        g["name"] = f"{prefix}.{g['name']}"
    assert sum(g["parameters"] for g in groups) == total
    return {"name": name, "phase": phase, "groups": groups, "activationBytes": int(activation),
            "scaling": scaling, "computeDType": "bf16", "config": config_of(module)}


def block_index(path, key):
    m = re.search(re.escape(key) + r"\.(\d+)", path)
    return int(m.group(1)) if m else None


# ---- text encoders ----
def clip_l():
    from transformers import CLIPTextConfig, CLIPTextModel
    cfg = CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                         max_position_embeddings=77, vocab_size=49408, projection_dim=768)
    return build(CLIPTextModel, config=cfg), 77, 768, 3072


def clip_g():
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection
    cfg = CLIPTextConfig(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
                         max_position_embeddings=77, vocab_size=49408, projection_dim=1280, hidden_act="gelu")
    return build(CLIPTextModelWithProjection, config=cfg), 77, 1280, 5120


def t5_xxl():
    from transformers import T5Config, T5EncoderModel
    cfg = T5Config(d_model=4096, d_ff=10240, d_kv=64, num_heads=64, num_layers=24, vocab_size=32128,
                   feed_forward_proj="gated-gelu", is_encoder_decoder=False)
    return build(T5EncoderModel, config=cfg), 512, 4096, 10240


def qwen3_4b():
    from transformers import Qwen3Config, Qwen3Model
    cfg = Qwen3Config(hidden_size=2560, intermediate_size=9728, num_hidden_layers=36, num_attention_heads=32,
                      num_key_value_heads=8, head_dim=128, vocab_size=151936, tie_word_embeddings=True)
    return build(Qwen3Model, config=cfg), 512, 2560, 9728


def qwen25_vl_7b_text():
    # Qwen-Image conditions on the language model of Qwen2.5-VL-7B; its vision tower is unused for
    # text-to-image and left out of the table.
    from transformers import Qwen2Config, Qwen2Model
    cfg = Qwen2Config(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                      num_key_value_heads=4, vocab_size=152064, tie_word_embeddings=False)
    return build(Qwen2Model, config=cfg), 512, 3584, 18944


def text_component(name, built, prefix):
    model, tokens, width, mlp = built
    attention = lambda path: 4 * tokens * tokens * width if re.search(r"layers\.\d+\.self_attn$|block\.\d+\.layer\.0\.SelfAttention$", path) else 0
    return component(name, "text", model, prefix, lambda _: tokens, attention,
                     tokens * (4 * width + 2 * mlp) * BF16, "fixed")


# ---- VAE decoders ----
def sd_vae(latent_channels):
    """The AutoencoderKL of SD1.5/SDXL (4 latent channels) and FLUX/Z-Image (16)."""
    from diffusers import AutoencoderKL
    return build(AutoencoderKL, in_channels=3, out_channels=3, latent_channels=latent_channels,
                 down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
                 block_out_channels=[128, 256, 512, 512], layers_per_block=2)


def vae_component(vae, latent_side, prefix="vae", base_channels=128):
    dec = vae.decoder
    ups = len(dec.up_blocks)

    def side(path):
        i = block_index(path, "up_blocks")
        if i is None:
            return RES if "conv_out" in path or "norm_out" in path else latent_side
        s = latent_side * (2 ** i)
        return s * 2 if "upsamplers" in path or "upsample" in path else s

    def attention(path):
        if re.fullmatch(r"mid_block\.attentions\.0", path):
            p = latent_side * latent_side
            return 4 * p * p * 512 * base_channels // 128
        return 0

    c = component("vae", "decode", dec, prefix + ".decoder", lambda p: side(p) ** 2, attention,
                  RES * RES * base_channels * BF16 * 6, "pixels")
    c["config"] = config_of(vae)  # the whole AutoencoderKL's config (vae/config.json), not the decoder's
    del ups
    return c


# ---- denoisers ----
def z_image():
    from diffusers import ZImageTransformer2DModel
    tr = build(ZImageTransformer2DModel)  # diffusers' defaults are Z-Image-Turbo's config
    img, cap, dim, mlp = (RES // 16) ** 2, 256, 3840, 10240

    def tokens(path):
        if path.startswith("noise_refiner"):
            return img
        if path.startswith("context_refiner"):
            return cap
        if path.startswith("layers"):
            return img + cap
        return img

    def attention(path):
        if re.fullmatch(r"noise_refiner\.\d+\.attention", path):
            return 4 * img * img * dim
        if re.fullmatch(r"context_refiner\.\d+\.attention", path):
            return 4 * cap * cap * dim
        if re.fullmatch(r"layers\.\d+\.attention", path):
            return 4 * (img + cap) ** 2 * dim
        return 0

    vae = sd_vae(latent_channels=16)
    return {
        "model": "z-image-turbo",
        "pipeline": "ZImagePipeline",
        "source": "diffusers ZImageTransformer2DModel defaults (Tongyi-MAI/Z-Image-Turbo), Qwen3-4B, FLUX VAE; 256 caption tokens",
        "components": [
            text_component("text_encoder", qwen3_4b(), "text_encoder"),
            component("transformer", "denoise", tr, "transformer", tokens, attention,
                      (img + cap) * (4 * dim + 2 * mlp) * BF16, "pixels"),
            vae_component(vae, RES // 8),
        ],
    }


def flux_dev():
    from diffusers import FluxTransformer2DModel
    tr = build(FluxTransformer2DModel, patch_size=1, in_channels=64, num_layers=19, num_single_layers=38,
               attention_head_dim=128, num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768,
               guidance_embeds=True, axes_dims_rope=(16, 56, 56))
    img, txt, dim = (RES // 16) ** 2, 512, 3072

    def tokens(path):
        if re.match(r"transformer_blocks\.\d+", path):
            return (img + txt) // 2  # each stream's weights see its own tokens: half the block on each
        if re.match(r"single_transformer_blocks\.\d+", path):
            return img + txt
        return img

    def attention(path):
        if re.fullmatch(r"(single_)?transformer_blocks\.\d+\.attn", path):
            return 4 * (img + txt) ** 2 * dim
        return 0

    vae = sd_vae(latent_channels=16)
    return {
        "model": "flux1-dev",
        "pipeline": "FluxPipeline",
        "source": "black-forest-labs/FLUX.1-dev configs: FluxTransformer2DModel 19+38 blocks, CLIP-L, T5-XXL (512 tokens), FLUX VAE",
        "components": [
            text_component("text_encoder", clip_l(), "text_encoder"),
            text_component("text_encoder_2", t5_xxl(), "text_encoder_2"),
            component("transformer", "denoise", tr, "transformer", tokens, attention,
                      (img + txt) * (4 * dim + 2 * 4 * dim) * BF16, "pixels"),
            vae_component(vae, RES // 8),
        ],
    }


def qwen_image():
    from diffusers import AutoencoderKLQwenImage, QwenImageTransformer2DModel
    tr = build(QwenImageTransformer2DModel, patch_size=2, in_channels=64, out_channels=16, num_layers=60,
               attention_head_dim=128, num_attention_heads=24, joint_attention_dim=3584, guidance_embeds=False,
               axes_dims_rope=(16, 56, 56))
    img, txt, dim = (RES // 16) ** 2, 256, 3072

    def tokens(path):
        return (img + txt) // 2 if re.match(r"transformer_blocks\.\d+", path) else img

    def attention(path):
        return 4 * (img + txt) ** 2 * dim if re.fullmatch(r"transformer_blocks\.\d+\.attn", path) else 0

    vae = build(AutoencoderKLQwenImage)
    return {
        "model": "qwen-image",
        "pipeline": "QwenImagePipeline",
        "source": "Qwen/Qwen-Image configs: QwenImageTransformer2DModel 60 blocks, Qwen2.5-VL-7B language model, Wan-style VAE; 256 prompt tokens",
        "components": [
            text_component("text_encoder", qwen25_vl_7b_text(), "text_encoder"),
            component("transformer", "denoise", tr, "transformer", tokens, attention,
                      (img + txt) * (4 * dim + 2 * 4 * dim) * BF16, "pixels"),
            vae_component(vae, RES // 8, base_channels=96),
        ],
    }


def unet_component(unet, latent_side, channels, context):
    def level(path):
        for key, sign in (("down_blocks", 1), ("up_blocks", -1)):
            i = block_index(path, key)
            if i is not None:
                lv = i if sign == 1 else len(channels) - 1 - i
                if sign == 1 and "downsamplers" in path:
                    lv += 1
                if sign == -1 and "upsamplers" in path:
                    lv -= 1
                return max(lv, 0)
        if path.startswith("mid_block"):
            return len(channels) - 1
        return 0

    def tokens(path):
        return (latent_side // (2 ** level(path))) ** 2

    def attention(path):
        m = re.search(r"attentions\.\d+\.transformer_blocks\.\d+$", path)
        if not m:
            return 0
        p = tokens(path)
        c = channels[min(level(path), len(channels) - 1)]
        return 4 * p * p * c + 4 * p * context * c

    act = max((latent_side // 2 ** i) ** 2 * c for i, c in enumerate(channels)) * BF16 * 8
    return component("unet", "denoise", unet, "unet", tokens, attention, act, "pixels")


def sdxl():
    from diffusers import UNet2DConditionModel
    unet = build(UNet2DConditionModel, sample_size=128, in_channels=4, out_channels=4,
                 down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
                 up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
                 block_out_channels=[320, 640, 1280], layers_per_block=2, transformer_layers_per_block=[1, 2, 10],
                 attention_head_dim=[5, 10, 20], cross_attention_dim=2048, use_linear_projection=True,
                 addition_embed_type="text_time", addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816)
    vae = sd_vae(latent_channels=4)
    return {
        "model": "sdxl",
        "pipeline": "StableDiffusionXLPipeline",
        "source": "stabilityai/stable-diffusion-xl-base-1.0 configs: UNet2DConditionModel, CLIP-L, OpenCLIP-G, SDXL VAE",
        "components": [
            text_component("text_encoder", clip_l(), "text_encoder"),
            text_component("text_encoder_2", clip_g(), "text_encoder_2"),
            unet_component(unet, RES // 8, [320, 640, 1280], 77),
            vae_component(vae, RES // 8),
        ],
    }


def sd15():
    from diffusers import UNet2DConditionModel
    unet = build(UNet2DConditionModel, sample_size=64, in_channels=4, out_channels=4,
                 down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
                 up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
                 block_out_channels=[320, 640, 1280, 1280], layers_per_block=2, attention_head_dim=8,
                 cross_attention_dim=768)
    vae = sd_vae(latent_channels=4)
    return {
        "model": "sd15",
        "pipeline": "StableDiffusionPipeline",
        "source": "stable-diffusion-v1-5 configs: UNet2DConditionModel, CLIP-L, SD VAE",
        "components": [
            text_component("text_encoder", clip_l(), "text_encoder"),
            unet_component(unet, RES // 8, [320, 640, 1280, 1280], 77),
            vae_component(vae, RES // 8),
        ],
    }


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    for make in (z_image, flux_dev, qwen_image, sdxl, sd15):
        table = make()
        table["referenceWidth"] = RES
        table["referenceHeight"] = RES
        path = os.path.join(OUT, table["model"] + ".json")
        with open(path, "w") as f:
            json.dump(table, f, separators=(",", ":"), sort_keys=True)
        params = {c["name"]: sum(g["parameters"] for g in c["groups"]) for c in table["components"]}
        print(table["model"], {k: f"{v / 1e9:.3f}B" for k, v in params.items()},
              sum(len(c["groups"]) for c in table["components"]), "groups", os.path.getsize(path), "bytes")
