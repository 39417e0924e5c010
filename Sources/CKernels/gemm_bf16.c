// bf16 GEMM on AVX512-BF16 (VDPBF16PS): C = bf16(A) · bf16(B)ᵀ-or-not (+ bias), products of bf16
// pairs accumulated in f32 — the rounding torch's bf16 CPU matmul makes at its inputs (its output
// is then rounded to bf16 as well; here C stays f32). A (activations, f32) and B (weights, any float
// storage) are rounded to bf16 with round-to-nearest-even while they are packed: B into slivers of
// 32 columns holding, per pair of k, the two values of each column side by side (one zmm = 16
// columns × 2 k), A into slivers of 12 rows holding each row's pair of k as one 32-bit word that the
// micro-kernel broadcasts. Odd K is padded with a zero. Single-threaded over a row range; the caller
// splits rows.
#include "ckernels.h"
#include "simd.h"

#define SK_BF16 __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")))

enum { BF_MR = 12, BF_NR = 32, BF_KC = 512, BF_MC = 240 };

static inline uint16_t bf16_of(int dtype, const char *base, int64_t index) {
    switch (dtype) {
    case SK_DT_BF16: { uint16_t h; memcpy(&h, base + index * 2, 2); return h; }
    case SK_DT_F32: { float f; memcpy(&f, base + index * 4, 4); return sk_f32_to_bf16(f); }
    case SK_DT_F16: { uint16_t h; memcpy(&h, base + index * 2, 2); return sk_f32_to_bf16(sk_f16_to_f32(h)); }
    case SK_DT_F8E4M3FN: return sk_f32_to_bf16(sk_f8e4m3fn_table[(uint8_t)base[index]]);
    default: return sk_f32_to_bf16(sk_f8e5m2_table[(uint8_t)base[index]]);
    }
}

// B(k0 + 0..<kc, n0 + 0..<NR) → kc/2 (rounded up) groups of NR pairs; columns past nvalid are zero.
static void pack_b(const void *B, int btype, int64_t ldb, int transB, int64_t k0, int64_t kc, int64_t K,
                   int64_t n0, int64_t nvalid, uint16_t *dst) {
    const char *base = B;
    for (int64_t p = 0; p < kc; p += 2)
        for (int64_t j = 0; j < BF_NR; j++)
            for (int64_t q = 0; q < 2; q++) {
                int64_t k = k0 + p + q, n = n0 + j;
                uint16_t v = 0;
                if (j < nvalid && k < K) v = bf16_of(btype, base, transB ? n * ldb + k : k * ldb + n);
                dst[(p / 2) * BF_NR * 2 + j * 2 + q] = v;
            }
}

// 16 floats → 16 bf16 as sk_f32_to_bf16 rounds them (nearest even; every NaN 0xFFFF), in 16-bit lanes
// of the low half of a 32-bit-lane vector.
SK_BF16 static inline __m512i round16_bf16(__m512 x) {
    __m512i u = _mm512_castps_si512(x);
    __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(_mm512_set1_epi32(0x7fff), lsb)), 16);
    return _mm512_mask_mov_epi32(r, _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q), _mm512_set1_epi32(0xffff));
}

// A(m0 + 0..<MR, k0 + 0..<kc) (f32) → kc/2 groups of MR pairs; rows past mvalid are zero. Each row's
// pairs are rounded 16 at a time (32 floats → 16 words of two bf16) and written at their places.
SK_BF16 static void pack_a(const float *A, int64_t lda, int64_t m0, int64_t mvalid, int64_t k0, int64_t kc, int64_t K,
                           uint16_t *dst) {
    uint32_t *d32 = (uint32_t *)dst;
    int64_t pairs = (kc + 1) / 2;
    for (int64_t i = 0; i < BF_MR; i++) {
        const float *row = A + (m0 + i) * lda + k0;
        int64_t p = 0;
        if (i < mvalid) {
            for (; 2 * p + 32 <= kc && k0 + 2 * p + 32 <= K; p += 16) {
                __m512i lo = round16_bf16(_mm512_loadu_ps(row + 2 * p)), hi = round16_bf16(_mm512_loadu_ps(row + 2 * p + 16));
                // lanes: lo = k 0..15, hi = k 16..31 (each a bf16 in a 32-bit lane) → 16 pairs (k even | k odd << 16)
                __m512i even = _mm512_permutex2var_epi32(lo, _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30), hi);
                __m512i odd = _mm512_permutex2var_epi32(lo, _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31), hi);
                uint32_t w[16];
                _mm512_storeu_si512((void *)w, _mm512_or_si512(even, _mm512_slli_epi32(odd, 16)));
                for (int q = 0; q < 16; q++) d32[(p + q) * BF_MR + i] = w[q];
            }
        }
        for (; p < pairs; p++) {
            int64_t k = k0 + 2 * p;
            uint32_t lo = i < mvalid && k < K ? sk_f32_to_bf16(row[2 * p]) : 0;
            uint32_t hi = i < mvalid && k + 1 < K && 2 * p + 1 < kc ? sk_f32_to_bf16(row[2 * p + 1]) : 0;
            d32[p * BF_MR + i] = lo | (hi << 16);
        }
    }
}

SK_BF16 static void ukernel(int64_t pairs, const uint16_t *a, const uint16_t *b, float *c, int64_t ldc, int64_t rows,
                            int64_t cols, int accumulate) {
    __m512 acc0[BF_MR], acc1[BF_MR];
#pragma unroll
    for (int i = 0; i < BF_MR; i++) { acc0[i] = _mm512_setzero_ps(); acc1[i] = _mm512_setzero_ps(); }
    for (int64_t p = 0; p < pairs; p++) {
        __m512bh b0 = (__m512bh)_mm512_load_si512((const void *)b), b1 = (__m512bh)_mm512_load_si512((const void *)(b + 32));
#pragma unroll
        for (int i = 0; i < BF_MR; i++) {
            int32_t pair;
            memcpy(&pair, a + 2 * i, 4);
            __m512bh ai = (__m512bh)_mm512_set1_epi32(pair);
            acc0[i] = _mm512_dpbf16_ps(acc0[i], ai, b0);
            acc1[i] = _mm512_dpbf16_ps(acc1[i], ai, b1);
        }
        a += 2 * BF_MR;
        b += 2 * BF_NR;
    }
    if (rows == BF_MR && cols == BF_NR) {
#pragma unroll
        for (int i = 0; i < BF_MR; i++) {
            float *ci = c + i * ldc;
            if (accumulate) {
                acc0[i] = _mm512_add_ps(acc0[i], _mm512_loadu_ps(ci));
                acc1[i] = _mm512_add_ps(acc1[i], _mm512_loadu_ps(ci + 16));
            }
            _mm512_storeu_ps(ci, acc0[i]);
            _mm512_storeu_ps(ci + 16, acc1[i]);
        }
        return;
    }
    float tile[BF_MR * BF_NR];
#pragma unroll
    for (int i = 0; i < BF_MR; i++) {
        _mm512_storeu_ps(tile + i * BF_NR, acc0[i]);
        _mm512_storeu_ps(tile + i * BF_NR + 16, acc1[i]);
    }
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < cols; j++) c[i * ldc + j] = (accumulate ? c[i * ldc + j] : 0.0f) + tile[i * BF_NR + j];
}

// The whole of B, packed once per call and shared by every thread: for each k block of KC, for each
// sliver of NR columns, the block's pairs (K rounded up to even, N to NR, with zeros).
size_t sk_gemm_bf16_packed_b_bytes(int64_t K, int64_t N) {
    int64_t blocks = (K + BF_KC - 1) / BF_KC, slivers = (N + BF_NR - 1) / BF_NR;
    return (size_t)(blocks * slivers * (BF_KC / 2) * BF_NR * 2) * 2 + 128;
}

// Where block pc's sliver jr starts in the packed B.
static inline int64_t packed_offset(int64_t pc, int64_t jr, int64_t N) {
    int64_t slivers = (N + BF_NR - 1) / BF_NR;
    return ((pc / BF_KC) * slivers + jr / BF_NR) * (BF_KC / 2) * BF_NR * 2;
}

// A full sliver of B stored f32 along n (rows of k contiguous: the convolution's im2col columns):
// rows k and k+1 are rounded 16 columns at a time and interleaved into pairs (k | k+1 << 16).
SK_BF16 static void pack_b_rows_f32(const float *B, int64_t ldb, int64_t k0, int64_t kc, int64_t K, int64_t n0,
                                    uint16_t *dst) {
    uint32_t *d32 = (uint32_t *)dst;
    for (int64_t p = 0; p < kc; p += 2) {
        const float *even = B + (k0 + p) * ldb + n0, *odd = even + ldb;
        int has_odd = p + 1 < kc && k0 + p + 1 < K;
        for (int64_t j = 0; j < BF_NR; j += 16) {
            __m512i lo = round16_bf16(_mm512_loadu_ps(even + j));
            __m512i hi = has_odd ? round16_bf16(_mm512_loadu_ps(odd + j)) : _mm512_setzero_si512();
            _mm512_storeu_si512((void *)(d32 + (p / 2) * BF_NR + j), _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16)));
        }
    }
}

void sk_gemm_bf16_pack_b(const void *B, int btype, int64_t ldb, int transB, int64_t K, int64_t N, int64_t s0, int64_t s1,
                         void *dst) {
    uint16_t *packed = (uint16_t *)(((uintptr_t)dst + 63) & ~(uintptr_t)63);
    for (int64_t pc = 0; pc < K; pc += BF_KC) {
        int64_t kc = K - pc < BF_KC ? K - pc : BF_KC;
        for (int64_t s = s0; s < s1; s++) {
            int64_t jr = s * BF_NR, cols = N - jr < BF_NR ? N - jr : BF_NR;
            uint16_t *d = packed + packed_offset(pc, jr, N);
            if (transB && btype == SK_DT_BF16 && cols == BF_NR && kc % 2 == 0) {
                // Each column's pair (k, k+1) already sits side by side in its weight row: copy 32-bit words.
                for (int64_t j = 0; j < BF_NR; j++) {
                    const uint32_t *src = (const uint32_t *)((const uint16_t *)B + (jr + j) * ldb + pc);
                    uint32_t *col = (uint32_t *)d + j;
                    for (int64_t p = 0; p < kc / 2; p++) col[p * BF_NR] = src[p];
                }
            } else if (!transB && btype == SK_DT_F32 && cols == BF_NR && (sk_cpu_features() & SK_FEATURE_AVX512BF16)) {
                pack_b_rows_f32((const float *)B, ldb, pc, kc, K, jr, d);
            } else {
                pack_b(B, btype, ldb, transB, pc, kc, K, jr, cols, d);
            }
        }
    }
}

size_t sk_gemm_bf16_workspace_bytes(void) { return (size_t)(BF_MC * BF_KC) * 2 + 128; }

int sk_gemm_bf16(int64_t m0, int64_t m1, int64_t N, int64_t K, const float *A, int64_t lda, const void *packedB,
                 float *C, int64_t ldc, const float *bias, void *workspace) {
    if (!(sk_cpu_features() & SK_FEATURE_AVX512BF16)) return 0;
    uint16_t *packA = (uint16_t *)(((uintptr_t)workspace + 63) & ~(uintptr_t)63);
    const uint16_t *packed = (const uint16_t *)(((uintptr_t)packedB + 63) & ~(uintptr_t)63);
    if (K == 0) {
        for (int64_t i = m0; i < m1; i++) for (int64_t j = 0; j < N; j++) C[i * ldc + j] = bias ? bias[j] : 0.0f;
        return 1;
    }
    for (int64_t pc = 0; pc < K; pc += BF_KC) {
        int64_t kc = K - pc < BF_KC ? K - pc : BF_KC, pairs = (kc + 1) / 2;
        int acc = pc > 0;
        for (int64_t ic = m0; ic < m1; ic += BF_MC) {
            int64_t mvalid = m1 - ic < BF_MC ? m1 - ic : BF_MC;
            for (int64_t ir = 0; ir < mvalid; ir += BF_MR)
                pack_a(A, lda, ic + ir, mvalid - ir < BF_MR ? mvalid - ir : BF_MR, pc, kc, K, packA + ir * pairs * 2);
            for (int64_t jr = 0; jr < N; jr += BF_NR) {
                int64_t cols = N - jr < BF_NR ? N - jr : BF_NR;
                const uint16_t *b = packed + packed_offset(pc, jr, N);
                for (int64_t ir = 0; ir < mvalid; ir += BF_MR) {
                    int64_t rows = mvalid - ir < BF_MR ? mvalid - ir : BF_MR;
                    ukernel(pairs, packA + ir * pairs * 2, b, C + (ic + ir) * ldc + jr, ldc, rows, cols, acc);
                }
            }
        }
    }
    if (bias)
        for (int64_t i = m0; i < m1; i++)
            for (int64_t j = 0; j < N; j++) C[i * ldc + j] += bias[j];
    return 1;
}
