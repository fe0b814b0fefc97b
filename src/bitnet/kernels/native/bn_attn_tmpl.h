/* Causal GQA attention body, included by bn_isa_impl.h once per element type with BN_ATTN_NAME (function name),
 * BN_ATTN_T (float or double: query, scores, output) and BN_ATTN_EXP (expf or exp) defined. Keys and values are a
 * float32 cache [pos, n_kv * head_dim] (row stride ldkv); softmax sums run in double. Query t sits at position
 * n_past + t and sees keys 0..n_past+t. */
static int BN_FN(BN_ATTN_NAME)(const BN_ATTN_T *q, int64_t T, int64_t ldq, const float *k, const float *v, int64_t ldkv, int64_t n_past,
                 int64_t n_heads, int64_t n_kv, int64_t head_dim, BN_ATTN_T scale, BN_ATTN_T *out, int64_t ldo, int nth) {
    const int64_t group = n_heads / n_kv, npos = n_past + T;
    int failed = 0;
#pragma omp parallel num_threads(nth) if (nth > 1 && T * n_heads * npos * head_dim >= (1 << 16))
    {
        BN_ATTN_T *sc = malloc(sizeof(BN_ATTN_T) * (size_t)npos);
        if (!sc) {
#pragma omp atomic write
            failed = 1;
        }
        /* several queries: interleaved, later ones see more keys (causal); one query (decode): contiguous heads, so
         * the query heads that share a KV head run on one core and read its keys and values once */
#pragma omp for schedule(static, T == 1 ? (n_heads + nth - 1) / nth : 1)
        for (int64_t th = 0; th < T * n_heads; th++) {
            if (!sc) continue;
            const int64_t t = th / n_heads, h = th % n_heads, kvh = h / group, nvis = n_past + t + 1;
            const BN_ATTN_T *qh = q + t * ldq + h * head_dim;
            BN_ATTN_T mx = -INFINITY;
            for (int64_t p = 0; p < nvis; p++) {
                const float *kp = k + p * ldkv + kvh * head_dim;
                BN_ATTN_T s = 0;
#pragma omp simd reduction(+ : s)
                for (int64_t i = 0; i < head_dim; i++) s += qh[i] * (BN_ATTN_T)kp[i];
                s *= scale;
                sc[p] = s;
                if (s > mx) mx = s;
            }
            double sum = 0.0;
            for (int64_t p = 0; p < nvis; p++) {
                sc[p] = BN_ATTN_EXP(sc[p] - mx);
                sum += sc[p];
            }
            const BN_ATTN_T inv = (BN_ATTN_T)(1.0 / sum);
            BN_ATTN_T *o = out + t * ldo + h * head_dim;
            for (int64_t i = 0; i < head_dim; i++) o[i] = 0;
            for (int64_t p = 0; p < nvis; p++) {
                const float *vp = v + p * ldkv + kvh * head_dim;
                const BN_ATTN_T wgt = sc[p] * inv;
                for (int64_t i = 0; i < head_dim; i++) o[i] += wgt * (BN_ATTN_T)vp[i];
            }
        }
        free(sc);
    }
    return failed ? -2 : 0;
}


#undef BN_ATTN_NAME
#undef BN_ATTN_T
#undef BN_ATTN_EXP
