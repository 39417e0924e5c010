"""Writes Tests/Fixtures/sampler_reference.safetensors: what diffusers' discrete-time schedulers give for
the samplers Stable Diffusion users name (AUTOMATIC1111's names), built as
`Class.from_config(<the checkpoint's scheduler_config.json>, **overrides)`.

Run from the repository root:  python3 tools/reference/make_sampler_reference.py
Needs torch (CPU), diffusers, numpy and safetensors (tools/reference/requirements.txt).

Each case (listed as JSON in the file's metadata "cases": its checkpoint config, the keys it overrides in
that config, the sampler, the step count) stores
  <name>/timesteps         what the UNet receives, f32 (DPM-Solver's and DDIM's int64 timesteps are exact)
  <name>/sigmas            the schedule's sigmas (steps + 1), where the class has them
  <name>/init_noise_sigma  [1]
and for a denoising run, a [1, 4, 6, 8] latent through a deterministic fake model
  (model_output = x·f32(0.1·cos(t/100)) + f32(0.05·sin(t/37)), x the scale_model_input output, t the
  timestep as a float; anything depending on both the sample and t does):
  <name>/latents           [k + 1, 1, 4, 6, 8]: the starting latents, then the latents after each step
Text-to-image runs start from torch.randn(shape, generator=torch.Generator().manual_seed(seed)) times
init_noise_sigma and hand the same generator to every step, as diffusers' pipelines do (Euler a draws its
per-step noise from it). Image-to-image runs (strength 0.6) follow StableDiffusionImg2ImgPipeline: the
timesteps from get_timesteps, set_begin_index(t_start), noise drawn from the generator and
add_noise(x0, noise, timesteps[:1]), x0 a stand-in for the encoded image (seed 7); they also store
  <name>/begin_index       [1]
  <name>/i2i_timesteps     the timesteps the run steps through
"""
import json
import math
import os

import numpy as np
import torch
from diffusers import (DDIMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler,
                       EulerDiscreteScheduler)
from safetensors.torch import save_file

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
FIX = os.path.join(ROOT, "Tests", "Fixtures")
OUT = os.path.join(FIX, "sampler_reference.safetensors")
CONFIGS = {name: json.load(open(os.path.join(FIX, "models", f"{name}-tiny", "scheduler", "scheduler_config.json")))
           for name in ("sd15", "sdxl")}
SHAPE = (1, 4, 6, 8)
SEED = 1234

# The A1111 name → the diffusers class and the overrides that make it that sampler. "Euler" and "DPM++ 2M"
# say use_karras_sigmas=False: the name means the plain schedule whatever the checkpoint's config says.
SAMPLERS = {
    "Euler": (EulerDiscreteScheduler, dict(use_karras_sigmas=False)),
    "Euler a": (EulerAncestralDiscreteScheduler, {}),
    "DPM++ 2M": (DPMSolverMultistepScheduler, dict(algorithm_type="dpmsolver++", solver_order=2, use_karras_sigmas=False)),
    "DPM++ 2M Karras": (DPMSolverMultistepScheduler, dict(algorithm_type="dpmsolver++", solver_order=2, use_karras_sigmas=True)),
    "DDIM": (DDIMScheduler, {}),
}
SLUG = {"Euler": "euler", "Euler a": "euler_a", "DPM++ 2M": "dpmpp_2m", "DPM++ 2M Karras": "dpmpp_2m_karras", "DDIM": "ddim"}


def fake_model(x, t):
    t = float(t)
    return x * (0.1 * math.cos(t / 100)) + 0.05 * math.sin(t / 37)


def build(sampler, config):
    cls, own = SAMPLERS[sampler]
    return cls.from_config(config, **own)


def record(out, name, sched):
    out[f"{name}/timesteps"] = sched.timesteps.to(torch.float32)
    if hasattr(sched, "sigmas") and isinstance(sched.sigmas, torch.Tensor) and not isinstance(sched, DDIMScheduler):
        out[f"{name}/sigmas"] = sched.sigmas.to(torch.float32)
    out[f"{name}/init_noise_sigma"] = torch.tensor([float(sched.init_noise_sigma)], dtype=torch.float32)


def denoise(sched, latents, timesteps, generator):
    steps = [latents]
    for t in timesteps:
        x = sched.scale_model_input(latents, t)
        latents = sched.step(fake_model(x, t), t, latents, generator=generator).prev_sample
        steps.append(latents)
    return torch.stack(steps)


def make_case(out, name, sampler, config, steps, run=None, strength=None):
    sched = build(sampler, config)
    sched.set_timesteps(steps)
    record(out, name, sched)
    g = torch.Generator().manual_seed(SEED)
    if run == "t2i":
        latents = torch.randn(SHAPE, generator=g) * sched.init_noise_sigma
        out[f"{name}/latents"] = denoise(sched, latents, sched.timesteps, g)
    elif run == "i2i":
        # StableDiffusionImg2ImgPipeline.get_timesteps, then prepare_latents' add_noise.
        init_timestep = min(int(steps * strength), steps)
        t_start = max(steps - init_timestep, 0)
        timesteps = sched.timesteps[t_start * sched.order:]
        if hasattr(sched, "set_begin_index"):  # DDIM has none: it steps by timestep value
            sched.set_begin_index(t_start * sched.order)
        x0 = torch.randn(SHAPE, generator=torch.Generator().manual_seed(7))
        noise = torch.randn(SHAPE, generator=g)
        latents = sched.add_noise(x0, noise, timesteps[:1])
        out[f"{name}/begin_index"] = torch.tensor([float(t_start * sched.order)])
        out[f"{name}/i2i_timesteps"] = timesteps.to(torch.float32)
        out[f"{name}/latents"] = denoise(sched, latents, timesteps, g)


def main():
    out, cases = {}, []

    def case(name, config_name, sampler, steps, overrides=None, run=None, strength=None):
        overrides = overrides or {}
        config = {**CONFIGS[config_name], **overrides}
        make_case(out, name, sampler, config, steps, run, strength)
        cases.append(dict(name=name, config=config_name, sampler=sampler, overrides=overrides, steps=steps,
                          run=run, strength=strength, seed=SEED))

    # Each sampler from each checkpoint's own config: schedules for 1, 7 and 25 steps, a run at 7.
    for config_name in CONFIGS:
        for sampler in SAMPLERS:
            for steps in (1, 7, 25):
                case(f"{config_name}/{SLUG[sampler]}/{steps}", config_name, sampler, steps, run="t2i" if steps == 7 else None)
    # Every timestep spacing, whichever the class's default.
    for sampler in SAMPLERS:
        for spacing in ("leading", "trailing", "linspace"):
            for steps in (1, 7, 25):
                case(f"spacing/{SLUG[sampler]}/{spacing}/{steps}", "sd15", sampler, steps, dict(timestep_spacing=spacing))
    # v-prediction (trailing spacing, as v-prediction checkpoints ship), every sampler.
    for sampler in SAMPLERS:
        case(f"vpred/{SLUG[sampler]}", "sdxl", sampler, 7, dict(prediction_type="v_prediction", timestep_spacing="trailing"), run="t2i")
    # Image-to-image at strength 0.6.
    for sampler in SAMPLERS:
        case(f"i2i/{SLUG[sampler]}", "sdxl", sampler, 7, run="i2i", strength=0.6)
    # DPM-Solver past 15 steps (second order up to the last step) and its options.
    case("dpm/25", "sd15", "DPM++ 2M", 25, run="t2i")
    case("dpm/karras_25", "sd15", "DPM++ 2M Karras", 25, run="t2i")
    case("dpm/sigma_min", "sdxl", "DPM++ 2M", 7, dict(final_sigmas_type="sigma_min"), run="t2i")
    case("dpm/no_lower_order_final", "sdxl", "DPM++ 2M Karras", 7, dict(lower_order_final=False, final_sigmas_type="sigma_min"), run="t2i")
    case("dpm/euler_at_final", "sd15", "DPM++ 2M", 16, dict(euler_at_final=True, final_sigmas_type="sigma_min"), run="t2i")
    case("dpm/heun", "sdxl", "DPM++ 2M", 7, dict(solver_type="heun"), run="t2i")
    case("dpm/karras_sigma_bounds", "sdxl", "DPM++ 2M Karras", 7, dict(sigma_min=0.1, sigma_max=10.0), run="t2i")
    # DDIM's own defaults (clip_sample, set_alpha_to_one) when a config leaves them out.
    case("ddim/clip", "sd15", "DDIM", 7, dict(clip_sample=True, set_alpha_to_one=True), run="t2i")
    case("euler/sigma_min", "sdxl", "Euler", 7, dict(final_sigmas_type="sigma_min"), run="t2i")
    # A checkpoint's own betas (100 training steps, linear beta schedule otherwise).
    betas = [0.001 + 0.03 * i / 99 + 0.002 * math.sin(i) for i in range(100)]
    for sampler in SAMPLERS:
        case(f"trained/{SLUG[sampler]}", "sd15", sampler, 7,
             dict(trained_betas=betas, num_train_timesteps=100, beta_schedule="linear"),
             run="t2i" if sampler in ("Euler a", "DPM++ 2M Karras", "DDIM") else None)

    out = {k: v.clone().contiguous() for k, v in out.items()}
    save_file(out, OUT, metadata={"cases": json.dumps(cases)})
    print(f"{len(cases)} cases, {len(out)} tensors, {os.path.getsize(OUT)} bytes → {OUT}")


if __name__ == "__main__":
    main()
