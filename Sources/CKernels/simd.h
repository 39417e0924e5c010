// Private: target attributes shared by the kernel files. Never included by the public header.
#ifndef SLUICE_SIMD_H
#define SLUICE_SIMD_H
#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#define SK_AVX2 __attribute__((target("avx2,fma,f16c")))
#define SK_AVX512 __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq")))

static inline uint32_t sk_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float sk_float(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

// 256-entry widening tables for the fp8 formats, filled once at load time (convert.c).
extern float sk_f8e4m3fn_table[256];
extern float sk_f8e5m2_table[256];

// Vector exp(x) for AVX2 / AVX-512 (ops.c): range reduction x = n ln2 + r and a degree-6
// polynomial for e^r; relative error below 2e-7 over the f32 range, exact 0 below -87.3.
#endif
