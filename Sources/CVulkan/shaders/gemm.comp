#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
// out[z, m, n] = Σ_k a[z, m, k] · b[z, k, n] (+ bias[n]): matmul and linear layers. b is [K, N], or
// [N, K] when transposed (a linear layer's weight), in any weight storage type (weights.glsl),
// widened as it is read; a batch stride of 0 shares b (or a) across the batch. One 16×16 tile of
// outputs per workgroup, K in steps of 16 through shared memory.
layout(local_size_x = 16, local_size_y = 16) in;
layout(std430, binding = 0) readonly buffer A { float a[]; };
layout(std430, binding = 1) readonly buffer W { uint w[]; };
layout(std430, binding = 2) readonly buffer Bias { float bias[]; };
layout(std430, binding = 3) writeonly buffer O { float o[]; };
layout(push_constant) uniform P { uint M; uint N; uint K; uint a_stride; uint b_stride; uint dtype; uint transposed; uint has_bias; } p;
shared float ta[16][17];
shared float tb[16][17];
#include "weights.glsl"

void main() {
    uint z = gl_WorkGroupID.z;
    uint tx = gl_LocalInvocationID.x, ty = gl_LocalInvocationID.y;
    uint m = gl_WorkGroupID.y * 16u + ty;
    uint n = gl_WorkGroupID.x * 16u + tx;
    uint abase = z * p.a_stride, bbase = z * p.b_stride;
    float acc = 0.0;
    for (uint k0 = 0u; k0 < p.K; k0 += 16u) {
        uint ka = k0 + tx;
        ta[ty][tx] = (m < p.M && ka < p.K) ? a[abase + m * p.K + ka] : 0.0;
        // tb[j][kk] holds b(k0 + kk, n0 + j).
        uint bn = gl_WorkGroupID.x * 16u + ty;
        if (p.transposed != 0u) {
            tb[ty][tx] = (bn < p.N && ka < p.K) ? widen(p.dtype, bbase + bn * p.K + ka) : 0.0;
        } else {
            uint kb = k0 + ty, nb = gl_WorkGroupID.x * 16u + tx;
            tb[tx][ty] = (nb < p.N && kb < p.K) ? widen(p.dtype, bbase + kb * p.N + nb) : 0.0;
        }
        barrier();
        [[unroll]] for (uint kk = 0u; kk < 16u; kk++) acc += ta[ty][kk] * tb[tx][kk];
        barrier();
    }
    if (m < p.M && n < p.N) o[z * p.M * p.N + m * p.N + n] = acc + (p.has_bias != 0u ? bias[n] : 0.0);
}
