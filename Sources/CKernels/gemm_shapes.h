// Private: the f32 GEMM's micro-tile and cache blocking per instruction set (gemm_shapes.c) and its packing
// (gemm_pack.c). Never included by the public header.
#ifndef SLUICE_GEMM_SHAPES_H
#define SLUICE_GEMM_SHAPES_H
#include <stdint.h>

typedef struct {
    int mr, w, nv;      // micro-tile: mr rows x (nv * w) columns
    int64_t kc, mc, nc; // cache blocking
} sk_gemm_shape;

// The shape for `isa` (an SK_ISA_* value, already clamped), its AVX-512 blocking set at first use.
const sk_gemm_shape *sk_gemm_shape_for(int isa);

// Packing (gemm_pack.c). B(k0:k0+kc, n0:n0+nc) into slivers of nr columns — slivers first, first + step,
// … so a team of `step` threads shares the work — zero past column `nvalid`; A(m0:m0+mc, k0:k0+kc) into
// slivers of mr rows, zero past row `mvalid`. Both widen from their storage type.
void sk_gemm_pack_panel(int isa, const sk_gemm_shape *s, const void *B, int btype, int64_t ldb, int transB,
                        int64_t k0, int64_t kc, int64_t n0, int64_t nc, int64_t nvalid, float *dst, int64_t first, int64_t step);
void sk_gemm_pack_block(const sk_gemm_shape *s, const void *A, int atype, int64_t lda, int64_t m0, int64_t mc,
                        int64_t mvalid, int64_t k0, int64_t kc, float *dst);
#endif
