#include "ckernels.h"

uint32_t sk_cpu_features(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    uint32_t f = 1u << SK_ISA_SCALAR;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c"))
        f |= 1u << SK_ISA_AVX2;
    if ((f & (1u << SK_ISA_AVX2)) && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
        f |= 1u << SK_ISA_AVX512;
    if ((f & (1u << SK_ISA_AVX512)) && __builtin_cpu_supports("avx512bf16"))
        f |= SK_FEATURE_AVX512BF16;
    return f;
#else
    return 1u << SK_ISA_SCALAR;
#endif
}
