"""Stable Diffusion 1.5 and SDXL single files in the original (LDM / A1111 / ComfyUI) layout, and the
fixtures Sluice's single-file reader is tested on.

Run from the repository root:  python3 tools/reference/sd_single_file.py

`sd15_to_ldm` and `sdxl_to_ldm` turn a diffusers pipeline folder into the one state dict an original
checkpoint holds; each is the inverse of diffusers' own conversion (diffusers/loaders/single_file_utils.py):
  unet     convert_ldm_unet_checkpoint     input_blocks / middle_block / output_blocks, time_embed, label_emb, out
  vae      convert_ldm_vae_checkpoint      encoder/decoder down/up/mid (decoder levels reversed), the mid
                                           attention's q/k/v/proj_out as 1x1 convolutions [C, C, 1, 1]
  CLIP-L   convert_ldm_clip_checkpoint     transformers' names under "cond_stage_model.transformer.text_model."
                                           (SD1.5) or "conditioner.embedders.0.transformer.text_model." (SDXL)
  bigG     convert_open_clip_checkpoint    OpenCLIP's names under "conditioner.embedders.1.model.": q, k, v fused
                                           into attn.in_proj_weight/bias, text_projection stored [width, proj]
Only the sizes come from the folders' configs; nothing here is written for one size.

`main` writes each file, then loads it back with diffusers itself
(`StableDiffusionPipeline.from_single_file(path, config=<folder>, local_files_only=True)` and
`StableDiffusionXLPipeline.from_single_file(...)`: no network, the folder gives every config) and checks that
every tensor of every component equals the folder's exactly (names, shapes, dtypes, values). It writes
Tests/Fixtures/sd-single-file/:
  sd15_bf16.safetensors        SD1.5 (unet, vae, CLIP-L, and CLIP's position_ids buffer as real files carry it), bf16
  sd15_f16_text_only.safetensors  only SD1.5's text encoder (cond_stage_model.*), f16 (torch's rounding)
  sdxl_bf16.safetensors        SDXL (unet with label_emb, vae, CLIP-L, OpenCLIP bigG), bf16
"""
import json
import os
import sys

import torch
from safetensors.torch import load_file, save_file

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
MODELS = os.path.join(ROOT, "Tests", "Fixtures", "models")
OUT = os.path.join(ROOT, "Tests", "Fixtures", "sd-single-file")
SD15 = os.path.join(MODELS, "sd15-tiny")
SDXL = os.path.join(MODELS, "sdxl-tiny")


def load_component(folder, name):
    sub = os.path.join(folder, name)
    files = [f for f in sorted(os.listdir(sub)) if f.endswith(".safetensors")]
    out = {}
    for f in files:
        out.update(load_file(os.path.join(sub, f)))
    return out


def read_config(folder, name):
    with open(os.path.join(folder, name, "config.json")) as f:
        return json.load(f)


class Taker:
    """Reads a diffusers state dict once per key and says which keys nothing read."""

    def __init__(self, state):
        self.state, self.used = state, set()

    def __call__(self, key):
        self.used.add(key)
        return self.state[key]

    def has(self, key):
        return key in self.state

    def rest(self):
        return sorted(set(self.state) - self.used)


def per_level(value, levels):
    return list(value) if isinstance(value, (list, tuple)) else [value] * levels


# UNet: diffusers' resnet names -> LDM's ResBlock names (the inverse of update_unet_resnet_ldm_to_diffusers).
UNET_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
               "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}


def unet_to_ldm(sd, config):
    """UNet2DConditionModel state dict -> LDM's UNetModel names (without "model.diffusion_model.")."""
    take, out = Taker(sd), {}

    def copy_prefix(ldm, diffusers):
        for k in [k for k in sd if k.startswith(diffusers + ".")]:
            out[ldm + k[len(diffusers):]] = take(k)

    def resnet(ldm, diffusers):
        for k in [k for k in sd if k.startswith(diffusers + ".")]:
            module, rest = k[len(diffusers) + 1:].split(".", 1)
            out[f"{ldm}.{UNET_RESNET[module]}.{rest}"] = take(k)

    for ldm, diffusers in [("time_embed.0", "time_embedding.linear_1"), ("time_embed.2", "time_embedding.linear_2"),
                           ("input_blocks.0.0", "conv_in"), ("out.0", "conv_norm_out"), ("out.2", "conv_out")]:
        copy_prefix(ldm, diffusers)
    if config.get("addition_embed_type") == "text_time":
        copy_prefix("label_emb.0.0", "add_embedding.linear_1")
        copy_prefix("label_emb.0.2", "add_embedding.linear_2")

    lpb = config["layers_per_block"]
    levels = len(config["block_out_channels"])
    i = 1
    for b in range(levels):
        for layer in range(lpb):
            resnet(f"input_blocks.{i}.0", f"down_blocks.{b}.resnets.{layer}")
            copy_prefix(f"input_blocks.{i}.1", f"down_blocks.{b}.attentions.{layer}")
            i += 1
        if b < levels - 1:
            copy_prefix(f"input_blocks.{i}.0.op", f"down_blocks.{b}.downsamplers.0.conv")
            i += 1
    resnet("middle_block.0", "mid_block.resnets.0")
    copy_prefix("middle_block.1", "mid_block.attentions.0")
    resnet("middle_block.2", "mid_block.resnets.1")
    i = 0
    for b in range(levels):
        for layer in range(lpb + 1):
            resnet(f"output_blocks.{i}.0", f"up_blocks.{b}.resnets.{layer}")
            has_attention = take.has(f"up_blocks.{b}.attentions.{layer}.norm.weight")
            copy_prefix(f"output_blocks.{i}.1", f"up_blocks.{b}.attentions.{layer}")
            if layer == lpb and b < levels - 1:
                # The upsampler follows the resnet (and the attention, when the block has one) in the same Sequential.
                copy_prefix(f"output_blocks.{i}.{2 if has_attention else 1}.conv", f"up_blocks.{b}.upsamplers.0.conv")
            i += 1
    assert not take.rest(), f"UNet keys the inverse does not map: {take.rest()[:5]}"
    return out


def vae_to_ldm(sd, config):
    """AutoencoderKL state dict -> LDM's AutoencoderKL names (without "first_stage_model.")."""
    take, out = Taker(sd), {}

    def copy_prefix(ldm, diffusers, rename=lambda rest: rest):
        for k in [k for k in sd if k.startswith(diffusers + ".")]:
            out[ldm + "." + rename(k[len(diffusers) + 1:])] = take(k)

    def resnet(ldm, diffusers):
        copy_prefix(ldm, diffusers, lambda rest: rest.replace("conv_shortcut", "nin_shortcut"))

    def attention(ldm, diffusers):
        names = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
        for d, l in names.items():
            for suffix in ("weight", "bias"):
                t = take(f"{diffusers}.{d}.{suffix}")
                # LDM's AttnBlock projects with 1x1 convolutions: the same numbers as diffusers' linears.
                if suffix == "weight" and d != "group_norm":
                    t = t.reshape(*t.shape, 1, 1)
                out[f"{ldm}.{l}.{suffix}"] = t

    levels = len(config["block_out_channels"])
    for part in ("encoder", "decoder"):
        copy_prefix(f"{part}.conv_in", f"{part}.conv_in")
        copy_prefix(f"{part}.conv_out", f"{part}.conv_out")
        copy_prefix(f"{part}.norm_out", f"{part}.conv_norm_out")
        resnet(f"{part}.mid.block_1", f"{part}.mid_block.resnets.0")
        attention(f"{part}.mid.attn_1", f"{part}.mid_block.attentions.0")
        resnet(f"{part}.mid.block_2", f"{part}.mid_block.resnets.1")
    for b in range(levels):
        for layer in range(config["layers_per_block"]):
            resnet(f"encoder.down.{b}.block.{layer}", f"encoder.down_blocks.{b}.resnets.{layer}")
        copy_prefix(f"encoder.down.{b}.downsample.conv", f"encoder.down_blocks.{b}.downsamplers.0.conv")
    for i in range(levels):
        b = levels - 1 - i  # LDM numbers the decoder's levels from the latent side's far end
        for layer in range(config["layers_per_block"] + 1):
            resnet(f"decoder.up.{b}.block.{layer}", f"decoder.up_blocks.{i}.resnets.{layer}")
        copy_prefix(f"decoder.up.{b}.upsample.conv", f"decoder.up_blocks.{i}.upsamplers.0.conv")
    for conv in ("quant_conv", "post_quant_conv"):
        copy_prefix(conv, conv)
    assert not take.rest(), f"VAE keys the inverse does not map: {take.rest()[:5]}"
    return out


def clip_to_ldm(sd):
    """CLIPTextModel state dict -> transformers' names as LDM's FrozenCLIPEmbedder saved them (under
    "text_model.", which transformers >= 5.6 no longer writes for CLIPTextModel), without the prefix."""
    return {(k if k.startswith("text_model.") else "text_model." + k): v for k, v in sd.items()}


OPEN_CLIP_LAYER = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj",
                   "self_attn.out_proj": "attn.out_proj"}


def open_clip_to_ldm(sd, config):
    """CLIPTextModelWithProjection state dict -> OpenCLIP's names (without "conditioner.embedders.1.model.")."""
    take, out = Taker(sd), {}
    p = "text_model."
    out["token_embedding.weight"] = take(p + "embeddings.token_embedding.weight")
    out["positional_embedding"] = take(p + "embeddings.position_embedding.weight")
    for i in range(config["num_hidden_layers"]):
        d, o = f"{p}encoder.layers.{i}.", f"transformer.resblocks.{i}."
        for dn, on in OPEN_CLIP_LAYER.items():
            for suffix in ("weight", "bias"):
                out[f"{o}{on}.{suffix}"] = take(f"{d}{dn}.{suffix}")
        # nn.MultiheadAttention keeps q, k, v as one input projection, stacked in that order.
        out[o + "attn.in_proj_weight"] = torch.cat([take(f"{d}self_attn.{n}_proj.weight") for n in "qkv"], dim=0)
        out[o + "attn.in_proj_bias"] = torch.cat([take(f"{d}self_attn.{n}_proj.bias") for n in "qkv"], dim=0)
    out["ln_final.weight"] = take(p + "final_layer_norm.weight")
    out["ln_final.bias"] = take(p + "final_layer_norm.bias")
    # OpenCLIP multiplies x @ text_projection ([width, proj]); transformers' Linear stores [proj, width].
    out["text_projection"] = take("text_projection.weight").T.contiguous()
    assert not take.rest(), f"OpenCLIP keys the inverse does not map: {take.rest()[:5]}"
    return out


def prefixed(prefix, sd):
    return {prefix + k: v for k, v in sd.items()}


def sd15_to_ldm(folder):
    """One SD1.5 checkpoint (v1-5-pruned style) from a diffusers StableDiffusionPipeline folder."""
    te = load_component(folder, "text_encoder")
    out = prefixed("model.diffusion_model.", unet_to_ldm(load_component(folder, "unet"), read_config(folder, "unet")))
    out.update(prefixed("first_stage_model.", vae_to_ldm(load_component(folder, "vae"), read_config(folder, "vae"))))
    out.update(prefixed("cond_stage_model.transformer.", clip_to_ldm(te)))
    # A buffer real SD1.5 files carry and no reader needs.
    positions = read_config(folder, "text_encoder")["max_position_embeddings"]
    out["cond_stage_model.transformer.text_model.embeddings.position_ids"] = torch.arange(positions, dtype=torch.int64)[None]
    return out


def sdxl_to_ldm(folder):
    """One SDXL checkpoint (sd_xl_base_1.0 style) from a diffusers StableDiffusionXLPipeline folder."""
    out = prefixed("model.diffusion_model.", unet_to_ldm(load_component(folder, "unet"), read_config(folder, "unet")))
    out.update(prefixed("first_stage_model.", vae_to_ldm(load_component(folder, "vae"), read_config(folder, "vae"))))
    out.update(prefixed("conditioner.embedders.0.transformer.", clip_to_ldm(load_component(folder, "text_encoder"))))
    out.update(prefixed("conditioner.embedders.1.model.",
                        open_clip_to_ldm(load_component(folder, "text_encoder_2"), read_config(folder, "text_encoder_2"))))
    return out


def check_with_diffusers(path, folder, xl):
    """diffusers' own single-file loader gives every tensor of the folder back exactly."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
    cls = StableDiffusionXLPipeline if xl else StableDiffusionPipeline
    kwargs = {} if xl else dict(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe = cls.from_single_file(path, config=folder, local_files_only=True, torch_dtype=torch.bfloat16, **kwargs)
    names = ["unet", "vae", "text_encoder"] + (["text_encoder_2"] if xl else [])
    count = 0
    for name in names:
        want = load_component(folder, name)
        got = getattr(pipe, name).state_dict()
        got = {k: v for k, v in got.items() if k in want or not k.endswith("position_ids")}
        assert set(got) == set(want), f"{name}: key sets differ: {sorted(set(got) ^ set(want))[:6]}"
        for k in want:
            assert got[k].dtype == want[k].dtype and got[k].shape == want[k].shape, f"{name}.{k}: {got[k].dtype} {got[k].shape}"
            assert torch.equal(got[k], want[k]), f"{name}.{k} differs"
        count += len(want)
    print(f"{os.path.basename(path)}: diffusers' from_single_file gives back all {count} tensors of {os.path.basename(folder)} exactly")


def main():
    os.makedirs(OUT, exist_ok=True)

    def save(name, tensors):
        path = os.path.join(OUT, name)
        save_file({k: v.contiguous() for k, v in tensors.items()}, path)
        os.chmod(path, 0o644)
        return path

    sd15 = sd15_to_ldm(SD15)
    check_with_diffusers(save("sd15_bf16.safetensors", sd15), SD15, xl=False)
    text_only = {k: (v.to(torch.float16) if v.is_floating_point() else v) for k, v in sd15.items() if k.startswith("cond_stage_model.")}
    save("sd15_f16_text_only.safetensors", text_only)
    sdxl = sdxl_to_ldm(SDXL)
    check_with_diffusers(save("sdxl_bf16.safetensors", sdxl), SDXL, xl=True)
    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    print(f"wrote {len(os.listdir(OUT))} files to {OUT}, {total} bytes")


if __name__ == "__main__":
    sys.exit(main())
