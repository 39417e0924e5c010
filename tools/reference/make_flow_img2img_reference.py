"""diffusers' image-to-image pipelines of the flow-matching families on their tiny folders: ZImageImg2ImgPipeline
(z-image-tiny) and FluxImg2ImgPipeline (flux-tiny-dev), from make_sd_reference.py's init image.

Run from the repository root:  python3 tools/reference/make_flow_img2img_reference.py
Writes Tests/Fixtures/flow_img2img_reference.safetensors: per run every step's latents (Z-Image's [16, h, w];
FLUX's unpacked to [16, h, w] as Sluice reports them) and the image in [0, 1].
"""
import os
import sys

import torch
from diffusers import FluxImg2ImgPipeline, FluxPipeline, ZImageImg2ImgPipeline
from PIL import Image
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(__file__))
from make_sd_reference import HEIGHT, WIDTH, init_image, run  # noqa: E402  (the same 32×48 picture, the same runner)

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
FIX = os.path.join(ROOT, "Tests", "Fixtures")


def main():
    out = {}
    pil = Image.fromarray(init_image())
    z = ZImageImg2ImgPipeline.from_pretrained(os.path.join(FIX, "models", "z-image-tiny"), torch_dtype=torch.float32)
    z.set_progress_bar_config(disable=True)
    run(z, out, "zimage_", seed=11, prompt="a red fox", image=pil, strength=0.6, num_inference_steps=5, guidance_scale=0.0)
    run(z, out, "zimage_cfg_", seed=12, prompt="a red fox", negative_prompt="blurry", image=pil, strength=0.75,
        num_inference_steps=4, guidance_scale=2.5)
    f = FluxImg2ImgPipeline.from_pretrained(os.path.join(FIX, "models", "flux-tiny-dev"), torch_dtype=torch.float32)
    f.set_progress_bar_config(disable=True)
    unpack = lambda lat: FluxPipeline._unpack_latents(lat, HEIGHT, WIDTH, f.vae_scale_factor)  # noqa: E731
    run(f, out, "flux_", seed=13, latents=unpack, prompt="a red fox", image=pil, strength=0.6, num_inference_steps=5,
        guidance_scale=3.5, max_sequence_length=24)
    save_file({k: v.contiguous().float() for k, v in out.items()}, os.path.join(FIX, "flow_img2img_reference.safetensors"))
    print(f"{len(out)} tensors, {os.path.getsize(os.path.join(FIX, 'flow_img2img_reference.safetensors')) / 1e3:.0f} kB")


if __name__ == "__main__":
    main()
