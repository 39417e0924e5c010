#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
// NCHW convolution as an implicit GEMM, per group: rows are output pixels (n, oy, ox), columns the
// group's output channels, and the reduction runs over (input channel, ky, kx) — the input patch is
// gathered as it is loaded (no im2col buffer), zero outside the image (padding). w [Cout, Cin/groups,
// kh, kw] in any weight storage type (weights.glsl) is the GEMM's B, read as [Cout, K]. One 16×16
// tile of outputs per workgroup, K in steps of 16 through shared memory, as gemm.comp.
layout(local_size_x = 16, local_size_y = 16) in;
layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) readonly buffer W { uint w[]; };
layout(std430, binding = 2) readonly buffer Bias { float bias[]; };
layout(std430, binding = 3) writeonly buffer O { float o[]; };
layout(push_constant) uniform P {
    uint N; uint Cin; uint H; uint W; uint Cout; uint OH; uint OW; uint kh; uint kw;
    uint stride; uint pad; uint groups; uint dtype; uint has_bias;
} p;
shared float ta[16][17];
shared float tb[16][17];
#include "weights.glsl"

void main() {
    uint tx = gl_LocalInvocationID.x, ty = gl_LocalInvocationID.y, g = gl_WorkGroupID.z;
    uint cinG = p.Cin / p.groups, coutG = p.Cout / p.groups;
    uint K = cinG * p.kh * p.kw, M = p.N * p.OH * p.OW, window = p.kh * p.kw;
    uint m = gl_WorkGroupID.y * 16u + ty;
    uint j = gl_WorkGroupID.x * 16u + tx;
    // The output pixel of this invocation's A row (loads) — row ty of the tile.
    uint ox = m % p.OW, oy = (m / p.OW) % p.OH, n = m / (p.OW * p.OH);
    float acc = 0.0;
    for (uint k0 = 0u; k0 < K; k0 += 16u) {
        uint ka = k0 + tx;
        float a = 0.0;
        if (m < M && ka < K) {
            uint c = ka / window, r = ka % window;
            int iy = int(oy * p.stride + r / p.kw) - int(p.pad), ix = int(ox * p.stride + r % p.kw) - int(p.pad);
            if (iy >= 0 && iy < int(p.H) && ix >= 0 && ix < int(p.W))
                a = x[((n * p.Cin + g * cinG + c) * p.H + uint(iy)) * p.W + uint(ix)];
        }
        ta[ty][tx] = a;
        uint jb = gl_WorkGroupID.x * 16u + ty;
        tb[ty][tx] = (jb < coutG && ka < K) ? widen(p.dtype, (g * coutG + jb) * K + ka) : 0.0;
        barrier();
        [[unroll]] for (uint kk = 0u; kk < 16u; kk++) acc += ta[ty][kk] * tb[tx][kk];
        barrier();
    }
    if (m < M && j < coutG) {
        uint co = g * coutG + j;
        o[((n * p.Cout + co) * p.OH + oy) * p.OW + ox] = acc + (p.has_bias != 0u ? bias[co] : 0.0);
    }
}
