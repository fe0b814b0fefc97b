/* Per-instruction-set kernel bodies. Included once by each bn_isa_<name>.c after that file has switched the compiler
 * target (#pragma GCC target), with BN_ISA set to the enum bn_isa value it implements. Everything here is static;
 * the file exports one bn_isa_ops table. */
#include <math.h>
#include <string.h>

#include "bn_kernels.h"

#if BN_ISA >= BN_ISA_ID_AVX2
#include <immintrin.h>
#endif

#define BN_CAT2(a, b) a##b
#define BN_CAT(a, b) BN_CAT2(a, b)
#define BN_FN(name) BN_CAT(name, BN_SUFFIX)

/* Shift of bit-pair group g (elements 32g..32g+31 of a 128-element chunk) in a packed byte. */
static inline int BN_FN(group_shift)(int fmt, int g) { return fmt == BN_I2S ? 6 - 2 * g : 2 * g; }

static inline const uint8_t *BN_FN(block_ptr)(int fmt, const uint8_t *row, int64_t b) {
    switch (fmt) {
    case BN_I2S: return row + 64 * b;
    case BN_TQ2: return row + BN_TQ2_BLOCK_BYTES * b;
    default: return row + BN_TQ1_BLOCK_BYTES * b;
    }
}

/* The I2_S 128-element tail block (K % 256 == 128): natural activation order, scalar (only odd-sized test shapes). */
static int32_t BN_FN(i2s_tail_dot)(const uint8_t *p, const int8_t *q) {
    int32_t s = 0;
    for (int g = 0; g < 4; g++)
        for (int m = 0; m < 32; m++) s += (int32_t)((p[m] >> (6 - 2 * g)) & 3) * q[32 * g + m];
    return s;
}

/* whole_row for the kernels that compute per-block sums anyway: fold them into slot 0 (exact int32). */
static inline void BN_FN(fold_blocks)(int32_t *out, int T, int nbt) {
    for (int r = 0; r < 4; r++)
        for (int t = 0; t < T; t++) {
            int32_t *o = out + (r * 4 + t) * nbt, s = 0;
            for (int b = 0; b < nbt; b++) s += o[b];
            o[0] = s;
        }
}

/* ---- attention (plain C, vectorized by the compiler for this file's instruction set) ---------------------- */
#include <stdlib.h>
/* one body, two element types: float32 activations (attn_f32) and float64 (attn_f64, the default numerics) */
#define BN_ATTN_NAME attn_f32
#define BN_ATTN_T float
#define BN_ATTN_EXP expf
#include "bn_attn_tmpl.h"
#define BN_ATTN_NAME attn_f64
#define BN_ATTN_T double
#define BN_ATTN_EXP exp
#include "bn_attn_tmpl.h"

#if BN_ISA == BN_ISA_ID_SCALAR

static void decode_block_scalar(int fmt, const uint8_t *p, uint8_t codes[256]) {
    if (fmt == BN_TQ1) {
        bn_tq1_decode_block(p, codes);
        return;
    }
    for (int g = 0; g < 4; g++) {
        int sh = BN_FN(group_shift)(fmt, g);
        for (int c = 0; c < 2; c++)
            for (int m = 0; m < 32; m++) codes[64 * g + 32 * c + m] = (p[32 * c + m] >> sh) & 3;
    }
}

static void tile_scalar(int fmt, const uint8_t *const rows[4], const int8_t *const acts[4], int T, int64_t K,
                        int32_t *out, int nbt, int whole_row) {
    const int64_t nb = K / 256;
    uint8_t codes[256];
    for (int r = 0; r < 4; r++) {
        for (int64_t b = 0; b < nb; b++) {
            decode_block_scalar(fmt, BN_FN(block_ptr)(fmt, rows[r], b), codes);
            for (int t = 0; t < T; t++) {
                const int8_t *q = acts[t] + 256 * b;
                int32_t s = 0;
                for (int i = 0; i < 256; i++) s += (int32_t)codes[i] * q[i];
                out[(r * 4 + t) * nbt + b] = s;
            }
        }
        if (nbt > nb)
            for (int t = 0; t < T; t++)
                out[(r * 4 + t) * nbt + nb] = BN_FN(i2s_tail_dot)(rows[r] + 64 * nb, acts[t] + 256 * nb);
    }
    if (whole_row) BN_FN(fold_blocks)(out, T, nbt);
}

static float quant_pt_scalar(const float *x, int64_t K, int8_t *q, int32_t *sum) {
    double mx = 1e-5;
    for (int64_t i = 0; i < K; i++) {
        double a = fabs((double)x[i]);
        if (a > mx) mx = a;
    }
    const float s = (float)(127.0 / mx);
    int32_t acc = 0;
    for (int64_t i = 0; i < K; i++) {
        float v = bn_round_even(x[i] * s);
        int iv = v > 127.f ? 127 : (v < -128.f ? -128 : (int)v);
        q[i] = (int8_t)iv;
        acc += iv;
    }
    *sum = acc;
    return s;
}

static void f16_rows_scalar(const uint16_t *w, int64_t K, const float *x, int T, int64_t ldx, float *y, int64_t ldy,
                            int64_t r0, int64_t r1) {
    for (int64_t i = r0; i < r1; i++) {
        const uint16_t *wr = w + i * K;
        for (int t = 0; t < T; t++) {
            const float *xt = x + t * ldx;
            float acc = 0.f;
            for (int64_t k = 0; k < K; k++) acc += bn_fp16_to_fp32(wr[k]) * xt[k];
            y[t * ldy + i] = acc;
        }
    }
}

static uint64_t sum_u64_scalar(const uint64_t *u, int64_t n) {
    uint64_t s = 0;
    for (int64_t i = 0; i < n; i++) s += u[i];
    return s;
}

const bn_isa_ops bn_ops_scalar = {tile_scalar, quant_pt_scalar, f16_rows_scalar, NULL, sum_u64_scalar, attn_f32_scalar, attn_f64_scalar, "scalar"};

#elif BN_ISA == BN_ISA_ID_AVX2

static inline int32_t hsum_epi32_avx2(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}

static void tile_avx2(int fmt, const uint8_t *const rows[4], const int8_t *const acts[4], int T, int64_t K,
                      int32_t *out, int nbt, int whole_row) {
    const int64_t nb = K / 256;
    const __m256i m3 = _mm256_set1_epi8(3);
    const __m256i ones = _mm256_set1_epi16(1);
    uint8_t codes[256] __attribute__((aligned(64)));
    for (int r = 0; r < 4; r++) {
        for (int64_t b = 0; b < nb; b++) {
            const uint8_t *p = BN_FN(block_ptr)(fmt, rows[r], b);
            if (fmt == BN_TQ1) bn_tq1_decode_block(p, codes);
            /* int16 lanes: 8 maddubs of at most 2*2*128 = 512 each, |sum| <= 4096: no overflow. */
            __m256i acc[4] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256(),
                              _mm256_setzero_si256()};
            for (int g = 0; g < 4; g++) {
                const int sh = BN_FN(group_shift)(fmt, g);
                for (int c = 0; c < 2; c++) {
                    __m256i cv;
                    if (fmt == BN_TQ1)
                        cv = _mm256_load_si256((const __m256i *)(codes + 64 * g + 32 * c));
                    else
                        cv = _mm256_and_si256(
                            _mm256_srli_epi16(_mm256_loadu_si256((const __m256i *)(p + 32 * c)), sh), m3);
                    for (int t = 0; t < T; t++) {
                        __m256i a = _mm256_loadu_si256((const __m256i *)(acts[t] + 256 * b + 64 * g + 32 * c));
                        acc[t] = _mm256_add_epi16(acc[t], _mm256_maddubs_epi16(cv, a));
                    }
                }
            }
            for (int t = 0; t < T; t++)
                out[(r * 4 + t) * nbt + b] = hsum_epi32_avx2(_mm256_madd_epi16(acc[t], ones));
        }
        if (nbt > nb)
            for (int t = 0; t < T; t++)
                out[(r * 4 + t) * nbt + nb] = BN_FN(i2s_tail_dot)(rows[r] + 64 * nb, acts[t] + 256 * nb);
    }
    if (whole_row) BN_FN(fold_blocks)(out, T, nbt);
}

static float quant_pt_avx2(const float *x, int64_t K, int8_t *q, int32_t *sum) {
    const __m256 signmask = _mm256_set1_ps(-0.0f);
    __m256 vmax = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= K; i += 8) vmax = _mm256_max_ps(vmax, _mm256_andnot_ps(signmask, _mm256_loadu_ps(x + i)));
    float lanes[8];
    _mm256_storeu_ps(lanes, vmax);
    float amax = 0.f;
    for (int l = 0; l < 8; l++) amax = lanes[l] > amax ? lanes[l] : amax;
    for (; i < K; i++) amax = fabsf(x[i]) > amax ? fabsf(x[i]) : amax;
    const double mx = (double)amax > 1e-5 ? (double)amax : 1e-5;
    const float s = (float)(127.0 / mx);
    const __m256 vs = _mm256_set1_ps(s);
    const __m256i lo = _mm256_set1_epi32(-128), hi = _mm256_set1_epi32(127);
    __m256i vsum = _mm256_setzero_si256();
    int32_t acc = 0;
    for (i = 0; i + 8 <= K; i += 8) {
        __m256i v = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + i), vs)); /* round half to even */
        v = _mm256_min_epi32(_mm256_max_epi32(v, lo), hi);
        vsum = _mm256_add_epi32(vsum, v);
        int32_t tmp[8];
        _mm256_storeu_si256((__m256i *)tmp, v);
        for (int l = 0; l < 8; l++) q[i + l] = (int8_t)tmp[l];
    }
    acc = hsum_epi32_avx2(vsum);
    for (; i < K; i++) {
        float v = bn_round_even(x[i] * s);
        int iv = v > 127.f ? 127 : (v < -128.f ? -128 : (int)v);
        q[i] = (int8_t)iv;
        acc += iv;
    }
    *sum = acc;
    return s;
}

static void f16_rows_avx2(const uint16_t *w, int64_t K, const float *x, int T, int64_t ldx, float *y, int64_t ldy,
                          int64_t r0, int64_t r1) {
    for (int64_t i = r0; i < r1; i++) {
        const uint16_t *wr = w + i * K;
        for (int t = 0; t < T; t++) {
            const float *xt = x + t * ldx;
            __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
            int64_t k = 0;
            for (; k + 16 <= K; k += 16) {
                a0 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(wr + k))),
                                     _mm256_loadu_ps(xt + k), a0);
                a1 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(wr + k + 8))),
                                     _mm256_loadu_ps(xt + k + 8), a1);
            }
            a0 = _mm256_add_ps(a0, a1);
            __m128 s = _mm_add_ps(_mm256_castps256_ps128(a0), _mm256_extractf128_ps(a0, 1));
            s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            s = _mm_add_ss(s, _mm_movehdup_ps(s));
            float acc = _mm_cvtss_f32(s);
            for (; k < K; k++) acc += bn_fp16_to_fp32(wr[k]) * xt[k];
            y[t * ldy + i] = acc;
        }
    }
}

static uint64_t sum_u64_avx2(const uint64_t *u, int64_t n) {
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        a0 = _mm256_add_epi64(a0, _mm256_loadu_si256((const __m256i *)(u + i)));
        a1 = _mm256_add_epi64(a1, _mm256_loadu_si256((const __m256i *)(u + i + 4)));
        a2 = _mm256_add_epi64(a2, _mm256_loadu_si256((const __m256i *)(u + i + 8)));
        a3 = _mm256_add_epi64(a3, _mm256_loadu_si256((const __m256i *)(u + i + 12)));
    }
    uint64_t t[4], s = 0;
    _mm256_storeu_si256((__m256i *)t, _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3)));
    for (int l = 0; l < 4; l++) s += t[l];
    for (; i < n; i++) s += u[i];
    return s;
}

const bn_isa_ops bn_ops_avx2 = {tile_avx2, quant_pt_avx2, f16_rows_avx2, NULL, sum_u64_avx2, attn_f32_avx2, attn_f64_avx2, "avx2"};

#elif BN_ISA == BN_ISA_ID_AVX512

/* Horizontal sums of four vectors at once: returns {sum(a), sum(b), sum(c), sum(d)}. */
static inline __m128i reduce4_epi32(__m512i a, __m512i b, __m512i c, __m512i d) {
    __m512i t0 = _mm512_add_epi32(_mm512_unpacklo_epi32(a, b), _mm512_unpackhi_epi32(a, b));
    __m512i t1 = _mm512_add_epi32(_mm512_unpacklo_epi32(c, d), _mm512_unpackhi_epi32(c, d));
    __m512i u = _mm512_add_epi32(_mm512_unpacklo_epi64(t0, t1), _mm512_unpackhi_epi64(t0, t1));
    __m256i s = _mm256_add_epi32(_mm512_castsi512_si256(u), _mm512_extracti64x4_epi64(u, 1));
    return _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
}

/* TQ1_0, decoded in the byte domain (llama.cpp's trick): q * 3^n mod 256 with byte adds and masked 16-bit shifts,
 * then ((t * 3) >> 8) == (avg(x, avg(x, 0)) >> 6) with x = t -| 1 (checked for all 256 bytes). One 52-byte masked
 * load holds qs[48] and qh[4]; trit vector n has qs[0:32] trit n in bytes 0..31, qs[32:48] trit n in 32..47 and qh
 * trit n in 48..51. The four kernel-layout group vectors are assembled in registers:
 *   g0 = [A0 | A4]   g1 = [A1 | B0 B1]   g2 = [A2 | B2 B3]   g3 = [A3 | B4 C],  C = qh trits 0..3 (4 bytes each). */
static inline __m512i tq1_times9(__m512i q) {
    return _mm512_add_epi8(_mm512_and_si512(_mm512_slli_epi16(q, 3), _mm512_set1_epi8((char)0xF8)), q);
}

static inline __m512i tq1_trit(__m512i t) {
    const __m512i x = _mm512_subs_epu8(t, _mm512_set1_epi8(1));
    const __m512i y = _mm512_avg_epu8(x, _mm512_avg_epu8(x, _mm512_setzero_si512()));
    return _mm512_and_si512(_mm512_srli_epi16(y, 6), _mm512_set1_epi8(3));
}

static inline void tq1_decode_avx512(const uint8_t *blk, __m512i g[4]) {
    const __m512i q0 = _mm512_maskz_loadu_epi8(0x000FFFFFFFFFFFFFULL, blk); /* 52 bytes: never reads past */
    const __m512i q1 = _mm512_add_epi8(_mm512_add_epi8(q0, q0), q0);
    const __m512i q2 = tq1_times9(q0), q3 = tq1_times9(q1), q4 = tq1_times9(q2);
    const __m512i t0 = tq1_trit(q0), t1 = tq1_trit(q1), t2 = tq1_trit(q2), t3 = tq1_trit(q3), t4 = tq1_trit(q4);
    g[0] = _mm512_inserti64x4(t0, _mm512_castsi512_si256(t4), 1);
    g[1] = _mm512_permutex2var_epi64(t1, _mm512_setr_epi64(0, 1, 2, 3, 12, 13, 4, 5), t0);
    g[2] = _mm512_permutex2var_epi64(t2, _mm512_setr_epi64(0, 1, 2, 3, 4, 5, 12, 13), t3);
    const __m512i c01 = _mm512_permutex2var_epi32(t0, _mm512_setr_epi32(12, 28, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), t1);
    const __m512i c23 = _mm512_permutex2var_epi32(t2, _mm512_setr_epi32(0, 0, 12, 28, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), t3);
    const __m512i c = _mm512_mask_blend_epi32(0x000C, c01, c23);
    const __m512i h = _mm512_permutex2var_epi32(t4, _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 8, 9, 10, 11, 16, 17, 18, 19), c);
    g[3] = _mm512_mask_blend_epi32(0xFF00, t3, h);
}

static inline __m512i codes_group_avx512(int fmt, __m512i w, const __m512i *tq1, int g, __m512i m3) {
    if (fmt == BN_TQ1) return tq1[g];
    return _mm512_and_si512(_mm512_srli_epi16(w, BN_FN(group_shift)(fmt, g)), m3);
}

/* T == 1 (GEMV): 4 rows, activation vectors hoisted. For the 2-bit formats the codes of group g are masked in place
 * (no shift): (w & (3 << sh)) = code << sh, so vpdpbusd yields 2^sh times the group's dot product, exactly (|lane| <=
 * 4 * 192 * 128 per block). Each group keeps its own accumulator and is shifted back (exactly, it is a multiple of
 * 2^sh) before the groups are added. `pf` is the byte distance to prefetch ahead in each row stream.
 * Two variants, so that the compiler keeps every accumulator in a register: whole rows (I2_S per-token: one
 * reduction per row) and per-block sums (accumulators local to the block). */
static inline __attribute__((always_inline)) void gemv_block_avx512(int fmt, const uint8_t *const rows[4], int64_t b,
                                                                    const __m512i a[4], const __m512i mask[4],
                                                                    __m512i acc[4][4], int64_t pf) {
    for (int r = 0; r < 4; r++) {
        const uint8_t *p = BN_FN(block_ptr)(fmt, rows[r], b);
        if (fmt == BN_TQ1) {
            __m512i cg[4];
            tq1_decode_avx512(p, cg);
            for (int g = 0; g < 4; g++) acc[r][g] = _mm512_dpbusd_epi32(acc[r][g], cg[g], a[g]);
        } else {
            _mm_prefetch((const char *)p + pf, _MM_HINT_T0);
            const __m512i w = _mm512_loadu_si512(p);
            for (int g = 0; g < 4; g++) acc[r][g] = _mm512_dpbusd_epi32(acc[r][g], _mm512_and_si512(w, mask[g]), a[g]);
        }
    }
}

static inline __attribute__((always_inline)) __m512i gemv_row_sum_avx512(int fmt, const __m512i acc[4]) {
    if (fmt == BN_TQ1) return _mm512_add_epi32(_mm512_add_epi32(acc[0], acc[1]), _mm512_add_epi32(acc[2], acc[3]));
    const __m512i s01 = _mm512_add_epi32(_mm512_srai_epi32(acc[0], BN_FN(group_shift)(fmt, 0)),
                                         _mm512_srai_epi32(acc[1], BN_FN(group_shift)(fmt, 1)));
    const __m512i s23 = _mm512_add_epi32(_mm512_srai_epi32(acc[2], BN_FN(group_shift)(fmt, 2)),
                                         _mm512_srai_epi32(acc[3], BN_FN(group_shift)(fmt, 3)));
    return _mm512_add_epi32(s01, s23);
}

static inline __attribute__((always_inline)) void tile1_avx512(int fmt, const uint8_t *const rows[4],
                                                               const int8_t *act, int64_t nb, int32_t *out,
                                                               int nbt, int whole_row, int64_t pf) {
    __m512i mask[4];
    for (int g = 0; g < 4; g++) mask[g] = _mm512_set1_epi8((char)(3 << BN_FN(group_shift)(fmt, g)));
    if (whole_row) {
        __m512i acc[4][4];
        for (int r = 0; r < 4; r++)
            for (int g = 0; g < 4; g++) acc[r][g] = _mm512_setzero_si512();
        for (int64_t b = 0; b < nb; b++) {
            const int8_t *q = act + 256 * b;
            const __m512i a[4] = {_mm512_loadu_si512(q), _mm512_loadu_si512(q + 64), _mm512_loadu_si512(q + 128),
                                  _mm512_loadu_si512(q + 192)};
            gemv_block_avx512(fmt, rows, b, a, mask, acc, pf);
        }
        int32_t s[4];
        _mm_storeu_si128((__m128i *)s, reduce4_epi32(gemv_row_sum_avx512(fmt, acc[0]), gemv_row_sum_avx512(fmt, acc[1]),
                                                     gemv_row_sum_avx512(fmt, acc[2]), gemv_row_sum_avx512(fmt, acc[3])));
        for (int r = 0; r < 4; r++) out[(r * 4) * nbt] = s[r];
        return;
    }
    for (int64_t b = 0; b < nb; b++) {
        const int8_t *q = act + 256 * b;
        const __m512i a[4] = {_mm512_loadu_si512(q), _mm512_loadu_si512(q + 64), _mm512_loadu_si512(q + 128),
                              _mm512_loadu_si512(q + 192)};
        __m512i acc[4][4];
        for (int r = 0; r < 4; r++)
            for (int g = 0; g < 4; g++) acc[r][g] = _mm512_setzero_si512();
        gemv_block_avx512(fmt, rows, b, a, mask, acc, pf);
        int32_t s[4];
        _mm_storeu_si128((__m128i *)s, reduce4_epi32(gemv_row_sum_avx512(fmt, acc[0]), gemv_row_sum_avx512(fmt, acc[1]),
                                                     gemv_row_sum_avx512(fmt, acc[2]), gemv_row_sum_avx512(fmt, acc[3])));
        for (int r = 0; r < 4; r++) out[(r * 4) * nbt + b] = s[r];
    }
}

/* One 256-element block of a 4-row x 4-token tile: acc[r][t] += codes(row r) . acts[t], each weight group unpacked
 * once for the 4 tokens (16 accumulators). */
static inline __attribute__((always_inline)) void tile4_block_avx512(int fmt, const uint8_t *const rows[4],
                                                                     const int8_t *const acts[4], int64_t b,
                                                                     __m512i acc[4][4]) {
    const __m512i m3 = _mm512_set1_epi8(3);
    __m512i w[4], tq1[4][4];
    for (int r = 0; r < 4; r++) {
        const uint8_t *p = BN_FN(block_ptr)(fmt, rows[r], b);
        if (fmt == BN_TQ1) {
            tq1_decode_avx512(p, tq1[r]);
            w[r] = _mm512_setzero_si512();
        } else {
            w[r] = _mm512_loadu_si512(p);
        }
    }
    for (int g = 0; g < 4; g++) {
        __m512i cv[4];
        for (int r = 0; r < 4; r++) cv[r] = codes_group_avx512(fmt, w[r], tq1[r], g, m3);
        for (int t = 0; t < 4; t++) {
            const __m512i a = _mm512_loadu_si512(acts[t] + 256 * b + 64 * g);
            for (int r = 0; r < 4; r++) acc[r][t] = _mm512_dpbusd_epi32(acc[r][t], cv[r], a);
        }
    }
}

/* The 16 sums of a 4x4 tile as one vector, lane r * 4 + t. */
static inline __m512i tile4_sums_avx512(const __m512i acc[4][4]) {
    __m512i s = _mm512_castsi128_si512(reduce4_epi32(acc[0][0], acc[0][1], acc[0][2], acc[0][3]));
    s = _mm512_inserti32x4(s, reduce4_epi32(acc[1][0], acc[1][1], acc[1][2], acc[1][3]), 1);
    s = _mm512_inserti32x4(s, reduce4_epi32(acc[2][0], acc[2][1], acc[2][2], acc[2][3]), 2);
    return _mm512_inserti32x4(s, reduce4_epi32(acc[3][0], acc[3][1], acc[3][2], acc[3][3]), 3);
}

/* T == 4 (GEMM): 4 rows x 4 tokens = 16 accumulators; each weight group is unpacked once for 4 tokens. */
static inline __attribute__((always_inline)) void tile4_avx512(int fmt, const uint8_t *const rows[4],
                                                               const int8_t *const acts[4], int64_t nb,
                                                               int32_t *out, int nbt, int whole_row) {
    __m512i acc[4][4];
    for (int r = 0; r < 4; r++)
        for (int t = 0; t < 4; t++) acc[r][t] = _mm512_setzero_si512();
    for (int64_t b = 0; b < nb; b++) {
        tile4_block_avx512(fmt, rows, acts, b, acc);
        if (whole_row) continue;
        for (int r = 0; r < 4; r++) {
            int32_t s[4];
            _mm_storeu_si128((__m128i *)s, reduce4_epi32(acc[r][0], acc[r][1], acc[r][2], acc[r][3]));
            for (int t = 0; t < 4; t++) {
                out[(r * 4 + t) * nbt + b] = s[t];
                acc[r][t] = _mm512_setzero_si512();
            }
        }
    }
    if (whole_row)
        for (int r = 0; r < 4; r++) {
            int32_t s[4];
            _mm_storeu_si128((__m128i *)s, reduce4_epi32(acc[r][0], acc[r][1], acc[r][2], acc[r][3]));
            for (int t = 0; t < 4; t++) out[(r * 4 + t) * nbt] = s[t];
        }
}

#define BN_TILE_FMT(FMT, NAME)                                                                                \
    static void NAME(const uint8_t *const rows[4], const int8_t *const acts[4], int T, int64_t nb, int32_t *out, \
                     int nbt, int whole_row) {                                                                \
        if (T == 4 && whole_row)                                                                              \
            tile4_avx512(FMT, rows, acts, nb, out, nbt, 1);                                                   \
        else if (T == 4)                                                                                      \
            tile4_avx512(FMT, rows, acts, nb, out, nbt, 0);                                                   \
        else if (whole_row)                                                                                   \
            tile1_avx512(FMT, rows, acts[0], nb, out, nbt, 1, 8 * (rows[1] - rows[0]));                       \
        else                                                                                                  \
            tile1_avx512(FMT, rows, acts[0], nb, out, nbt, 0, 8 * (rows[1] - rows[0]));                       \
    }
BN_TILE_FMT(BN_I2S, tile_i2s_avx512)
BN_TILE_FMT(BN_TQ2, tile_tq2_avx512)
BN_TILE_FMT(BN_TQ1, tile_tq1_avx512)

static void tile_avx512(int fmt, const uint8_t *const rows[4], const int8_t *const acts[4], int T, int64_t K,
                        int32_t *out, int nbt, int whole_row) {
    const int64_t nb = K / 256;
    if (fmt == BN_I2S)
        tile_i2s_avx512(rows, acts, T, nb, out, nbt, whole_row);
    else if (fmt == BN_TQ2)
        tile_tq2_avx512(rows, acts, T, nb, out, nbt, whole_row);
    else
        tile_tq1_avx512(rows, acts, T, nb, out, nbt, whole_row);
    if (nbt > nb)
        for (int r = 0; r < 4; r++)
            for (int t = 0; t < T; t++) {
                const int32_t tail = BN_FN(i2s_tail_dot)(rows[r] + 64 * nb, acts[t] + 256 * nb);
                if (!whole_row)
                    out[(r * 4 + t) * nbt + nb] = tail;
                else if (nb == 0)
                    out[(r * 4 + t) * nbt] = tail;
                else
                    out[(r * 4 + t) * nbt] += tail;
            }
}

static float quant_pt_avx512(const float *x, int64_t K, int8_t *q, int32_t *sum) {
    __m512 vmax = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= K; i += 16) vmax = _mm512_max_ps(vmax, _mm512_abs_ps(_mm512_loadu_ps(x + i)));
    float amax = _mm512_reduce_max_ps(vmax);
    for (; i < K; i++) amax = fabsf(x[i]) > amax ? fabsf(x[i]) : amax;
    const double mx = (double)amax > 1e-5 ? (double)amax : 1e-5;
    const float s = (float)(127.0 / mx);
    const __m512 vs = _mm512_set1_ps(s);
    const __m512i lo = _mm512_set1_epi32(-128), hi = _mm512_set1_epi32(127);
    __m512i vsum = _mm512_setzero_si512();
    for (i = 0; i + 16 <= K; i += 16) {
        __m512i v = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(x + i), vs)); /* round half to even */
        v = _mm512_min_epi32(_mm512_max_epi32(v, lo), hi);
        vsum = _mm512_add_epi32(vsum, v);
        _mm_storeu_si128((__m128i *)(q + i), _mm512_cvtepi32_epi8(v));
    }
    int32_t acc = _mm512_reduce_add_epi32(vsum);
    for (; i < K; i++) {
        float v = bn_round_even(x[i] * s);
        int iv = v > 127.f ? 127 : (v < -128.f ? -128 : (int)v);
        q[i] = (int8_t)iv;
        acc += iv;
    }
    *sum = acc;
    return s;
}

static void f16_rows_avx512(const uint16_t *w, int64_t K, const float *x, int T, int64_t ldx, float *y,
                            int64_t ldy, int64_t r0, int64_t r1) {
    for (int64_t i = r0; i < r1; i++) {
        const uint16_t *wr = w + i * K;
        for (int t = 0; t < T; t++) {
            const float *xt = x + t * ldx;
            __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
            __m512 a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();
            int64_t k = 0;
            for (; k + 64 <= K; k += 64) {
                if (t == 0) { /* 4 KiB ahead in the row stream: the hardware prefetcher alone reaches ~80 % of the
                               * read bandwidth here, this brings the 2B lm_head to the bandwidth probe's speed */
                    _mm_prefetch((const char *)(wr + k) + 4096, _MM_HINT_T0);
                    _mm_prefetch((const char *)(wr + k) + 4096 + 64, _MM_HINT_T0);
                }
                a0 = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(wr + k))),
                                     _mm512_loadu_ps(xt + k), a0);
                a1 = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(wr + k + 16))),
                                     _mm512_loadu_ps(xt + k + 16), a1);
                a2 = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(wr + k + 32))),
                                     _mm512_loadu_ps(xt + k + 32), a2);
                a3 = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(wr + k + 48))),
                                     _mm512_loadu_ps(xt + k + 48), a3);
            }
            for (; k + 16 <= K; k += 16)
                a0 = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(wr + k))),
                                     _mm512_loadu_ps(xt + k), a0);
            float acc = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
            for (; k < K; k++) acc += bn_fp16_to_fp32(wr[k]) * xt[k];
            y[t * ldy + i] = acc;
        }
    }
}

/* The 4 rows' sums over block b of one token's activations (kernel layout), one 4-way reduction. */
static inline __attribute__((always_inline)) __m128i gemv_block_sums_avx512(int fmt, const uint8_t *const rows[4],
                                                                            const int8_t *act, int64_t b,
                                                                            const __m512i mask[4], int64_t pf) {
    const int8_t *q = act + 256 * b;
    const __m512i a[4] = {_mm512_loadu_si512(q), _mm512_loadu_si512(q + 64), _mm512_loadu_si512(q + 128),
                          _mm512_loadu_si512(q + 192)};
    __m512i acc4[4][4];
    for (int r = 0; r < 4; r++)
        for (int g = 0; g < 4; g++) acc4[r][g] = _mm512_setzero_si512();
    gemv_block_avx512(fmt, rows, b, a, mask, acc4, pf);
    return reduce4_epi32(gemv_row_sum_avx512(fmt, acc4[0]), gemv_row_sum_avx512(fmt, acc4[1]),
                         gemv_row_sum_avx512(fmt, acc4[2]), gemv_row_sum_avx512(fmt, acc4[3]));
}

/* Fused TQ GEMV: 4 row sums per block from one reduction, block scales converted with vcvtph2ps, and the epilogue
 * as 4-lane float vectors (lane r does exactly the scalar epilogue's operations for row r). */
static inline __attribute__((always_inline)) void gemv_tq_body(int fmt, int profile, const uint8_t *const rows[4],
                                                               const int8_t *act, int64_t nb, const float *a_d,
                                                               const int32_t *a_bsum, float a_scale, float out[4]) {
    const int64_t bb = fmt == BN_TQ2 ? BN_TQ2_BLOCK_BYTES : BN_TQ1_BLOCK_BYTES;
    const int doff = fmt == BN_TQ2 ? 64 : 52;
    const int64_t pf = 8 * (rows[1] - rows[0]);
    __m512i mask[4];
    for (int g = 0; g < 4; g++) mask[g] = _mm512_set1_epi8((char)(3 << BN_FN(group_shift)(fmt, g)));
    __m128 acc = _mm_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const __m128i s = gemv_block_sums_avx512(fmt, rows, act, b, mask, pf);
        uint16_t h[4];
        for (int r = 0; r < 4; r++) memcpy(&h[r], rows[r] + bb * b + doff, 2);
        const __m128 dw = _mm_cvtph_ps(_mm_loadl_epi64((const __m128i *)h));
        const __m128 sc = profile == 1 ? _mm_mul_ps(_mm_set1_ps(a_d[b]), dw) : dw;
        const __m128 v = _mm_cvtepi32_ps(_mm_sub_epi32(s, _mm_set1_epi32(a_bsum[b])));
        acc = _mm_add_ps(acc, _mm_mul_ps(v, sc));
    }
    if (profile == 0) acc = _mm_div_ps(acc, _mm_set1_ps(a_scale));
    _mm_storeu_ps(out, acc);
}

static void gemv_tq_avx512(int fmt, int profile, const uint8_t *const rows[4], const int8_t *act, int64_t nb,
                           const float *a_d, const int32_t *a_bsum, float a_scale, float out[4]) {
    if (fmt == BN_TQ2 && profile == 1)
        gemv_tq_body(BN_TQ2, 1, rows, act, nb, a_d, a_bsum, a_scale, out);
    else if (fmt == BN_TQ2)
        gemv_tq_body(BN_TQ2, 0, rows, act, nb, a_d, a_bsum, a_scale, out);
    else if (profile == 1)
        gemv_tq_body(BN_TQ1, 1, rows, act, nb, a_d, a_bsum, a_scale, out);
    else
        gemv_tq_body(BN_TQ1, 0, rows, act, nb, a_d, a_bsum, a_scale, out);
}

/* GEMM tile with the epilogue fused: 4 rows x 4 consecutive tokens -> 16 finished outputs, lane r*4+t. The integer
 * part is tile4_avx512's; each float lane then does exactly epilogue()'s operations for (row r, token t) in the
 * same order (no FMA), so the outputs are bit-identical to tile + epilogue, without 16 scalar epilogues (with a
 * divide each for per-token activations) and without spilling the block sums to memory. */
static inline __attribute__((always_inline)) void gemm4_body(int fmt, int profile, const uint8_t *const rows[4],
                                                             const int8_t *act, int64_t K, int64_t nb,
                                                             const float *a_d, const int32_t *a_bsum,
                                                             const float *a_scale, const int32_t *a_sum,
                                                             float w_scale, float out[16]) {
    const int64_t bb = fmt == BN_TQ2 ? BN_TQ2_BLOCK_BYTES : BN_TQ1_BLOCK_BYTES;
    const int doff = fmt == BN_TQ2 ? 64 : 52;
    const int whole = fmt == BN_I2S && profile == 0; /* only the row totals are needed */
    const __m512i row_of_lane = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
    const int8_t *const acts[4] = {act, act + K, act + 2 * K, act + 3 * K};
    __m512i acc[4][4];
    for (int r = 0; r < 4; r++)
        for (int t = 0; t < 4; t++) acc[r][t] = _mm512_setzero_si512();
    __m512 facc = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        tile4_block_avx512(fmt, rows, acts, b, acc);
        if (whole) continue;
        const __m512i s = tile4_sums_avx512(acc);
        for (int r = 0; r < 4; r++)
            for (int t = 0; t < 4; t++) acc[r][t] = _mm512_setzero_si512();
        const __m512i bs = _mm512_broadcast_i32x4(
            _mm_setr_epi32(a_bsum[b], a_bsum[nb + b], a_bsum[2 * nb + b], a_bsum[3 * nb + b]));
        const __m512 v = _mm512_cvtepi32_ps(_mm512_sub_epi32(s, bs));
        if (fmt == BN_I2S) { /* block256: acc += (s - bsum) * d_a */
            const __m512 ad = _mm512_broadcast_f32x4(_mm_setr_ps(a_d[b], a_d[nb + b], a_d[2 * nb + b], a_d[3 * nb + b]));
            facc = _mm512_add_ps(facc, _mm512_mul_ps(v, ad));
            continue;
        }
        uint16_t h[4];
        for (int r = 0; r < 4; r++) memcpy(&h[r], rows[r] + bb * b + doff, 2);
        const __m512 dw = _mm512_permutexvar_ps(row_of_lane, _mm512_castps128_ps512(_mm_cvtph_ps(_mm_loadl_epi64((const __m128i *)h))));
        if (profile == 1) {
            const __m512 ad = _mm512_broadcast_f32x4(_mm_setr_ps(a_d[b], a_d[nb + b], a_d[2 * nb + b], a_d[3 * nb + b]));
            facc = _mm512_add_ps(facc, _mm512_mul_ps(v, _mm512_mul_ps(ad, dw)));
        } else {
            facc = _mm512_add_ps(facc, _mm512_mul_ps(v, dw));
        }
    }
    const __m512 scale = _mm512_broadcast_f32x4(_mm_loadu_ps(a_scale));
    __m512 res;
    if (whole) {
        const __m512i s = tile4_sums_avx512(acc);
        const __m512 sums = _mm512_cvtepi32_ps(_mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)a_sum)));
        res = _mm512_mul_ps(_mm512_div_ps(_mm512_sub_ps(_mm512_cvtepi32_ps(s), sums), scale), _mm512_set1_ps(w_scale));
    } else if (fmt == BN_I2S) {
        res = _mm512_mul_ps(facc, _mm512_set1_ps(w_scale));
    } else if (profile == 0) {
        res = _mm512_div_ps(facc, scale);
    } else {
        res = facc;
    }
    _mm512_storeu_ps(out, res);
}

static void gemm4_avx512(int fmt, int profile, const uint8_t *const rows[4], const int8_t *act, int64_t K,
                         const float *a_d, const int32_t *a_bsum, const float *a_scale, const int32_t *a_sum,
                         float w_scale, float out[16]) {
    const int64_t nb = K / 256;
#define BN_GEMM4(F, P) gemm4_body(F, P, rows, act, K, nb, a_d, a_bsum, a_scale, a_sum, w_scale, out)
    if (fmt == BN_I2S)
        profile ? BN_GEMM4(BN_I2S, 1) : BN_GEMM4(BN_I2S, 0);
    else if (fmt == BN_TQ2)
        profile ? BN_GEMM4(BN_TQ2, 1) : BN_GEMM4(BN_TQ2, 0);
    else
        profile ? BN_GEMM4(BN_TQ1, 1) : BN_GEMM4(BN_TQ1, 0);
#undef BN_GEMM4
}

/* GEMV over whole 4-row tiles [tile0, tile1) for one token, epilogue included, in one call: no call and no spill of
 * block sums per tile, the next rows prefetched 8 rows ahead. Each float lane r does exactly epilogue()'s operations
 * for row r (same order, no FMA), so y is bit-identical to tile + epilogue. */
static void gemv_range_avx512(int fmt, int profile, const uint8_t *w, int64_t rb, int64_t tile0, int64_t tile1,
                              const int8_t *act, int64_t K, const float *a_d, const int32_t *a_bsum, float a_scale,
                              int32_t a_sum, float w_scale, float *y) {
    const int64_t nb = K / 256, pf = 8 * rb;
    for (int64_t tile = tile0; tile < tile1; tile++) {
        const uint8_t *rows[4] = {w + (4 * tile) * rb, w + (4 * tile + 1) * rb, w + (4 * tile + 2) * rb,
                                  w + (4 * tile + 3) * rb};
        float *out = y + 4 * tile;
        if (fmt != BN_I2S) {
            gemv_tq_avx512(fmt, profile, rows, act, nb, a_d, a_bsum, a_scale, out);
        } else if (profile == 0) { /* ((float)S - (float)sum q) / s * w_scale */
            int32_t s[16];
            tile1_avx512(BN_I2S, rows, act, nb, s, 1, 1, pf);
            const __m128 v = _mm_cvtepi32_ps(_mm_setr_epi32(s[0], s[4], s[8], s[12]));
            _mm_storeu_ps(out, _mm_mul_ps(_mm_div_ps(_mm_sub_ps(v, _mm_set1_ps((float)a_sum)), _mm_set1_ps(a_scale)),
                                          _mm_set1_ps(w_scale)));
        } else { /* block256: acc += (float)(s_b - bsum_b) * d_b; acc * w_scale */
            const __m512i m3 = _mm512_set1_epi8(3);
            __m512i mask[4];
            for (int g = 0; g < 4; g++) mask[g] = _mm512_slli_epi16(m3, BN_FN(group_shift)(BN_I2S, g));
            __m128 acc = _mm_setzero_ps();
            for (int64_t b = 0; b < nb; b++) {
                const __m128i sb = gemv_block_sums_avx512(BN_I2S, rows, act, b, mask, pf);
                const __m128 v = _mm_cvtepi32_ps(_mm_sub_epi32(sb, _mm_set1_epi32(a_bsum[b])));
                acc = _mm_add_ps(acc, _mm_mul_ps(v, _mm_set1_ps(a_d[b])));
            }
            _mm_storeu_ps(out, _mm_mul_ps(acc, _mm_set1_ps(w_scale)));
        }
    }
}

static uint64_t sum_u64_avx512(const uint64_t *u, int64_t n) {
    __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        a0 = _mm512_add_epi64(a0, _mm512_loadu_si512(u + i));
        a1 = _mm512_add_epi64(a1, _mm512_loadu_si512(u + i + 8));
        a2 = _mm512_add_epi64(a2, _mm512_loadu_si512(u + i + 16));
        a3 = _mm512_add_epi64(a3, _mm512_loadu_si512(u + i + 24));
    }
    uint64_t s = (uint64_t)_mm512_reduce_add_epi64(_mm512_add_epi64(_mm512_add_epi64(a0, a1), _mm512_add_epi64(a2, a3)));
    for (; i < n; i++) s += u[i];
    return s;
}

/* max |x[i]| over n doubles (a multiple of 8), NaN ignored like the scalar `if (a > mx)` loops: vmaxpd returns its
 * second operand when either is NaN, and the running maximum never is one. */
static inline double amax_f64_avx512(const double *x, int64_t n) {
    __m512d m = _mm512_setzero_pd();
    for (int64_t i = 0; i < n; i += 8) m = _mm512_max_pd(_mm512_abs_pd(_mm512_loadu_pd(x + i)), m);
    return _mm512_reduce_max_pd(m);
}

/* 8 products x * s taken in double, rounded once to float32 (vcvtpd2ps, like the C cast), then to the nearest
 * integer, half to even (exact for |v| < 2^22, which every quantizer input satisfies as in bn_round_even). */
static inline __m256 scaled_f32_avx512(const double *x, __m512d s) {
    return _mm256_roundscale_ps(_mm512_cvtpd_ps(_mm512_mul_pd(_mm512_loadu_pd(x), s)),
                                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}

/* quant_pt_row_f64 (bn_common.c), 8 doubles at a time; the same clamps, in the same order, on the same floats. */
static float quant_pt_f64_avx512(const double *x, int64_t K, int8_t *q, int32_t *sum) {
    const int64_t k8 = K & ~(int64_t)7;
    double mx = k8 ? amax_f64_avx512(x, k8) : 0.0;
    for (int64_t i = k8; i < K; i++) mx = fabs(x[i]) > mx ? fabs(x[i]) : mx;
    mx = mx > 1e-5 ? mx : 1e-5;
    const float s = (float)(127.0 / mx);
    const __m512d vs = _mm512_set1_pd((double)s);
    const __m256 hi = _mm256_set1_ps(127.f), lo = _mm256_set1_ps(-128.f);
    __m256i vsum = _mm256_setzero_si256();
    for (int64_t i = 0; i < k8; i += 8) {
        const __m256 v = scaled_f32_avx512(x + i, vs);
        __m256i iv = _mm256_cvtps_epi32(v); /* integral already; NaN -> INT_MIN like (int)NaN */
        iv = _mm256_mask_blend_epi32(_mm256_cmp_ps_mask(v, lo, _CMP_LT_OQ), iv, _mm256_set1_epi32(-128));
        iv = _mm256_mask_blend_epi32(_mm256_cmp_ps_mask(v, hi, _CMP_GT_OQ), iv, _mm256_set1_epi32(127));
        vsum = _mm256_add_epi32(vsum, iv);
        _mm_storel_epi64((__m128i *)(q + i), _mm256_cvtepi32_epi8(iv));
    }
    int32_t acc = 0;
    int32_t lanes[8];
    _mm256_storeu_si256((__m256i *)lanes, vsum);
    for (int j = 0; j < 8; j++) acc += lanes[j]; /* integer adds: order-independent */
    *sum = acc + bn_quant_f64_run(x, k8, K, s, q);
    return s;
}

/* quant_block256_row_f64 (bn_common.c): the signed element of largest |x| (the first one on ties), iscale, and the
 * same per-element operations 8 at a time. */
static void quant_b256_f64_avx512(const double *x, int64_t K, int8_t *q, float *d, int32_t *bsum) {
    for (int64_t b = 0; b < K / 256; b++) {
        const double *xb = x + 256 * b;
        int8_t *qb = q + 256 * b;
        const double amax = amax_f64_avx512(xb, 256);
        int64_t imax = 0;
        if (amax > 0.0)
            while (fabs(xb[imax]) != amax) imax++;
        const float mx = (float)xb[imax];
        if (mx == 0.f) {
            d[b] = 0.f;
            bsum[b] = 0;
            memset(qb, 0, 256);
            continue;
        }
        const float iscale = -127.f / mx;
        const __m512d vs = _mm512_set1_pd((double)iscale);
        __m256i vsum = _mm256_setzero_si256();
        for (int j = 0; j < 256; j += 8) {
            const __m256i iv = _mm256_min_epi32(_mm256_cvtps_epi32(scaled_f32_avx512(xb + j, vs)),
                                                _mm256_set1_epi32(127));
            vsum = _mm256_add_epi32(vsum, iv);
            _mm_storel_epi64((__m128i *)(qb + j), _mm256_cvtepi32_epi8(iv));
        }
        int32_t lanes[8], acc = 0;
        _mm256_storeu_si256((__m256i *)lanes, vsum);
        for (int j = 0; j < 8; j++) acc += lanes[j];
        d[b] = 1.f / iscale;
        bsum[b] = acc;
    }
}

const bn_isa_ops bn_ops_avx512 = {tile_avx512,    quant_pt_avx512, f16_rows_avx512, gemv_tq_avx512,
                                  sum_u64_avx512, attn_f32_avx512, attn_f64_avx512, "avx512vnni",
                                  quant_pt_f64_avx512, quant_b256_f64_avx512, gemm4_avx512, gemv_range_avx512};

#endif
