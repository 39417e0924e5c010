#version 450
#extension GL_EXT_control_flow_attributes : require
// Tiled attention with an online softmax (FlashAttention's recurrence): the workgroup's 64
// invocations own 64 query rows of one (batch, head) when D ≤ 64, or 32 rows with two invocations per
// row when D ≤ 128, each accumulating its 64-wide slice of the output (both compute the full q·k: a
// little redundant arithmetic for a smaller accumulator). Tiles of 16 keys and values are staged in
// shared memory, so K and V are read once per workgroup and the Lq × Lk score matrix never exists.
// q [BH, Lq, D], k/v [BH, Lk, D]; an optional additive mask read with broadcast strides (a bool mask
// arrives as 0 / −inf).
// The loops over D are unrolled to constant bounds: Mesa's llvmpipe (lavapipe) stops any loop after
// 65,535 iterations per invocation, which a loop over Lk · D would pass.
layout(local_size_x = 64) in;
layout(std430, binding = 0) readonly buffer Q { float q[]; };
layout(std430, binding = 1) readonly buffer K { float k[]; };
layout(std430, binding = 2) readonly buffer V { float v[]; };
layout(std430, binding = 3) readonly buffer Mask { float mask[]; };
layout(std430, binding = 4) writeonly buffer O { float o[]; };
layout(push_constant) uniform P {
    uint Lq; uint Lk; uint D; uint H; float scale; uint has_mask; uint mask_b; uint mask_h; uint mask_q; uint mask_k;
} p;
const uint TILE = 16u;
shared float tk[TILE][128];
shared float tv[TILE][128];

void main() {
    uint parts = (p.D + 63u) / 64u, rows_per_group = 64u / parts;
    uint bh = gl_WorkGroupID.y;
    uint row = gl_WorkGroupID.x * rows_per_group + gl_LocalInvocationID.x / parts;
    uint d0 = (gl_LocalInvocationID.x % parts) * 64u;
    bool live = row < p.Lq;
    uint qrow = min(row, p.Lq - 1u);
    uint qbase = (bh * p.Lq + qrow) * p.D;
    uint mbase = (bh / p.H) * p.mask_b + (bh % p.H) * p.mask_h + qrow * p.mask_q;
    float qv[128];
    [[unroll]] for (uint d = 0u; d < 128u; d++) qv[d] = d < p.D ? q[qbase + d] * p.scale : 0.0;
    float acc[64];
    [[unroll]] for (uint d = 0u; d < 64u; d++) acc[d] = 0.0;
    // A finite running maximum: a key masked with −inf then weighs exp(−inf) = 0, never NaN.
    float m = -3.0e38, l = 0.0;
    for (uint k0 = 0u; k0 < p.Lk; k0 += TILE) {
        uint n = min(TILE, p.Lk - k0);
        for (uint e = gl_LocalInvocationID.x; e < TILE * 128u; e += 64u) {
            uint j = e / 128u, d = e % 128u, src = (bh * p.Lk + k0 + j) * p.D + d;
            bool inside = j < n && d < p.D;
            tk[j][d] = inside ? k[src] : 0.0;
            tv[j][d] = inside ? v[src] : 0.0;
        }
        barrier();
        if (live) {
            for (uint j = 0u; j < n; j++) {
                float s = 0.0;
                [[unroll]] for (uint d = 0u; d < 128u; d++) s += qv[d] * tk[j][d];
                if (p.has_mask != 0u) s += mask[mbase + (k0 + j) * p.mask_k];
                float mn = max(m, s);
                float c = exp(m - mn), e = exp(s - mn);
                l = l * c + e;
                [[unroll]] for (uint d = 0u; d < 64u; d++) acc[d] = acc[d] * c + e * tv[j][min(d0 + d, 127u)];
                m = mn;
            }
        }
        barrier();
    }
    if (live) {
        [[unroll]] for (uint d = 0u; d < 64u; d++) if (d0 + d < p.D) o[qbase + d0 + d] = acc[d] / l;
    }
}
