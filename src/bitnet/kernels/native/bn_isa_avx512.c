/* AVX-512 VNNI kernels (vpdpbusd: unsigned 2-bit codes x signed int8 activations, int32 accumulation). Compiled for
 * that target regardless of -march; only called when the CPU reports avx512f/bw/vl/vnni. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")
#elif defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni"))), apply_to = function)
#endif
#define BN_ISA BN_ISA_ID_AVX512
#define BN_SUFFIX _avx512
#include "bn_isa_impl.h"
#if defined(__clang__)
#pragma clang attribute pop
#endif
