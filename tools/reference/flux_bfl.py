"""FLUX.1 transformers in Black Forest Labs' key layout, and the fixtures Sluice's single-file loader is tested on.

Run from the repository root:  python3 tools/reference/flux_bfl.py

`diffusers_to_bfl` is the inverse of diffusers' `convert_flux_transformer_checkpoint_to_diffusers`
(diffusers/loaders/single_file_utils.py): it fuses q/k/v back into `qkv`, q/k/v/proj_mlp into the single
blocks' `linear1`, and swaps `norm_out.linear`'s (scale, shift) halves back to BFL's (shift, scale).

`main` first checks the inverse against diffusers' converter at FLUX.1's real width (inner_dim 3072: the
converter hard-codes it), in memory only, then writes Tests/Fixtures/flux-single-file/:
  diffusers.safetensors         a tiny random FluxTransformer2DModel, diffusers' names, bf16 (the reference)
  bfl_bf16.safetensors          the same weights in BFL's layout, bf16
  bfl_fp8.safetensors           BFL's layout, float8_e4m3fn (torch's rounding)
  bfl_fp8_comfy.safetensors     the same under ComfyUI's "model.diffusion_model." prefix
  diffusers_fp8.safetensors     the reference for both fp8 files: diffusers' names, the bf16 weights
                                rounded through float8_e4m3fn by torch (stored as e4m3fn)
  hostile_unknown.safetensors       keys of no FLUX layout
and, from a narrower schnell-like model (HOSTILE: one head, no guidance embedder), BFL layout, fp8:
  hostile_missing_single.safetensors  without single block 0
  hostile_wrong_shape.safetensors     double block 1's txt_attn.qkv.weight 4 rows short
  hostile_scaled_fp8.safetensors      ComfyUI "scaled fp8": prefixed, per-tensor *.scale_weight, a scaled_fp8 marker
Each file's config is in its metadata ("config").
"""
import json
import os

import torch
from safetensors.torch import save_file

from diffusers import FluxTransformer2DModel
from diffusers.loaders.single_file_utils import convert_flux_transformer_checkpoint_to_diffusers

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
OUT = os.path.join(ROOT, "Tests", "Fixtures", "flux-single-file")

# Small enough that the nine files stay well under 400 KB: inner width 16 (2 heads of 8).
TINY = dict(patch_size=1, in_channels=16, num_layers=2, num_single_layers=2, attention_head_dim=8,
            num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=24, guidance_embeds=True,
            axes_dims_rope=(2, 2, 4))
# The hostile files only need to be refused: narrower still (one head), and schnell-like (no guidance).
HOSTILE = dict(TINY, num_attention_heads=1, guidance_embeds=False)

COMFY_PREFIX = "model.diffusion_model."


def swap_halves(t):
    """(a, b) -> (b, a) along dim 0: diffusers' swap_scale_shift is its own inverse."""
    a, b = t.chunk(2, dim=0)
    return torch.cat([b, a], dim=0)


def diffusers_to_bfl(state_dict, num_layers, num_single_layers):
    """BFL's key layout for a FluxTransformer2DModel state dict (the inverse of diffusers' converter)."""
    used = set()

    def take(key):
        used.add(key)
        return state_dict[key]

    out = {}

    def linear(bfl, diffusers):
        out[f"{bfl}.weight"] = take(f"{diffusers}.weight")
        out[f"{bfl}.bias"] = take(f"{diffusers}.bias")

    def fused(bfl, parts):
        for suffix in ("weight", "bias"):
            out[f"{bfl}.{suffix}"] = torch.cat([take(f"{p}.{suffix}") for p in parts], dim=0)

    linear("time_in.in_layer", "time_text_embed.timestep_embedder.linear_1")
    linear("time_in.out_layer", "time_text_embed.timestep_embedder.linear_2")
    linear("vector_in.in_layer", "time_text_embed.text_embedder.linear_1")
    linear("vector_in.out_layer", "time_text_embed.text_embedder.linear_2")
    if "time_text_embed.guidance_embedder.linear_1.weight" in state_dict:  # dev has it, schnell not
        linear("guidance_in.in_layer", "time_text_embed.guidance_embedder.linear_1")
        linear("guidance_in.out_layer", "time_text_embed.guidance_embedder.linear_2")
    linear("txt_in", "context_embedder")
    linear("img_in", "x_embedder")

    for i in range(num_layers):
        d, b = f"transformer_blocks.{i}", f"double_blocks.{i}"
        linear(f"{b}.img_mod.lin", f"{d}.norm1.linear")
        linear(f"{b}.txt_mod.lin", f"{d}.norm1_context.linear")
        fused(f"{b}.img_attn.qkv", [f"{d}.attn.to_q", f"{d}.attn.to_k", f"{d}.attn.to_v"])
        fused(f"{b}.txt_attn.qkv", [f"{d}.attn.add_q_proj", f"{d}.attn.add_k_proj", f"{d}.attn.add_v_proj"])
        out[f"{b}.img_attn.norm.query_norm.scale"] = take(f"{d}.attn.norm_q.weight")
        out[f"{b}.img_attn.norm.key_norm.scale"] = take(f"{d}.attn.norm_k.weight")
        out[f"{b}.txt_attn.norm.query_norm.scale"] = take(f"{d}.attn.norm_added_q.weight")
        out[f"{b}.txt_attn.norm.key_norm.scale"] = take(f"{d}.attn.norm_added_k.weight")
        linear(f"{b}.img_mlp.0", f"{d}.ff.net.0.proj")
        linear(f"{b}.img_mlp.2", f"{d}.ff.net.2")
        linear(f"{b}.txt_mlp.0", f"{d}.ff_context.net.0.proj")
        linear(f"{b}.txt_mlp.2", f"{d}.ff_context.net.2")
        linear(f"{b}.img_attn.proj", f"{d}.attn.to_out.0")
        linear(f"{b}.txt_attn.proj", f"{d}.attn.to_add_out")

    for i in range(num_single_layers):
        d, b = f"single_transformer_blocks.{i}", f"single_blocks.{i}"
        linear(f"{b}.modulation.lin", f"{d}.norm.linear")
        fused(f"{b}.linear1", [f"{d}.attn.to_q", f"{d}.attn.to_k", f"{d}.attn.to_v", f"{d}.proj_mlp"])
        out[f"{b}.norm.query_norm.scale"] = take(f"{d}.attn.norm_q.weight")
        out[f"{b}.norm.key_norm.scale"] = take(f"{d}.attn.norm_k.weight")
        linear(f"{b}.linear2", f"{d}.proj_out")

    linear("final_layer.linear", "proj_out")
    for suffix in ("weight", "bias"):
        out[f"final_layer.adaLN_modulation.1.{suffix}"] = swap_halves(take(f"norm_out.linear.{suffix}"))
    unused = set(state_dict) - used
    assert not unused, f"diffusers keys the inverse does not map: {sorted(unused)[:5]}"
    return out


def check_inverse_at_real_width():
    """diffusers' converter of our inverse gives the state dict back exactly, at inner_dim 3072 (what the
    converter assumes) with one double and one single block. Small text/pooled widths keep it ~1 GB."""
    with torch.device("meta"):
        m = FluxTransformer2DModel(num_layers=1, num_single_layers=1, attention_head_dim=128, num_attention_heads=24,
                                   joint_attention_dim=64, pooled_projection_dim=32, in_channels=64,
                                   guidance_embeds=True)
    g = torch.Generator().manual_seed(11)
    sd = {k: torch.randn(v.shape, generator=g, dtype=torch.bfloat16) for k, v in m.state_dict().items()}
    bfl = diffusers_to_bfl(sd, 1, 1)
    prefixed = {COMFY_PREFIX + k: v for k, v in bfl.items()}  # the converter also strips Comfy's prefix
    back = convert_flux_transformer_checkpoint_to_diffusers(prefixed)
    assert set(back) == set(sd), f"key sets differ: {sorted(set(back) ^ set(sd))[:5]}"
    for k in sd:
        assert back[k].shape == sd[k].shape and torch.equal(back[k], sd[k]), f"{k} differs after the round trip"
    print(f"inverse checked at real width: {len(sd)} tensors round-trip exactly")


def tiny_model(config):
    torch.manual_seed(0)
    m = FluxTransformer2DModel(**config).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # diffusers zero-initialises some layers: give every tensor distinct random values
        for name, p in m.named_parameters():
            scale = p.shape[-1] ** -0.5 if p.ndim > 1 else 0.1
            base = 1.0 if "norm" in name and p.ndim == 1 else 0.0
            p.copy_(base + torch.randn(p.shape, generator=g) * scale)
    return m


def main():
    check_inverse_at_real_width()
    os.makedirs(OUT, exist_ok=True)
    n, ns = TINY["num_layers"], TINY["num_single_layers"]

    def weights(config):
        return {k: v.to(torch.bfloat16).contiguous() for k, v in tiny_model(config).state_dict().items()}

    def save(name, tensors, config=TINY):
        meta = {"config": json.dumps({k: list(v) if isinstance(v, tuple) else v for k, v in config.items()})}
        path = os.path.join(OUT, name)
        save_file({k: v.contiguous() for k, v in tensors.items()}, path, metadata=meta)
        os.chmod(path, 0o644)

    sd = weights(TINY)
    bfl = diffusers_to_bfl(sd, n, ns)
    save("diffusers.safetensors", sd)
    save("bfl_bf16.safetensors", bfl)
    fp8 = {k: v.to(torch.float8_e4m3fn) for k, v in bfl.items()}
    save("bfl_fp8.safetensors", fp8)
    save("bfl_fp8_comfy.safetensors", {COMFY_PREFIX + k: v for k, v in fp8.items()})
    save("diffusers_fp8.safetensors", {k: v.to(torch.float8_e4m3fn) for k, v in sd.items()})

    save("hostile_unknown.safetensors", {
        "encoder.layers.0.attention.wq.weight": torch.zeros(8, 8, dtype=torch.bfloat16),
        "encoder.layers.0.attention.wk.weight": torch.zeros(8, 8, dtype=torch.bfloat16),
        "encoder.norm.weight": torch.ones(8, dtype=torch.bfloat16),
        "lm_head.weight": torch.zeros(4, 8, dtype=torch.bfloat16),
    })
    hostile = {k: v.to(torch.float8_e4m3fn) for k, v in diffusers_to_bfl(weights(HOSTILE), n, ns).items()}
    save("hostile_missing_single.safetensors", {k: v for k, v in hostile.items() if not k.startswith("single_blocks.0.")},
         HOSTILE)
    wrong = dict(hostile)
    wrong["double_blocks.1.txt_attn.qkv.weight"] = wrong["double_blocks.1.txt_attn.qkv.weight"][:-4]
    save("hostile_wrong_shape.safetensors", wrong, HOSTILE)
    # ComfyUI's scaled fp8 (comfy/ops.py, scaled_fp8_ops): each linear's weight is its fp8 values times a
    # per-tensor scale_weight; a scaled_fp8 marker tensor says the file is one.
    scaled = {COMFY_PREFIX + k: v for k, v in hostile.items()}
    for k in list(hostile):
        if k.endswith(".weight") and hostile[k].ndim == 2:
            scaled[COMFY_PREFIX + k[: -len("weight")] + "scale_weight"] = torch.tensor(1.0)
    scaled[COMFY_PREFIX + "scaled_fp8"] = torch.zeros(0, dtype=torch.float8_e4m3fn)
    save("hostile_scaled_fp8.safetensors", scaled, HOSTILE)

    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    print(f"wrote {len(os.listdir(OUT))} files to {OUT}, {total} bytes")


if __name__ == "__main__":
    main()
