// Blocked GEMM in the Goto/BLIS style: B is packed a KC x NC panel at a time (widened from its
// storage type to f32 as it is packed; gemm_pack.c), A an MC x KC block at a time, and a register-tiled
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


// The macro-kernel: pack rows [ic, ic + mvalid) of A for this k block, then sweep every micro-tile
// of C[ic.., c0 + 0..nvalid) against the packed B panel (ncp columns, slivers of nr).
static void macro_kernel(const sk_gemm_shape *s, ukernel_fn kernel, const void *A, int atype, int64_t lda,
                         int64_t ic, int64_t mvalid, int64_t pc, int64_t kc, float *packA, const float *packB,
                         int64_t ncp, int64_t nvalid, float *C, int64_t ldc, int64_t c0, int acc) {
    const int mr = s->mr, nr = s->nv * s->w;
    int64_t mcp = (mvalid + mr - 1) / mr * mr;
    sk_gemm_pack_block(s, A, atype, lda, ic, mcp, mvalid, pc, kc, packA);
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
            sk_gemm_pack_panel(isa, s, B, btype, ldb, transB, pc, kc, jc, ncp, nvalid, packB, 0, 1);
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
            if (K > 0) sk_gemm_pack_panel(isa, s, B, btype, ldb, transB, pc, kc, jc, ncp, nvalid, packB, rank, t->size);
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
        sk_gemm_pack_panel(isa, s, B, btype, ldb, transB, pc, kc, 0, ncp, N, dst + pc * ncp, 0, 1);
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
