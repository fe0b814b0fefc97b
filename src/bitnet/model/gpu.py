"""The GPU engine (`backend="cuda"`): the whole forward pass on the device, CUDA graphs for decode.

Same public interface as `bitnet.model.Engine` (config, tokenizer, profile, eval_logits_all_positions, prefill,
decode_step, reset, generate, describe) and the same numerics as its `default` mode, op for op, so GPU logits
cross-validate against the CPU engine at NMSE far below 1e-6:

- hidden states in float64 between kernels; ternary matmuls are int8 × ternary with exact int32 sums and the
  float32 epilogue of `bitnet.kernels.reference`; the result widens to float64 like the CPU's `.astype(dt)`;
- RMSNorm (squares summed in float64), the int8 quantizer, the GLU and the residual add are fused into the
  kernels around each matmul (`bitnet.kernels.gpu.ops`); q/k/v and gate/up run as one launch each;
- RoPE tables come from the CPU engine's own `rope_angles`; K/V are stored in the cache dtype (f32 or f16);
- attention: a Triton kernel for single-token decode (length read on the device, so one CUDA graph serves every
  position), torch float64 matmuls for multi-token prefill; lm_head: a Triton GEMV over the F16 table.

Per decode token the host does one graph replay; `generate` samples on the device (the uniform draw comes from the
same seeded numpy Generator as the CPU engine, so a seed gives the same stream).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bitnet.errors import InferenceError, InvalidInputError, ReferenceUnavailable, UsageError
from bitnet.kernels.gpu import ops
from bitnet.kernels.gpu.layout import PackedTernary, concat_rows, pack_weight
from bitnet.kernels.reference import rope_angles
from bitnet.kernels.registry import REGISTRY
from bitnet.kernels.weights import QuantWeight
from bitnet.model.engine import Engine, default_profile
from bitnet.model.numerics import Numerics
from bitnet.model.runtime import deterministic, make_rng
from bitnet.model.sampling import GenerationConfig
from bitnet.model.weights import ModelWeights


def _torch() -> Any:
    import torch

    return torch


@dataclass
class GpuLinear:
    """A projection on the device: ternary (`GpuTernary`, the normal case) or float (F32/F16 test models)."""

    ternary: ops.GpuTernary | None = None
    weight: Any | None = None  # float [N, K] on the device

    @property
    def nbytes(self) -> int:
        if self.ternary is not None:
            return self.ternary.nbytes
        return int(self.weight.numel() * self.weight.element_size())


@dataclass
class GpuLayer:
    attn_norm: Any
    wqkv: GpuLinear
    attn_sub_norm: Any | None
    wo: GpuLinear
    ffn_norm: Any
    wgu: GpuLinear
    ffn_sub_norm: Any | None
    wdown: GpuLinear


@dataclass
class GpuWeights:
    """Everything the device forward reads. `bytes_per_token()` is the HBM traffic floor of one decode step."""

    token_embd: Any  # [V, H] f16/f32
    layers: list[GpuLayer]
    output_norm: Any
    output: Any  # [V, H] f16/f32 (the same tensor as token_embd when tied)
    format_counts: dict[str, int]

    def formats(self) -> dict[str, int]:
        """Projection matrices per file format (same as `ModelWeights.formats()`)."""
        return dict(self.format_counts)

    def bytes_per_token(self) -> int:
        n = sum(lin.nbytes for layer in self.layers for lin in (layer.wqkv, layer.wo, layer.wgu, layer.wdown))
        return int(n + self.output.numel() * self.output.element_size())


def _upload_linear(ws: Sequence[QuantWeight], name: str, dev: str) -> GpuLinear:
    torch = _torch()
    if all(w.is_ternary for w in ws) and len({w.fmt for w in ws}) == 1:
        packed: list[PackedTernary] = [pack_weight(w) for w in ws]
        return GpuLinear(
            ternary=ops.upload_ternary(concat_rows(packed, name) if len(packed) > 1 else packed[0], dev)
        )
    if any(w.is_ternary for w in ws):
        raise InvalidInputError(f"{name}: mixed ternary formats in one layer are not supported on the GPU")
    mats = []
    for w in ws:
        a = np.asarray(w.data, dtype=np.float32 if w.fmt != "f16" else np.float16).reshape(w.n_out, w.n_in)
        if w.out_scale is not None:
            raise InvalidInputError(
                f"{w.name}: a `.scale` tensor on a float weight is not supported on the GPU"
            )
        mats.append(torch.from_numpy(np.array(a, copy=True)).to(dev))
    return GpuLinear(weight=torch.cat([m.to(mats[0].dtype) for m in mats]))


def _float_table(w: QuantWeight, dev: str) -> Any:
    torch = _torch()
    if w.is_ternary:
        raise InvalidInputError(f"{w.name}: a ternary embedding / output head is not supported on the GPU")
    a = np.asarray(w.data)
    if a.dtype not in (np.float16, np.float32):
        a = a.astype(np.float32)
    return torch.from_numpy(np.array(a.reshape(w.n_out, w.n_in), copy=True)).to(dev)


def upload_weights(weights: ModelWeights, dev: str) -> GpuWeights:
    """Re-pack every ternary matrix into the GPU layout and copy all weights to the device (once, at load)."""
    torch = _torch()

    def vec(v: np.ndarray | None) -> Any:
        return None if v is None else torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)).to(dev)

    layers = []
    for i, lw in enumerate(weights.layers):
        layers.append(
            GpuLayer(
                attn_norm=vec(lw.attn_norm),
                wqkv=_upload_linear((lw.wq, lw.wk, lw.wv), f"blk.{i}.attn_qkv", dev),
                attn_sub_norm=vec(lw.attn_sub_norm),
                wo=_upload_linear((lw.wo,), f"blk.{i}.attn_output", dev),
                ffn_norm=vec(lw.ffn_norm),
                wgu=_upload_linear((lw.w_gate, lw.w_up), f"blk.{i}.ffn_gate_up", dev),
                ffn_sub_norm=vec(lw.ffn_sub_norm),
                wdown=_upload_linear((lw.w_down,), f"blk.{i}.ffn_down", dev),
            )
        )
    embd = _float_table(weights.token_embd, dev)
    out = embd if weights.output is weights.token_embd else _float_table(weights.output, dev)
    return GpuWeights(embd, layers, vec(weights.output_norm), out, weights.formats())


class GpuTransformer:
    """The device forward over `GpuWeights` with a device KV cache [layers, n_ctx, kv_heads, head_dim]."""

    def __init__(self, config: Any, weights: GpuWeights, numerics: Numerics, *, n_ctx: int | None = None,
                 device: str = "cuda") -> None:  # fmt: skip
        torch = _torch()
        self.config, self.w, self.numerics, self.device = config, weights, numerics, device
        self.dt = torch.float64  # the CPU engine's `default` numerics
        c = config
        self.n_ctx = int(min(n_ctx or c.context_length, c.context_length))
        kv_dt = {"f32": torch.float32, "f16": torch.float16}[numerics.kv_dtype]
        shape = (c.n_layers, self.n_ctx, c.n_kv_heads, c.head_dim)
        self.k_cache = torch.zeros(shape, dtype=kv_dt, device=device)
        self.v_cache = torch.zeros(shape, dtype=kv_dt, device=device)
        ang = rope_angles(np.arange(self.n_ctx), c.head_dim, c.rope_theta, np.dtype(np.float64))
        self.cos = torch.from_numpy(np.cos(ang).astype(np.float64)).to(device)
        self.sin = torch.from_numpy(np.sin(ang).astype(np.float64)).to(device)
        self.lm_tag = "f16" if weights.output.dtype == torch.float16 else "f32"
        self.length = 0

    # -- pieces ------------------------------------------------------------------------------------------------
    def _linear(self, lin: GpuLinear, x: Any, qa: Any, residual: Any | None = None) -> Any:
        torch = _torch()
        if lin.ternary is not None:
            return ops.ternary_matmul(qa, lin.ternary, residual, out_dtype=self.dt)
        # float projections (F32/F16 test models): x·Wᵀ in the activation dtype, rounded to float32 like the CPU
        y = (x @ lin.weight.to(self.dt).T).to(torch.float32).to(self.dt)
        REGISTRY.record("cuda_float_matmul_torch")
        return y if residual is None else residual + y

    def _normed(self, x: Any, norm: Any | None, lin: GpuLinear, glu: str | None = None) -> tuple[Any, Any]:
        """(float input for float weights, quantized input for ternary ones) of `lin`, fused where possible."""
        prof = self.numerics.profile
        if lin.ternary is not None:
            return None, ops.norm_quantize(x, prof, norm, self.config.rms_eps, glu=glu)
        y = ops.norm_quantize(x, None, norm, self.config.rms_eps, glu=glu) if (norm is not None or glu) else x
        return y, None

    def _attention_prefill(self, q: Any, li: int, start: int, t: int) -> Any:
        """torch float64 version of `attention_ref` for T > 1 queries (cuBLAS DGEMM, same op order)."""
        torch = _torch()
        c, dt = self.config, self.dt
        s = start + t
        group = c.n_heads // c.n_kv_heads
        kk = self.k_cache[li, :s].to(dt).repeat_interleave(group, dim=1).permute(1, 2, 0)
        vv = self.v_cache[li, :s].to(torch.float64).repeat_interleave(group, dim=1).permute(1, 0, 2)
        scores = torch.matmul(q.permute(1, 0, 2), kk) * (1.0 / np.sqrt(c.head_dim))
        qpos = start + torch.arange(t, device=q.device)[:, None]
        mask = torch.arange(s, device=q.device)[None, :] > qpos
        scores = scores.masked_fill(mask[None], float("-inf"))
        e = torch.exp(scores - scores.amax(dim=-1, keepdim=True))
        inv = 1.0 / e.to(torch.float64).sum(dim=-1, keepdim=True)
        p = e * inv.to(dt)
        out = torch.matmul(p.to(torch.float64), vv)
        REGISTRY.record("cuda_attention_torch")
        return out.permute(1, 0, 2).to(dt).reshape(t, c.n_heads * c.head_dim).contiguous()

    def forward(
        self, tokens: Any, pos: Any, start: int, *, all_logits: bool, decode_pos: Any | None = None
    ) -> Any:
        """Logits (float32 on the device) for T tokens at positions `pos` (int32 [T] on the device).

        `decode_pos` (int32 [1] on the device) selects the single-token path whose position is read on the device
        (what a CUDA graph replays); `start` is then ignored by the kernels.
        """
        torch = _torch()
        c, w = self.config, self.w
        t = tokens.shape[0]
        x = torch.index_select(w.token_embd, 0, tokens).to(self.dt)
        REGISTRY.record("cuda_embedding_torch")
        hq, hkv, d = c.n_heads, c.n_kv_heads, c.head_dim
        for li, lw in enumerate(w.layers):
            xf, qa = self._normed(x, lw.attn_norm, lw.wqkv)
            qkv = self._linear(lw.wqkv, xf, qa).contiguous()
            q = torch.empty((t, hq, d), dtype=self.dt, device=x.device)
            ops.rope_kv(qkv, pos, self.cos, self.sin, q, self.k_cache[li], self.v_cache[li], hq, hkv, d)
            if decode_pos is not None:
                a = torch.empty((1, hq * d), dtype=self.dt, device=x.device)
                ops.decode_attention(q[0], self.k_cache[li], self.v_cache[li], decode_pos, a.view(hq, d), hkv)
            else:
                a = self._attention_prefill(q, li, start, t)
            af, qa = self._normed(a, lw.attn_sub_norm, lw.wo)
            x = self._linear(lw.wo, af, qa, residual=x)
            mf, qa = self._normed(x, lw.ffn_norm, lw.wgu)
            gu = self._linear(lw.wgu, mf, qa).contiguous()
            act = self.numerics.ffn_act
            if lw.wdown.ternary is not None or lw.ffn_sub_norm is not None:
                ff, qa = self._normed(gu, lw.ffn_sub_norm, lw.wdown, glu=act)
            else:  # float down projection without a sub-norm: the GLU alone
                ff, qa = ops.norm_quantize(gu, None, None, c.rms_eps, glu=act), None
            x = self._linear(lw.wdown, ff, qa, residual=x)
        if not all_logits:
            x = x[-1:].contiguous()
        h = ops.norm_quantize(x, None, w.output_norm, c.rms_eps)
        return ops.float_gemv(h, w.output, tag=self.lm_tag).to(torch.float32)


class GpuEngine:
    """`Engine`'s interface on a CUDA device. State: the device KV cache and its length (`n_past`)."""

    stop_ids = Engine.stop_ids

    def __init__(
        self,
        config: Any,
        weights: ModelWeights | GpuWeights,
        tokenizer: Any = None,
        *,
        profile: str | None = None,
        ffn_act: str | None = None,
        kv_dtype: str = "f32",
        numerics: str = "default",
        n_ctx: int | None = None,
        cuda_graphs: bool = True,
        source: str | os.PathLike[str] | None = None,
        keepalive: Any = None,
    ) -> None:
        if numerics != "default":
            raise UsageError(
                f"numerics {numerics!r} is implemented by the CPU engine only; the GPU engine runs 'default'",
                hint="use --device cpu for --numerics bitnet-cpp",
            )
        if not ops.interpret_mode() and not ops.cuda_available():
            raise ReferenceUnavailable(
                "backend 'cuda' needs a CUDA GPU with PyTorch and Triton", hint="use --device cpu"
            )
        self.config = config
        self.tokenizer = tokenizer
        self.numerics = Numerics(
            numerics, profile or default_profile(config.arch), ffn_act or config.ffn_act, kv_dtype
        )
        dev = ops.device_name()
        gw = weights if isinstance(weights, GpuWeights) else upload_weights(weights, dev)
        self.weights = gw
        self.model = GpuTransformer(config, gw, self.numerics, n_ctx=n_ctx, device=dev)
        self.use_graphs = cuda_graphs and dev == "cuda" and os.environ.get("BITNET_CUDA_GRAPHS", "1") != "0"
        self.source = Path(source) if source is not None else None
        self._keepalive = keepalive
        self._graph: Any = None
        self._graph_ids: dict[str, int] = {}
        torch = _torch()
        self._tok = torch.zeros(1, dtype=torch.int64, device=dev)
        self._pos = torch.zeros(1, dtype=torch.int32, device=dev)
        self._logits: Any = None

    # -- properties ------------------------------------------------------------------------------------------------
    @property
    def profile(self) -> str:
        return self.numerics.profile

    @property
    def n_past(self) -> int:
        return self.model.length

    # -- device-side API -------------------------------------------------------------------------------------------
    _check_tokens = Engine._check_tokens

    def _reserve(self, n: int) -> int:
        if self.model.length + n > self.model.n_ctx:
            raise InferenceError(
                f"context full: {self.model.length} cached + {n} new tokens exceed the context length "
                f"{self.model.n_ctx}",
                hint="shorten the prompt or --max-tokens",
            )
        return self.model.length

    def prefill_device(self, tokens: Sequence[int] | np.ndarray, *, all_logits: bool = False) -> Any:
        """Run tokens as one batch from the current position; float32 logits stay on the device."""
        torch = _torch()
        arr = self._check_tokens(tokens)
        start = self._reserve(arr.size)
        dev = self.model.device
        tok = torch.from_numpy(arr).to(dev)
        pos = torch.arange(start, start + arr.size, dtype=torch.int32, device=dev)
        if arr.size == 1:
            self._pos.fill_(start)
            logits = self.model.forward(tok, self._pos, start, all_logits=all_logits, decode_pos=self._pos)
        else:
            logits = self.model.forward(tok, pos, start, all_logits=all_logits)
        self.model.length += arr.size
        return logits

    def decode_device(self, token: int | Any) -> Any:
        """One token (a host int, or an int64 [1] device tensor) → float32 [V] logits on the device (CUDA graph)."""
        start = self._reserve(1)
        if isinstance(token, int) or np.isscalar(token):
            t = int(token)
            if not 0 <= t < self.config.vocab_size:
                raise InferenceError(f"token id outside the vocabulary [0, {self.config.vocab_size})")
            self._tok.fill_(t)
        else:
            self._tok.copy_(token.reshape(1))
        self._pos.fill_(start)
        if not self.use_graphs:
            out = self.model.forward(self._tok, self._pos, start, all_logits=False, decode_pos=self._pos)[0]
        else:
            if self._graph is None:
                self._capture()
            self._graph.replay()
            for kid, n in self._graph_ids.items():
                REGISTRY.record(kid, n)
            out = self._logits[0]
        self.model.length += 1
        return out

    def _capture(self) -> None:
        """Warm up (Triton compiles) on a side stream, then capture one decode step into a CUDA graph."""
        torch = _torch()
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            self.model.forward(self._tok, self._pos, 0, all_logits=False, decode_pos=self._pos)
        torch.cuda.current_stream().wait_stream(s)
        before = REGISTRY.counts()
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            self._logits = self.model.forward(self._tok, self._pos, 0, all_logits=False, decode_pos=self._pos)
        after = REGISTRY.counts()
        self._graph_ids = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
        # the capture itself did not run anything: take its counts back out
        for k, n in self._graph_ids.items():
            REGISTRY.record(k, -n)
        self._graph = g

    # -- Engine interface ------------------------------------------------------------------------------------------
    def eval_logits_all_positions(self, tokens: Sequence[int] | np.ndarray) -> np.ndarray:
        """float32 [T, V] for a fresh sequence; the session (cache contents and length) is restored afterwards."""
        saved = self.model.length
        k_saved, v_saved = self.model.k_cache.clone(), self.model.v_cache.clone()
        self.model.length = 0
        try:
            return self.prefill_device(tokens, all_logits=True).cpu().numpy()
        finally:
            self.model.length = saved
            self.model.k_cache.copy_(k_saved)
            self.model.v_cache.copy_(v_saved)

    def prefill(self, tokens: Sequence[int] | np.ndarray) -> np.ndarray:
        return self.prefill_device(tokens)[-1].cpu().numpy()

    def decode_step(self, token: int) -> np.ndarray:
        return self.decode_device(int(self._check_tokens([token])[0])).cpu().numpy()

    def reset(self) -> None:
        self.model.length = 0

    def sample_device(self, logits: Any, cfg: GenerationConfig, rng: np.random.Generator,
                      history: Sequence[int]) -> Any:  # fmt: skip
        """`bitnet.model.sampling.sample_token` on the device; returns an int64 [1] device tensor.

        Same order and float64 math; the one uniform draw comes from `rng` on the host, so a seed gives the CPU
        engine's stream whenever the logits agree.
        """
        torch = _torch()
        x = logits.to(torch.float64)
        if cfg.repeat_penalty != 1.0 and history:
            recent = list(history)[-cfg.repeat_last_n :] if cfg.repeat_last_n > 0 else list(history)
            idx = torch.tensor(sorted(set(recent)), dtype=torch.int64, device=x.device)
            vals = x[idx]
            x = x.clone()
            x[idx] = torch.where(vals > 0, vals / cfg.repeat_penalty, vals * cfg.repeat_penalty)
        REGISTRY.record("cuda_sample_torch")
        if cfg.greedy:
            return torch.argmax(x).reshape(1)
        x = x / cfg.temperature
        order = torch.sort(-x, stable=True).indices
        if cfg.top_k > 0:
            order = order[: cfg.top_k]
        z = x[order]
        p = torch.exp(z - z[0])
        p = p / p.sum()
        if cfg.top_p < 1.0:
            keep = int(torch.searchsorted(torch.cumsum(p, 0), torch.tensor([cfg.top_p], dtype=p.dtype,
                                                                            device=p.device))[0]) + 1  # fmt: skip
            order, p = order[:keep], p[:keep] / p[:keep].sum()
        cdf = torch.cumsum(p, 0)
        cdf = cdf / cdf[-1]
        u = torch.tensor([rng.random()], dtype=torch.float64, device=p.device)
        i = torch.searchsorted(cdf, u, right=True).clamp_(max=p.numel() - 1)
        return order[i].reshape(1)

    def generate(
        self, prompt_tokens: Sequence[int], cfg: GenerationConfig | None = None, *, keep_session: bool = False
    ) -> Iterator[int]:
        """Yield generated token ids (a stop token ends generation and is not yielded), like `Engine.generate`."""
        cfg = cfg or GenerationConfig()
        if not prompt_tokens:
            raise UsageError("generate needs at least one prompt token")
        if not keep_session:
            self.reset()
        rng = make_rng(cfg.seed)
        stops = self.stop_ids(cfg)
        history = [int(t) for t in prompt_tokens]
        if cfg.max_tokens == 0:
            return
        logits = self.prefill_device(prompt_tokens)[-1]
        for i in range(cfg.max_tokens):
            tok_dev = self.sample_device(logits, cfg, rng, history)
            tok = int(tok_dev.item())
            if tok in stops:
                return
            history.append(tok)
            yield tok
            if i + 1 < cfg.max_tokens:
                logits = self.decode_device(tok_dev)

    def close(self) -> None:
        """Release the device buffers and the model's memory map (the engine is unusable afterwards)."""
        closer = getattr(self._keepalive, "close", None)
        if closer is not None:
            closer()
        self._keepalive = None
        self._graph = None
        self.model.k_cache = self.model.v_cache = None

    def __enter__(self) -> GpuEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def greedy_device(self, first_token: int, n: int) -> Any:
        """`n` greedy decode steps with no host synchronisation in between (the benchmark's decode loop);
        returns the int64 [n] device tensor of tokens."""
        torch = _torch()
        toks = torch.empty(n, dtype=torch.int64, device=self.model.device)
        cur = torch.full((1,), int(first_token), dtype=torch.int64, device=self.model.device)
        for i in range(n):
            logits = self.decode_device(cur)
            cur = torch.argmax(logits).reshape(1)
            toks[i : i + 1].copy_(cur)
        REGISTRY.record("cuda_sample_torch", n)
        return toks

    def describe(self) -> dict[str, Any]:
        c = self.config
        torch = _torch()
        dev_name = torch.cuda.get_device_name() if self.model.device == "cuda" else "triton-interpreter (cpu)"
        return {
            "model": str(self.source) if self.source else None,
            "arch": c.arch,
            "profile": self.numerics.profile,
            "ffn_act": self.numerics.ffn_act,
            "kv_dtype": self.numerics.kv_dtype,
            "numerics": self.numerics.name,
            "activation_dtype": "float64",
            "backend": "cuda",
            "device": dev_name,
            "cuda_graphs": self.use_graphs,
            "threads": None,
            "threads_applied": False,
            "deterministic": deterministic(),
            "weight_formats": self.weights.formats(),
            "kernels": {k: k for k in sorted(self._graph_ids)} if self._graph_ids else {},
            "tokenizer": getattr(self.tokenizer, "source", None),
            "trace_dir": None,
            "shape": c.shape_summary(),
        }


def load_gpu_engine(
    path: str | os.PathLike[str],
    *,
    profile: str | None = None,
    ffn_act: str | None = None,
    kv_dtype: str = "f32",
    numerics: str = "default",
    tokenizer_json: str | os.PathLike[str] | None = None,
    n_ctx: int | None = None,
    **_ignored: Any,
) -> GpuEngine:
    """`load_model(path, backend="cuda")`: the CPU loader's `ModelWeights`, re-packed and uploaded once."""
    from bitnet.model.loader import open_model

    if not ops.interpret_mode() and not ops.cuda_available():
        raise ReferenceUnavailable(
            "backend 'cuda' needs a CUDA GPU with PyTorch and Triton", hint="use --device cpu"
        )
    gf, config, weights, tokenizer = open_model(path, tokenizer_json)
    return GpuEngine(config, weights, tokenizer, profile=profile, ffn_act=ffn_act, kv_dtype=kv_dtype,
                     numerics=numerics, n_ctx=n_ctx, source=path, keepalive=gf)  # fmt: skip
