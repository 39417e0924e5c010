#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
// gemm.comp's product, register-tiled: 64×64 outputs per workgroup of 16×16 invocations, each
// accumulating a 4×4 block in f32 registers (rows ty + 16i, columns tx + 16j: shared-memory reads
// without bank conflicts, coalesced writes), K in steps of 16 through shared memory — 16 multiply-adds
// per pair of shared loads instead of gemm.comp's one. Chosen when M and N are both at least 64.
layout(local_size_x = 16, local_size_y = 16) in;
layout(std430, binding = 0) readonly buffer A { float a[]; };
layout(std430, binding = 1) readonly buffer W { uint w[]; };
layout(std430, binding = 2) readonly buffer Bias { float bias[]; };
layout(std430, binding = 3) writeonly buffer O { float o[]; };
layout(push_constant) uniform P { uint M; uint N; uint K; uint a_stride; uint b_stride; uint dtype; uint transposed; uint has_bias; } p;
shared float ta[16][65];  // ta[kk][mm] = a(m0 + mm, k0 + kk)
shared float tb[16][65];  // tb[kk][nn] = b(k0 + kk, n0 + nn)
#include "weights.glsl"

void main() {
    uint z = gl_WorkGroupID.z;
    uint tx = gl_LocalInvocationID.x, ty = gl_LocalInvocationID.y, tid = ty * 16u + tx;
    uint m0 = gl_WorkGroupID.y * 64u, n0 = gl_WorkGroupID.x * 64u;
    uint abase = z * p.a_stride, bbase = z * p.b_stride;
    float acc[4][4];
    [[unroll]] for (int i = 0; i < 4; i++) [[unroll]] for (int j = 0; j < 4; j++) acc[i][j] = 0.0;
    for (uint k0 = 0u; k0 < p.K; k0 += 16u) {
        // 64 × 16 of a and 16 × 64 of b: four elements each per invocation, consecutive k (a, and b
        // transposed) or consecutive n (b) along neighbouring invocations.
        [[unroll]] for (uint r = 0u; r < 4u; r++) {
            uint idx = tid + r * 256u;
            uint mm = idx >> 4, kk = idx & 15u, m = m0 + mm, k = k0 + kk;
            ta[kk][mm] = (m < p.M && k < p.K) ? a[abase + m * p.K + k] : 0.0;
            if (p.transposed != 0u) {
                uint n = n0 + mm;
                tb[kk][mm] = (n < p.N && k < p.K) ? widen(p.dtype, bbase + n * p.K + k) : 0.0;
            } else {
                uint kb = idx >> 6, nn = idx & 63u, kg = k0 + kb, n = n0 + nn;
                tb[kb][nn] = (n < p.N && kg < p.K) ? widen(p.dtype, bbase + kg * p.N + n) : 0.0;
            }
        }
        barrier();
        [[unroll]] for (uint kk = 0u; kk < 16u; kk++) {
            float av[4], bv[4];
            [[unroll]] for (uint i = 0u; i < 4u; i++) { av[i] = ta[kk][ty + 16u * i]; bv[i] = tb[kk][tx + 16u * i]; }
            [[unroll]] for (uint i = 0u; i < 4u; i++) [[unroll]] for (uint j = 0u; j < 4u; j++) acc[i][j] += av[i] * bv[j];
        }
        barrier();
    }
    [[unroll]] for (uint i = 0u; i < 4u; i++) {
        uint m = m0 + ty + 16u * i;
        if (m >= p.M) continue;
        [[unroll]] for (uint j = 0u; j < 4u; j++) {
            uint n = n0 + tx + 16u * j;
            if (n < p.N) o[z * p.M * p.N + m * p.N + n] = acc[i][j] + (p.has_bias != 0u ? bias[n] : 0.0);
        }
    }
}
