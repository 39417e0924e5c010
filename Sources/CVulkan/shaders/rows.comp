#version 450
// Row-wise ops over the last dimension (one workgroup per row, 256 threads reducing in shared memory):
//   mode 0  RMSNorm:   x · rsqrt(mean(x²) + eps) · w?  (+ a residual of x's shape: has_bias 2)
//   mode 1  LayerNorm: (x − mean) · rsqrt(var + eps) · w? + b?
//   mode 2  softmax:   exp(x − max) / Σ exp(x − max)
//   mode 3  GroupNorm: a row is one (sample, group) of a contiguous NCHW tensor — its channels' planes
//                      back to back — normalised like LayerNorm, with a per-channel weight and bias
layout(local_size_x = 256) in;
layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) readonly buffer W { float w[]; };
layout(std430, binding = 2) readonly buffer Bb { float bias[]; };
layout(std430, binding = 3) writeonly buffer O { float o[]; };
layout(push_constant) uniform P { uint rows; uint D; uint mode; float eps; uint has_weight; uint has_bias; uint groups; uint hw; } p;
shared float red[256];

float reduce_sum(float v) {
    uint t = gl_LocalInvocationID.x;
    red[t] = v;
    barrier();
    for (uint s = 128u; s > 0u; s >>= 1) {
        if (t < s) red[t] += red[t + s];
        barrier();
    }
    float r = red[0];
    barrier();
    return r;
}

float reduce_max(float v) {
    uint t = gl_LocalInvocationID.x;
    red[t] = v;
    barrier();
    for (uint s = 128u; s > 0u; s >>= 1) {
        if (t < s) red[t] = max(red[t], red[t + s]);
        barrier();
    }
    float r = red[0];
    barrier();
    return r;
}

void main() {
    uint row = gl_WorkGroupID.x + gl_WorkGroupID.y * gl_NumWorkGroups.x;
    if (row >= p.rows) return;
    uint base = row * p.D, t = gl_LocalInvocationID.x;
    if (p.mode == 2u) {
        float m = -3.402823e38;
        for (uint i = t; i < p.D; i += 256u) m = max(m, x[base + i]);
        m = reduce_max(m);
        float s = 0.0;
        for (uint i = t; i < p.D; i += 256u) s += exp(x[base + i] - m);
        s = reduce_sum(s);
        for (uint i = t; i < p.D; i += 256u) o[base + i] = exp(x[base + i] - m) / s;
        return;
    }
    float mean = 0.0;
    if (p.mode == 1u || p.mode == 3u) {
        float s = 0.0;
        for (uint i = t; i < p.D; i += 256u) s += x[base + i];
        mean = reduce_sum(s) / float(p.D);
    }
    float q = 0.0;
    for (uint i = t; i < p.D; i += 256u) { float d = x[base + i] - mean; q += d * d; }
    float inv = inversesqrt(reduce_sum(q) / float(p.D) + p.eps);
    for (uint i = t; i < p.D; i += 256u) {
        float v = (x[base + i] - mean) * inv;
        uint f = p.mode == 3u ? (row % p.groups) * (p.D / p.hw) + i / p.hw : i;
        if (p.has_weight != 0u) v *= w[f];
        if (p.has_bias == 1u) v += bias[f];
        if (p.has_bias == 2u) v += bias[base + i];
        o[base + i] = v;
    }
}
