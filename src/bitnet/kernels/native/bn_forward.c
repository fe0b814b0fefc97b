/* The whole stack of transformer blocks in one call, for decode and prefill in the engine's default numerics
 * (float64 hidden states, float32 KV cache).
 *
 * It runs the operations of bitnet/model/forward.py `Transformer._block`, in the same order, through the same C
 * functions the op-by-op path reaches one Python call at a time (RMSNorm, activation quantizer, ternary tiles and
 * their epilogue, RoPE, attention), so its hidden states are bit-identical to that path for relu² models; SiLU
 * uses libm's exp where numpy uses its own, which may differ in the last bit. What it removes is the Python
 * between the kernels (about fifteen calls per layer become one call per forward) and half of the parallel regions
 * (q/k/v and gate/up each run as one).
 *
 * Per block:  n = rms(x)*attn_norm; q,k,v = W.n; rope(q,k); KV write; a = attn(q, K, V); a = rms(a)*attn_sub_norm;
 *             h = x + Wo.a; m = rms(h)*ffn_norm; f = act(Wg.m) * (Wu.m); f = rms(f)*ffn_sub_norm; x = h + Wd.f
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bn_kernels.h"

/* ctypes mirrors these three structs field by field (bitnet/kernels/native/blocks.py): change both together. */
typedef struct {
    const uint8_t *data;   /* packed rows in the file layout (memory-mapped) */
    int64_t n_out, n_in;
    int32_t fmt;           /* enum bn_fmt */
    float scale;           /* I2_S per-tensor scale; 1 for the TQ formats */
    float out_scale;       /* arch `bitnet` .scale, multiplied in float32 after the matmul */
    int32_t has_out_scale;
} bn_qweight;

typedef struct {
    const float *attn_norm, *attn_sub_norm, *ffn_norm, *ffn_sub_norm; /* sub-norms: NULL when the model has none */
    bn_qweight wq, wk, wv, wo, wg, wu, wd;
} bn_block;

typedef struct {
    int64_t n_layers, dim, n_heads, n_kv, head_dim, ffn_dim;
    double eps, theta;
    int32_t profile; /* BN_PER_TOKEN or BN_BLOCK256 */
    int32_t act;     /* 0: relu(g)^2 * u, 1: silu(g) * u */
    const bn_block *blocks;
} bn_stack;

/* Slots of the `counts` array: how often each kernel ran (the Python side maps them to kernel IDs). */
enum {
    BN_CNT_MM = 0,         /* + 2 * fmt + (T > 1): {i2s,tq2,tq1}_{gemv,gemm} */
    BN_CNT_QUANT_ISA = 6,  /* the instruction set's float64 quantizer */
    BN_CNT_QUANT_SCALAR = 7,
    BN_CNT_RMSNORM = 8,
    BN_CNT_ROPE = 9,
    BN_CNT_ATTN = 10,
    BN_CNT_BLOCK = 11,
    BN_CNT_NS_MATMUL = 12, /* nanoseconds inside the ternary matmuls (quantizer included) */
    BN_CNT_NS_TOTAL = 13,  /* nanoseconds of the whole call */
    BN_NCOUNTS = 14
};

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int check_weight(const bn_qweight *w, int64_t n_out, int64_t n_in, int profile) {
    if (!w->data || w->n_out != n_out || w->n_in != n_in) return BN_EBADSHAPE;
    return bn_check_shape(w->fmt, profile, n_out, n_in);
}

static int check_stack(const bn_stack *m) {
    const int64_t nq = m->n_heads * m->head_dim, nk = m->n_kv * m->head_dim;
    if (m->n_layers < 0 || m->dim <= 0 || m->n_heads <= 0 || m->n_kv <= 0 || m->n_heads % m->n_kv ||
        m->head_dim <= 0 || m->head_dim % 2 || m->head_dim > 1024 || m->ffn_dim <= 0 || !m->blocks)
        return BN_EBADSHAPE;
    if ((m->profile != BN_PER_TOKEN && m->profile != BN_BLOCK256) || (m->act != 0 && m->act != 1)) return BN_EBADARG;
    for (int64_t l = 0; l < m->n_layers; l++) {
        const bn_block *b = &m->blocks[l];
        int rc;
        if (!b->attn_norm || !b->ffn_norm) return BN_EBADARG;
        if ((rc = check_weight(&b->wq, nq, m->dim, m->profile)) || (rc = check_weight(&b->wk, nk, m->dim, m->profile)) ||
            (rc = check_weight(&b->wv, nk, m->dim, m->profile)) || (rc = check_weight(&b->wo, m->dim, nq, m->profile)) ||
            (rc = check_weight(&b->wg, m->ffn_dim, m->dim, m->profile)) ||
            (rc = check_weight(&b->wu, m->ffn_dim, m->dim, m->profile)) ||
            (rc = check_weight(&b->wd, m->dim, m->ffn_dim, m->profile)))
            return rc;
    }
    return BN_OK;
}

static bn_mm_job job(const bn_qweight *w, float *y, int64_t ldy) {
    const bn_mm_job j = {w->fmt, w->data, w->n_out, w->scale, y, ldy, NULL};
    return j;
}

/* The float32 `.scale` multiply of forward.py (`out *= np.float32(w.out_scale)`) on T rows of n_out columns. */
static void apply_out_scale(const bn_qweight *w, float *y, int64_t T, int64_t ldy) {
    if (!w->has_out_scale) return;
    for (int64_t t = 0; t < T; t++)
        for (int64_t i = 0; i < w->n_out; i++) y[t * ldy + i] *= w->out_scale;
}

static int matmuls(const bn_stack *m, const bn_mm_job *jobs, int n, bn_act_buf *a, const double *x, int64_t T,
                   int64_t K, int nth, int64_t *counts) {
    const double t0 = now();
    bn_quantize_acts(a, m->profile, x, 1, T, K, K, nth);
    const bn_isa_ops *o = bn_ops();
    const int isa_q = m->profile == BN_PER_TOKEN ? o->quant_pt_f64 != NULL : o->quant_b256_f64 != NULL;
    counts[isa_q ? BN_CNT_QUANT_ISA : BN_CNT_QUANT_SCALAR] += 1;
    for (int j = 0; j < n; j++) counts[BN_CNT_MM + 2 * jobs[j].fmt + (T > 1)] += 1;
    const int rc = bn_multi_matmul(m->profile, jobs, n, a, T, K, nth);
    counts[BN_CNT_NS_MATMUL] += (int64_t)(1e9 * (now() - t0));
    return rc;
}

/* x [T, dim] float64 (in place: the hidden states after the last block); the T tokens sit at positions
 * n_past..n_past+T-1. k_cache / v_cache: float32 [n_layers, cap, n_kv * head_dim], positions < n_past already
 * filled; this call writes positions n_past..n_past+T-1 of every layer. counts[BN_NCOUNTS] is incremented (kernel
 * calls, and the time inside the matmuls and in the whole call, which bench/cpu.py reads). */
int bn_forward_blocks(const bn_stack *m, double *x, int64_t T, int64_t n_past, float *k_cache, float *v_cache,
                      int64_t cap, int64_t *counts) {
    int rc = check_stack(m);
    if (rc) return rc;
    if (T <= 0 || n_past < 0 || n_past + T > cap || !x || !k_cache || !v_cache || !counts) return BN_EBADSHAPE;
    const double t_start = now();
    const int64_t D = m->dim, H = m->n_heads, HKV = m->n_kv, HD = m->head_dim, F = m->ffn_dim;
    const int64_t nq = H * HD, nk = HKV * HD, nqkv = nq + 2 * nk;
    const int64_t kmax = D > nq ? (D > F ? D : F) : (nq > F ? nq : F);
    const int nth = bn_get_threads();
    const double att_scale = 1.0 / sqrt((double)HD);

    bn_act_buf a;
    if ((rc = bn_act_alloc(&a, T, kmax, nth > 0 ? nth : 1))) return rc;
    /* float32 matmul outputs, float64 copies, and the residual branch, all [T, width] */
    const size_t nf = (size_t)T * (size_t)(nqkv > 2 * F ? nqkv : 2 * F);
    const size_t nd = (size_t)T * (size_t)(nqkv + kmax + kmax + D);
    float *yf = malloc(sizeof(float) * nf);
    double *yd = malloc(sizeof(double) * nd);
    int32_t *pos = malloc(sizeof(int32_t) * (size_t)T);
    if (!yf || !yd || !pos) {
        free(yf);
        free(yd);
        free(pos);
        free(a.mem);
        return BN_ENOMEM;
    }
    double *qkv = yd, *nrm = qkv + T * nqkv, *att = nrm + T * kmax, *h = att + T * kmax;
    float *g = yf, *u = yf + T * F; /* gate/up; q|k|v and the o/down outputs reuse the front of yf */
    for (int64_t t = 0; t < T; t++) pos[t] = (int32_t)(n_past + t);

    for (int64_t l = 0; l < m->n_layers && rc == BN_OK; l++) {
        const bn_block *b = &m->blocks[l];
        float *kc = k_cache + l * cap * nk, *vc = v_cache + l * cap * nk;
        /* attention */
        bn_rmsnorm_f64(x, b->attn_norm, T, D, m->eps, nrm);
        const bn_mm_job qkv_jobs[3] = {job(&b->wq, yf, nqkv), job(&b->wk, yf + nq, nqkv), job(&b->wv, yf + nq + nk, nqkv)};
        if ((rc = matmuls(m, qkv_jobs, 3, &a, nrm, T, D, nth, counts))) break;
        apply_out_scale(&b->wq, yf, T, nqkv);
        apply_out_scale(&b->wk, yf + nq, T, nqkv);
        apply_out_scale(&b->wv, yf + nq + nk, T, nqkv);
        for (int64_t i = 0; i < T * nqkv; i++) qkv[i] = (double)yf[i];
        bn_rope_neox_f64(qkv, T, H + HKV, HD, nqkv, pos, m->theta);
        for (int64_t t = 0; t < T; t++)
            for (int64_t i = 0; i < nk; i++) {
                kc[(n_past + t) * nk + i] = (float)qkv[t * nqkv + nq + i];
                vc[(n_past + t) * nk + i] = (float)qkv[t * nqkv + nq + nk + i];
            }
        if ((rc = bn_ops()->attn_f64(qkv, T, nqkv, kc, vc, nk, n_past, H, HKV, HD, att_scale, att, nq, nth))) break;
        if (b->attn_sub_norm) bn_rmsnorm_f64(att, b->attn_sub_norm, T, nq, m->eps, att);
        const bn_mm_job o_job = job(&b->wo, yf, D);
        if ((rc = matmuls(m, &o_job, 1, &a, att, T, nq, nth, counts))) break;
        apply_out_scale(&b->wo, yf, T, D);
        for (int64_t i = 0; i < T * D; i++) h[i] = x[i] + (double)yf[i];
        /* feed-forward */
        bn_rmsnorm_f64(h, b->ffn_norm, T, D, m->eps, nrm);
        const bn_mm_job gu_jobs[2] = {job(&b->wg, g, F), job(&b->wu, u, F)};
        if ((rc = matmuls(m, gu_jobs, 2, &a, nrm, T, D, nth, counts))) break;
        apply_out_scale(&b->wg, g, T, F);
        apply_out_scale(&b->wu, u, T, F);
        double *f = att; /* the attention output is consumed: reuse it for the FFN activations */
        /* elementwise, so threads change nothing but the time (SiLU's exp is ~0.1 ms per layer on one core) */
#pragma omp parallel for num_threads(nth) schedule(static) if (nth > 1 && T * F >= 4096)
        for (int64_t i = 0; i < T * F; i++) {
            const double gv = (double)g[i];
            double act;
            if (m->act == 0) {
                const double r = gv > 0.0 || isnan(gv) ? gv : 0.0; /* np.maximum(g, 0) */
                act = r * r;
            } else {
                act = gv / (exp(-gv) + 1.0);
            }
            f[i] = act * (double)u[i];
        }
        if (b->ffn_sub_norm) bn_rmsnorm_f64(f, b->ffn_sub_norm, T, F, m->eps, f);
        const bn_mm_job d_job = job(&b->wd, yf, D);
        if ((rc = matmuls(m, &d_job, 1, &a, f, T, F, nth, counts))) break;
        apply_out_scale(&b->wd, yf, T, D);
        for (int64_t i = 0; i < T * D; i++) x[i] = h[i] + (double)yf[i];
        counts[BN_CNT_RMSNORM] += 2 + (b->attn_sub_norm != NULL) + (b->ffn_sub_norm != NULL);
        counts[BN_CNT_ROPE] += 1;
        counts[BN_CNT_ATTN] += 1;
        counts[BN_CNT_BLOCK] += 1;
    }
    free(yf);
    free(yd);
    free(pos);
    free(a.mem);
    counts[BN_CNT_NS_TOTAL] += (int64_t)(1e9 * (now() - t_start));
    return rc;
}
