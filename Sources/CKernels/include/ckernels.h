// Sluice's C kernels: SIMD hot loops only (docs/architecture.md).
//
// Every entry point takes an explicit `isa` so a caller (and every test) can force a path.
// This header stays free of <immintrin.h>: Swift imports it.
#ifndef SLUICE_CKERNELS_H
#define SLUICE_CKERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// Instruction-set paths. Higher is wider; each implies the ones below it.
enum {
    SK_ISA_SCALAR = 0,
    SK_ISA_AVX2 = 1,    // AVX2 + FMA + F16C
    SK_ISA_AVX512 = 2,  // AVX-512 F + BW + VL + DQ (+ BF16 where present, reported separately)
};

// Bit set of what this CPU can run: bit (1 << SK_ISA_*) per path, plus SK_FEATURE_AVX512BF16.
enum { SK_FEATURE_AVX512BF16 = 1 << 8 };
uint32_t sk_cpu_features(void);

// Storage dtypes the kernels can widen from. Values are stable: Swift mirrors them.
enum {
    SK_DT_F32 = 0,
    SK_DT_F16 = 1,
    SK_DT_BF16 = 2,
    SK_DT_F8E4M3FN = 3,
    SK_DT_F8E5M2 = 4,
};

// ---- dtype conversion (exact; torch's CPU rules, see convert.c) ----
float sk_f16_to_f32(uint16_t h);
uint16_t sk_f32_to_f16(float f);
float sk_bf16_to_f32(uint16_t h);
uint16_t sk_f32_to_bf16(float f);
float sk_f8e4m3fn_to_f32(uint8_t v);
uint8_t sk_f32_to_f8e4m3fn(float f);
float sk_f8e5m2_to_f32(uint8_t v);
uint8_t sk_f32_to_f8e5m2(float f);

// Widen `n` elements of storage type `dtype` to f32 (vectorised where the isa allows).
void sk_widen(int isa, int dtype, const void *src, float *dst, int64_t n);
// Narrow `n` f32 values to `dtype` (round to nearest even; torch's NaN/overflow rules).
void sk_narrow(int dtype, const float *src, void *dst, int64_t n);

// ---- GEMM ----
// C[m, n] = (accumulate ? C[m, n] : 0) + sum_k A[m, k] * B(k, n) + (bias ? bias[n] : 0)
// for m in [m0, m1), n in [n0, n1). A is row-major with leading dimension lda, storage type `atype`.
// B has storage type `btype`; transB != 0 means B(k, n) = B[n * ldb + k] (a torch Linear weight
// [out, in]); otherwise B(k, n) = B[k * ldb + n]. Both operands are widened to f32 while they are
// packed, one block at a time: there is never a full f32 copy of either.
// `workspace` holds sk_gemm_workspace_floats(isa) floats, 64-byte aligned; one per thread.
size_t sk_gemm_workspace_floats(int isa);
// Enough for calls whose column range n1 - n0 is at most `columns` (smaller panels for narrow B).
size_t sk_gemm_workspace_floats_for(int isa, int64_t columns);
int sk_gemm_nr(int isa);
void sk_gemm(int isa, int64_t m0, int64_t m1, int64_t n0, int64_t n1, int64_t K,
             const void *A, int atype, int64_t lda,
             const void *B, int btype, int64_t ldb, int transB,
             float *C, int64_t ldc, const float *bias, int accumulate,
             float *workspace);

// A team of threads computing one GEMM together: they share one packed B panel and split rows.
// Every rank 0..<size must call sk_gemm_team at the same time (they meet at barriers), with the
// same arguments. `team` holds sk_gemm_team_bytes() bytes, initialised once per call with a shared
// panel of sk_gemm_team_panel_floats(isa, n1 - n0) floats; each rank brings
// sk_gemm_team_private_floats(isa) floats of its own.
size_t sk_gemm_team_bytes(void);
size_t sk_gemm_team_panel_floats(int isa, int64_t columns);
size_t sk_gemm_team_private_floats(int isa);
void sk_gemm_team_init(void *team, int size, float *panel);
void sk_gemm_team(void *team, int rank, int isa, int64_t m0, int64_t m1, int64_t n0, int64_t n1, int64_t K,
                  const void *A, int atype, int64_t lda, const void *B, int btype, int64_t ldb, int transB,
                  float *C, int64_t ldc, const float *bias, int accumulate, float *private_ws);

// B packed once (all of it: N must not exceed the path's panel width, 4096 columns) and reused by
// several GEMMs with different A: C[M, N] = (accumulate ? C : 0) + A[M, K] · B.
// bf16 compute on AVX512-BF16: C[m0..<m1, 0..<N] = bf16(A) · bf16(B) (+ bias), products accumulated in
// f32; A (f32) is rounded to bf16 (nearest even) as it is packed, B (any float storage) once per call
// by sk_gemm_bf16_pack_b into sk_gemm_bf16_packed_b_bytes(K, N) bytes (slivers s0..<s1 of 32 columns,
// so threads can share the work), then read by every thread. sk_gemm_bf16 returns 0 (and does
// nothing) where the CPU lacks AVX512-BF16; its `workspace` holds sk_gemm_bf16_workspace_bytes().
size_t sk_gemm_bf16_packed_b_bytes(int64_t K, int64_t N);
void sk_gemm_bf16_pack_b(const void *B, int btype, int64_t ldb, int transB, int64_t K, int64_t N, int64_t s0, int64_t s1,
                         void *dst);
size_t sk_gemm_bf16_workspace_bytes(void);
int sk_gemm_bf16(int64_t m0, int64_t m1, int64_t N, int64_t K, const float *A, int64_t lda, const void *packedB,
                 float *C, int64_t ldc, const float *bias, void *workspace);
size_t sk_gemm_packed_b_floats(int isa, int64_t K, int64_t N);
void sk_gemm_pack_b(int isa, const void *B, int btype, int64_t ldb, int transB, int64_t K, int64_t N, float *dst);
size_t sk_gemm_prepacked_workspace_floats(int isa);
void sk_gemm_prepacked(int isa, int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const float *packedB,
                       float *C, int64_t ldc, int accumulate, float *workspace);

// ---- row-wise ops (each on `rows` rows of `cols` contiguous floats) ----
void sk_softmax_rows(int isa, float *x, int64_t rows, int64_t cols);
// y = (x - mean) / sqrt(var + eps) * (w ? w : 1) + (b ? b : 0), over each row
void sk_layer_norm_rows(int isa, const float *x, float *y, int64_t rows, int64_t cols,
                        const float *w, const float *b, float eps);
// y = x / sqrt(mean(x^2) + eps) * (w ? w : 1)
void sk_rms_norm_rows(int isa, const float *x, float *y, int64_t rows, int64_t cols,
                      const float *w, float eps);
// Mean and (biased) variance of n floats, in double for stability.
void sk_mean_var(int isa, const float *x, int64_t n, double *mean, double *var);
// y = x * scale + shift
void sk_scale_shift(int isa, const float *x, float *y, int64_t n, float scale, float shift);

// ---- element-wise activations (in place allowed) ----
void sk_silu(int isa, const float *x, float *y, int64_t n);
void sk_gelu_erf(int isa, const float *x, float *y, int64_t n);
void sk_gelu_tanh(int isa, const float *x, float *y, int64_t n);
void sk_exp(int isa, const float *x, float *y, int64_t n);

// ---- binary element-wise on equal-length runs (broadcasting is planned by the caller) ----
enum { SK_BIN_ADD = 0, SK_BIN_SUB = 1, SK_BIN_MUL = 2, SK_BIN_DIV = 3 };
// y[i] = a[i * sa] op b[i * sb], strides 0 or 1 (0 broadcasts a scalar).
void sk_binary(int isa, int op, const float *a, int64_t sa, const float *b, int64_t sb,
               float *y, int64_t n);

// ---- attention (flash-style: tiles, online softmax; memory O(tile)) ----
// One head: q [Lq, D] (row stride ldq), k and v [Lk, D] (row strides ldk, ldv), out [Lq, D] (ldo).
// mask, if given, is an additive f32 [Lq, Lk] (row stride ldm; -inf disables a key).
// Rows [q0, q1) of the output are computed, at most sk_attention_block_q() of them per call (each
// key/value tile is packed once and used by all of them). Workspace: sk_attention_workspace_floats(isa, D).
size_t sk_attention_workspace_floats(int isa, int64_t D);
int64_t sk_attention_block_q(void);
int64_t sk_attention_block_k(void);
void sk_attention_head(int isa, int64_t q0, int64_t q1, int64_t Lk, int64_t D,
                       const float *q, int64_t ldq, const float *k, int64_t ldk,
                       const float *v, int64_t ldv, const float *mask, int64_t ldm,
                       float scale, float *out, int64_t ldo, float *workspace);

#ifdef __cplusplus
}
#endif
#endif

// ---- torch-compatible random numbers (randn.c) ----
/// mt19937 as torch's CPU generator keeps it.
typedef struct { uint32_t state[624]; int32_t next; } sk_mt19937;
void sk_mt19937_seed(sk_mt19937 *g, uint64_t seed);
uint32_t sk_mt19937_next(sk_mt19937 *g);
/// torch.randn(n) for a contiguous float tensor of n >= 16 elements, drawn from `g` exactly as
/// torch 2.x does on x86 (uniforms, then Box-Muller 16 at a time with its AVX2 Cephes log/sincos).
void sk_torch_randn(sk_mt19937 *g, float *out, int64_t n);
