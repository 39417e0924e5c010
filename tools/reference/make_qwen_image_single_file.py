"""Writes the tiny Qwen-Image transformer (Tests/Fixtures/models/qwen-image-tiny) as the single files
ComfyUI users share, and what diffusers makes of the fp8 one:

  Tests/Fixtures/qwen-image-single-file/comfy_bf16.safetensors   diffusers' names under
                                                                 "model.diffusion_model.", bf16
  Tests/Fixtures/qwen-image-single-file/fp8_e4m3fn.safetensors    bare names, 2-D weights float8_e4m3fn,
                                                                 the rest bf16 (as ComfyUI's fp8 files)
  Tests/Fixtures/qwen-image-single-file/reference.safetensors     QwenImagePipeline's latents and image
                                                                 with the fp8 weights (widened to f32)

Run after make_qwen_image_tiny.py:  /path/to/venv/bin/python tools/reference/make_qwen_image_single_file.py
"""
import os

import torch
from diffusers import QwenImagePipeline
from safetensors.torch import load_file, save_file

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
MODEL = os.path.join(ROOT, "Tests", "Fixtures", "models", "qwen-image-tiny")
OUT = os.path.join(ROOT, "Tests", "Fixtures", "qwen-image-single-file")


def main():
    os.makedirs(OUT, exist_ok=True)
    weights = load_file(os.path.join(MODEL, "transformer", "diffusion_pytorch_model.safetensors"))
    save_file({"model.diffusion_model." + k: v.contiguous() for k, v in weights.items()}, os.path.join(OUT, "comfy_bf16.safetensors"))
    fp8 = {k: (v.to(torch.float8_e4m3fn) if v.ndim == 2 else v).contiguous() for k, v in weights.items()}
    save_file(fp8, os.path.join(OUT, "fp8_e4m3fn.safetensors"))

    pipe = QwenImagePipeline.from_pretrained(MODEL, torch_dtype=torch.float32)
    with torch.no_grad():
        state = {k: v.to(torch.float32) for k, v in fp8.items()}
        pipe.transformer.load_state_dict(state)
        steps = []

        def keep(p, i, t, tensors):
            steps.append(p._unpack_latents(tensors["latents"], 64, 64, p.vae_scale_factor)[0, :, 0].clone())
            return tensors
        image = pipe(prompt="a red fox in the snow", negative_prompt="blurry, low quality", true_cfg_scale=4.0, height=64, width=64,
                     num_inference_steps=3, output_type="pt", generator=torch.Generator().manual_seed(7), callback_on_step_end=keep).images
    save_file({"fp8_latents": torch.stack(steps).contiguous(), "fp8_image": image[0].contiguous()}, os.path.join(OUT, "reference.safetensors"))
    print(sorted(os.listdir(OUT)))


if __name__ == "__main__":
    main()
