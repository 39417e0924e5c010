// Private: the f32 GEMM's micro-tile and cache blocking per instruction set (gemm_shapes.c). Never
// included by the public header.
#ifndef SLUICE_GEMM_SHAPES_H
#define SLUICE_GEMM_SHAPES_H
#include <stdint.h>

typedef struct {
    int mr, w, nv;      // micro-tile: mr rows x (nv * w) columns
    int64_t kc, mc, nc; // cache blocking
} sk_gemm_shape;

// The shape for `isa` (an SK_ISA_* value, already clamped), its AVX-512 blocking set at first use.
const sk_gemm_shape *sk_gemm_shape_for(int isa);
#endif
