#version 450
// out[i] = a[i] (op) b[i % b_n]: b broadcasts along rows (b_n divides n). op: 0 add, 1 sub, 2 mul, 3 div.
layout(local_size_x = 256) in;
layout(std430, binding = 0) readonly buffer A { float a[]; };
layout(std430, binding = 1) readonly buffer B { float b[]; };
layout(std430, binding = 2) writeonly buffer O { float o[]; };
layout(push_constant) uniform P { uint n; uint b_n; uint op; } p;
void main() {
    uint i = gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * 256u;
    if (i >= p.n) return;
    float x = a[i], y = b[i % p.b_n];
    o[i] = p.op == 0u ? x + y : p.op == 1u ? x - y : p.op == 2u ? x * y : x / y;
}
