// torch's CPU normal sampler, reproduced bit for bit.
//
// torch fills a float tensor of >= 16 elements with uniforms (24 random bits each), then turns each
// run of 16 into normals by Box-Muller: 8 radii from the first half, 8 angles from the second. On x86
// builds with AVX2 (AVX-512 machines compile the same path) it evaluates log, sin and cos with the
// Cephes polynomials of avx_mathfun.h, compiled by GCC, which fuses every multiply whose only use is an
// add or subtract into an FMA. Bit-exactness needs those same fusions, so every step below is written
// out with explicit fmaf() and contraction is off for this file.
#include "ckernels.h"
#include <math.h>
#include <string.h>

#pragma clang fp contract(off)

void sk_mt19937_seed(sk_mt19937 *g, uint64_t seed) {
    g->state[0] = (uint32_t)(seed & 0xffffffffu);
    for (int i = 1; i < 624; i++) {
        g->state[i] = 1812433253u * (g->state[i - 1] ^ (g->state[i - 1] >> 30)) + (uint32_t)i;
    }
    g->next = 624;
}

uint32_t sk_mt19937_next(sk_mt19937 *g) {
    if (g->next >= 624) {
        for (int k = 0; k < 624; k++) {
            uint32_t y = (g->state[k] & 0x80000000u) | (g->state[(k + 1) % 624] & 0x7fffffffu);
            g->state[k] = g->state[(k + 397) % 624] ^ (y >> 1) ^ ((y & 1u) ? 0x9908b0dfu : 0u);
        }
        g->next = 0;
    }
    uint32_t y = g->state[g->next++];
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    y ^= y >> 18;
    return y;
}

static inline uint32_t bits_of(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float float_of(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

/// Cephes logf on (0, 1] as the vector code evaluates it.
static float cephes_logf(float x) {
    const int invalid = !(x > 0.0f);
    if (x < float_of(0x00800000u)) x = float_of(0x00800000u);
    const int32_t exponent = (int32_t)(bits_of(x) >> 23);
    x = float_of((bits_of(x) & ~0x7f800000u) | bits_of(0.5f));
    float e = (float)(exponent - 0x7f);
    e = e + 1.0f;
    const int below = x < 0.707106781186547524f;
    const float keep = below ? x : 0.0f;
    x = x - 1.0f;
    e = e - (below ? 1.0f : 0.0f);
    x = x + keep;
    const float z = x * x;
    float y = 7.0376836292E-2f;
    y = fmaf(y, x, -1.1514610310E-1f);
    y = fmaf(y, x, 1.1676998740E-1f);
    y = fmaf(y, x, -1.2420140846E-1f);
    y = fmaf(y, x, 1.4249322787E-1f);
    y = fmaf(y, x, -1.6668057665E-1f);
    y = fmaf(y, x, 2.0000714765E-1f);
    y = fmaf(y, x, -2.4999993993E-1f);
    y = fmaf(y, x, 3.3333331174E-1f);
    y = y * x;
    y = fmaf(y, z, e * -2.12194440e-4f);
    y = fmaf(-z, 0.5f, y);
    x = fmaf(e, 0.693359375f, x + y);
    return invalid ? NAN : x;
}

/// Cephes sinf/cosf together, for the angles 2πu with u in [0, 1).
static void cephes_sincosf(float angle, float *s, float *c) {
    uint32_t sign_sin = bits_of(angle) & 0x80000000u;
    float x = fabsf(angle);
    float y = x * 1.27323954473516f;  // 4/π
    int32_t j = (int32_t)y;
    j = (j + 1) & ~1;
    y = (float)j;
    const uint32_t swap_sin = (uint32_t)(j & 4) << 29;
    const int first_poly_is_sine = (j & 2) == 0;
    x = fmaf(y, -0.78515625f, x);
    x = fmaf(y, -2.4187564849853515625e-4f, x);
    x = fmaf(y, -3.77489497744594108e-8f, x);
    const uint32_t sign_cos = (uint32_t)(~(j - 2) & 4) << 29;
    sign_sin ^= swap_sin;
    const float z = x * x;
    float cp = 2.443315711809948E-005f;
    cp = fmaf(cp, z, -1.388731625493765E-003f);
    cp = fmaf(cp, z, 4.166664568298827E-002f);
    cp = cp * z;
    cp = fmaf(cp, z, -(z * 0.5f));
    cp = cp + 1.0f;
    float sp = -1.9515295891E-4f;
    sp = fmaf(sp, z, 8.3321608736E-3f);
    sp = fmaf(sp, z, -1.6666654611E-1f);
    sp = sp * z;
    sp = fmaf(sp, x, x);
    const float sine = first_poly_is_sine ? sp : cp;
    const float cosine = first_poly_is_sine ? cp : sp;
    *s = float_of(bits_of(sine) ^ sign_sin);
    *c = float_of(bits_of(cosine) ^ sign_cos);
}

static inline float uniform24(sk_mt19937 *g) {
    return (float)((double)(sk_mt19937_next(g) & 0xffffffu) * 0x1p-24);
}

static void box_muller16(float *d) {
    const float two_pi = (float)(2.0 * 3.14159265358979323846);
    for (int j = 0; j < 8; j++) {
        const float u1 = 1.0f - d[j];
        const float u2 = d[j + 8];
        const float radius = sqrtf(-2.0f * cephes_logf(u1));
        float s, c;
        cephes_sincosf(two_pi * u2, &s, &c);
        d[j] = radius * c;      // mean 0, std 1: torch's final fmadd(n, 1, 0) is exact
        d[j + 8] = radius * s;
    }
}

void sk_torch_randn(sk_mt19937 *g, float *out, int64_t n) {
    for (int64_t i = 0; i < n; i++) out[i] = uniform24(g);
    for (int64_t i = 0; i + 16 <= n; i += 16) box_muller16(out + i);
    if (n % 16 != 0) {  // torch redraws the last 16 and transforms them again
        float *tail = out + n - 16;
        for (int i = 0; i < 16; i++) tail[i] = uniform24(g);
        box_muller16(tail);
    }
}
