"""Writes a tiny random-weight Qwen-Image pipeline and what diffusers' QwenImagePipeline does with it:

  Tests/Fixtures/models/qwen-image-tiny/         diffusers folder (scheduler/, text_encoder/, tokenizer/,
                                                 transformer/, vae/), weights in bf16
  Tests/Fixtures/qwen_image_reference.safetensors  prompt embeddings, every step's latents and the image,
                                                 with true CFG (negative prompt, scale 4) and without

Run from the repository root:  /path/to/venv/bin/python tools/reference/make_qwen_image_tiny.py
Needs torch, diffusers 0.42.1, transformers 5 (tools/reference/requirements.txt). The architecture is
Qwen-Image's (Qwen2.5-VL language model with biased q/k/v and multimodal RoPE, the dual-stream MMDiT,
the causal 3-D VAE with RMS norms and a middle attention block, Qwen-Image's own scheduler config with
its dynamic shift and shift_terminal); only the sizes are tiny. The tokenizer is the tiny byte-level
BPE of the Z-Image fixture (Qwen2's pre-tokenizer), saved again in this folder; the VL model's vision
tower is tiny and never run. Every weight is bf16-representable and the reference runs in float32.
"""
import os

import numpy as np
import torch
from diffusers import (AutoencoderKLQwenImage, FlowMatchEulerDiscreteScheduler, QwenImageImg2ImgPipeline, QwenImagePipeline,
                       QwenImageTransformer2DModel)
from safetensors.torch import save_file
from transformers import AutoTokenizer, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
FIX = os.path.join(ROOT, "Tests", "Fixtures")
MODEL = os.path.join(FIX, "models", "qwen-image-tiny")

# Qwen-Image's scheduler/scheduler_config.json.
SCHEDULER = dict(base_image_seq_len=256, base_shift=0.5, invert_sigmas=False, max_image_seq_len=8192, max_shift=0.9,
                 num_train_timesteps=1000, shift=1.0, shift_terminal=0.02, stochastic_sampling=False,
                 time_shift_type="exponential", use_beta_sigmas=False, use_dynamic_shifting=True,
                 use_exponential_sigmas=False, use_karras_sigmas=False)


def randomize(module, seed):
    """Random values in every tensor (diffusers zero-initialises some), norms around 1, then rounded to bf16."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            fan_in = int(np.prod(p.shape[1:])) if p.ndim > 1 else 1
            scale = 1.0 / np.sqrt(fan_in) if p.ndim > 1 else 0.1
            base = 1.0 if ("norm" in name or "gamma" in name) and p.ndim == 1 else 0.0
            p.copy_(base + torch.randn(p.shape, generator=g) * scale)
            p.copy_(p.to(torch.bfloat16).float())


def main():
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(os.path.join(FIX, "models", "z-image-tiny", "tokenizer"))
    text = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, rms_norm_eps=1e-6, max_position_embeddings=2048,
                rope_parameters={"rope_type": "default", "mrope_section": [1, 1, 2], "rope_theta": 1000000.0})
    text_encoder = Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(
        text_config=text, vision_config=dict(depth=1, hidden_size=16, intermediate_size=16, num_heads=2, out_hidden_size=32,
                                             fullatt_block_indexes=[0]))).eval()
    randomize(text_encoder, 1)
    transformer = QwenImageTransformer2DModel(patch_size=2, in_channels=64, out_channels=16, num_layers=2, attention_head_dim=16,
                                              num_attention_heads=2, joint_attention_dim=32, axes_dims_rope=(4, 6, 6)).eval()
    randomize(transformer, 2)
    vae = AutoencoderKLQwenImage(base_dim=8, z_dim=16, dim_mult=[1, 2, 2, 2], num_res_blocks=1, attn_scales=[],
                                 temperal_downsample=[False, True, True]).eval()
    randomize(vae, 3)
    scheduler = FlowMatchEulerDiscreteScheduler(**SCHEDULER)
    pipe = QwenImagePipeline(scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, transformer=transformer)

    out = {}
    prompt, negative, seed, steps, size = "a red fox in the snow", "blurry, low quality", 7, 3, 64
    with torch.no_grad():
        for name, text_in in [("prompt", prompt), ("negative", negative)]:
            embeds, mask = pipe.encode_prompt(prompt=text_in, device="cpu")
            assert mask is None or bool(mask.all())  # one prompt: no padding
            out[f"{name}_embeds"] = embeds[0].float().contiguous()
        for run, kwargs in [("cfg", dict(negative_prompt=negative, true_cfg_scale=4.0)), ("plain", dict(true_cfg_scale=4.0))]:
            steps_seen = []

            def keep(p, i, t, tensors):
                # Unpacked to [C, h, w], as Sluice reports a step's latents.
                steps_seen.append(p._unpack_latents(tensors["latents"], size, size, p.vae_scale_factor)[0, :, 0].clone())
                return tensors
            image = pipe(prompt=prompt, height=size, width=size, num_inference_steps=steps, output_type="pt",
                         generator=torch.Generator().manual_seed(seed), callback_on_step_end=keep, **kwargs).images
            out[f"{run}_latents"] = torch.stack(steps_seen).float().contiguous()
            out[f"{run}_image"] = image[0].float().contiguous()
        out["sigmas"] = pipe.scheduler.sigmas.float().contiguous()
        # Image to image (QwenImageImg2ImgPipeline on the same components): a smooth 64×64 picture,
        # strength 0.6 over 3 steps (enters at step int(3 − 1.8) = 1), true CFG.
        yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
        picture = (torch.stack([xx, yy, (xx + yy) / 2]) * 255).round() / 255  # [3, H, W] in [0, 1], 8-bit values as a PNG holds
        out["init_image"] = picture.contiguous()
        img2img = QwenImageImg2ImgPipeline(**pipe.components)
        steps_seen = []

        def keep2(p, i, t, tensors):
            steps_seen.append(p._unpack_latents(tensors["latents"], size, size, p.vae_scale_factor)[0, :, 0].clone())
            return tensors
        image = img2img(prompt=prompt, negative_prompt=negative, true_cfg_scale=4.0, image=picture[None], strength=0.6, height=size, width=size,
                        num_inference_steps=steps, output_type="pt", generator=torch.Generator().manual_seed(seed),
                        callback_on_step_end=keep2).images
        out["img2img_latents"] = torch.stack(steps_seen).float().contiguous()
        out["img2img_image"] = image[0].float().contiguous()
    save_file(out, os.path.join(FIX, "qwen_image_reference.safetensors"),
              metadata={"prompt": prompt, "negative": negative, "seed": str(seed), "steps": str(steps), "size": str(size)})
    pipe.to(torch.bfloat16).save_pretrained(MODEL, safe_serialization=True)
    print({k: tuple(v.shape) for k, v in out.items()})


if __name__ == "__main__":
    main()
