#version 450
// out = a (op) b with numpy broadcasting over up to 4 dims (the host merges adjacent dims first):
// out index → coordinates in `dims` → element offsets through a's and b's strides (0 on a broadcast
// axis), a's starting at element `offa` (a strided view inside a larger buffer). op: 0 add, 1 sub,
// 2 mul, 3 div, 4 a + s·b (s: `scale`'s bits; `precise`: no fused multiply-add, the CPU's rounding),
// 5 silu(a)·b (a SwiGLU's gate and up projections in one pass; the same operations as unary.comp's
// SiLU then op 2).
layout(local_size_x = 256) in;
layout(std430, binding = 0) readonly buffer A { float a[]; };
layout(std430, binding = 1) readonly buffer B { float b[]; };
layout(std430, binding = 2) writeonly buffer O { float o[]; };
layout(push_constant) uniform P { uint n; uint op; uint offa; uint scale; uvec4 dims; uvec4 sa; uvec4 sb; } p;
void main() {
    uint i = gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * 256u;
    if (i >= p.n) return;
    uint r = i, ia = p.offa, ib = 0u;
    for (int d = 3; d >= 0; d--) {
        uint c = r % p.dims[d];
        r /= p.dims[d];
        ia += c * p.sa[d];
        ib += c * p.sb[d];
    }
    float x = a[ia], y = b[ib];
    precise float axpy = x + uintBitsToFloat(p.scale) * y;
    if (p.op == 5u) { float g = x / (1.0 + exp(-x)); o[i] = g * y; return; }
    o[i] = p.op == 0u ? x + y : p.op == 1u ? x - y : p.op == 2u ? x * y : p.op == 3u ? x / y : axpy;
}
