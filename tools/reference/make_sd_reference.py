"""diffusers' Stable Diffusion 1.5 and SDXL pipelines on the tiny folders of make_sd_tiny.py: every sampler
Sluice names (AUTOMATIC1111's names, each diffusers scheduler built from_config of the folder's own
scheduler config), text to image and image to image.

Run from the repository root:  python3 tools/reference/make_sd_reference.py
Writes Tests/Fixtures/sd_reference.safetensors: per run, every step's latents (before the VAE's scale), the
image in [0, 1], and the prompt embeddings; plus the init image (uint8 values) the img2img runs start from.
The weights are the folders' bf16 values computed in float32, as Sluice computes them.
"""
import os

import numpy as np
import torch
from diffusers import (DDIMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler,
                       EulerDiscreteScheduler, StableDiffusionImg2ImgPipeline, StableDiffusionPipeline,
                       StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline)
from PIL import Image
from safetensors.torch import save_file

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
FIX = os.path.join(ROOT, "Tests", "Fixtures")
HEIGHT, WIDTH = 32, 48

SAMPLERS = {
    "euler": (EulerDiscreteScheduler, {}),
    "euler_a": (EulerAncestralDiscreteScheduler, {}),
    "dpmpp_2m": (DPMSolverMultistepScheduler, dict(algorithm_type="dpmsolver++", solver_order=2)),
    "dpmpp_2m_karras": (DPMSolverMultistepScheduler, dict(algorithm_type="dpmsolver++", solver_order=2, use_karras_sigmas=True)),
    "ddim": (DDIMScheduler, {}),
}


FOLDER_CONFIGS = {}  # the folder's own scheduler config, by model (its VAE object: img2img shares it)


def with_sampler(pipe, name):
    """The sampler built from the folder's own scheduler config (never from the previous sampler's, whose
    saved defaults — DDIM's "leading" spacing, say — would leak into the next)."""
    cls, overrides = SAMPLERS[name]
    base = FOLDER_CONFIGS.setdefault(id(pipe.vae), pipe.scheduler.config)
    pipe.scheduler = cls.from_config(base, **overrides)
    return pipe


def run(pipe, out, tag, seed, latents=lambda x: x, **kw):
    """One pipeline run: every step's latents (through `latents`, e.g. FLUX's unpacking), the image."""
    seen = []

    def on_step(p, i, t, k):
        seen.append(k["latents"].detach().clone())
        return {}

    gen = torch.Generator("cpu").manual_seed(seed)
    with torch.no_grad():
        img = pipe(height=HEIGHT, width=WIDTH, generator=gen, output_type="pt", callback_on_step_end=on_step, **kw).images
    out[tag + "image"] = img[0]
    for i, lat in enumerate(seen):
        out[f"{tag}latents_{i}"] = latents(lat)[0]
    out[tag + "steps"] = torch.tensor([float(len(seen))])


def init_image():
    """A smooth, non-symmetric picture (uint8), so the encoder's output is not flat."""
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    r = 128 + 100 * np.sin(x / 7.0) * np.cos(y / 5.0)
    g = 40 + 200 * x / WIDTH
    b = 220 - 180 * y / HEIGHT
    return np.stack([r, g, b], -1).clip(0, 255).astype(np.uint8)


def main():
    out = {}
    pixels = init_image()
    out["init_image"] = torch.tensor(pixels, dtype=torch.float32).permute(2, 0, 1).contiguous()
    pil = Image.fromarray(pixels)

    sd15 = StableDiffusionPipeline.from_pretrained(os.path.join(FIX, "models", "sd15-tiny"), torch_dtype=torch.float32)
    sd15.set_progress_bar_config(disable=True)
    with torch.no_grad():
        pe, ne = sd15.encode_prompt("a red fox", "cpu", 1, True, negative_prompt="blurry")
    out["sd15_prompt_embeds"], out["sd15_negative_embeds"] = pe[0], ne[0]
    for name in SAMPLERS:
        run(with_sampler(sd15, name), out, f"sd15_{name}_", seed=7, prompt="a red fox", num_inference_steps=5,
            guidance_scale=7.0)
    # A negative prompt, and guidance 1 (no CFG: one UNet call a step).
    run(with_sampler(sd15, "euler"), out, "sd15_negative_", seed=9, prompt="a red fox", negative_prompt="blurry",
        num_inference_steps=3, guidance_scale=7.0)
    run(with_sampler(sd15, "euler"), out, "sd15_nocfg_", seed=9, prompt="a red fox", num_inference_steps=3, guidance_scale=1.0)
    img2img = StableDiffusionImg2ImgPipeline(**sd15.components)
    img2img.set_progress_bar_config(disable=True)
    for name in ("euler", "euler_a", "ddim"):
        run(with_sampler(img2img, name), out, f"sd15_img2img_{name}_", seed=11, prompt="a red fox", image=pil,
            strength=0.6, num_inference_steps=5, guidance_scale=7.0)

    # The VAE encoder whole and in tiles of 16 pixels (8 latents; diffusers' tiled_encode), the moments of
    # the init image.
    image = sd15.image_processor.preprocess(pil, height=HEIGHT, width=WIDTH)
    with torch.no_grad():
        whole = sd15.vae.encode(image).latent_dist
        sd15.vae.enable_tiling()
        sd15.vae.tile_sample_min_size, sd15.vae.tile_latent_min_size = 16, 8
        tiled = sd15.vae.encode(image).latent_dist
        sd15.vae.disable_tiling()
    out["vae_mean"], out["vae_logvar"] = whole.mean[0], whole.logvar[0]
    out["vae_tiled_mean"], out["vae_tiled_logvar"] = tiled.mean[0], tiled.logvar[0]

    sdxl = StableDiffusionXLPipeline.from_pretrained(os.path.join(FIX, "models", "sdxl-tiny"), torch_dtype=torch.float32)
    sdxl.set_progress_bar_config(disable=True)
    with torch.no_grad():
        pe, ne, pooled, npooled = sdxl.encode_prompt("a red fox", device="cpu", do_classifier_free_guidance=True,
                                                     negative_prompt="blurry")
        _, zeros, _, zpooled = sdxl.encode_prompt("a red fox", device="cpu", do_classifier_free_guidance=True)
    out["sdxl_prompt_embeds"], out["sdxl_negative_embeds"] = pe[0], ne[0]
    out["sdxl_pooled"], out["sdxl_negative_pooled"] = pooled[0], npooled[0]
    assert zeros.abs().max() == 0 and zpooled.abs().max() == 0  # force_zeros_for_empty_prompt
    for name in ("euler", "euler_a", "dpmpp_2m_karras"):
        run(with_sampler(sdxl, name), out, f"sdxl_{name}_", seed=7, prompt="a red fox", num_inference_steps=5,
            guidance_scale=5.0)
    run(with_sampler(sdxl, "euler"), out, "sdxl_negative_", seed=9, prompt="a red fox", negative_prompt="blurry",
        num_inference_steps=3, guidance_scale=5.0)
    xl_img2img = StableDiffusionXLImg2ImgPipeline(**sdxl.components)
    xl_img2img.set_progress_bar_config(disable=True)
    run(with_sampler(xl_img2img, "euler"), out, "sdxl_img2img_euler_", seed=11, prompt="a red fox", image=pil,
        strength=0.6, num_inference_steps=5, guidance_scale=5.0)

    save_file({k: v.contiguous().float() for k, v in out.items()}, os.path.join(FIX, "sd_reference.safetensors"))
    print(f"{len(out)} tensors, {os.path.getsize(os.path.join(FIX, 'sd_reference.safetensors')) / 1e3:.0f} kB")


if __name__ == "__main__":
    main()
