"""diffusers' UNet2DConditionModel called directly on the tiny SD1.5 and SDXL UNets, for Sluice's UNet tests.

Run from the repository root:  python3 tools/reference/make_unet_reference.py
Needs the tiny pipeline folders of tools/reference/make_sd_tiny.py (Tests/Fixtures/models/sd15-tiny,
sdxl-tiny). Writes Tests/Fixtures/unet_reference.safetensors (f32):
  sample            [1, 4, 8, 12]  latents shared by both calls (H ≠ W; 8×12 → 4×6 → 2×3, every level)
  timestep          [1]            637.0: mid-schedule, so a wrong sinusoid convention shows
  sd15_context      [7, 24]        encoder_hidden_states (7 tokens, SD1.5's cross-attention width)
  sdxl_context      [7, 64]        the same for SDXL's width
  sdxl_text_embeds  [1, 16]        SDXL's pooled text embedding
  sdxl_time_ids     [6]            original size, crop top-left, target size: (64, 96, 0, 0, 64, 96)
  {sd15,sdxl}_out   [1, 4, 8, 12]  the noise prediction
  {sd15,sdxl}_mid   [1, 32, 2, 3]  mid_block's output (a forward hook), to tell the down path from the up
  sd15_sin_shift1_out              SD1.5 with flip_sin_to_cos false and freq_shift 1 (the config overridden)

The model runs in float64 on the stored bf16 weights; the inputs are rounded to f32 first, so both sides
see the same values.
"""
import os

import torch
from safetensors.torch import save_file

from diffusers import UNet2DConditionModel

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
FIX = os.path.join(ROOT, "Tests", "Fixtures")


def f32(t):
    return t.float().double()


def call(folder, sample, t, context, added=None, **overrides):
    unet = UNet2DConditionModel.from_pretrained(os.path.join(FIX, "models", folder, "unet"), torch_dtype=torch.float64,
                                                **overrides).eval()
    mid = {}
    unet.mid_block.register_forward_hook(lambda m, i, o: mid.setdefault("out", o))
    with torch.no_grad():
        out = unet(sample, t, encoder_hidden_states=context[None], added_cond_kwargs=added).sample
    return out, mid["out"]


if __name__ == "__main__":
    g = torch.Generator().manual_seed(2024)
    sample = f32(torch.randn(1, 4, 8, 12, generator=g, dtype=torch.float64))
    t = torch.tensor([637.0], dtype=torch.float64)
    sd15_context = f32(torch.randn(7, 24, generator=g, dtype=torch.float64))
    sdxl_context = f32(torch.randn(7, 64, generator=g, dtype=torch.float64))
    text_embeds = f32(torch.randn(1, 16, generator=g, dtype=torch.float64))
    time_ids = torch.tensor([64.0, 96.0, 0.0, 0.0, 64.0, 96.0], dtype=torch.float64)

    sd15_out, sd15_mid = call("sd15-tiny", sample, t, sd15_context)
    sdxl_out, sdxl_mid = call("sdxl-tiny", sample, t, sdxl_context,
                              added={"text_embeds": text_embeds, "time_ids": time_ids[None]})
    # The other sinusoid convention (sin half first, frequencies over half − 1), on SD1.5's weights.
    sd15_sin_out, _ = call("sd15-tiny", sample, t, sd15_context, flip_sin_to_cos=False, freq_shift=1)
    out = dict(sd15_sin_shift1_out=sd15_sin_out, sample=sample, timestep=t, sd15_context=sd15_context, sdxl_context=sdxl_context,
               sdxl_text_embeds=text_embeds, sdxl_time_ids=time_ids, sd15_out=sd15_out, sd15_mid=sd15_mid,
               sdxl_out=sdxl_out, sdxl_mid=sdxl_mid)
    path = os.path.join(FIX, "unet_reference.safetensors")
    save_file({k: v.contiguous().float() for k, v in out.items()}, path)
    print(path, f"{os.path.getsize(path) / 1e3:.1f} KB",
          {k: (tuple(v.shape), float(v.abs().max())) for k, v in out.items() if "out" in k or "mid" in k})
