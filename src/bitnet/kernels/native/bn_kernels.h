/* Shared declarations of the native CPU kernels (one translation unit per instruction set, see bn_isa_*.c).
 *
 * Activation layout ("kernel layout"): a row of K int8 activations is stored with every full 256-element group
 * permuted so that element 128*c + 32*g + m (chunk c in {0,1}, group g in 0..3, m in 0..31) sits at 64*g + 32*c + m.
 * In that order the 2-bit codes of I2_S (two consecutive 128-element blocks) and TQ2_0 (one 256-element block)
 * unpack with one shift + mask per group straight into a 64-byte vector that lines up with one 64-byte activation
 * load. A trailing 128-element I2_S block (K % 256 == 128) stays in natural order. Integer sums do not depend on
 * the order, so the results are identical to the natural-order reference.
 */
#ifndef BN_KERNELS_H
#define BN_KERNELS_H

#include <stddef.h>
#include <stdint.h>

enum bn_fmt { BN_I2S = 0, BN_TQ2 = 1, BN_TQ1 = 2 };
/* preprocessor-visible ids (the ISA files select their code with #if) */
#define BN_ISA_ID_SCALAR 0
#define BN_ISA_ID_AVX2 1
#define BN_ISA_ID_AVX512 2
enum bn_isa { BN_ISA_SCALAR = BN_ISA_ID_SCALAR, BN_ISA_AVX2 = BN_ISA_ID_AVX2, BN_ISA_AVX512 = BN_ISA_ID_AVX512 };

#define BN_TQ2_BLOCK_BYTES 66
#define BN_TQ1_BLOCK_BYTES 54

/* One tile of the integer matmul: 4 weight rows against T (1 or 4) activation rows. For every 256-element block b
 * (plus the I2_S 128-element tail, which is block nb) it writes sum(code * q) into out[(r * 4 + t) * nbt + b], where
 * nbt = number of blocks including the tail. Codes are the raw 0/1/2 codes. With whole_row != 0 (I2_S per-token,
 * whose epilogue needs only the row total) it writes the total over all blocks into out[(r * 4 + t) * nbt] and
 * skips the per-block horizontal reductions. */
typedef void (*bn_tile_fn)(int fmt, const uint8_t *const rows[4], const int8_t *const acts[4], int T, int64_t K,
                           int32_t *out, int nbt, int whole_row);

/* Per-token activation quantization of one row (natural order output). Returns the scale; *sum = sum(q). */
typedef float (*bn_quant_pt_fn)(const float *x, int64_t K, int8_t *q, int32_t *sum);

/* y[i] = sum_k f16(W[i,k]) * x[k] for rows [r0, r1). */
typedef void (*bn_f16_rows_fn)(const uint16_t *w, int64_t K, const float *x, int T, int64_t ldx, float *y,
                               int64_t ldy, int64_t r0, int64_t r1);

/* Optional fused TQ GEMV (one token, 4 rows): integer dots plus the float epilogue of bitnet.kernels.reference, in
 * the same per-row order (block after block, float32, no FMA), so the result is bit-identical to the generic path.
 * a_d: block256 d per block (NULL for per-token); a_bsum: per-block sums of q; a_scale: per-token s. */
typedef void (*bn_gemv_tq_fn)(int fmt, int profile, const uint8_t *const rows[4], const int8_t *act, int64_t nb,
                              const float *a_d, const int32_t *a_bsum, float a_scale, float out[4]);

typedef struct {
    bn_tile_fn tile;
    bn_quant_pt_fn quant_pt;
    bn_f16_rows_fn f16_rows;
    bn_gemv_tq_fn gemv_tq; /* NULL: use tile + the generic epilogue */
    uint64_t (*sum_u64)(const uint64_t *u, int64_t n); /* streaming read for the bandwidth probe */
    int (*attn_f32)(const float *q, int64_t T, int64_t ldq, const float *k, const float *v, int64_t ldkv,
                    int64_t n_past, int64_t n_heads, int64_t n_kv, int64_t head_dim, float scale, float *out,
                    int64_t ldo, int nth);
    int (*attn_f64)(const double *q, int64_t T, int64_t ldq, const float *k, const float *v, int64_t ldkv,
                    int64_t n_past, int64_t n_heads, int64_t n_kv, int64_t head_dim, double scale, double *out,
                    int64_t ldo, int nth);
    const char *name;
    /* Optional float64-input quantizers (the engine's default numerics), bit-identical to quant_pt_row_f64 /
     * quant_block256_row_f64 in bn_common.c; NULL: use those. */
    float (*quant_pt_f64)(const double *x, int64_t K, int8_t *q, int32_t *sum);
    void (*quant_b256_f64)(const double *x, int64_t K, int8_t *q, float *d, int32_t *bsum);
    /* Optional fused GEMM tile (4 rows x 4 consecutive tokens of kernel-layout activations, K % 256 == 0): the
     * integer dots and the float epilogue in one pass, out[r * 4 + t] bit-identical to tile + the generic epilogue.
     * a_d / a_bsum: [4][K/256] (block256 d / per-block sums of q), a_scale / a_sum: [4] (per-token s and sum q).
     * NULL: use tile + the generic epilogue. */
    void (*gemm4)(int fmt, int profile, const uint8_t *const rows[4], const int8_t *act, int64_t K,
                  const float *a_d, const int32_t *a_bsum, const float *a_scale, const int32_t *a_sum, float w_scale,
                  float out[16]);
    /* Optional GEMV over whole 4-row tiles [tile0, tile1) of weights w (row stride rb bytes) for one token, epilogue
     * included: y[4 * tile + r], bit-identical to tile + the generic epilogue. NULL: tile by tile. */
    void (*gemv_range)(int fmt, int profile, const uint8_t *w, int64_t rb, int64_t tile0, int64_t tile1,
                       const int8_t *act, int64_t K, const float *a_d, const int32_t *a_bsum, float a_scale,
                       int32_t a_sum, float w_scale, float *y);
} bn_isa_ops;

extern const bn_isa_ops bn_ops_scalar;
extern const bn_isa_ops bn_ops_avx2;
extern const bn_isa_ops bn_ops_avx512;

/* Round half to even for |v| < 2^22 (every quantizer input is within +-128 or so; NaN stays NaN): the 1.5 * 2^23
 * trick, as ggml's nearest_int, exact in float32 under the default rounding mode and much cheaper than nearbyintf,
 * which also saves and restores the FP environment. Needs -ffp-contract=off and no -ffast-math (both set). */
static inline float bn_round_even(float v) {
    if (!(v > -4194304.f && v < 4194304.f)) return v; /* large or NaN: the clamps that follow handle it */
    return (v + 12582912.f) - 12582912.f; /* not folded: no -fassociative-math */
}

enum { BN_PER_TOKEN = 0, BN_BLOCK256 = 1 };
enum { BN_OK = 0, BN_EBADSHAPE = -1, BN_ENOMEM = -2, BN_EBADARG = -3 };

/* ---- internals shared by bn_common.c (the matmul driver) and bn_forward.c (the fused blocks) ---- */

/* Quantized activations of N rows of K, in kernel layout, with what every epilogue needs. */
typedef struct {
    int8_t *q;      /* [N, K] kernel layout */
    float *scale;   /* per-token: [N] */
    int32_t *sum;   /* per-token: [N] */
    float *d;       /* block256: [N, nb] */
    int32_t *bsum;  /* [N, nb] */
    int8_t *tmp;    /* per-thread natural-order scratch rows [nth, K] */
    void *mem;      /* the one allocation behind all of the above: free(mem) */
} bn_act_buf;

/* One weight of a bn_multi_matmul call: y[n * ldy + m] = W[m, :] . x[n, :] (raw != NULL: integer block sums). */
typedef struct {
    int fmt;
    const uint8_t *w;
    int64_t M;
    float w_scale;
    float *y;
    int64_t ldy;
    int32_t *raw;
} bn_mm_job;

const bn_isa_ops *bn_ops(void);
int bn_get_threads(void);
int bn_check_shape(int fmt, int profile, int64_t M, int64_t K);
int bn_act_alloc(bn_act_buf *a, int64_t N, int64_t K, int nth);
void bn_quantize_acts(bn_act_buf *a, int profile, const void *x, int is_f64, int64_t N, int64_t K, int64_t ldx,
                      int nth);
int bn_multi_matmul(int profile, const bn_mm_job *jobs, int njobs, const bn_act_buf *a, int64_t N, int64_t K,
                    int nth);
void bn_rmsnorm_f64(const double *x, const float *w, int64_t N, int64_t K, double eps, double *y);
void bn_rope_neox_f64(double *x, int64_t n_tok, int64_t n_heads, int64_t head_dim, int64_t ld, const int32_t *pos,
                      double base);

/* Elements [i0, K) of the float64 per-token quantizer: x * s in double, rounded once to float32, then half to even,
 * clamped to int8 (bitnet.kernels.quant); returns their sum. The scalar row and the SIMD rows' tails share it. */
static inline int32_t bn_quant_f64_run(const double *x, int64_t i0, int64_t K, float s, int8_t *q) {
    int32_t acc = 0;
    for (int64_t i = i0; i < K; i++) {
        const float v = bn_round_even((float)(x[i] * (double)s));
        const int iv = v > 127.f ? 127 : (v < -128.f ? -128 : (int)v);
        q[i] = (int8_t)iv;
        acc += iv;
    }
    return acc;
}

/* helpers shared by all ISA files (defined in bn_common.c) */
void bn_tq1_decode_block(const uint8_t *blk, uint8_t codes_perm[256]);
int bn_perm256(int e);
float bn_fp16_to_fp32(uint16_t h);

#endif
