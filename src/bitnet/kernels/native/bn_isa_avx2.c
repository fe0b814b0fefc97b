/* AVX2 kernels (maddubs, int16 partial sums per block). Compiled for AVX2 regardless of the build machine's -march;
 * only called when __builtin_cpu_supports("avx2") says so. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC target("avx2,fma,f16c")
#elif defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#endif
#define BN_ISA BN_ISA_ID_AVX2
#define BN_SUFFIX _avx2
#include "bn_isa_impl.h"
#if defined(__clang__)
#pragma clang attribute pop
#endif
