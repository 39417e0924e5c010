"""Writes Tests/Fixtures/qwen_image_vae.safetensors (and qwen_image_vae_tiled[_encode].safetensors): a tiny random-weight AutoencoderKLQwenImage (Qwen-Image's
VAE, diffusers' class) with its decode and encode of one frame (T = 1), as diffusers computes them.

Run from the repository root:  /path/to/venv/bin/python tools/reference/make_qwen_image_vae.py
(diffusers 0.42.1, torch CPU). The config keeps every block kind of the real one (base_dim 96, dim_mult
[1, 2, 4, 4], num_res_blocks 2): three downsamplers (downsample2d, then two downsample3d) and their mirror
upsamplers (two upsample3d, then upsample2d), so 8× per side; a channel change at every level (conv_shortcut);
the mid blocks' attention. attn_scales is [] as in Qwen-Image's config: diffusers' encoder cannot run a
down-block attention (QwenImageAttentionBlock.forward takes no feature cache; a TypeError in 0.42.1), and its
decoder never builds one.
Weights are rounded to bf16 (stored so) and the model runs in float32 on the rounded values, so the test's
tolerance measures Sluice's f32 error alone. The RMS norms' gammas are random (1 + 0.2·N(0, 1)).

Stored: the weights under the checkpoint's keys (what save_pretrained writes: the Conv3d weights
[out, in, kT, kH, kW], the norms' gamma [C, 1, 1(, 1)]), the config JSON in the metadata ("config"), and
  input.latents [1, 16, 1, 8, 8]   input.image [1, 3, 1, 64, 64] in [-1, 1]
  output.decode       vae.decode(latents).sample (clamped to [-1, 1] by _decode)
  output.decode_raw   the decoder's output before that clamp
  output.encode_mean, output.encode_logvar   vae.encode(image).latent_dist .mean, .logvar (clamped to [-30, 20])
  output.denormalized  QwenImagePipeline's latents / (1 / latents_std) + latents_mean on input.latents
and in qwen_image_vae_tiled.safetensors (the same model; its own file to keep each under 1 MB):
  input.latents [1, 16, 1, 25, 19]
  output.tiled_decode  vae.decode(latents).sample after vae.enable_tiling(64, 64, 48, 48): tiled_decode's 5 × 4
                       tiles of 8 latents every 6, blended over 16 pixels, not clamped (tiled_decode never clamps;
                       only _decode's untiled path does). The last row and column are 1 latent (8 pixels): there
                       blend_v / blend_h shrink the blend to the narrower tile, weights and all.
and in qwen_image_vae_tiled_encode.safetensors:
  input.image [1, 3, 1, 136, 104]
  output.tiled_encode_mean, output.tiled_encode_logvar   vae.encode(image).latent_dist after the same
                       enable_tiling: tiled_encode's 3 × 3 tiles, the last column one latent wide.
The script also checks its own claim that one frame reduces to 2-D convolutions with each Conv3d's last
temporal slice and no time_conv (`frame_2d` below reproduces diffusers' outputs from the 2-D form).
"""
import json
import os

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKLQwenImage
from safetensors.torch import save_file

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "..", "Tests", "Fixtures")
OUT = os.path.join(FIXTURES, "qwen_image_vae.safetensors")
torch.manual_seed(0)

vae = AutoencoderKLQwenImage(base_dim=12, z_dim=16, dim_mult=[1, 2, 2, 2], num_res_blocks=1, attn_scales=[],
                             temperal_downsample=[False, True, True]).eval()
with torch.no_grad():
    for name, p in vae.named_parameters():
        if name.endswith("gamma"):
            p.copy_(1 + 0.2 * torch.randn_like(p))
        elif name.endswith("bias"):
            p.copy_(0.1 * torch.randn_like(p))
        if name == "decoder.conv_out.weight":
            p.mul_(8)  # outputs beyond [-1, 1] in places, so the test sees decode's clamp
        p.copy_(p.to(torch.bfloat16).to(torch.float32))

latents = torch.randn(1, 16, 1, 8, 8)
image = torch.rand(1, 3, 1, 64, 64) * 2 - 1
with torch.no_grad():
    sample = vae.decode(latents).sample
    vae.clear_cache()  # _decode's loop for one frame, without the clamp
    raw = vae.decoder(vae.post_quant_conv(latents)[:, :, 0:1], feat_cache=vae._feat_map, feat_idx=[0])
    vae.clear_cache()
    dist = vae.encode(image).latent_dist
cfg = vae.config
inv_std = 1.0 / torch.tensor(cfg.latents_std).view(1, cfg.z_dim, 1, 1, 1)
denormalized = latents / inv_std + torch.tensor(cfg.latents_mean).view(1, cfg.z_dim, 1, 1, 1)


# ---- The 2-D form of one frame (what Sluice implements), checked against diffusers above ----
def frame_2d(sd):
    def conv(x, key, stride=1, pad_rb=False):
        w = sd[key + ".weight"]
        if w.dim() == 5:  # causal: two zero frames before the only one, so only the last slice meets it
            w = w[:, :, -1]
        k = w.shape[-1]
        if pad_rb:
            x = F.pad(x, (0, 1, 0, 1))
        return F.conv2d(x, w, sd[key + ".bias"], stride=stride, padding=0 if pad_rb else k // 2)

    def norm(x, key):
        return F.normalize(x, dim=1) * x.shape[1] ** 0.5 * sd[key + ".gamma"].view(1, -1, 1, 1)

    def res(x, key):
        h = conv(x, key + ".conv_shortcut") if key + ".conv_shortcut.weight" in sd else x
        x = conv(F.silu(norm(x, key + ".norm1")), key + ".conv1")
        return conv(F.silu(norm(x, key + ".norm2")), key + ".conv2") + h

    def attn(x, key):
        b, c, hh, ww = x.shape
        q, k, v = conv(norm(x, key + ".norm"), key + ".to_qkv").reshape(b, 3 * c, -1).transpose(1, 2).chunk(3, dim=-1)
        o = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, c, hh, ww)
        return conv(o, key + ".proj") + x

    def mid(x, key):
        return res(attn(res(x, key + ".resnets.0"), key + ".attentions.0"), key + ".resnets.1")

    def decode(z):
        x = conv(conv(z, "post_quant_conv"), "decoder.conv_in")
        x = mid(x, "decoder.mid_block")
        for i in range(len(cfg.dim_mult)):
            for j in range(cfg.num_res_blocks + 1):
                x = res(x, f"decoder.up_blocks.{i}.resnets.{j}")
            if i < len(cfg.dim_mult) - 1:  # upsample2d and upsample3d alike: the first frame skips time_conv
                x = conv(F.interpolate(x, scale_factor=2.0, mode="nearest-exact"), f"decoder.up_blocks.{i}.upsamplers.0.resample.1")
        return conv(F.silu(norm(x, "decoder.norm_out")), "decoder.conv_out")

    def encode(x):
        x, idx = conv(x, "encoder.conv_in"), 0  # down_blocks is one flat list: resnets, then the downsampler
        for i in range(len(cfg.dim_mult)):
            for _ in range(cfg.num_res_blocks):
                x = res(x, f"encoder.down_blocks.{idx}")
                idx += 1
            if i < len(cfg.dim_mult) - 1:  # downsample2d and downsample3d alike: the first chunk skips time_conv
                x = conv(x, f"encoder.down_blocks.{idx}.resample.1", stride=2, pad_rb=True)
                idx += 1
        x = mid(x, "encoder.mid_block")
        return conv(conv(F.silu(norm(x, "encoder.norm_out")), "encoder.conv_out"), "quant_conv")

    return decode, encode


with torch.no_grad():
    decode2d, encode2d = frame_2d(vae.state_dict())
    d = (decode2d(latents[:, :, 0]) - raw[:, :, 0]).abs().max().item()
    moments = encode2d(image[:, :, 0])
    e = max((moments[:, :16] - dist.mean[:, :, 0]).abs().max().item(),
            (moments[:, 16:].clamp(-30, 20) - dist.logvar[:, :, 0]).abs().max().item())
assert d < 1e-5 and e < 1e-5, (d, e)

tensors = {k: v.to(torch.bfloat16).contiguous() for k, v in vae.state_dict().items()}
tensors.update({
    "input.latents": latents, "input.image": image,
    "output.decode": sample.contiguous(), "output.decode_raw": raw.contiguous(),
    "output.encode_mean": dist.mean.contiguous(), "output.encode_logvar": dist.logvar.contiguous(),
    "output.denormalized": denormalized.contiguous(),
})
save_file(tensors, OUT, metadata={"config": vae.to_json_string()})
clamped = (raw.abs() > 1).float().mean().item()
print(OUT, f"2-D form vs diffusers: decode {d:.2e}, encode {e:.2e}; raw decode range [{raw.min():.2f}, {raw.max():.2f}], "
      f"{clamped:.0%} clamped; mean range [{dist.mean.min():.2f}, {dist.mean.max():.2f}], "
      f"logvar [{dist.logvar.min():.2f}, {dist.logvar.max():.2f}]")

# ---- Tiled decode (drawn after everything above, so the first file is unchanged) ----
# diffusers' default is tiles of 256 pixels every 192 (32 latents every 24); scaled down to 64 every 48 here
# so a small latent makes several tiles each way: rows start at latents 0, 6, 12, 18, 24 of 25, columns at 0, 6, 12,
# 18 of 19; the last of each is narrower than the 2-latent blend.
tiled_latents = torch.randn(1, 16, 1, 25, 19)
vae.enable_tiling(tile_sample_min_height=64, tile_sample_min_width=64, tile_sample_stride_height=48, tile_sample_stride_width=48)
with torch.no_grad():
    tiled = vae.decode(tiled_latents).sample
    vae.disable_tiling()
    whole = vae.decode(tiled_latents).sample
assert tiled.shape == (1, 3, 1, 200, 152), tiled.shape
TILED = os.path.join(FIXTURES, "qwen_image_vae_tiled.safetensors")
save_file({"input.latents": tiled_latents, "output.tiled_decode": tiled.contiguous()}, TILED)
print(TILED, f"tiled range [{tiled.min():.2f}, {tiled.max():.2f}]; mean |tiled - whole (clamped)| "
      f"{(tiled.clamp(-1, 1) - whole).abs().mean():.3f}, max {(tiled.clamp(-1, 1) - whole).abs().max():.3f}")

# ---- Tiled encode (drawn after everything above, so both files above are unchanged) ----
# The same tiles (64 pixels every 48: 8 latents every 6, blended over 2) on a 136 × 104 image: tile rows at pixels
# 0, 48, 96 (the last 40 high), columns at 0, 48, 96 (the last 8 wide: one latent, narrower than the blend).
tiled_image = torch.rand(1, 3, 1, 136, 104) * 2 - 1
vae.enable_tiling(tile_sample_min_height=64, tile_sample_min_width=64, tile_sample_stride_height=48, tile_sample_stride_width=48)
with torch.no_grad():
    tiled_dist = vae.encode(tiled_image).latent_dist
    vae.disable_tiling()
    whole_dist = vae.encode(tiled_image).latent_dist
assert tiled_dist.mean.shape == (1, 16, 1, 17, 13), tiled_dist.mean.shape
TILED_ENCODE = os.path.join(FIXTURES, "qwen_image_vae_tiled_encode.safetensors")
save_file({"input.image": tiled_image, "output.tiled_encode_mean": tiled_dist.mean.contiguous(),
           "output.tiled_encode_logvar": tiled_dist.logvar.contiguous()}, TILED_ENCODE)
print(TILED_ENCODE, f"mean |tiled - whole| of the means {(tiled_dist.mean - whole_dist.mean).abs().mean():.3f}")
