"""Writes Tests/Fixtures/qwen_image_transformer.safetensors: a tiny random-weight QwenImageTransformer2DModel
(diffusers 0.42.1: 2 layers, 2 heads × 16, axes_dims_rope (4, 6, 6), text features 64 wide) and its
output for packed latents on a 4 × 6 grid (non-square, so the centred positions are tested), 11 text
tokens and t = 0.7, as QwenImagePipeline calls it (timestep = σ, img_shapes = [(1, rows, columns)]).

Run from the repository root:  /path/to/venv/bin/python tools/reference/make_qwen_image_transformer.py
Weights (norms included, around 1) are rounded to bf16 and stored so; the model runs in float32 on the
rounded values, so the test's tolerance measures Sluice's f32 error alone.
"""
import json
import os

import torch
from diffusers import QwenImageTransformer2DModel
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "Tests", "Fixtures", "qwen_image_transformer.safetensors")
torch.manual_seed(0)

config = dict(patch_size=2, in_channels=64, out_channels=16, num_layers=2, attention_head_dim=16, num_attention_heads=2,
              joint_attention_dim=64, axes_dims_rope=(4, 6, 6))
model = QwenImageTransformer2DModel(**config).eval()
with torch.no_grad():
    for name, p in model.named_parameters():
        p.copy_((1 + 0.1 * torch.randn_like(p)) if "norm" in name else 0.08 * torch.randn_like(p))
        p.copy_(p.to(torch.bfloat16).to(torch.float32))

rows, columns, text = 4, 6, 11
latents = torch.randn(1, rows * columns, 64)
context = torch.randn(1, text, 64) * 3
t = torch.tensor([0.7])
with torch.no_grad():
    out = model(hidden_states=latents, encoder_hidden_states=context, encoder_hidden_states_mask=torch.ones(1, text),
                timestep=t, img_shapes=[[(1, rows, columns)]], return_dict=False)[0]

tensors = {k: v.to(torch.bfloat16).contiguous() for k, v in model.state_dict().items()}
tensors["input.latents"] = latents[0].contiguous()
tensors["input.context"] = context[0].contiguous()
tensors["output"] = out[0].contiguous()
cfg = dict(model.config)
cfg["axes_dims_rope"] = list(cfg["axes_dims_rope"])
save_file(tensors, OUT, metadata={"config": json.dumps({k: v for k, v in cfg.items() if not k.startswith("_")}),
                                  "rows": str(rows), "columns": str(columns), "t": "0.7"})
print(OUT, out.shape, float(out.abs().max()))
