// Blocked GEMM in the Goto/BLIS style: B is packed a KC x NC panel at a time (widened from its
// storage type to f32 as it is packed), A an MC x KC block at a time, and a register-tiled
// micro-kernel sweeps the packed operands. One call is single-threaded over a column range;
// SluiceBackends splits the columns across threads.
#include "ckernels.h"
#include "simd.h"
#include "gemm_shapes.h"

// ---- micro-kernels ----
#define UK_NAME ukernel_scalar
#define UK_TARGET
#define UK_MR 4
#define UK_W 4
typedef struct { float v[4]; } sk_v4;
static inline sk_v4 v4_zero(void) { sk_v4 r = {{0, 0, 0, 0}}; return r; }
static inline sk_v4 v4_load(const float *p) { sk_v4 r; memcpy(r.v, p, 16); return r; }
static inline void v4_store(float *p, sk_v4 v) { memcpy(p, v.v, 16); }
static inline sk_v4 v4_bcast(const float *p) { sk_v4 r = {{*p, *p, *p, *p}}; return r; }
static inline sk_v4 v4_fma(sk_v4 a, sk_v4 b, sk_v4 c) {
    for (int i = 0; i < 4; i++) c.v[i] += a.v[i] * b.v[i];
    return c;
}
static inline sk_v4 v4_add(sk_v4 a, sk_v4 b) { for (int i = 0; i < 4; i++) a.v[i] += b.v[i]; return a; }
#define UK_VEC sk_v4
#define UK_ZERO v4_zero
#define UK_LOAD v4_load
#define UK_LOADU v4_load
#define UK_STOREU v4_store
#define UK_BCAST v4_bcast
#define UK_FMA v4_fma
#define UK_ADD v4_add
#include "gemm_ukernel.inc"
#undef UK_NAME
#undef UK_TARGET
#undef UK_MR
#undef UK_W
#undef UK_VEC
#undef UK_ZERO
#undef UK_LOAD
#undef UK_LOADU
#undef UK_STOREU
#undef UK_BCAST
#undef UK_FMA
#undef UK_ADD

#define UK_NAME ukernel_avx2
#define UK_TARGET SK_AVX2
#define UK_MR 6
#define UK_W 8
#define UK_VEC __m256
#define UK_ZERO _mm256_setzero_ps
#define UK_LOAD _mm256_load_ps
#define UK_LOADU _mm256_loadu_ps
#define UK_STOREU _mm256_storeu_ps
#define UK_BCAST _mm256_broadcast_ss
#define UK_FMA _mm256_fmadd_ps
#define UK_ADD _mm256_add_ps
#include "gemm_ukernel.inc"
#undef UK_NAME
#undef UK_TARGET
#undef UK_MR
#undef UK_W
#undef UK_VEC
#undef UK_ZERO
#undef UK_LOAD
#undef UK_LOADU
#undef UK_STOREU
#undef UK_BCAST
#undef UK_FMA
#undef UK_ADD

#define UK_NAME ukernel_avx512
#define UK_TARGET SK_AVX512
#define UK_MR 12
#define UK_W 16
#define UK_VEC __m512
#define UK_ZERO _mm512_setzero_ps
#define UK_LOAD _mm512_load_ps
#define UK_LOADU _mm512_loadu_ps
#define UK_STOREU _mm512_storeu_ps
#define UK_BCAST(p) _mm512_set1_ps(*(p))
#define UK_FMA _mm512_fmadd_ps
#define UK_ADD _mm512_add_ps
#include "gemm_ukernel.inc"

typedef void (*ukernel_fn)(int64_t, const float *, const float *, float *, int64_t, int64_t, int64_t, int);
static const ukernel_fn ukernels[3] = {ukernel_scalar, ukernel_avx2, ukernel_avx512};

static int clamp_isa(int isa) { return isa < 0 ? 0 : isa > SK_ISA_AVX512 ? SK_ISA_AVX512 : isa; }

int sk_gemm_nr(int isa) {
    const sk_gemm_shape *s = sk_gemm_shape_for(clamp_isa(isa));
    return s->nv * s->w;
}

size_t sk_gemm_workspace_floats(int isa) { return sk_gemm_workspace_floats_for(isa, INT64_MAX); }

size_t sk_gemm_workspace_floats_for(int isa, int64_t columns) {
    const sk_gemm_shape *s = sk_gemm_shape_for(clamp_isa(isa));
    int64_t nr = s->nv * s->w;
    int64_t panel = columns < s->nc ? (columns + nr - 1) / nr * nr : s->nc;
    // packed A block + packed B panel (no wider than the columns asked for) + alignment slack
    return (size_t)(s->mc * s->kc + s->kc * panel + 64);
}


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
static void pack_b(int isa, const sk_gemm_shape *s, const void *B, int btype, int64_t ldb, int transB,
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
static void pack_a(const sk_gemm_shape *s, const void *A, int atype, int64_t lda, int64_t m0, int64_t mc,
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

// The macro-kernel: pack rows [ic, ic + mvalid) of A for this k block, then sweep every micro-tile
// of C[ic.., c0 + 0..nvalid) against the packed B panel (ncp columns, slivers of nr).
static void macro_kernel(const sk_gemm_shape *s, ukernel_fn kernel, const void *A, int atype, int64_t lda,
                         int64_t ic, int64_t mvalid, int64_t pc, int64_t kc, float *packA, const float *packB,
                         int64_t ncp, int64_t nvalid, float *C, int64_t ldc, int64_t c0, int acc) {
    const int mr = s->mr, nr = s->nv * s->w;
    int64_t mcp = (mvalid + mr - 1) / mr * mr;
    pack_a(s, A, atype, lda, ic, mcp, mvalid, pc, kc, packA);
    for (int64_t jr = 0; jr < ncp; jr += nr) {
        int64_t cols = nvalid - jr < nr ? nvalid - jr : nr;
        for (int64_t ir = 0; ir < mcp; ir += mr) {
            int64_t rows = mvalid - ir < mr ? mvalid - ir : mr;
            kernel(kc, packA + ir * kc, packB + jr * kc, C + (ic + ir) * ldc + c0 + jr, ldc, rows, cols, acc);
        }
    }
}

void sk_gemm(int isa, int64_t m0, int64_t m1, int64_t n0, int64_t n1, int64_t K,
             const void *A, int atype, int64_t lda, const void *B, int btype, int64_t ldb, int transB,
             float *C, int64_t ldc, const float *bias, int accumulate, float *workspace) {
    isa = clamp_isa(isa);
    const sk_gemm_shape *s = sk_gemm_shape_for(isa);
    const ukernel_fn kernel = ukernels[isa];
    const int nr = s->nv * s->w;
    if (m1 <= m0 || n1 <= n0) return;
    float *ws = (float *)(((uintptr_t)workspace + 63) & ~(uintptr_t)63);
    float *packA = ws, *packB = ws + s->mc * s->kc;

    if (K == 0) {
        for (int64_t i = m0; i < m1; i++)
            for (int64_t j = n0; j < n1; j++)
                C[i * ldc + j] = (accumulate ? C[i * ldc + j] : 0.0f) + (bias ? bias[j] : 0.0f);
        return;
    }
    for (int64_t jc = n0; jc < n1; jc += s->nc) {
        int64_t nvalid = n1 - jc < s->nc ? n1 - jc : s->nc;
        int64_t ncp = (nvalid + nr - 1) / nr * nr;
        for (int64_t pc = 0; pc < K; pc += s->kc) {
            int64_t kc = K - pc < s->kc ? K - pc : s->kc;
            pack_b(isa, s, B, btype, ldb, transB, pc, kc, jc, ncp, nvalid, packB, 0, 1);
            int acc = accumulate || pc > 0;
            for (int64_t ic = m0; ic < m1; ic += s->mc) {
                int64_t mvalid = m1 - ic < s->mc ? m1 - ic : s->mc;
                macro_kernel(s, kernel, A, atype, lda, ic, mvalid, pc, kc, packA, packB, ncp, nvalid, C, ldc, jc, acc);
            }
        }
        if (bias)
            for (int64_t i = m0; i < m1; i++)
                for (int64_t j = jc; j < jc + nvalid; j++) C[i * ldc + j] += bias[j];
    }
}

// ---- a team of threads sharing one packed B panel (BLIS-style) ----
// Each thread packs every `size`-th sliver of the panel, all wait at a barrier, then each runs
// the micro-kernels for its own band of rows with its own packed A. Splitting rows without sharing
// the panel would make every thread pack all of B (measured ~7% of a 2-thread 2048² GEMM here).
#include <sched.h>
#include <stdatomic.h>

typedef struct {
    _Atomic int arrived;
    _Atomic int phase;
    // Row blocks are handed out from a counter per panel (two, alternating, so one can be reset
    // while the other is in use): a thread on a busier core simply takes fewer blocks.
    _Atomic int64_t next[2];
    int size;
    float *panel;
} sk_team;

size_t sk_gemm_team_bytes(void) { return sizeof(sk_team); }

void sk_gemm_team_init(void *team, int size, float *panel) {
    sk_team *t = team;
    atomic_init(&t->arrived, 0);
    atomic_init(&t->phase, 0);
    atomic_init(&t->next[0], 0);
    atomic_init(&t->next[1], 0);
    t->size = size;
    t->panel = (float *)(((uintptr_t)panel + 63) & ~(uintptr_t)63);
}

size_t sk_gemm_team_panel_floats(int isa, int64_t columns) {
    const sk_gemm_shape *s = sk_gemm_shape_for(clamp_isa(isa));
    int64_t nr = s->nv * s->w;
    int64_t panel = columns < s->nc ? (columns + nr - 1) / nr * nr : s->nc;
    return (size_t)(s->kc * panel + 16);
}

size_t sk_gemm_team_private_floats(int isa) {
    const sk_gemm_shape *s = sk_gemm_shape_for(clamp_isa(isa));
    return (size_t)(s->mc * s->kc + 16);
}

static void team_barrier(sk_team *t) {
    int phase = atomic_load_explicit(&t->phase, memory_order_acquire);
    if (atomic_fetch_add_explicit(&t->arrived, 1, memory_order_acq_rel) == t->size - 1) {
        atomic_store_explicit(&t->arrived, 0, memory_order_relaxed);
        atomic_fetch_add_explicit(&t->phase, 1, memory_order_release);
        return;
    }
    for (unsigned spins = 0; atomic_load_explicit(&t->phase, memory_order_acquire) == phase; spins++) {
        if (spins > 4096) sched_yield();
#if defined(__x86_64__)
        else __builtin_ia32_pause();
#endif
    }
}

void sk_gemm_team(void *team, int rank, int isa, int64_t m0, int64_t m1, int64_t n0, int64_t n1, int64_t K,
                  const void *A, int atype, int64_t lda, const void *B, int btype, int64_t ldb, int transB,
                  float *C, int64_t ldc, const float *bias, int accumulate, float *private_ws) {
    sk_team *t = team;
    isa = clamp_isa(isa);
    const sk_gemm_shape *s = sk_gemm_shape_for(isa);
    const ukernel_fn kernel = ukernels[isa];
    const int mr = s->mr, nr = s->nv * s->w;
    float *packA = (float *)(((uintptr_t)private_ws + 63) & ~(uintptr_t)63), *packB = t->panel;
    // Rows for the bias: a fixed band per thread, aligned to the micro-tile height.
    int64_t tiles = (m1 - m0 + mr - 1) / mr;
    int64_t r0 = m0 + tiles * rank / t->size * mr, r1 = m0 + tiles * (rank + 1) / t->size * mr;
    if (r1 > m1) r1 = m1;
    if (r0 > m1) r0 = m1;
    int64_t blocks = (m1 - m0 + s->mc - 1) / s->mc;
    int64_t iteration = 0;
    for (int64_t jc = n0; jc < n1; jc += s->nc) {
        int64_t nvalid = n1 - jc < s->nc ? n1 - jc : s->nc;
        int64_t ncp = (nvalid + nr - 1) / nr * nr;
        for (int64_t pc = 0; pc < (K > 0 ? K : 1); pc += s->kc, iteration++) {
            int64_t kc = K - pc < s->kc ? K - pc : s->kc;
            _Atomic int64_t *counter = &t->next[iteration & 1];
            if (K > 0) pack_b(isa, s, B, btype, ldb, transB, pc, kc, jc, ncp, nvalid, packB, rank, t->size);
            team_barrier(t);
            // Everyone has finished the previous panel's blocks: its counter is free for the next.
            if (rank == 0) atomic_store(&t->next[(iteration + 1) & 1], 0);
            int acc = accumulate || pc > 0;
            for (int64_t b; (b = atomic_fetch_add(counter, 1)) < blocks;) {
                int64_t ic = m0 + b * s->mc;
                int64_t mvalid = m1 - ic < s->mc ? m1 - ic : s->mc;
                if (K == 0) {
                    for (int64_t i = ic; i < ic + mvalid; i++)
                        for (int64_t j = jc; j < jc + nvalid; j++) C[i * ldc + j] = acc ? C[i * ldc + j] : 0.0f;
                    continue;
                }
                macro_kernel(s, kernel, A, atype, lda, ic, mvalid, pc, kc, packA, packB, ncp, nvalid, C, ldc, jc, acc);
            }
            team_barrier(t);  // the next panel overwrites this one
        }
        if (bias)
            for (int64_t i = r0; i < r1; i++)
                for (int64_t j = jc; j < jc + nvalid; j++) C[i * ldc + j] += bias[j];
    }
}

// ---- B packed once, used by many GEMMs (attention reuses a key/value tile across query blocks) ----
size_t sk_gemm_packed_b_floats(int isa, int64_t K, int64_t N) {
    const sk_gemm_shape *s = sk_gemm_shape_for(clamp_isa(isa));
    int64_t nr = s->nv * s->w;
    return (size_t)(K * ((N + nr - 1) / nr * nr) + 16);
}

void sk_gemm_pack_b(int isa, const void *B, int btype, int64_t ldb, int transB, int64_t K, int64_t N, float *dst) {
    isa = clamp_isa(isa);
    const sk_gemm_shape *s = sk_gemm_shape_for(isa);
    int64_t nr = s->nv * s->w, ncp = (N + nr - 1) / nr * nr;
    for (int64_t pc = 0; pc < K; pc += s->kc) {
        int64_t kc = K - pc < s->kc ? K - pc : s->kc;
        pack_b(isa, s, B, btype, ldb, transB, pc, kc, 0, ncp, N, dst + pc * ncp, 0, 1);
    }
}

void sk_gemm_prepacked(int isa, int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const float *packedB,
                       float *C, int64_t ldc, int accumulate, float *workspace) {
    isa = clamp_isa(isa);
    const sk_gemm_shape *s = sk_gemm_shape_for(isa);
    const ukernel_fn kernel = ukernels[isa];
    const int nr = s->nv * s->w;
    int64_t ncp = (N + nr - 1) / nr * nr;
    float *packA = (float *)(((uintptr_t)workspace + 63) & ~(uintptr_t)63);
    for (int64_t pc = 0; pc < K; pc += s->kc) {
        int64_t kc = K - pc < s->kc ? K - pc : s->kc;
        const float *packB = packedB + pc * ncp;
        int acc = accumulate || pc > 0;
        for (int64_t ic = 0; ic < M; ic += s->mc) {
            int64_t mvalid = M - ic < s->mc ? M - ic : s->mc;
            macro_kernel(s, kernel, A, SK_DT_F32, lda, ic, mvalid, pc, kc, packA, packB, ncp, N, C, ldc, 0, acc);
        }
    }
}

size_t sk_gemm_prepacked_workspace_floats(int isa) {
    const sk_gemm_shape *s = sk_gemm_shape_for(clamp_isa(isa));
    return (size_t)(s->mc * s->kc + 16);
}
