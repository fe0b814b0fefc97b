"""The BitNet transformer forward over `ModelWeights`, one op at a time through `OpTable`.

Per block (bitnet.cpp `build_bitnet_158`, llama.cpp `build_bitnet`, HF `BitNetDecoderLayer`):

    n = RMSNorm(x)·attn_norm;  q,k,v = Wq·n, Wk·n, Wv·n (each ternary matmul quantizes n to int8 first)
    q,k = RoPE_neox(q), RoPE_neox(k);  a = softmax(q·kᵀ/√d, causal)·v  (GQA: head h reads kv head h // group)
    h = x + Wo·(RMSNorm(a)·attn_sub_norm)
    m = RMSNorm(h)·ffn_norm;  f = act(Wgate·m) * (Wup·m),  act = relu² (bitnet-b1.58, bitnet-25) or SiLU (bitnet)
    out = h + Wdown·(RMSNorm(f)·ffn_sub_norm)
    logits = RMSNorm(x_L)·output_norm · token_embdᵀ   (tied head unless the file has output.weight)

Arch `bitnet`'s per-tensor `.scale` tensors are applied right after their matmul (`QuantWeight.out_scale`).
Residual adds and the activation run in the activation dtype (`Numerics.act_dtype`).

When the kernel table offers fused blocks for the model (`OpTable.decoder_blocks`: native C, default numerics), the
blocks run in one call that performs exactly these steps; `_block` below is the readable definition and the path
for tracing and every other numerics.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bitnet.kernels.dispatch import OpTable
from bitnet.model.kv_cache import KVCache
from bitnet.model.numerics import Numerics
from bitnet.model.trace import Tracer
from bitnet.model.weights import LayerWeights, ModelWeights


def _relu2(g: np.ndarray) -> np.ndarray:
    r = np.maximum(g, 0)
    return r * r


def _silu(g: np.ndarray) -> np.ndarray:
    """g / (1 + exp(-g)), the same ufuncs in the same order, in one scratch buffer instead of three temporaries."""
    e = np.negative(g)
    np.exp(e, out=e)
    e += g.dtype.type(1)
    return np.divide(g, e, out=e)


_ACTS = {"relu2": _relu2, "silu": _silu}


class Transformer:
    """Runs tokens through the model, appending their keys/values to a `KVCache`."""

    def __init__(self, config: Any, weights: ModelWeights, ops: OpTable, numerics: Numerics, tracer: Tracer):
        self.config = config
        self.weights = weights
        self.ops = ops
        self.numerics = numerics
        self.tracer = tracer
        self.dtype = numerics.act_dtype
        # all blocks in one native call when a fused kernel can run this model; `blocks_reason` says why not
        self.blocks, self.blocks_reason = ops.decoder_blocks(config, weights, numerics)

    def new_cache(self) -> KVCache:
        c = self.config
        return KVCache(c.n_layers, c.n_kv_heads, c.head_dim, c.context_length, self.numerics.kv_dtype)

    def forward(self, tokens: np.ndarray, cache: KVCache, *, all_logits: bool = True) -> np.ndarray:
        """Logits float32 [T, V] for the T new tokens (or [1, V] for the last one when `all_logits` is False)."""
        tokens = np.asarray(tokens, dtype=np.int64).reshape(-1)
        t = tokens.size
        start = cache.reserve(t)
        pos = np.arange(start, start + t)
        tr = self.tracer
        x = self.ops.embedding(self.weights.token_embd, tokens, self.dtype)
        tr.record("embeddings", -1, pos, x)
        if self.blocks is not None and not tr.enabled:  # tracing needs the intermediate stages: op by op
            x = self.blocks(x, start, cache)
        else:
            for li, layer in enumerate(self.weights.layers):
                x = self._block(li, layer, x, pos, cache)
        cache.commit(t)
        if not all_logits:
            x, pos = x[-1:], pos[-1:]
        c = self.config
        h = self.ops.rmsnorm(x, self.weights.output_norm, c.rms_eps)
        tr.record("final_norm", -1, pos, h)
        if self.numerics.decode_rounding(t):
            h = h.astype(np.float16).astype(self.dtype)
        logits = self.ops.lm_head(h, self.weights.output)
        tr.record("logits", -1, pos, logits)
        tr.flush()
        return logits

    def _block(self, li: int, w: LayerWeights, x: np.ndarray, pos: np.ndarray, cache: KVCache) -> np.ndarray:
        c, ops, tr, prof, dt = self.config, self.ops, self.tracer, self.numerics.profile, self.dtype
        t = x.shape[0]
        n = ops.rmsnorm(x, w.attn_norm, c.rms_eps)
        tr.record("attn_norm", li, pos, n)
        # q|k|v side by side: one dtype conversion, and one RoPE call rotates the query and key heads together
        # (same angles per position, each head on its own, so the numbers are those of two separate calls)
        qkv = np.concatenate(ops.qmatmul_shared(n, (w.wq, w.wk, w.wv), prof), axis=1).astype(dt, copy=False)
        nq, nk = c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim
        q, k, v = qkv[:, :nq], qkv[:, nq : nq + nk], qkv[:, nq + nk :]
        tr.record("q", li, pos, q)
        tr.record("k", li, pos, k)
        tr.record("v", li, pos, v)
        qk = ops.rope(qkv[:, : nq + nk].reshape(t, c.n_heads + c.n_kv_heads, c.head_dim), pos, c.rope_theta)
        q, k = qk[:, : c.n_heads], qk[:, c.n_heads :]
        tr.record("q_rope", li, pos, q)
        tr.record("k_rope", li, pos, k)
        cache.write(li, int(pos[0]), k, v.reshape(t, c.n_kv_heads, c.head_dim))
        kc, vc = cache.view(li, int(pos[-1]) + 1)
        if self.numerics.round_q_f16:
            q = q.astype(np.float16).astype(dt)
        scores: list[np.ndarray] | None = [] if tr.enabled else None
        a = ops.attention(q, kc, vc, int(pos[0]), round_p_f16=self.numerics.decode_rounding(t), scores_out=scores)
        if scores:
            tr.record("attn_scores", li, pos, scores[0], axis=1)
        a = a.reshape(t, c.n_heads * c.head_dim)
        tr.record("attn_out", li, pos, a)
        if w.attn_sub_norm is not None:
            a = ops.rmsnorm(a, w.attn_sub_norm, c.rms_eps)
            tr.record("attn_sub_norm", li, pos, a)
        o = ops.qmatmul(a, w.wo, prof)  # float32; the mixed add widens it exactly, as astype(dt) would
        tr.record("attn_o", li, pos, o)
        h = x + o
        tr.record("ffn_inp", li, pos, h)
        m = ops.rmsnorm(h, w.ffn_norm, c.rms_eps)
        tr.record("ffn_norm", li, pos, m)
        g, u = ops.qmatmul_shared(m, (w.w_gate, w.w_up), prof)
        g = g.astype(dt, copy=False)  # the activation runs in dt; u is widened exactly by the product below
        tr.record("ffn_gate", li, pos, g)
        tr.record("ffn_up", li, pos, u)
        f = _ACTS[self.numerics.ffn_act](g) * u
        tr.record("ffn_act", li, pos, f)
        if w.ffn_sub_norm is not None:
            f = ops.rmsnorm(f, w.ffn_sub_norm, c.rms_eps)
            tr.record("ffn_sub_norm", li, pos, f)
        d = ops.qmatmul(f, w.w_down, prof)
        tr.record("ffn_out", li, pos, d)
        out = h + d
        tr.record("layer_out", li, pos, out)
        return out
