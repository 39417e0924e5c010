#version 450
// out[m, n] = Σ_k a[m, k] · w[n, k] (+ bias[n]): a linear layer, w as stored (f32, or bf16 widened here
// by shifting its 16 bits into the top of a float). One 16×16 tile of outputs per workgroup, K in
// steps of 16 through shared memory.
layout(local_size_x = 16, local_size_y = 16) in;
layout(std430, binding = 0) readonly buffer A { float a[]; };
layout(std430, binding = 1) readonly buffer W { uint w[]; };
layout(std430, binding = 2) readonly buffer Bias { float bias[]; };
layout(std430, binding = 3) writeonly buffer O { float o[]; };
layout(push_constant) uniform P { uint M; uint N; uint K; uint w_bf16; uint has_bias; } p;
shared float ta[16][17];
shared float tw[16][17];

float weight(uint n, uint k) {
    uint i = n * p.K + k;
    if (p.w_bf16 == 0u) return uintBitsToFloat(w[i]);
    uint word = w[i >> 1];
    uint bits = (i & 1u) == 0u ? (word & 0xFFFFu) : (word >> 16);
    return uintBitsToFloat(bits << 16);
}

void main() {
    uint m = gl_WorkGroupID.y * 16u + gl_LocalInvocationID.y;
    uint n = gl_WorkGroupID.x * 16u + gl_LocalInvocationID.x;
    float acc = 0.0;
    for (uint k0 = 0u; k0 < p.K; k0 += 16u) {
        uint ka = k0 + gl_LocalInvocationID.x;
        ta[gl_LocalInvocationID.y][gl_LocalInvocationID.x] = (m < p.M && ka < p.K) ? a[m * p.K + ka] : 0.0;
        uint wn = gl_WorkGroupID.x * 16u + gl_LocalInvocationID.y;
        tw[gl_LocalInvocationID.y][gl_LocalInvocationID.x] = (wn < p.N && ka < p.K) ? weight(wn, ka) : 0.0;
        barrier();
        for (uint kk = 0u; kk < 16u; kk++) acc += ta[gl_LocalInvocationID.y][kk] * tw[gl_LocalInvocationID.x][kk];
        barrier();
    }
    if (m < p.M && n < p.N) o[m * p.N + n] = acc + (p.has_bias != 0u ? bias[n] : 0.0);
}
