"""Writes the reference fixtures Sluice's tests compare against (Tests/Fixtures/*.safetensors).

Run from the repository root:  python3 tools/reference/make_fixtures.py
Needs torch (CPU), numpy and safetensors (tools/reference/requirements.txt). Tests never run Python:
they read what this writes. Every output is computed by torch, in float64 where the op allows it,
then stored as float32, so a test's tolerance measures Sluice's f32 error alone.
"""
import math
import os

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "Tests", "Fixtures")
torch.manual_seed(0)


def f32(t):
    return t.to(torch.float32).contiguous()


def dtype_fixtures():
    out = {}
    codes8 = torch.arange(256, dtype=torch.int32).to(torch.uint8)
    out["e4m3fn_decode"] = codes8.view(torch.float8_e4m3fn).to(torch.float32)
    out["e5m2_decode"] = codes8.view(torch.float8_e5m2).to(torch.float32)
    codes16 = torch.arange(65536, dtype=torch.int32).to(torch.int16)  # wraps to the full bit range
    out["f16_decode"] = codes16.view(torch.float16).to(torch.float32)
    out["bf16_decode"] = codes16.view(torch.bfloat16).to(torch.float32)

    # The f32 sweep: specials, f32 subnormals, every format's rounding ties (and one ulp either
    # side), overflow boundaries, and random values across the whole exponent range.
    vals = [0.0, -0.0, math.inf, -math.inf, 1.0, -1.0, 448.0, 464.0, 479.9, 480.0, 500.0, 57344.0,
            61439.0, 61440.0, 65504.0, 65519.0, 65520.0, 65536.0, 1e-45, -1e-45, 1e-40, 3e-39,
            2.0**-24, 2.0**-25, 2.0**-26, 2.0**-9, 2.0**-10, 2.0**-16, 2.0**-17, 2.0**-6, 2.0**-14,
            3.4e38, -3.4e38, 2.0**-126, 2.0**-149]
    sweep = np.array(vals, dtype=np.float32)
    nans = np.array([0x7FC00000, 0xFFC00000, 0x7F800001, 0x7FA00000, 0xFFFFFFFF], dtype=np.uint32).view(np.float32)
    pieces = [sweep, nans]
    for dt in (torch.float16, torch.bfloat16, torch.float8_e4m3fn, torch.float8_e5m2):
        bits = 16 if dt.itemsize == 2 else 8
        codes = torch.arange(2 ** bits, dtype=torch.int32)
        codes = (codes.to(torch.int16) if bits == 16 else codes.to(torch.uint8)).view(dt).to(torch.float64)
        codes = codes[torch.isfinite(codes)]
        codes = torch.unique(codes).sort().values
        mids = ((codes[:-1] + codes[1:]) / 2).numpy().astype(np.float32)  # exact in f32
        rng = np.random.default_rng(bits)
        pick = mids if len(mids) < 3000 else rng.choice(mids, 3000, replace=False)
        up = np.nextafter(pick, np.float32(np.inf))
        down = np.nextafter(pick, np.float32(-np.inf))
        pieces += [pick, up, down]
    rng = np.random.default_rng(7)
    exps = rng.uniform(-150, 126.9, 6000)
    rand = (rng.choice([-1.0, 1.0], 6000) * rng.uniform(1, 2, 6000) * np.power(2.0, exps)).astype(np.float32)
    pieces.append(rand)
    sweep = torch.from_numpy(np.concatenate(pieces).astype(np.float32))
    out["sweep"] = sweep
    out["sweep_f16"] = sweep.to(torch.float16).view(torch.int16)
    out["sweep_bf16"] = sweep.to(torch.bfloat16).view(torch.int16)
    out["sweep_e4m3fn"] = sweep.to(torch.float8_e4m3fn).view(torch.uint8)
    out["sweep_e5m2"] = sweep.to(torch.float8_e5m2).view(torch.uint8)
    save_file({k: v.contiguous() for k, v in out.items()}, os.path.join(OUT, "dtypes.safetensors"))


def storage(t, dt):
    """The weight as stored in dtype `dt`, and its exact f64 value (what Sluice widens to)."""
    s = t.to(dt)
    return s, s.to(torch.float64)


def op_fixtures():
    o = {}
    d = torch.float64
    # matmul: a [3, 37, 53] x b [53, 29]; b stored in each dtype; batched b; transposed weight.
    a = torch.randn(3, 37, 53, dtype=d)
    b = torch.randn(53, 29, dtype=d)
    o["matmul.a"] = f32(a)
    for name, dt in (("f32", torch.float32), ("f16", torch.float16), ("bf16", torch.bfloat16),
                     ("f8e4m3fn", torch.float8_e4m3fn), ("f8e5m2", torch.float8_e5m2)):
        s, exact = storage(b, dt)
        o[f"matmul.b.{name}"] = s.contiguous()
        o[f"matmul.out.{name}"] = f32(torch.matmul(f32(a).to(d), exact))
    bb = torch.randn(3, 53, 29, dtype=d)
    o["matmul.bbatch"] = f32(bb)
    o["matmul.out.batched"] = f32(torch.matmul(f32(a).to(d), f32(bb).to(d)))
    # Products that cross every cache block of every path (M > MC = 144, K > KC = 512 in the
    # widest path, N > NC = 1024), with bf16 weights; kept narrow elsewhere so the fixture stays small.
    for tag, (m, k, n) in (("deep", (150, 520, 40)), ("wide", (7, 20, 1030))):
        A = torch.randn(m, k, dtype=d)
        W = torch.randn(n, k, dtype=d)
        Ws, We = storage(W, torch.bfloat16)
        bias = torch.randn(n, dtype=d)
        o[f"linear.{tag}.x"] = f32(A)
        o[f"linear.{tag}.w"] = Ws.contiguous()
        o[f"linear.{tag}.bias"] = f32(bias)
        o[f"linear.{tag}.out"] = f32(F.linear(f32(A).to(d), We, f32(bias).to(d)))
    # linear: x [2, 5, 70], weight [33, 70] bf16, bias
    x = torch.randn(2, 5, 70, dtype=d)
    w = torch.randn(33, 70, dtype=d)
    ws, we = storage(w, torch.bfloat16)
    bias = torch.randn(33, dtype=d)
    o["linear.x"] = f32(x)
    o["linear.w"] = ws.contiguous()
    o["linear.bias"] = f32(bias)
    o["linear.out"] = f32(F.linear(f32(x).to(d), we, f32(bias).to(d)))
    # conv2d: grouped, strided, padded; a 1x1; an f16-weight 3x3
    x = torch.randn(2, 6, 11, 13, dtype=d)
    o["conv.x"] = f32(x)
    w = torch.randn(8, 3, 3, 3, dtype=d)
    cb = torch.randn(8, dtype=d)
    o["conv.g2s2p1.w"] = f32(w)
    o["conv.g2s2p1.b"] = f32(cb)
    o["conv.g2s2p1.out"] = f32(F.conv2d(f32(x).to(d), f32(w).to(d), f32(cb).to(d), stride=2, padding=1, groups=2))
    w1 = torch.randn(5, 6, 1, 1, dtype=d)
    o["conv.1x1.w"] = f32(w1)
    o["conv.1x1.out"] = f32(F.conv2d(f32(x).to(d), f32(w1).to(d)))
    w3 = torch.randn(7, 6, 3, 3, dtype=d)
    w3s, w3e = storage(w3, torch.float16)
    o["conv.3x3f16.w"] = w3s.contiguous()
    o["conv.3x3f16.out"] = f32(F.conv2d(f32(x).to(d), w3e, padding=1))
    # norms
    x = torch.randn(2, 8, 5, 7, dtype=d) * 3 + 1
    gw, gb = torch.randn(8, dtype=d), torch.randn(8, dtype=d)
    o["groupnorm.x"], o["groupnorm.w"], o["groupnorm.b"] = f32(x), f32(gw), f32(gb)
    o["groupnorm.out"] = f32(F.group_norm(f32(x).to(d), 4, f32(gw).to(d), f32(gb).to(d), eps=1e-6))
    x = torch.randn(4, 9, 96, dtype=d) * 2 + 0.5
    lw, lb = torch.randn(96, dtype=d), torch.randn(96, dtype=d)
    o["layernorm.x"], o["layernorm.w"], o["layernorm.b"] = f32(x), f32(lw), f32(lb)
    o["layernorm.out"] = f32(F.layer_norm(f32(x).to(d), (96,), f32(lw).to(d), f32(lb).to(d), eps=1e-5))
    o["layernorm.out.noaffine"] = f32(F.layer_norm(f32(x).to(d), (96,), eps=1e-6))
    rw = torch.randn(96, dtype=d)
    o["rmsnorm.w"] = f32(rw)
    xx = f32(x).to(d)
    o["rmsnorm.out"] = f32(xx * torch.rsqrt(xx.pow(2).mean(-1, keepdim=True) + 1e-6) * f32(rw).to(d))
    # softmax, activations
    x = torch.randn(5, 300, dtype=d) * 10
    o["softmax.x"] = f32(x)
    o["softmax.out"] = f32(torch.softmax(f32(x).to(d), -1))
    x = torch.linspace(-12, 12, 1001, dtype=d)
    o["act.x"] = f32(x)
    xx = f32(x).to(d)
    o["act.silu"] = f32(F.silu(xx))
    o["act.gelu"] = f32(F.gelu(xx))
    o["act.gelu_tanh"] = f32(F.gelu(xx, approximate="tanh"))
    # broadcasting binary ops
    a, b = torch.randn(2, 1, 5, dtype=d), torch.randn(3, 1, dtype=d) + 3
    o["binary.a"], o["binary.b"] = f32(a), f32(b)
    aa, bb = f32(a).to(d), f32(b).to(d)
    o["binary.add"], o["binary.sub"], o["binary.mul"], o["binary.div"] = f32(aa + bb), f32(aa - bb), f32(aa * bb), f32(aa / bb)
    # upsample, concat
    x = torch.randn(2, 3, 4, 5, dtype=d)
    o["upsample.x"] = f32(x)
    o["upsample.out"] = f32(F.interpolate(f32(x), scale_factor=2.0, mode="nearest"))
    c1, c2 = torch.randn(2, 3, 4, dtype=d), torch.randn(2, 5, 4, dtype=d)
    o["concat.a"], o["concat.b"] = f32(c1), f32(c2)
    o["concat.out"] = f32(torch.cat([f32(c1), f32(c2)], 1))
    # rotary embedding on x [B, L, H, D] with angle tables [L, D/2]
    x = torch.randn(2, 7, 3, 16, dtype=d)
    ang = torch.randn(7, 8, dtype=d) * 3
    cos, sin = torch.cos(ang), torch.sin(ang)
    o["rope.x"], o["rope.cos"], o["rope.sin"] = f32(x), f32(cos), f32(sin)
    xx, cc, ss = f32(x).to(d), f32(cos).to(d)[None, :, None, :], f32(sin).to(d)[None, :, None, :]
    # interleaved pairs (2i, 2i+1): complex multiplication, as diffusers' apply_rotary_emb (FLUX, Z-Image)
    xr, xi = xx[..., 0::2], xx[..., 1::2]
    inter = torch.stack([xr * cc - xi * ss, xi * cc + xr * ss], -1).flatten(-2)
    o["rope.interleaved"] = f32(inter)
    # halves (i, i + D/2): rotate_half, as Qwen/LLaMA text encoders
    c2_, s2_ = torch.cat([cc, cc], -1), torch.cat([ss, ss], -1)
    rot = torch.cat([-xx[..., 8:], xx[..., :8]], -1)
    o["rope.halves"] = f32(xx * c2_ + rot * s2_)
    # attention: several tiles with partial edges; additive and boolean masks; D = 64 and 128
    q, k, v = torch.randn(1, 2, 200, 64, dtype=d), torch.randn(1, 2, 290, 64, dtype=d), torch.randn(1, 2, 290, 64, dtype=d)
    o["attn.q"], o["attn.k"], o["attn.v"] = f32(q), f32(k), f32(v)
    qq, kk, vv = f32(q).to(d), f32(k).to(d), f32(v).to(d)
    o["attn.out"] = f32(F.scaled_dot_product_attention(qq, kk, vv))
    keep = torch.rand(1, 1, 200, 290) > 0.3
    keep[:, :, :, 0] = True  # every query keeps at least one key
    addm = torch.where(keep, torch.randn(1, 1, 200, 290, dtype=d) * 0.5, torch.tensor(-math.inf, dtype=d))
    o["attn.mask.add"] = f32(addm)
    o["attn.out.mask.add"] = f32(F.scaled_dot_product_attention(qq, kk, vv, attn_mask=f32(addm).to(d)))
    o["attn.mask.bool"] = keep.contiguous()
    o["attn.out.mask.bool"] = f32(F.scaled_dot_product_attention(qq, kk, vv, attn_mask=keep))
    q2, k2, v2 = torch.randn(1, 1, 150, 128, dtype=d), torch.randn(1, 1, 270, 128, dtype=d), torch.randn(1, 1, 270, 128, dtype=d)
    o["attn128.q"], o["attn128.k"], o["attn128.v"] = f32(q2), f32(k2), f32(v2)
    o["attn128.out"] = f32(F.scaled_dot_product_attention(f32(q2).to(d), f32(k2).to(d), f32(v2).to(d), scale=0.05))
    save_file({k: v.contiguous() for k, v in o.items()}, os.path.join(OUT, "ops.safetensors"))


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    dtype_fixtures()
    op_fixtures()
    for f in ("dtypes.safetensors", "ops.safetensors"):
        print(f, os.path.getsize(os.path.join(OUT, f)), "bytes")
