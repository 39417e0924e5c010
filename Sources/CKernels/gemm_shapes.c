// How the f32 GEMM (gemm.c) tiles and blocks for each instruction set.
#include "ckernels.h"
#include "gemm_shapes.h"
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

// Sizes: an A block (mc x kc) fits L2, a B sliver (kc x nr) fits L1, a B panel (kc x nc) sits in L3.
// nc is a multiple of every nr, and large, so A is packed once per (kc, mc) block for most widths.
// The scalar and AVX2 sizes were chosen by interleaved runs against OpenBLAS on Zen 3
// (bench/README.md). AVX-512: kc = 512, each C tile read and written once per 512 steps of k
// (measured on Zen 5, 2048² f32 against OpenBLAS in the same runs: kc 256 → 0.84×, 384 → 0.90×,
// 512–1024 → 0.94×, flat in mc), its B sliver streaming from L2; mc from the L2 the CPU reports
// (tune_shapes), 144 where it reports none.
static sk_gemm_shape shapes[3] = {
    [SK_ISA_SCALAR] = {4, 4, 2, 256, 128, 1024},
    [SK_ISA_AVX2] = {6, 8, 2, 512, 72, 4096},
    [SK_ISA_AVX512] = {12, 16, 2, 512, 144, 4096},
};

static pthread_once_t shapes_once = PTHREAD_ONCE_INIT;

static int64_t env_int(const char *name, int64_t fallback) {
    const char *v = getenv(name);
    long long x = v ? atoll(v) : 0;
    return x > 0 ? (int64_t)x : fallback;
}

// AVX-512's mc: the A block (mc x kc) in half of the L2 this CPU reports (sysconf), a multiple of the
// micro-tile's 12 rows. SLUICE_GEMM_KC / SLUICE_GEMM_MC override kc and mc (tuning runs).
static void tune_shapes(void) {
    sk_gemm_shape *s = &shapes[SK_ISA_AVX512];
    long l2 = sysconf(_SC_LEVEL2_CACHE_SIZE);
    if (l2 >= 262144) {
        int64_t mc = l2 / 2 / (s->kc * 4) / s->mr * s->mr;
        s->mc = mc < 48 ? 48 : mc > 960 ? 960 : mc;
    }
    s->kc = env_int("SLUICE_GEMM_KC", s->kc);
    s->mc = (env_int("SLUICE_GEMM_MC", s->mc) + s->mr - 1) / s->mr * s->mr;
}

const sk_gemm_shape *sk_gemm_shape_for(int isa) {
    pthread_once(&shapes_once, tune_shapes);
    return &shapes[isa];
}
