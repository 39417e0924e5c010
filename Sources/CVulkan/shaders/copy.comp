#version 450
// A strided block copy, the body of concat: for each of `outer` rows, `row` values of x go to
// out at row · out_row + offset. One dispatch per concatenated input.
layout(local_size_x = 256) in;
layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) buffer O { float o[]; };
layout(push_constant) uniform P { uint outer; uint row; uint out_row; uint offset; } p;
void main() {
    uint i = gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * 256u;
    if (i >= p.outer * p.row) return;
    uint r = i / p.row, j = i % p.row;
    o[r * p.out_row + p.offset + j] = x[i];
}
