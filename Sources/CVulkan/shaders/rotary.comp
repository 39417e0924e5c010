#version 450
// Rotary embedding: each row of D values (rows = x.count / D) is rotated pairwise by the angle table of
// its position l = (row / after) % L. Pairs (2i, 2i+1) when interleaved, else (i, i + D/2).
layout(local_size_x = 256) in;
layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) readonly buffer C { float c[]; };
layout(std430, binding = 2) readonly buffer S { float s[]; };
layout(std430, binding = 3) writeonly buffer O { float o[]; };
layout(push_constant) uniform P { uint rows; uint D; uint L; uint after; uint interleaved; } p;
void main() {
    uint half_d = p.D / 2u;
    uint g = gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * 256u;
    if (g >= p.rows * half_d) return;
    uint r = g / half_d, i = g % half_d;
    uint l = (r / p.after) % p.L;
    uint i0 = p.interleaved != 0u ? 2u * i : i, i1 = p.interleaved != 0u ? 2u * i + 1u : i + half_d;
    float a = x[r * p.D + i0], b = x[r * p.D + i1], cs = c[l * half_d + i], sn = s[l * half_d + i];
    o[r * p.D + i0] = a * cs - b * sn;
    o[r * p.D + i1] = b * cs + a * sn;
}
