// Row-wise, element-wise and attention kernels. Scalar versions are the reference each vector
// path is tested against (by forcing the path); vector versions come from ops_vec.inc.
#include <math.h>
#include <stdlib.h>
#include "ckernels.h"
#include "simd.h"

static int clamp_isa(int isa) { return isa < 0 ? 0 : isa > SK_ISA_AVX512 ? SK_ISA_AVX512 : isa; }

static void binary_scalar(int op, const float *a, int64_t sa, const float *b, int64_t sb, float *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        float x = a[i * sa], z = b[i * sb];
        y[i] = op == SK_BIN_ADD ? x + z : op == SK_BIN_SUB ? x - z : op == SK_BIN_MUL ? x * z : x / z;
    }
}

// ---- scalar reference versions ----
static void softmax_rows_scalar(float *x, int64_t rows, int64_t cols) {
    for (int64_t r = 0; r < rows; r++) {
        float *row = x + r * cols, m = -INFINITY, s = 0;
        for (int64_t i = 0; i < cols; i++) m = row[i] > m ? row[i] : m;
        if (m == -INFINITY) { for (int64_t i = 0; i < cols; i++) row[i] = 0.0f; continue; }
        for (int64_t i = 0; i < cols; i++) { row[i] = expf(row[i] - m); s += row[i]; }
        for (int64_t i = 0; i < cols; i++) row[i] *= 1.0f / s;
    }
}
static float sum_scalar(const float *x, int64_t n) { float s = 0; for (int64_t i = 0; i < n; i++) s += x[i]; return s; }
static float sum_sq_dev_scalar(const float *x, int64_t n, float c) {
    float s = 0;
    for (int64_t i = 0; i < n; i++) s += (x[i] - c) * (x[i] - c);
    return s;
}
static void affine_row_scalar(const float *x, float *y, int64_t n, float scale, float shift, const float *w, const float *b) {
    for (int64_t i = 0; i < n; i++) {
        float v = x[i] * scale + shift;
        if (w) v *= w[i];
        if (b) v += b[i];
        y[i] = v;
    }
}
static void silu_scalar(const float *x, float *y, int64_t n) { for (int64_t i = 0; i < n; i++) y[i] = x[i] / (1.0f + expf(-x[i])); }
static void gelu_tanh_scalar(const float *x, float *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        float v = x[i];
        y[i] = 0.5f * v * (1.0f + tanhf(0.7978845608028654f * (v + 0.044715f * v * v * v)));
    }
}
static void exp_array_scalar(const float *x, float *y, int64_t n) { for (int64_t i = 0; i < n; i++) y[i] = expf(x[i]); }
static void online_softmax_tile_scalar(float *s, int64_t lds, int64_t rows, int64_t cols, float *m, float *l,
                                       float *o, int64_t ldo, int64_t D) {
    for (int64_t r = 0; r < rows; r++) {
        float *row = s + r * lds, mx = -INFINITY;
        for (int64_t i = 0; i < cols; i++) mx = row[i] > mx ? row[i] : mx;
        float mnew = mx > m[r] ? mx : m[r];
        if (mnew == -INFINITY) { for (int64_t i = 0; i < cols; i++) row[i] = 0.0f; continue; }
        float sum = 0;
        for (int64_t i = 0; i < cols; i++) { row[i] = expf(row[i] - mnew); sum += row[i]; }
        float corr = m[r] == -INFINITY ? 0.0f : expf(m[r] - mnew);
        l[r] = l[r] * corr + sum;
        m[r] = mnew;
        if (corr != 1.0f) for (int64_t i = 0; i < D; i++) o[r * ldo + i] *= corr;
    }
}

// ---- AVX2 ----
// exp: x = n ln2 + r, |r| <= ln2/2; e^r by Cephes' degree-6 polynomial; 2^n built in the exponent.
SK_AVX2 static inline __m256 exp_avx2(__m256 x) {
    const __m256 hi = _mm256_set1_ps(88.3762626647949f), lo = _mm256_set1_ps(-87.3365447505531f);
    __m256 underflow = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
    x = _mm256_min_ps(_mm256_max_ps(x, lo), hi);
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500E-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507E-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073E-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894E-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459E-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201E-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    // n may be 128 at the top of the range: scale in two steps so 2^n never overflows the exponent.
    __m256i ni = _mm256_cvtps_epi32(n);
    __m256i n1 = _mm256_srai_epi32(ni, 1), n2 = _mm256_sub_epi32(ni, n1);
    __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, _mm256_set1_epi32(127)), 23));
    __m256 s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, _mm256_set1_epi32(127)), 23));
    return _mm256_andnot_ps(underflow, _mm256_mul_ps(_mm256_mul_ps(p, s1), s2));
}
SK_AVX2 static inline __m256 copysign_avx2(__m256 magnitude, __m256 sign) {
    const __m256 mask = _mm256_set1_ps(-0.0f);
    return _mm256_or_ps(_mm256_andnot_ps(mask, magnitude), _mm256_and_ps(mask, sign));
}
SK_AVX2 static inline float hsum_avx2(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
SK_AVX2 static inline float hmax_avx2(__m256 v) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
#define OV(name) name##_avx2
#define OV_TARGET SK_AVX2
#define OV_W 8
#define OV_VEC __m256
#define OV_ZERO _mm256_setzero_ps
#define OV_SET1 _mm256_set1_ps
#define OV_LOADU _mm256_loadu_ps
#define OV_STOREU _mm256_storeu_ps
#define OV_ADD _mm256_add_ps
#define OV_SUB _mm256_sub_ps
#define OV_MUL _mm256_mul_ps
#define OV_DIV _mm256_div_ps
#define OV_FMA _mm256_fmadd_ps
#define OV_MAX _mm256_max_ps
#define OV_MIN _mm256_min_ps
#define OV_HSUM hsum_avx2
#define OV_HMAX hmax_avx2
#define OV_EXP exp_avx2
#define OV_COPYSIGN copysign_avx2
#include "ops_vec.inc"
#undef OV
#undef OV_TARGET
#undef OV_W
#undef OV_VEC
#undef OV_ZERO
#undef OV_SET1
#undef OV_LOADU
#undef OV_STOREU
#undef OV_ADD
#undef OV_SUB
#undef OV_MUL
#undef OV_DIV
#undef OV_FMA
#undef OV_MAX
#undef OV_MIN
#undef OV_HSUM
#undef OV_HMAX
#undef OV_EXP
#undef OV_COPYSIGN

// ---- AVX-512: the same algorithms, 16 lanes ----
SK_AVX512 static inline __m512 exp_avx512(__m512 x) {
    const __m512 hi = _mm512_set1_ps(88.3762626647949f), lo = _mm512_set1_ps(-87.3365447505531f);
    __mmask16 underflow = _mm512_cmp_ps_mask(x, lo, _CMP_LT_OQ);
    x = _mm512_min_ps(_mm512_max_ps(x, lo), hi);
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500E-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507E-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073E-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894E-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459E-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201E-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    __m512i ni = _mm512_cvtps_epi32(n);
    __m512i n1 = _mm512_srai_epi32(ni, 1), n2 = _mm512_sub_epi32(ni, n1);
    __m512 s1 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(n1, _mm512_set1_epi32(127)), 23));
    __m512 s2 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(n2, _mm512_set1_epi32(127)), 23));
    return _mm512_maskz_mov_ps((__mmask16)~underflow, _mm512_mul_ps(_mm512_mul_ps(p, s1), s2));
}
SK_AVX512 static inline __m512 copysign_avx512(__m512 magnitude, __m512 sign) {
    const __m512 mask = _mm512_set1_ps(-0.0f);
    return _mm512_or_ps(_mm512_andnot_ps(mask, magnitude), _mm512_and_ps(mask, sign));
}
SK_AVX512 static inline float hsum_avx512(__m512 v) { return _mm512_reduce_add_ps(v); }
SK_AVX512 static inline float hmax_avx512(__m512 v) { return _mm512_reduce_max_ps(v); }
#define OV(name) name##_avx512
#define OV_TARGET SK_AVX512
#define OV_W 16
#define OV_VEC __m512
#define OV_ZERO _mm512_setzero_ps
#define OV_SET1 _mm512_set1_ps
#define OV_LOADU _mm512_loadu_ps
#define OV_STOREU _mm512_storeu_ps
#define OV_ADD _mm512_add_ps
#define OV_SUB _mm512_sub_ps
#define OV_MUL _mm512_mul_ps
#define OV_DIV _mm512_div_ps
#define OV_FMA _mm512_fmadd_ps
#define OV_MAX _mm512_max_ps
#define OV_MIN _mm512_min_ps
#define OV_HSUM hsum_avx512
#define OV_HMAX hmax_avx512
#define OV_EXP exp_avx512
#define OV_COPYSIGN copysign_avx512
#include "ops_vec.inc"

// ---- dispatch ----
#define DISPATCH(isa, name, ...)                                   \
    do {                                                           \
        switch (clamp_isa(isa)) {                                  \
        case SK_ISA_AVX512: name##_avx512(__VA_ARGS__); break;     \
        case SK_ISA_AVX2: name##_avx2(__VA_ARGS__); break;         \
        default: name##_scalar(__VA_ARGS__); break;                \
        }                                                          \
    } while (0)
#define DISPATCH_RET(isa, name, ...)                               \
    (clamp_isa(isa) == SK_ISA_AVX512 ? name##_avx512(__VA_ARGS__)  \
     : clamp_isa(isa) == SK_ISA_AVX2 ? name##_avx2(__VA_ARGS__)    \
                                     : name##_scalar(__VA_ARGS__))

void sk_softmax_rows(int isa, float *x, int64_t rows, int64_t cols) { DISPATCH(isa, softmax_rows, x, rows, cols); }
void sk_silu(int isa, const float *x, float *y, int64_t n) { DISPATCH(isa, silu, x, y, n); }
void sk_gelu_tanh(int isa, const float *x, float *y, int64_t n) { DISPATCH(isa, gelu_tanh, x, y, n); }
void sk_exp(int isa, const float *x, float *y, int64_t n) { DISPATCH(isa, exp_array, x, y, n); }
void sk_binary(int isa, int op, const float *a, int64_t sa, const float *b, int64_t sb, float *y, int64_t n) {
    if (clamp_isa(isa) == SK_ISA_SCALAR || !((sa == 1 && sb <= 1) || (sa == 0 && sb == 1)))
        binary_scalar(op, a, sa, b, sb, y, n);
    else
        DISPATCH(isa, binary, op, a, sa, b, sb, y, n);
}

static void gelu_erf_scalar(const float *x, float *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = 0.5f * x[i] * (1.0f + erff(x[i] * 0.70710678118654752f));
}
void sk_gelu_erf(int isa, const float *x, float *y, int64_t n) { DISPATCH(isa, gelu_erf, x, y, n); }

void sk_mean_var(int isa, const float *x, int64_t n, double *mean, double *var) {
    // Two passes (mean, then squared deviations) in f32 vector lanes, chunked so no lane sums
    // more than 4096 terms before it is folded into a double.
    double s = 0;
    for (int64_t i = 0; i < n; i += 4096) s += DISPATCH_RET(isa, sum, x + i, n - i < 4096 ? n - i : 4096);
    double m = n > 0 ? s / (double)n : 0;
    double q = 0;
    for (int64_t i = 0; i < n; i += 4096) q += DISPATCH_RET(isa, sum_sq_dev, x + i, n - i < 4096 ? n - i : 4096, (float)m);
    *mean = m;
    *var = n > 0 ? q / (double)n : 0;
}

void sk_layer_norm_rows(int isa, const float *x, float *y, int64_t rows, int64_t cols, const float *w,
                        const float *b, float eps) {
    for (int64_t r = 0; r < rows; r++) {
        double mean, var;
        sk_mean_var(isa, x + r * cols, cols, &mean, &var);
        float inv = (float)(1.0 / sqrt(var + (double)eps));
        DISPATCH(isa, affine_row, x + r * cols, y + r * cols, cols, inv, (float)(-mean) * inv, w, b);
    }
}

void sk_rms_norm_rows(int isa, const float *x, float *y, int64_t rows, int64_t cols, const float *w, float eps) {
    for (int64_t r = 0; r < rows; r++) {
        double q = 0;
        for (int64_t i = 0; i < cols; i += 4096)
            q += DISPATCH_RET(isa, sum_sq_dev, x + r * cols + i, cols - i < 4096 ? cols - i : 4096, 0.0f);
        float inv = (float)(1.0 / sqrt(q / (double)cols + (double)eps));
        DISPATCH(isa, affine_row, x + r * cols, y + r * cols, cols, inv, 0.0f, w, NULL);
    }
}

void sk_scale_shift(int isa, const float *x, float *y, int64_t n, float scale, float shift) {
    DISPATCH(isa, affine_row, x, y, n, scale, shift, NULL, NULL);
}

// ---- attention ----
// Tiles: scores of 144 query rows x 512 keys (288 KiB) in L2 beside the output accumulator; one call
// covers up to 4 such query blocks, so each key/value tile is packed once for 576 query rows.
enum { ATT_BQ = 144, ATT_BK = 512, ATT_QBLOCKS = 4 };
int64_t sk_attention_block_q(void) { return ATT_BQ * ATT_QBLOCKS; }
int64_t sk_attention_block_k(void) { return ATT_BK; }

size_t sk_attention_workspace_floats(int isa, int64_t D) {
    const int64_t rows = ATT_BQ * ATT_QBLOCKS;
    // scores tile + output accumulators + running max and sum + packed K and V tiles + A packing
    return (size_t)(ATT_BQ * ATT_BK + rows * D + 2 * rows) + sk_gemm_packed_b_floats(isa, D, ATT_BK) +
           sk_gemm_packed_b_floats(isa, ATT_BK, D) + sk_gemm_prepacked_workspace_floats(isa) + 64;
}

static float *align64(float *p) { return (float *)(((uintptr_t)p + 63) & ~(uintptr_t)63); }

void sk_attention_head(int isa, int64_t q0, int64_t q1, int64_t Lk, int64_t D, const float *q, int64_t ldq,
                       const float *k, int64_t ldk, const float *v, int64_t ldv, const float *mask, int64_t ldm,
                       float scale, float *out, int64_t ldo, float *workspace) {
    const int64_t rows = q1 - q0;
    float *s = align64(workspace), *o = align64(s + ATT_BQ * ATT_BK), *m = o + rows * D, *l = m + rows;
    float *pk = align64(l + rows), *pv = align64(pk + sk_gemm_packed_b_floats(isa, D, ATT_BK));
    float *gws = align64(pv + sk_gemm_packed_b_floats(isa, ATT_BK, D));
    for (int64_t r = 0; r < rows; r++) { m[r] = -INFINITY; l[r] = 0.0f; }
    memset(o, 0, (size_t)(rows * D) * sizeof(float));
    for (int64_t kb = 0; kb < Lk; kb += ATT_BK) {
        int64_t cols = Lk - kb < ATT_BK ? Lk - kb : ATT_BK;
        // K rows are the "weight" rows of a linear layer (transB); V is [keys, D].
        sk_gemm_pack_b(isa, k + kb * ldk, SK_DT_F32, ldk, 1, D, cols, pk);
        sk_gemm_pack_b(isa, v + kb * ldv, SK_DT_F32, ldv, 0, cols, D, pv);
        for (int64_t qb = 0; qb < rows; qb += ATT_BQ) {
            int64_t n = rows - qb < ATT_BQ ? rows - qb : ATT_BQ;
            sk_gemm_prepacked(isa, n, cols, D, q + (q0 + qb) * ldq, ldq, pk, s, ATT_BK, 0, gws);  // S = Q Kᵀ
            for (int64_t r = 0; r < n; r++) {
                float *srow = s + r * ATT_BK;
                sk_scale_shift(isa, srow, srow, cols, scale, 0.0f);
                if (mask) sk_binary(isa, SK_BIN_ADD, srow, 1, mask + (q0 + qb + r) * ldm + kb, 1, srow, cols);
            }
            DISPATCH(isa, online_softmax_tile, s, ATT_BK, n, cols, m + qb, l + qb, o + qb * D, D, D);
            sk_gemm_prepacked(isa, n, D, cols, s, ATT_BK, pv, o + qb * D, D, 1, gws);  // O += P V
        }
    }
    for (int64_t r = 0; r < rows; r++) {
        // A row whose keys are all masked has l = 0: its output is 0 (not NaN).
        float inv = l[r] > 0 ? 1.0f / l[r] : 0.0f;
        sk_scale_shift(isa, o + r * D, out + (q0 + r) * ldo, D, inv, 0.0f);
    }
}
