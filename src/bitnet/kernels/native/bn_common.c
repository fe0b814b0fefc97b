/* Native CPU kernels for bitnet-py: dispatch, threading, activation quantization, epilogues and the float ops.
 *
 * The public functions (prefix bn_) are called through ctypes from bitnet/kernels/native/__init__.py, which
 * releases the GIL for the duration of every call. The integer parts are exact and identical across the scalar,
 * AVX2 and AVX-512 VNNI paths; the float epilogues run in this file, once, in a fixed order, so all paths also
 * agree bit for bit on the float outputs of the ternary matmuls.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#else
static int omp_get_thread_num(void) { return 0; }
static int omp_get_num_threads(void) { return 1; }
static int omp_get_num_procs(void) { return 1; }
#include <time.h>
static double omp_get_wtime(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}
#endif

#include "bn_kernels.h"


static int g_best_isa = -1;
static int g_isa = -1;
static int g_threads = 0;

static int detect_isa(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni"))
        return BN_ISA_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c"))
        return BN_ISA_AVX2;
#endif
    return BN_ISA_SCALAR;
}

const bn_isa_ops *bn_ops(void) {
    if (g_isa < 0) g_isa = g_best_isa = detect_isa();
#if defined(__x86_64__) || defined(__i386__)
    if (g_isa == BN_ISA_AVX512) return &bn_ops_avx512;
    if (g_isa == BN_ISA_AVX2) return &bn_ops_avx2;
#endif
    return &bn_ops_scalar;
}

/* ---- configuration ------------------------------------------------------------------------------------------ */

int bn_best_isa(void) {
    if (g_best_isa < 0) g_isa = g_best_isa = detect_isa();
    return g_best_isa;
}

/* Select an instruction set at most as wide as the CPU supports; returns the one in use. */
int bn_set_isa(int isa) {
    int best = bn_best_isa();
    g_isa = isa < 0 ? best : (isa > best ? best : isa);
    return g_isa;
}

int bn_get_isa(void) {
    bn_ops();
    return g_isa;
}

const char *bn_isa_name(void) { return bn_ops()->name; }

void bn_set_threads(int n) { g_threads = n; }

int bn_get_threads(void) { return g_threads > 0 ? g_threads : omp_get_num_procs(); }

int bn_has_openmp(void) {
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

/* ---- small shared helpers ------------------------------------------------------------------------------------ */

float bn_fp16_to_fp32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, mant = h & 0x3ff, bits;
    if (exp == 0) {
        if (mant == 0) {
            bits = sign;
        } else { /* subnormal: normalise */
            exp = 127 - 15 + 1;
            while (!(mant & 0x400)) {
                mant <<= 1;
                exp--;
            }
            bits = sign | (exp << 23) | ((mant & 0x3ff) << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (mant << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

int bn_perm256(int e) { return 64 * ((e & 127) >> 5) + 32 * (e >> 7) + (e & 31); }

void bn_tq1_decode_block(const uint8_t *blk, uint8_t codes[256]) {
    static const uint8_t pow3[5] = {1, 3, 9, 27, 81};
    for (int n = 0; n < 5; n++) {
        for (int m = 0; m < 32; m++) {
            uint8_t q = (uint8_t)(blk[m] * pow3[n]);
            codes[bn_perm256(m + 32 * n)] = (uint8_t)(((uint16_t)q * 3) >> 8);
        }
        for (int m = 0; m < 16; m++) {
            uint8_t q = (uint8_t)(blk[32 + m] * pow3[n]);
            codes[bn_perm256(160 + 16 * n + m)] = (uint8_t)(((uint16_t)q * 3) >> 8);
        }
    }
    for (int n = 0; n < 4; n++)
        for (int j = 0; j < 4; j++) {
            uint8_t q = (uint8_t)(blk[48 + j] * pow3[n]);
            codes[240 + 4 * n + j] = (uint8_t)(((uint16_t)q * 3) >> 8);
        }
}

/* ---- activation quantization --------------------------------------------------------------------------------- */

/* llama.cpp's nearest_int: round half to even through the 1.5*2^23 trick (|fval| <= 2^22). */
static inline int nearest_int(float fval) {
    float val = fval + 12582912.f;
    int i;
    memcpy(&i, &val, sizeof(int));
    return (i & 0x007fffff) - 0x00400000;
}

/* quantize_row_q8_K_ref semantics per 256-element block; also the block sums of q. */
static void quant_block256_row(const float *x, int64_t K, int8_t *q, float *d, int32_t *bsum) {
    for (int64_t b = 0; b < K / 256; b++) {
        const float *xb = x + 256 * b;
        int8_t *qb = q + 256 * b;
        float amax = 0.f, mx = 0.f;
        for (int j = 0; j < 256; j++) {
            float ax = fabsf(xb[j]);
            if (ax > amax) {
                amax = ax;
                mx = xb[j];
            }
        }
        if (amax == 0.f) {
            d[b] = 0.f;
            bsum[b] = 0;
            memset(qb, 0, 256);
            continue;
        }
        const float iscale = -127.f / mx;
        int32_t s = 0;
        for (int j = 0; j < 256; j++) {
            int v = nearest_int(iscale * xb[j]);
            v = v < 127 ? v : 127;
            qb[j] = (int8_t)v;
            s += v;
        }
        d[b] = 1.f / iscale;
        bsum[b] = s;
    }
}

/* The same two quantizers for float64 input (the engine's default numerics): max taken in double, each product
 * x * scale taken in double and rounded once to float32, then rounded half to even (bitnet.kernels.quant). */
static float quant_pt_row_f64(const double *x, int64_t K, int8_t *q, int32_t *sum) {
    double mx = 1e-5;
    for (int64_t i = 0; i < K; i++) {
        double a = fabs(x[i]);
        if (a > mx) mx = a;
    }
    const float s = (float)(127.0 / mx);
    *sum = bn_quant_f64_run(x, 0, K, s, q);
    return s;
}

static void quant_block256_row_f64(const double *x, int64_t K, int8_t *q, float *d, int32_t *bsum) {
    for (int64_t b = 0; b < K / 256; b++) {
        const double *xb = x + 256 * b;
        int8_t *qb = q + 256 * b;
        double amax = 0.0;
        int64_t imax = 0;
        for (int j = 0; j < 256; j++) {
            double ax = fabs(xb[j]);
            if (ax > amax) {
                amax = ax;
                imax = j;
            }
        }
        const float mx = (float)xb[imax];
        if (mx == 0.f) {
            d[b] = 0.f;
            bsum[b] = 0;
            memset(qb, 0, 256);
            continue;
        }
        const float iscale = -127.f / mx;
        int32_t acc = 0;
        for (int j = 0; j < 256; j++) {
            int v = (int)bn_round_even((float)(xb[j] * (double)iscale));
            v = v < 127 ? v : 127;
            qb[j] = (int8_t)v;
            acc += v;
        }
        d[b] = 1.f / iscale;
        bsum[b] = acc;
    }
}

static void block_sums_256(const int8_t *q, int64_t K, int32_t *bsum) {
    for (int64_t b = 0; b < K / 256; b++) {
        int32_t s = 0;
        for (int j = 0; j < 256; j++) s += q[256 * b + j];
        bsum[b] = s;
    }
}

static void permute_row(const int8_t *src, int64_t K, int8_t *dst) {
    const int64_t nb = K / 256;
    for (int64_t b = 0; b < nb; b++)
        for (int c = 0; c < 2; c++)
            for (int g = 0; g < 4; g++) memcpy(dst + 256 * b + 64 * g + 32 * c, src + 256 * b + 128 * c + 32 * g, 32);
    memcpy(dst + 256 * nb, src + 256 * nb, (size_t)(K - 256 * nb));
}

/* Quantize one row. per-token: scale[0], sum[0] and (if K % 256 == 0) bsum[K/256]; block256: d/bsum[K/256].
 * q is written in natural order when `permute` is 0, in kernel layout otherwise. */
static void quantize_row(int profile, const void *x, int is_f64, int64_t K, int8_t *q, int permute, int8_t *tmp,
                         float *scale, int32_t *sum, float *d, int32_t *bsum) {
    int8_t *nat = permute ? tmp : q;
    const bn_isa_ops *o = bn_ops();
    if (profile == BN_PER_TOKEN) {
        if (!is_f64)
            *scale = o->quant_pt(x, K, nat, sum);
        else
            *scale = (o->quant_pt_f64 ? o->quant_pt_f64 : quant_pt_row_f64)(x, K, nat, sum);
        if (bsum) block_sums_256(nat, K, bsum);
    } else if (is_f64) {
        (o->quant_b256_f64 ? o->quant_b256_f64 : quant_block256_row_f64)(x, K, nat, d, bsum);
    } else {
        quant_block256_row(x, K, nat, d, bsum);
    }
    if (permute) permute_row(nat, K, q);
}

/* Public quantizer (natural order) of x [N, K] (float32, or float64 when is_f64). per-token: scales[N], sums[N];
 * block256: scales/sums [N, K/256]. */
int bn_quantize(int profile, const void *x, int is_f64, int64_t N, int64_t K, int8_t *q, float *scales,
                int32_t *sums) {
    if (K <= 0 || N < 0) return BN_EBADSHAPE;
    if (profile == BN_BLOCK256 && K % 256) return BN_EBADSHAPE;
    if (profile != BN_PER_TOKEN && profile != BN_BLOCK256) return BN_EBADARG;
    const size_t esz = is_f64 ? sizeof(double) : sizeof(float);
    const int nth = bn_get_threads();
#pragma omp parallel for num_threads(nth) schedule(static) if (N > 1 && nth > 1)
    for (int64_t n = 0; n < N; n++) {
        const void *xr = (const char *)x + (size_t)(n * K) * esz;
        if (profile == BN_PER_TOKEN)
            quantize_row(profile, xr, is_f64, K, q + n * K, 0, NULL, scales + n, sums + n, NULL, NULL);
        else
            quantize_row(profile, xr, is_f64, K, q + n * K, 0, NULL, NULL, NULL, scales + n * (K / 256),
                         sums + n * (K / 256));
    }
    return BN_OK;
}

/* ---- ternary matmul driver ----------------------------------------------------------------------------------- */

static int64_t row_bytes(int fmt, int64_t K) {
    switch (fmt) {
    case BN_I2S: return K / 4;
    case BN_TQ2: return (K / 256) * BN_TQ2_BLOCK_BYTES;
    default: return (K / 256) * BN_TQ1_BLOCK_BYTES;
    }
}

int bn_check_shape(int fmt, int profile, int64_t M, int64_t K) {
    if (M <= 0 || K <= 0) return BN_EBADSHAPE;
    if (fmt < BN_I2S || fmt > BN_TQ1 || (profile != BN_PER_TOKEN && profile != BN_BLOCK256)) return BN_EBADARG;
    if (fmt == BN_I2S ? (K % 128 != 0) : (K % 256 != 0)) return BN_EBADSHAPE;
    if (profile == BN_BLOCK256 && K % 256) return BN_EBADSHAPE;
    return BN_OK;
}

static float tq_block_scale(int fmt, const uint8_t *row, int64_t b) {
    const uint8_t *p = fmt == BN_TQ2 ? row + BN_TQ2_BLOCK_BYTES * b + 64 : row + BN_TQ1_BLOCK_BYTES * b + 52;
    const uint16_t h = (uint16_t)(p[0] | (p[1] << 8));
    const uint32_t e = h & 0x7c00u;
    if (e != 0 && e != 0x7c00u) { /* normal half (every real block scale): rebias the exponent, exact */
        const uint32_t bits = ((uint32_t)(h & 0x8000u) << 16) | (((uint32_t)(h & 0x7fffu) << 13) + 0x38000000u);
        float f;
        memcpy(&f, &bits, 4);
        return f;
    }
    return bn_fp16_to_fp32(h);
}

/* The float epilogue, shared by every instruction set (so all paths agree bit for bit). `s` are the per-block
 * sums of raw codes times q (nbt entries). See docs/kernels.md for the four (format, profile) formulas. */
static float epilogue(int fmt, int profile, const int32_t *s, int64_t nb, const float *d_w, float w_scale,
                      float a_scale, int32_t a_sum, const float *a_d, const int32_t *a_bsum) {
    if (fmt == BN_I2S) {
        if (profile == BN_PER_TOKEN) /* the tile ran in whole_row mode: s[0] is the row total */
            return ((float)s[0] - (float)a_sum) / a_scale * w_scale;
        float acc = 0.f;
        for (int64_t b = 0; b < nb; b++) acc += (float)(s[b] - a_bsum[b]) * a_d[b];
        return acc * w_scale;
    }
    float acc = 0.f;
    if (profile == BN_PER_TOKEN) {
        for (int64_t b = 0; b < nb; b++) acc += (float)(s[b] - a_bsum[b]) * d_w[b];
        return acc / a_scale;
    }
    for (int64_t b = 0; b < nb; b++) acc += (float)(s[b] - a_bsum[b]) * (a_d[b] * d_w[b]);
    return acc;
}


int bn_act_alloc(bn_act_buf *a, int64_t N, int64_t K, int nth) {
    const int64_t nb = K / 256;
    size_t qbytes = ((size_t)(N * K) + 63) & ~(size_t)63;
    size_t total = qbytes + (size_t)N * (sizeof(float) + sizeof(int32_t)) +
                   (size_t)(N * (nb + 1)) * (sizeof(float) + sizeof(int32_t)) + (size_t)K * (size_t)nth + 64;
    a->mem = aligned_alloc(64, (total + 63) & ~(size_t)63);
    if (!a->mem) return BN_ENOMEM;
    char *p = a->mem;
    a->q = (int8_t *)p;
    p += qbytes;
    a->scale = (float *)p;
    p += N * sizeof(float);
    a->sum = (int32_t *)p;
    p += N * sizeof(int32_t);
    a->d = (float *)p;
    p += N * (nb + 1) * sizeof(float);
    a->bsum = (int32_t *)p;
    p += N * (nb + 1) * sizeof(int32_t);
    a->tmp = (int8_t *)p;
    return BN_OK;
}

/* Quantize N rows of x (float32, or float64 when is_f64; row stride ldx elements) into kernel layout. */
void bn_quantize_acts(bn_act_buf *a, int profile, const void *x, int is_f64, int64_t N, int64_t K, int64_t ldx,
                      int nth) {
    const int64_t nb = K / 256;
    const size_t esz = is_f64 ? sizeof(double) : sizeof(float);
#pragma omp parallel num_threads(nth) if (N > 1 && nth > 1)
    {
        int8_t *tmp = a->tmp + (size_t)K * (size_t)omp_get_thread_num();
#pragma omp for schedule(static)
        for (int64_t n = 0; n < N; n++)
            quantize_row(profile, (const char *)x + (size_t)(n * ldx) * esz, is_f64, K, a->q + n * K, 1, tmp,
                         a->scale + n, a->sum + n, a->d + n * nb, a->bsum + n * nb);
    }
}

/* Runs the tiles for rows [tile0*4, tile1*4) and all N tokens; either writes float outputs (y != NULL) or raw block
 * sums (raw != NULL, [N, M, nbt]). */
static void run_tiles(int fmt, int profile, const uint8_t *w, int64_t M, int64_t K, float w_scale, const bn_act_buf *a,
                      int64_t N, float *y, int64_t ldy, int32_t *raw, int64_t tile0, int64_t tile1, int32_t *buf,
                      float *dw) {
    const bn_isa_ops *o = bn_ops();
    const int64_t nb = K / 256, rb = row_bytes(fmt, K);
    const int nbt = (int)(nb + (K % 256 ? 1 : 0));
    const int whole_row = !raw && fmt == BN_I2S && profile == BN_PER_TOKEN;
    if (N == 1 && !raw && o->gemv_range && nbt == nb) { /* decode: whole tiles in one call */
        const int64_t full = M / 4, t1 = tile1 < full ? tile1 : full;
        if (t1 > tile0) {
            o->gemv_range(fmt, profile, w, rb, tile0, t1, a->q, K, a->d, a->bsum, a->scale[0], a->sum[0], w_scale, y);
            tile0 = t1;
        }
    }
    for (int64_t tile = tile0; tile < tile1; tile++) {
        const int64_t m0 = tile * 4;
        const int R = (int)(M - m0 < 4 ? M - m0 : 4);
        const uint8_t *rows[4];
        for (int r = 0; r < 4; r++) rows[r] = w + (m0 + (r < R ? r : R - 1)) * rb;
        int have_dw = 0;
        for (int64_t t0 = 0; t0 < N;) {
            const int T = N - t0 >= 4 ? 4 : 1;
            if (T == 1 && fmt != BN_I2S && !raw && o->gemv_tq) {
                float out[4];
                o->gemv_tq(fmt, profile, rows, a->q + t0 * K, nb, a->d + t0 * nb, a->bsum + t0 * nb, a->scale[t0], out);
                for (int r = 0; r < R; r++) y[t0 * ldy + m0 + r] = out[r];
                t0 += 1;
                continue;
            }
            if (T == 4 && !raw && o->gemm4 && nbt == nb) {
                float out[16];
                o->gemm4(fmt, profile, rows, a->q + t0 * K, K, a->d + t0 * nb, a->bsum + t0 * nb, a->scale + t0,
                         a->sum + t0, w_scale, out);
                for (int r = 0; r < R; r++)
                    for (int t = 0; t < 4; t++) y[(t0 + t) * ldy + m0 + r] = out[r * 4 + t];
                t0 += 4;
                continue;
            }
            const int8_t *acts[4];
            for (int t = 0; t < 4; t++) acts[t] = a->q + (t0 + (t < T ? t : 0)) * K;
            o->tile(fmt, rows, acts, T, K, buf, nbt, whole_row);
            if (!have_dw && fmt != BN_I2S && !raw) { /* TQ block scales, once per tile, now the rows are cached */
                for (int r = 0; r < R; r++)
                    for (int64_t b = 0; b < nb; b++) dw[r * nb + b] = tq_block_scale(fmt, rows[r], b);
                have_dw = 1;
            }
            for (int r = 0; r < R; r++)
                for (int t = 0; t < T; t++) {
                    const int32_t *s = buf + (r * 4 + t) * nbt;
                    const int64_t n = t0 + t;
                    if (raw) {
                        memcpy(raw + (n * M + m0 + r) * nbt, s, nbt * sizeof(int32_t));
                    } else {
                        y[n * ldy + m0 + r] = epilogue(fmt, profile, s, nb, dw + r * nb, w_scale, a->scale[n],
                                                       a->sum[n], a->d + n * nb, a->bsum + n * nb);
                    }
                }
            t0 += T;
        }
    }
}

/* Several weights applied to the same quantized activations (q/k/v, gate/up) in one parallel region: threads take
 * chunks of 4-row tiles of all the weights from a shared counter instead of fixed halves, so on a shared machine a
 * thread that loses its core for a while holds the call up by one chunk, not by half the work, and the small k/v
 * matrices do not each pay a fork/join. Every job must have n_in == K. */
int bn_multi_matmul(int profile, const bn_mm_job *jobs, int njobs, const bn_act_buf *a, int64_t N, int64_t K,
                    int nth) {
    int64_t total = 0, work = 0;
    for (int j = 0; j < njobs; j++) {
        int rc = bn_check_shape(jobs[j].fmt, profile, jobs[j].M, K);
        if (rc) return rc;
        total += (jobs[j].M + 3) / 4;
        work += jobs[j].M * K * N;
    }
    const int nbt = (int)(K / 256 + (K % 256 ? 1 : 0));
    const size_t bufsz = sizeof(int32_t) * 16 * (size_t)nbt + sizeof(float) * 4 * (size_t)(nbt + 1);
    const int par = nth > 1 && work >= (1 << 16);
    /* Guided chunks: a quarter of the remaining tiles per thread, down to 4 tiles, so that the threads finish
     * together (the last chunks are small) while the early ones are long sequential streams. Two passes: count,
     * then fill. */
    int64_t nchunks = 0;
    int32_t *cj = NULL;
    int64_t *c0s = NULL, *c1s = NULL;
    for (int pass = 0; pass < 2; pass++) {
        int64_t remaining = total, c = 0;
        for (int j = 0; j < njobs; j++) {
            const int64_t nt = (jobs[j].M + 3) / 4;
            for (int64_t t0 = 0; t0 < nt; c++) {
                int64_t len = par ? remaining / (2 * nth) : nt;
                len = len < 4 ? 4 : len;
                len = len > nt - t0 ? nt - t0 : len;
                if (pass) {
                    cj[c] = j;
                    c0s[c] = t0;
                    c1s[c] = t0 + len;
                }
                t0 += len;
                remaining -= len;
            }
        }
        if (pass) break;
        nchunks = c;
        cj = malloc(sizeof(int32_t) * (size_t)(nchunks + 1));
        c0s = malloc(sizeof(int64_t) * 2 * (size_t)(nchunks + 1));
        if (!cj || !c0s) {
            free(cj);
            free(c0s);
            return BN_ENOMEM;
        }
        c1s = c0s + nchunks + 1;
    }
    int64_t next = 0;
    int failed = 0;
#pragma omp parallel num_threads(nth) if (par)
    {
        int32_t *buf = malloc(bufsz);
        if (!buf) {
#pragma omp atomic write
            failed = 1;
        } else {
            for (;;) {
                int64_t c;
#pragma omp atomic capture
                c = next++;
                if (c >= nchunks) break;
                const bn_mm_job *jb = &jobs[cj[c]];
                run_tiles(jb->fmt, profile, jb->w, jb->M, K, jb->w_scale, a, N, jb->y, jb->ldy, jb->raw, c0s[c],
                          c1s[c], buf, (float *)(buf + 16 * nbt));
            }
            free(buf);
        }
    }
    free(cj);
    free(c0s);
    return failed ? BN_ENOMEM : BN_OK;
}

static int matmul_impl(int fmt, int profile, const uint8_t *w, int64_t M, int64_t K, float w_scale, const float *x,
                       const int8_t *q_natural, const float *q_scales, const int32_t *q_sums, int64_t N,
                       int64_t ldx, float *y, int64_t ldy, int32_t *raw) {
    int rc = bn_check_shape(fmt, profile, M, K);
    if (rc) return rc;
    if (N <= 0) return N == 0 ? BN_OK : BN_EBADSHAPE;
    const int nth = bn_get_threads();
    bn_act_buf a;
    if ((rc = bn_act_alloc(&a, N, K, nth > 0 ? nth : 1))) return rc;
    if (q_natural) {
        const int64_t nb = K / 256;
        for (int64_t n = 0; n < N; n++) {
            permute_row(q_natural + n * K, K, a.q + n * K);
            if (profile == BN_BLOCK256) {
                memcpy(a.d + n * nb, q_scales + n * nb, sizeof(float) * nb);
                memcpy(a.bsum + n * nb, q_sums + n * nb, sizeof(int32_t) * nb);
            } else {
                a.scale[n] = q_scales ? q_scales[n] : 1.f;
                a.sum[n] = q_sums ? q_sums[n] : 0;
                block_sums_256(q_natural + n * K, K, a.bsum + n * nb);
            }
        }
    } else {
        bn_quantize_acts(&a, profile, x, 0, N, K, ldx, nth);
    }
    const bn_mm_job job = {fmt, w, M, w_scale, y, ldy, raw};
    rc = bn_multi_matmul(profile, &job, 1, &a, N, K, nth);
    free(a.mem);
    return rc;
}

/* y[n, m] = sum_k W[m, k] * x[n, k] with the activations quantized in-kernel (profile 0 per-token, 1 block256). */
int bn_ternary_matmul(int fmt, const uint8_t *w, int64_t M, int64_t K, float w_scale, int profile, const float *x,
                      int64_t N, int64_t ldx, float *y, int64_t ldy) {
    return matmul_impl(fmt, profile, w, M, K, w_scale, x, NULL, NULL, NULL, N, ldx, y, ldy, NULL);
}

/* The same with activations already quantized (natural order q [N, K]; per-token: scales/sums [N]; block256:
 * scales/sums [N, K/256]), as the engine's quantize op hands them over. */
int bn_ternary_matmul_q(int fmt, const uint8_t *w, int64_t M, int64_t K, float w_scale, int profile, const int8_t *q,
                        const float *scales, const int32_t *sums, int64_t N, float *y, int64_t ldy) {
    return matmul_impl(fmt, profile, w, M, K, w_scale, NULL, q, scales, sums, N, K, y, ldy, NULL);
}

/* Integer part only: raw[n, m, b] = sum over block b of code(m, k) * q[n, k] (codes 0/1/2; natural-order q). */
int bn_ternary_block_sums(int fmt, const uint8_t *w, int64_t M, int64_t K, const int8_t *q, int64_t N,
                          int32_t *raw) {
    return matmul_impl(fmt, BN_PER_TOKEN, w, M, K, 1.f, NULL, q, NULL, NULL, N, K, NULL, 0, raw);
}

/* ---- float ops ---------------------------------------------------------------------------------------------- */

/* y[n, m] = sum_k f16(W[m, k]) * x[n, k]: the tied F16 lm_head. Threads split the rows. */
int bn_f16_matmul(const uint16_t *w, int64_t M, int64_t K, const float *x, int64_t N, int64_t ldx, float *y,
                  int64_t ldy) {
    if (M <= 0 || K <= 0 || N < 0) return BN_EBADSHAPE;
    const bn_isa_ops *o = bn_ops();
    const int nth = bn_get_threads();
    const int64_t RB = 16; /* a few rows at a time so a multi-token call reuses them from L1 */
    const int64_t chunk = M / (16 * nth) > RB ? (M / (16 * nth) + RB - 1) / RB * RB : RB;
    int64_t next = 0;
#pragma omp parallel num_threads(nth) if (nth > 1 && M * K >= (1 << 16))
    {
        for (;;) { /* dynamic chunks of rows, as in the ternary matmul */
            int64_t r0;
#pragma omp atomic capture
            {
                r0 = next;
                next += chunk;
            }
            if (r0 >= M) break;
            const int64_t r1 = r0 + chunk < M ? r0 + chunk : M;
            for (int64_t r = r0; r < r1; r += RB) {
                const int64_t re = r + RB < r1 ? r + RB : r1;
                for (int64_t t0 = 0; t0 < N; t0 += 8) {
                    const int T = (int)(N - t0 < 8 ? N - t0 : 8);
                    o->f16_rows(w, K, x + t0 * ldx, T, ldx, y + t0 * ldy, ldy, r, re);
                }
            }
        }
    }
    return BN_OK;
}

/* ggml rms_norm then the weight multiply: sum of float squares in double, scale = 1/sqrtf(mean + eps). */
void bn_rmsnorm(const float *x, const float *w, int64_t N, int64_t K, float eps, float *y) {
    const int nth = bn_get_threads();
#pragma omp parallel for num_threads(nth) schedule(static) if (N > 1 && nth > 1)
    for (int64_t n = 0; n < N; n++) {
        const float *xr = x + n * K;
        float *yr = y + n * K;
        double sum = 0.0;
        for (int64_t k = 0; k < K; k++) sum += (double)(xr[k] * xr[k]);
        const float mean = (float)(sum / (double)K);
        const float scale = 1.0f / sqrtf(mean + eps);
        for (int64_t k = 0; k < K; k++) yr[k] = (xr[k] * scale) * w[k];
    }
}

/* NEOX RoPE in place on x[n_tok, n_heads, head_dim] (row stride ld floats): element i pairs with i + head_dim/2,
 * angles as ggml computes them (theta = pos * base^(-2i/d), built by repeated float multiplication). */
void bn_rope_neox(float *x, int64_t n_tok, int64_t n_heads, int64_t head_dim, int64_t ld, const int32_t *pos,
                  float base) {
    const int64_t half = head_dim / 2;
    const float theta_scale = powf(base, -2.0f / (float)head_dim);
    float cs[1024];
    if (half > 512) return; /* head_dim > 1024: rejected by the Python wrapper before the call */
    for (int64_t t = 0; t < n_tok; t++) {
        float theta = (float)pos[t];
        for (int64_t i = 0; i < half; i++) {
            cs[2 * i] = cosf(theta);
            cs[2 * i + 1] = sinf(theta);
            theta *= theta_scale;
        }
        for (int64_t h = 0; h < n_heads; h++) {
            float *v = x + t * ld + h * head_dim;
            for (int64_t i = 0; i < half; i++) {
                const float x0 = v[i], x1 = v[i + half], c = cs[2 * i], s = cs[2 * i + 1];
                v[i] = x0 * c - x1 * s;
                v[i + half] = x0 * s + x1 * c;
            }
        }
    }

}

/* Causal GQA attention over an f32 KV cache laid out [pos, n_kv * head_dim] (row stride ldkv). Query t (of T, row
 * stride ldq) sits at position n_past + t and sees keys 0..n_past+t. Output rows have stride ldo. The loops live in
 * bn_isa_impl.h, compiled once per instruction set (the compiler vectorizes them for that ISA). */
int bn_attention(const float *q, int64_t T, int64_t ldq, const float *k, const float *v, int64_t ldkv, int64_t n_past,
                 int64_t n_heads, int64_t n_kv, int64_t head_dim, float scale, float *out, int64_t ldo) {
    if (n_kv <= 0 || n_heads % n_kv) return BN_EBADSHAPE;
    return bn_ops()->attn_f32(q, T, ldq, k, v, ldkv, n_past, n_heads, n_kv, head_dim, scale, out, ldo, bn_get_threads());
}

int bn_attention_f64(const double *q, int64_t T, int64_t ldq, const float *k, const float *v, int64_t ldkv,
                     int64_t n_past, int64_t n_heads, int64_t n_kv, int64_t head_dim, double scale, double *out,
                     int64_t ldo) {
    if (n_kv <= 0 || n_heads % n_kv) return BN_EBADSHAPE;
    return bn_ops()->attn_f64(q, T, ldq, k, v, ldkv, n_past, n_heads, n_kv, head_dim, scale, out, ldo, bn_get_threads());
}

/* Memory read-bandwidth probe: best GB/s (1e9 B/s) over `passes` parallel sums of buf[0..n). */
double bn_read_bandwidth(const uint8_t *buf, int64_t n, int passes, int nth, uint64_t *checksum) {
    const int64_t nw = n / 8;
    const uint64_t *u = (const uint64_t *)buf;
    double best = 0.0;
    uint64_t total = 0;
    for (int it = 0; it < passes; it++) {
        uint64_t s = 0;
        const bn_isa_ops *o = bn_ops();
        double t0 = omp_get_wtime();
#pragma omp parallel num_threads(nth) reduction(+ : s)
        {
            const int tid = omp_get_thread_num(), nt = omp_get_num_threads();
            const int64_t i0 = nw * tid / nt, i1 = nw * (tid + 1) / nt;
            s += o->sum_u64(u + i0, i1 - i0);
        }
        double dt = omp_get_wtime() - t0;
        total += s;
        if (dt > 0 && (double)(nw * 8) / dt / 1e9 > best) best = (double)(nw * 8) / dt / 1e9;
    }
    if (checksum) *checksum = total;
    return best;
}

/* ---- float64 variants (the engine's default numerics keeps hidden states in float64) ------------------------ */

void bn_rmsnorm_f64(const double *x, const float *w, int64_t N, int64_t K, double eps, double *y) {
    const int nth = bn_get_threads();
#pragma omp parallel for num_threads(nth) schedule(static) if (N > 1 && nth > 1)
    for (int64_t n = 0; n < N; n++) {
        const double *xr = x + n * K;
        double *yr = y + n * K;
        /* eight interleaved partial sums, added pairwise at the end: a fixed order (results do not depend on the
         * compiler or the thread count) that vectorizes, instead of one K-long chain of dependent adds */
        double part[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        int64_t k = 0;
        for (; k + 8 <= K; k += 8)
            for (int j = 0; j < 8; j++) part[j] += xr[k + j] * xr[k + j];
        for (; k < K; k++) part[k & 7] += xr[k] * xr[k];
        const double sum = ((part[0] + part[4]) + (part[2] + part[6])) + ((part[1] + part[5]) + (part[3] + part[7]));
        const double scale = 1.0 / sqrt(sum / (double)K + eps);
        for (int64_t k = 0; k < K; k++) yr[k] = (xr[k] * scale) * (double)w[k];
    }
}

/* NEOX RoPE with exact angles pos * base^(-2i/d) in double. */
void bn_rope_neox_f64(double *x, int64_t n_tok, int64_t n_heads, int64_t head_dim, int64_t ld, const int32_t *pos,
                      double base) {
    const int64_t half = head_dim / 2;
    double cs[1024];
    if (half > 512) return; /* head_dim > 1024: rejected by the Python wrapper before the call */
    for (int64_t t = 0; t < n_tok; t++) {
        for (int64_t i = 0; i < half; i++) {
            const double ang = (double)pos[t] * pow(base, -2.0 * (double)i / (double)head_dim);
            cs[2 * i] = cos(ang);
            cs[2 * i + 1] = sin(ang);
        }
        for (int64_t h = 0; h < n_heads; h++) {
            double *v = x + t * ld + h * head_dim;
            for (int64_t i = 0; i < half; i++) {
                const double x0 = v[i], x1 = v[i + half], c = cs[2 * i], s = cs[2 * i + 1];
                v[i] = x0 * c - x1 * s;
                v[i + half] = x0 * s + x1 * c;
            }
        }
    }

}

