"""diffusers' ZImagePipeline on the tiny Z-Image computing in bf16 (torch_dtype=torch.bfloat16 on the
CPU: every weight and activation bf16, matmuls on bf16 inputs with f32 accumulation), for Sluice's
`--compute bf16` test. Same prompt, seed, steps and size as zimage_reference.safetensors' f32 run.

Run from the repository root:  python3 tools/reference/make_zimage_bf16.py
Writes Tests/Fixtures/zimage_bf16_reference.safetensors: the final latents and the image.
"""
import os

import torch
from safetensors.torch import save_file

from diffusers import ZImagePipeline

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
FIX = os.path.join(ROOT, "Tests", "Fixtures")


def main():
    pipe = ZImagePipeline.from_pretrained(os.path.join(FIX, "models", "z-image-tiny"), torch_dtype=torch.bfloat16)
    seen = []

    def on_step(p, i, t, kw):
        seen.append(kw["latents"].detach().float().clone())
        return {}

    gen = torch.Generator("cpu").manual_seed(7)
    with torch.no_grad():
        img = pipe("a red fox", height=64, width=64, num_inference_steps=4, guidance_scale=0.0, generator=gen,
                   output_type="pt", callback_on_step_end=on_step).images
    save_file({"latents": seen[-1][0].contiguous(), "image": img[0].float().contiguous()},
              os.path.join(FIX, "zimage_bf16_reference.safetensors"))


if __name__ == "__main__":
    main()
