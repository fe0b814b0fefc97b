/* Portable scalar kernels: the fallback when the CPU has no AVX2 (and the oracle the SIMD paths are tested against). */
#define BN_ISA BN_ISA_ID_SCALAR
#define BN_SUFFIX _scalar
#include "bn_isa_impl.h"
