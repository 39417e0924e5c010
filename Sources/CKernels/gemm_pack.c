// The f32 GEMM's packing (gemm.c's operands into the micro-kernel's slivers), widening from any float
// storage type on the way; the vector paths transpose in registers.
#include "ckernels.h"
#include "simd.h"
#include "gemm_shapes.h"

// ---- packing ----
// B(k0:k0+kc, n0:n0+nc) goes into slivers of nr columns (sliver s: kc rows of nr floats), widened
// from its storage type on the way. Columns past `nvalid` are zero so the micro-kernel never
// branches. The vector path reads B in its natural order (rows of k for a transposed weight,
// rows of n otherwise) and transposes 8x8 blocks in registers.

static inline float widen_one(int dtype, const char *base, int64_t index) {
    switch (dtype) {
    case SK_DT_F32: { float f; memcpy(&f, base + index * 4, 4); return f; }
    case SK_DT_F16: { uint16_t h; memcpy(&h, base + index * 2, 2); return sk_f16_to_f32(h); }
    case SK_DT_BF16: { uint16_t h; memcpy(&h, base + index * 2, 2); return sk_float((uint32_t)h << 16); }
    case SK_DT_F8E4M3FN: return sk_f8e4m3fn_table[(uint8_t)base[index]];
    default: return sk_f8e5m2_table[(uint8_t)base[index]];
    }
}

static void pack_b_scalar(int nr, const void *B, int btype, int64_t ldb, int transB, int64_t k0, int64_t kc,
                          int64_t n0, int64_t nc, int64_t nvalid, float *dst, int64_t first, int64_t step) {
    const char *base = B;
    for (int64_t j0 = first * nr; j0 < nc; j0 += step * nr) {
        float *sliver = dst + j0 * kc;
        for (int64_t p = 0; p < kc; p++)
            for (int64_t j = 0; j < nr; j++) {
                int64_t n = j0 + j;
                sliver[p * nr + j] = n < nvalid ? widen_one(btype, base, transB ? (n0 + n) * ldb + k0 + p : (k0 + p) * ldb + n0 + n) : 0.0f;
            }
    }
}

// Eight consecutive elements of `dtype` at element index `index`, widened.
SK_AVX2 static inline __m256 widen8_avx2(int dtype, const char *base, int64_t index) {
    switch (dtype) {
    case SK_DT_F32: return _mm256_loadu_ps((const float *)(base + index * 4));
    case SK_DT_F16: return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(base + index * 2)));
    case SK_DT_BF16:
        return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(base + index * 2))), 16));
    default: {
        const float *table = dtype == SK_DT_F8E4M3FN ? sk_f8e4m3fn_table : sk_f8e5m2_table;
        return _mm256_i32gather_ps(table, _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(base + index))), 4);
    }
    }
}

SK_AVX2 static inline void transpose8_avx2(__m256 r[8]) {
    __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    r[0] = _mm256_permute2f128_ps(u0, u4, 0x20); r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
    r[2] = _mm256_permute2f128_ps(u2, u6, 0x20); r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
    r[4] = _mm256_permute2f128_ps(u0, u4, 0x31); r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
    r[6] = _mm256_permute2f128_ps(u2, u6, 0x31); r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

// Used by the AVX2 and AVX-512 paths (nr is 16 or 32, a multiple of 8).
SK_AVX2 static void pack_b_avx2(int nr, const void *B, int btype, int64_t ldb, int transB, int64_t k0, int64_t kc,
                                int64_t n0, int64_t nc, int64_t nvalid, float *dst, int64_t first, int64_t step) {
    const char *base = B;
    if (!transB) {
        // B(k, n) = B[k * ldb + n]: each row of k is contiguous along n.
        for (int64_t p = 0; p < kc; p++) {
            int64_t row = (k0 + p) * ldb + n0;
            for (int64_t j0 = first * nr; j0 < nc; j0 += step * nr) {
                float *d = dst + j0 * kc + p * nr;
                for (int64_t j = 0; j < nr; j += 8) {
                    int64_t n = j0 + j;
                    if (n + 8 <= nvalid) _mm256_store_ps(d + j, widen8_avx2(btype, base, row + n));
                    else for (int64_t q = 0; q < 8; q++) d[j + q] = n + q < nvalid ? widen_one(btype, base, row + n + q) : 0.0f;
                }
            }
        }
        return;
    }
    // B(k, n) = B[n * ldb + k]: each weight row n is contiguous along k; transpose 8x8 blocks.
    for (int64_t j0 = first * nr; j0 < nc; j0 += step * nr) {
        float *sliver = dst + j0 * kc;
        for (int64_t j = 0; j < nr; j += 8) {
            int64_t n = j0 + j;
            int full = n + 8 <= nvalid;
            int64_t p = 0;
            if (full) {
                for (; p + 8 <= kc; p += 8) {
                    __m256 r[8];
                    for (int q = 0; q < 8; q++) r[q] = widen8_avx2(btype, base, (n0 + n + q) * ldb + k0 + p);
                    transpose8_avx2(r);
                    for (int q = 0; q < 8; q++) _mm256_store_ps(sliver + (p + q) * nr + j, r[q]);
                }
            }
            for (; p < kc; p++)
                for (int q = 0; q < 8; q++)
                    sliver[p * nr + j + q] = n + q < nvalid ? widen_one(btype, base, (n0 + n + q) * ldb + k0 + p) : 0.0f;
        }
    }
}

// Packs slivers first, first + step, … of the panel (a team of `step` threads shares the work).
void sk_gemm_pack_panel(int isa, const sk_gemm_shape *s, const void *B, int btype, int64_t ldb, int transB,
                        int64_t k0, int64_t kc, int64_t n0, int64_t nc, int64_t nvalid, float *dst, int64_t first, int64_t step) {
    const int nr = s->nv * s->w;
    if (isa >= SK_ISA_AVX2) pack_b_avx2(nr, B, btype, ldb, transB, k0, kc, n0, nc, nvalid, dst, first, step);
    else pack_b_scalar(nr, B, btype, ldb, transB, k0, kc, n0, nc, nvalid, dst, first, step);
}

// A full 12-row f32 sliver (the AVX-512 tile's height), eight steps of k at a time: rows 0-7 as an
// 8x8 register transpose, rows 8-11 as two 4x4 ones. The scalar gather (twelve strided reads per
// step of k) cost ~4% of a 2048² GEMM.
SK_AVX2 static void pack_a12_f32_avx2(const float *src, int64_t lda, int64_t kc, float *sliver) {
    int64_t p = 0;
    for (; p + 8 <= kc; p += 8) {
        __m256 r[8];
        for (int i = 0; i < 8; i++) r[i] = _mm256_loadu_ps(src + i * lda + p);
        transpose8_avx2(r);
        __m256 t0 = _mm256_loadu_ps(src + 8 * lda + p), t1 = _mm256_loadu_ps(src + 9 * lda + p);
        __m256 t2 = _mm256_loadu_ps(src + 10 * lda + p), t3 = _mm256_loadu_ps(src + 11 * lda + p);
        __m256 u0 = _mm256_unpacklo_ps(t0, t1), u1 = _mm256_unpackhi_ps(t0, t1);
        __m256 u2 = _mm256_unpacklo_ps(t2, t3), u3 = _mm256_unpackhi_ps(t2, t3);
        // column q of rows 8-11: lanes (q%4 within each 128-bit half)
        __m256 c0 = _mm256_shuffle_ps(u0, u2, 0x44), c1 = _mm256_shuffle_ps(u0, u2, 0xEE);
        __m256 c2 = _mm256_shuffle_ps(u1, u3, 0x44), c3 = _mm256_shuffle_ps(u1, u3, 0xEE);
        __m128 tail[8] = {_mm256_castps256_ps128(c0), _mm256_castps256_ps128(c1), _mm256_castps256_ps128(c2),
                          _mm256_castps256_ps128(c3), _mm256_extractf128_ps(c0, 1), _mm256_extractf128_ps(c1, 1),
                          _mm256_extractf128_ps(c2, 1), _mm256_extractf128_ps(c3, 1)};
        for (int q = 0; q < 8; q++) {
            _mm256_storeu_ps(sliver + (p + q) * 12, r[q]);
            _mm_storeu_ps(sliver + (p + q) * 12 + 8, tail[q]);
        }
    }
    for (; p < kc; p++)
        for (int i = 0; i < 12; i++) sliver[p * 12 + i] = src[i * lda + p];
}

// Pack A(m0:m0+mc, k0:k0+kc) into slivers of mr rows, zero rows past the end, widening from A's
// storage type (conv2d passes its weights as A). Reads mr row streams, writes each sliver in order.
void sk_gemm_pack_block(const sk_gemm_shape *s, const void *A, int atype, int64_t lda, int64_t m0, int64_t mc,
                        int64_t mvalid, int64_t k0, int64_t kc, float *dst) {
    const int mr = s->mr, avx2 = s->w >= 8;
    const char *base = A;
    for (int64_t i0 = 0; i0 < mc; i0 += mr) {
        float *sliver = dst + i0 * kc;
        int64_t rows = mvalid - i0 < mr ? mvalid - i0 : mr;
        if (rows == mr && atype == SK_DT_F32 && mr == 12 && avx2) {
            pack_a12_f32_avx2((const float *)A + (m0 + i0) * lda + k0, lda, kc, sliver);
        } else if (rows == mr && atype == SK_DT_F32) {
            const float *src = (const float *)A + (m0 + i0) * lda + k0;
            for (int64_t p = 0; p < kc; p++)
                for (int i = 0; i < mr; i++) sliver[p * mr + i] = src[i * lda + p];
        } else {
            for (int64_t p = 0; p < kc; p++)
                for (int64_t i = 0; i < mr; i++)
                    sliver[p * mr + i] = i < rows ? widen_one(atype, base, (m0 + i0 + i) * lda + k0 + p) : 0.0f;
        }
    }
}
