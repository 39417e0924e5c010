#version 450
#extension GL_GOOGLE_include_directive : require
// NCHW convolution, one output element per invocation: out[n, co, oy, ox] = bias[co] +
// Σ over the group's input channels and the kernel window of x · w, w [Cout, Cin/groups, kh, kw] in
// any weight storage type (weights.glsl). Zero padding is the window's clipping.
layout(local_size_x = 256) in;
layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) readonly buffer W { uint w[]; };
layout(std430, binding = 2) readonly buffer Bias { float bias[]; };
layout(std430, binding = 3) writeonly buffer O { float o[]; };
layout(push_constant) uniform P {
    uint N; uint Cin; uint H; uint W; uint Cout; uint OH; uint OW; uint kh; uint kw;
    uint stride; uint pad; uint groups; uint dtype; uint has_bias;
} p;
#include "weights.glsl"

void main() {
    uint i = gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * 256u;
    uint total = p.N * p.Cout * p.OH * p.OW;
    if (i >= total) return;
    uint ox = i % p.OW, oy = (i / p.OW) % p.OH, co = (i / (p.OW * p.OH)) % p.Cout, n = i / (p.OW * p.OH * p.Cout);
    uint cinG = p.Cin / p.groups, coutG = p.Cout / p.groups;
    uint c0 = (co / coutG) * cinG;
    float acc = 0.0;
    for (uint c = 0u; c < cinG; c++) {
        uint xplane = (n * p.Cin + c0 + c) * p.H * p.W;
        uint wbase = ((co * cinG) + c) * p.kh * p.kw;
        for (uint ky = 0u; ky < p.kh; ky++) {
            int iy = int(oy * p.stride + ky) - int(p.pad);
            if (iy < 0 || iy >= int(p.H)) continue;
            for (uint kx = 0u; kx < p.kw; kx++) {
                int ix = int(ox * p.stride + kx) - int(p.pad);
                if (ix < 0 || ix >= int(p.W)) continue;
                acc += x[xplane + uint(iy) * p.W + uint(ix)] * widen(p.dtype, wbase + ky * p.kw + kx);
            }
        }
    }
    o[i] = acc + (p.has_bias != 0u ? bias[co] : 0.0);
}
