#version 450
// Nearest-neighbour 2× upsampling of NCHW planes: out[p, y, x] = in[p, y/2, x/2].
layout(local_size_x = 256) in;
layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) writeonly buffer O { float o[]; };
layout(push_constant) uniform P { uint planes; uint H; uint W; } p;
void main() {
    uint g = gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * 256u;
    uint W2 = p.W * 2u, H2 = p.H * 2u;
    if (g >= p.planes * H2 * W2) return;
    uint plane = g / (H2 * W2), rem = g % (H2 * W2), y = rem / W2, xx = rem % W2;
    o[g] = x[(plane * p.H + y / 2u) * p.W + xx / 2u];
}
