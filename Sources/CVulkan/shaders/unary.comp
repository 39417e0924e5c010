#version 450
#extension GL_GOOGLE_include_directive : require
// Element by element. mode 0 SiLU x·σ(x); 1 GELU 0.5·x·(1 + erf(x/√2)); 2 GELU with tanh:
// 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))); 3 tanh; 4 widen: x in storage type `dtype`
// (weights.glsl) to f32 — a weight the device holds in bf16/f16/fp8 read as an f32 operand.
layout(local_size_x = 256) in;
layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 0) readonly buffer XW { uint w[]; };  // the same operand, as words (mode 4)
layout(std430, binding = 1) writeonly buffer O { float o[]; };
layout(push_constant) uniform P { uint n; uint mode; uint dtype; } p;
#include "weights.glsl"

// erf to 1.2e-7 (Numerical Recipes' erfc Chebyshev fit): GLSL has no erf.
float erf_approx(float v) {
    float z = abs(v), t = 1.0 / (1.0 + 0.5 * z);
    float r = t * exp(-z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806
              + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))));
    return v >= 0.0 ? 1.0 - r : r - 1.0;
}

void main() {
    uint i = gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * 256u;
    if (i >= p.n) return;
    if (p.mode == 4u) { o[i] = widen(p.dtype, i); return; }
    float v = x[i];
    if (p.mode == 3u) { o[i] = tanh(clamp(v, -9.0, 9.0)); return; }
    if (p.mode == 0u) { o[i] = v / (1.0 + exp(-v)); return; }
    if (p.mode == 1u) { o[i] = 0.5 * v * (1.0 + erf_approx(v * 0.70710678118654752)); return; }
    // tanh of a clamped argument: tanh is ±1 to f32 precision beyond |u| = 9, and some drivers
    // compute it through exp, which overflows for large |u|.
    float u = clamp(0.7978845608028654 * (v + 0.044715 * v * v * v), -9.0, 9.0);
    o[i] = 0.5 * v * (1.0 + tanh(u));
}
