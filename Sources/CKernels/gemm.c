// Blocked GEMM in the Goto/BLIS style: B is packed a KC x NC panel at a time (widened from its
// storage type to f32 as it is packed), A an MC x KC block at a time, and a register-tiled
// micro-kernel sweeps the packed operands. One call is single-threaded over a column range;
// SluiceBackends splits the columns across threads.
#include "ckernels.h"
#include "simd.h"

typedef struct {
    int mr, w;          // micro-tile: mr rows x (2 * w) columns
    int64_t kc, mc, nc; // cache blocking
} sk_gemm_shape;

// Sizes: an A block (mc x kc) fits L2, a B sliver (kc x nr) fits L1, a B panel (kc x nc) sits in L3.
static const sk_gemm_shape shapes[3] = {
    [SK_ISA_SCALAR] = {4, 4, 256, 128, 1024},
    [SK_ISA_AVX2] = {6, 8, 256, 144, 1024},
    [SK_ISA_AVX512] = {12, 16, 384, 144, 1024},
};

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

int sk_gemm_nr(int isa) { return 2 * shapes[clamp_isa(isa)].w; }

size_t sk_gemm_workspace_floats(int isa) {
    const sk_gemm_shape *s = &shapes[clamp_isa(isa)];
    // packed A block + packed B panel + one widened row of B (transposed packing) + alignment slack
    return (size_t)(s->mc * s->kc + s->kc * s->nc + s->kc + 64);
}

static size_t dtype_size(int dtype) { return dtype == SK_DT_F32 ? 4 : dtype <= SK_DT_BF16 ? 2 : 1; }

// Pack B(k0:k0+kc, n0:n0+nc) into slivers of nr columns: sliver s holds kc rows of nr floats.
// Columns past n1 are zero so the micro-kernel never branches.
static void pack_b(int isa, const sk_gemm_shape *s, const void *B, int btype, int64_t ldb, int transB,
                   int64_t k0, int64_t kc, int64_t n0, int64_t nc, int64_t nvalid, float *dst, float *row) {
    const int nr = 2 * s->w;
    const size_t es = dtype_size(btype);
    const char *base = B;
    for (int64_t j0 = 0; j0 < nc; j0 += nr) {
        float *sliver = dst + j0 * kc;
        int64_t cols = nvalid - j0 < nr ? nvalid - j0 : nr;
        if (cols < nr) memset(sliver, 0, (size_t)(kc * nr) * sizeof(float));
        if (transB) {
            // B(k, n) = B[n * ldb + k]: widen a contiguous run of k, scatter with stride nr.
            for (int64_t j = 0; j < cols; j++) {
                sk_widen(isa, btype, base + ((n0 + j0 + j) * ldb + k0) * (int64_t)es, row, kc);
                for (int64_t p = 0; p < kc; p++) sliver[p * nr + j] = row[p];
            }
        } else {
            for (int64_t p = 0; p < kc; p++)
                sk_widen(isa, btype, base + ((k0 + p) * ldb + n0 + j0) * (int64_t)es, sliver + p * nr, cols);
        }
    }
}

// Pack A(m0:m0+mc, k0:k0+kc) into slivers of mr rows, zero rows past the end.
static void pack_a(const sk_gemm_shape *s, const float *A, int64_t lda, int64_t m0, int64_t mc,
                   int64_t mvalid, int64_t k0, int64_t kc, float *dst) {
    const int mr = s->mr;
    for (int64_t i0 = 0; i0 < mc; i0 += mr) {
        float *sliver = dst + i0 * kc;
        int64_t rows = mvalid - i0 < mr ? mvalid - i0 : mr;
        for (int64_t i = 0; i < mr; i++) {
            if (i < rows) {
                const float *src = A + (m0 + i0 + i) * lda + k0;
                for (int64_t p = 0; p < kc; p++) sliver[p * mr + i] = src[p];
            } else {
                for (int64_t p = 0; p < kc; p++) sliver[p * mr + i] = 0.0f;
            }
        }
    }
}

void sk_gemm(int isa, int64_t m0, int64_t m1, int64_t n0, int64_t n1, int64_t K,
             const float *A, int64_t lda, const void *B, int btype, int64_t ldb, int transB,
             float *C, int64_t ldc, const float *bias, int accumulate, float *workspace) {
    isa = clamp_isa(isa);
    const sk_gemm_shape *s = &shapes[isa];
    const ukernel_fn kernel = ukernels[isa];
    const int mr = s->mr, nr = 2 * s->w;
    if (m1 <= m0 || n1 <= n0) return;
    float *ws = (float *)(((uintptr_t)workspace + 63) & ~(uintptr_t)63);
    float *packA = ws, *packB = ws + s->mc * s->kc, *row = packB + s->kc * s->nc;

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
            pack_b(isa, s, B, btype, ldb, transB, pc, kc, jc, ncp, nvalid, packB, row);
            int acc = accumulate || pc > 0;
            for (int64_t ic = m0; ic < m1; ic += s->mc) {
                int64_t mvalid = m1 - ic < s->mc ? m1 - ic : s->mc;
                int64_t mcp = (mvalid + mr - 1) / mr * mr;
                pack_a(s, A, lda, ic, mcp, mvalid, pc, kc, packA);
                for (int64_t jr = 0; jr < ncp; jr += nr) {
                    int64_t cols = nvalid - jr < nr ? nvalid - jr : nr;
                    for (int64_t ir = 0; ir < mcp; ir += mr) {
                        int64_t rows = mvalid - ir < mr ? mvalid - ir : mr;
                        kernel(kc, packA + ir * kc, packB + jr * kc, C + (ic + ir) * ldc + jc + jr, ldc,
                               rows, cols, acc);
                    }
                }
            }
        }
        if (bias)
            for (int64_t i = m0; i < m1; i++)
                for (int64_t j = jc; j < jc + nvalid; j++) C[i * ldc + j] += bias[j];
    }
}
