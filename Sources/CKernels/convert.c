// Exact conversions between f32 and the storage types, following torch 2.13 on CPU bit for bit:
// - f16: IEEE round-to-nearest-even, overflow to inf; NaN stays NaN with sign and top payload
//   bits, quiet bit set (what F16C's vcvtps2ph does, and torch uses it).
// - bf16: round-to-nearest-even on the top 16 bits; every NaN becomes 0xFFFF (torch's vectorised
//   CPU path, which `Tensor.to(torch.bfloat16)` takes, writes all-ones for NaN).
// - float8_e4m3fn: no infinities; finite values beyond 448 and ±inf saturate to ±448; NaN keeps
//   its sign as 0x7F / 0xFF.
// - float8_e5m2: IEEE-like with inf; overflow rounds to ±inf; NaN keeps its sign as 0x7F / 0xFF.
// Checked against torch on every code and a sweep of f32 values (Tests/Fixtures/dtypes).
#include "ckernels.h"
#include "simd.h"

float sk_f8e4m3fn_table[256];
float sk_f8e5m2_table[256];

float sk_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t e = (h >> 10) & 0x1f, m = h & 0x3ff;
    if (e == 0x1f) return sk_float(sign | 0x7f800000u | (m << 13) | (m ? 0x400000u : 0));
    if (e == 0) {
        float v = (float)m * 0x1p-24f;
        return sk_float(sign | sk_bits(v));
    }
    return sk_float(sign | ((e + 112) << 23) | (m << 13));
}

// Round the 24-bit significand `mant` of a value mant * 2^-s units to an integer, to nearest even.
static inline uint32_t sk_round_shift(uint32_t mant, uint32_t s) {
    if (s >= 25) return 0;
    uint32_t r = mant >> s, rem = mant & ((1u << s) - 1), half = 1u << (s - 1);
    if (rem > half || (rem == half && (r & 1))) r++;
    return r;
}

uint16_t sk_f32_to_f16(float f) {
    uint32_t x = sk_bits(f), sign = (x >> 16) & 0x8000, ax = x & 0x7fffffff;
    if (ax > 0x7f800000u) return (uint16_t)(sign | 0x7e00 | ((ax >> 13) & 0x3ff));
    if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00);  // >= 65520 rounds to inf
    uint32_t e = ax >> 23;
    if (e < 113) {  // below 2^-14: an f16 subnormal (unit 2^-24) or zero
        if (e == 0) return (uint16_t)sign;
        uint32_t mant = (ax & 0x7fffff) | 0x800000;
        return (uint16_t)(sign | sk_round_shift(mant, 126 - e));
    }
    uint32_t h = ((e - 112) << 10) | ((ax & 0x7fffff) >> 13), rem = ax & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) h++;
    return (uint16_t)(sign | h);
}

float sk_bf16_to_f32(uint16_t h) { return sk_float((uint32_t)h << 16); }

uint16_t sk_f32_to_bf16(float f) {
    uint32_t x = sk_bits(f);
    if ((x & 0x7fffffff) > 0x7f800000u) return 0xffff;
    return (uint16_t)((x + 0x7fff + ((x >> 16) & 1)) >> 16);
}

float sk_f8e4m3fn_to_f32(uint8_t v) {
    uint32_t sign = (uint32_t)(v & 0x80) << 24, e = (v >> 3) & 0xf, m = v & 7;
    if (e == 0xf && m == 7) return sk_float(sign | 0x7fc00000u);
    float r = e == 0 ? (float)m * 0x1p-9f : sk_float(((e + 120) << 23) | (m << 20));
    return sk_float(sign | sk_bits(r));
}

uint8_t sk_f32_to_f8e4m3fn(float f) {
    uint32_t x = sk_bits(f), sign = (x >> 24) & 0x80, ax = x & 0x7fffffff;
    if (ax > 0x7f800000u) return (uint8_t)(sign | 0x7f);
    if (ax >= 0x43e00000u) return (uint8_t)(sign | 0x7e);  // >= 448 (and inf) saturate
    uint32_t e = ax >> 23;
    if (e < 121) {  // below 2^-6: subnormal, unit 2^-9
        if (e == 0) return (uint8_t)sign;
        return (uint8_t)(sign | sk_round_shift((ax & 0x7fffff) | 0x800000, 141 - e));
    }
    uint32_t h = ((e - 120) << 3) | ((ax & 0x7fffff) >> 20), rem = ax & 0xfffff;
    if (rem > 0x80000 || (rem == 0x80000 && (h & 1))) h++;
    if (h > 0x7e) h = 0x7e;
    return (uint8_t)(sign | h);
}

float sk_f8e5m2_to_f32(uint8_t v) { return sk_f16_to_f32((uint16_t)v << 8); }

uint8_t sk_f32_to_f8e5m2(float f) {
    uint32_t x = sk_bits(f), sign = (x >> 24) & 0x80, ax = x & 0x7fffffff;
    if (ax > 0x7f800000u) return (uint8_t)(sign | 0x7f);
    if (ax >= 0x47700000u) return (uint8_t)(sign | 0x7c);  // >= 61440 rounds to inf
    uint32_t e = ax >> 23;
    if (e < 113) {  // below 2^-14: subnormal, unit 2^-16
        if (e == 0) return (uint8_t)sign;
        return (uint8_t)(sign | sk_round_shift((ax & 0x7fffff) | 0x800000, 134 - e));
    }
    uint32_t h = ((e - 112) << 2) | ((ax & 0x7fffff) >> 21), rem = ax & 0x1fffff;
    if (rem > 0x100000 || (rem == 0x100000 && (h & 1))) h++;
    return (uint8_t)(sign | h);
}

__attribute__((constructor)) static void sk_fill_fp8_tables(void) {
    for (int i = 0; i < 256; i++) {
        sk_f8e4m3fn_table[i] = sk_f8e4m3fn_to_f32((uint8_t)i);
        sk_f8e5m2_table[i] = sk_f8e5m2_to_f32((uint8_t)i);
    }
}

static void widen_scalar(int dtype, const void *src, float *dst, int64_t n) {
    switch (dtype) {
    case SK_DT_F32: memcpy(dst, src, (size_t)n * 4); break;
    case SK_DT_F16: { const uint16_t *s = src; for (int64_t i = 0; i < n; i++) dst[i] = sk_f16_to_f32(s[i]); } break;
    case SK_DT_BF16: { const uint16_t *s = src; for (int64_t i = 0; i < n; i++) dst[i] = sk_float((uint32_t)s[i] << 16); } break;
    case SK_DT_F8E4M3FN: { const uint8_t *s = src; for (int64_t i = 0; i < n; i++) dst[i] = sk_f8e4m3fn_table[s[i]]; } break;
    case SK_DT_F8E5M2: { const uint8_t *s = src; for (int64_t i = 0; i < n; i++) dst[i] = sk_f8e5m2_table[s[i]]; } break;
    }
}

SK_AVX2 static void widen_avx2(int dtype, const void *src, float *dst, int64_t n) {
    int64_t i = 0;
    switch (dtype) {
    case SK_DT_F16: {
        const uint16_t *s = src;
        for (; i + 8 <= n; i += 8)
            _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(s + i))));
        for (; i < n; i++) dst[i] = sk_f16_to_f32(s[i]);
    } break;
    case SK_DT_BF16: {
        const uint16_t *s = src;
        for (; i + 8 <= n; i += 8) {
            __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(s + i)));
            _mm256_storeu_ps(dst + i, _mm256_castsi256_ps(_mm256_slli_epi32(w, 16)));
        }
        for (; i < n; i++) dst[i] = sk_float((uint32_t)s[i] << 16);
    } break;
    case SK_DT_F8E4M3FN:
    case SK_DT_F8E5M2: {
        const uint8_t *s = src;
        const float *table = dtype == SK_DT_F8E4M3FN ? sk_f8e4m3fn_table : sk_f8e5m2_table;
        for (; i + 8 <= n; i += 8) {
            __m256i idx = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(s + i)));
            _mm256_storeu_ps(dst + i, _mm256_i32gather_ps(table, idx, 4));
        }
        for (; i < n; i++) dst[i] = table[s[i]];
    } break;
    default: widen_scalar(dtype, src, dst, n);
    }
}

SK_AVX512 static void widen_avx512(int dtype, const void *src, float *dst, int64_t n) {
    int64_t i = 0;
    switch (dtype) {
    case SK_DT_F16: {
        const uint16_t *s = src;
        for (; i + 16 <= n; i += 16)
            _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(s + i))));
        widen_avx2(dtype, s + i, dst + i, n - i);
    } break;
    case SK_DT_BF16: {
        const uint16_t *s = src;
        for (; i + 16 <= n; i += 16) {
            __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(s + i)));
            _mm512_storeu_ps(dst + i, _mm512_castsi512_ps(_mm512_slli_epi32(w, 16)));
        }
        widen_avx2(dtype, s + i, dst + i, n - i);
    } break;
    default: widen_avx2(dtype, src, dst, n);
    }
}

void sk_widen(int isa, int dtype, const void *src, float *dst, int64_t n) {
    if (isa >= SK_ISA_AVX512) widen_avx512(dtype, src, dst, n);
    else if (isa >= SK_ISA_AVX2) widen_avx2(dtype, src, dst, n);
    else widen_scalar(dtype, src, dst, n);
}

void sk_narrow(int dtype, const float *src, void *dst, int64_t n) {
    switch (dtype) {
    case SK_DT_F32: memcpy(dst, src, (size_t)n * 4); break;
    case SK_DT_F16: { uint16_t *d = dst; for (int64_t i = 0; i < n; i++) d[i] = sk_f32_to_f16(src[i]); } break;
    case SK_DT_BF16: { uint16_t *d = dst; for (int64_t i = 0; i < n; i++) d[i] = sk_f32_to_bf16(src[i]); } break;
    case SK_DT_F8E4M3FN: { uint8_t *d = dst; for (int64_t i = 0; i < n; i++) d[i] = sk_f32_to_f8e4m3fn(src[i]); } break;
    case SK_DT_F8E5M2: { uint8_t *d = dst; for (int64_t i = 0; i < n; i++) d[i] = sk_f32_to_f8e5m2(src[i]); } break;
    }
}
