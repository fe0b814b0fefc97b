"""The engine's one dispatch point: which kernel runs each op, looked up in `REGISTRY` by op name.

The forward pass (`bitnet.model.forward`) never calls a kernel directly; it calls `OpTable` methods, and an
`OpTable` is built once per engine from the registry. To plug a faster kernel in, register it with the op name and
signature below (and `reference=<the ref id it must match>`); the next engine built picks it up. `REGISTRY.counts()`
then shows which kernels really ran.

| op                   | fmt             | signature                                                        | reference id        |
|----------------------|-----------------|------------------------------------------------------------------|---------------------|
| `quantize_per_token` |                 | `fn(x[T,K] f32/f64) -> QuantizedActivations`                     | quantize_per_token_ref |
| `quantize_block256`  |                 | `fn(x[T,K]) -> QuantizedActivations`                             | quantize_block256_ref |
| `qgemv` (T == 1)     | i2_s/tq2_0/tq1_0| `fn(qa: QuantizedActivations, w: QuantWeight) -> f32[T,N]`       | {i2s,tq2,tq1}_gemv_ref |
| `qgemm` (T > 1)      | i2_s/tq2_0/tq1_0| same                                                             | {i2s,tq2,tq1}_gemm_ref |
| `matmul_float`       |                 | `fn(x[T,K], w: QuantWeight float) -> f32[T,N]`                   | fp32_matmul_ref     |
| `lm_head`            |                 | `fn(x[T,K], w: QuantWeight float) -> f32[T,V]`                   | f16_gemv_lmhead_ref |
| `embedding`          |                 | `fn(w: QuantWeight, tokens int[T], dtype) -> x[T,K]`             | embedding_ref       |
| `rmsnorm`            |                 | `fn(x[T,K], weight f32[K], eps) -> x`                            | rmsnorm_ref         |
| `rope_neox`          |                 | `fn(x[T,H,D], positions int[T], theta) -> x`                     | rope_neox_ref       |
| `attention`          |                 | `fn(q[T,H,D], k[S,Hkv,D], v[S,Hkv,D], start_pos, *, round_p_f16, scores_out) -> [T,H,D]` | attention_ref |
| `decoder_blocks`     |                 | `fn(config, weights, numerics) -> (blocks | None, reason)`; `blocks(x, start, cache) -> x` | the op-by-op path |

`decoder_blocks` is optional and fused: a factory that, when it can run the model in its numerics, returns one callable
for all transformer blocks of a forward (`bitnet.kernels.native.blocks`); otherwise the forward runs the ops above one
by one. It has no reference kernel of its own: it must equal the op-by-op path.

Arrays are numpy; activations arrive in the engine's activation dtype (float64 in the default numerics, float32 in
`bitnet-cpp` numerics) and the result must come back in that dtype, except matmul outputs, which are float32.
Integer parts of a quantized matmul must equal the reference's exactly (see `bitnet.kernels.reference`).

Selection, per op (and fmt): `BITNET_KERNELS=ref` forces the reference kernels; otherwise the most recently registered
non-reference kernel for the backend wins, then the reference. Provider modules are imported on first use
(`bitnet.kernels.native` for cpu, `bitnet.kernels.gpu` for cuda); a cpu provider that fails to import is skipped
(the reference runs and the receipt says so), a missing cuda provider is an error.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import bitnet.kernels.quant  # registers the quantizers
import bitnet.kernels.reference  # noqa: F401  (registers the reference kernels)
from bitnet.errors import InvalidInputError, ReferenceUnavailable, UsageError
from bitnet.kernels.quant import QuantizedActivations, check_profile
from bitnet.kernels.registry import REGISTRY, Kernel
from bitnet.kernels.weights import TERNARY_FORMATS, QuantWeight

FLOAT_OPS = ("matmul_float", "lm_head", "embedding", "rmsnorm", "rope_neox", "attention")
PROVIDERS: dict[str, tuple[str, ...]] = {
    "cpu": ("bitnet.kernels.native", "bitnet.kernels.native.blocks"),
    "cuda": ("bitnet.kernels.gpu",),
}
BACKENDS = ("cpu", "cuda")
_imported: set[str] = set()


def _load_providers(backend: str) -> list[str]:
    """Import the provider modules of a backend once; returns the errors of those that failed."""
    errors = []
    for mod in PROVIDERS.get(backend, ()):
        if mod in _imported:
            continue
        try:
            importlib.import_module(mod)
            _imported.add(mod)
        except Exception as exc:  # a broken optional provider must not break the reference path
            errors.append(f"{mod}: {exc}")
    return errors


def select_kernel(op: str, backend: str = "cpu", fmt: str | None = None) -> Kernel:
    """The kernel that runs `op` (for weight format `fmt`) on `backend`, by the rule in the module docstring."""
    candidates = [k for k in REGISTRY.kernels(op=op, backend=backend) if fmt is None or k.fmt == fmt]
    if os.environ.get("BITNET_KERNELS", "").lower() != "ref":
        fast = [k for k in candidates if k.reference is not None and k.fn is not None]
        if fast:
            return fast[-1]
    refs = [k for k in candidates if k.reference is None and k.fn is not None]
    if refs:
        return refs[0]
    if backend == "cpu":
        raise InvalidInputError(f"no kernel registered for op {op!r}" + (f" on {fmt} weights" if fmt else ""))
    raise ReferenceUnavailable(
        f"backend {backend!r} has no kernel for op {op!r}" + (f" ({fmt})" if fmt else ""),
        hint="use --device cpu",
    )


@dataclass
class OpTable:
    """The kernels one engine uses, resolved once. `describe()` lists them for receipts and `Engine.describe()`."""

    backend: str = "cpu"
    chosen: dict[str, str] = field(default_factory=dict)
    _fns: dict[str, Callable[..., Any]] = field(default_factory=dict, repr=False)
    provider_errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise UsageError(f"unknown backend {self.backend!r}; choose one of {', '.join(BACKENDS)}")
        self.provider_errors = _load_providers(self.backend)
        if self.backend == "cuda" and self.provider_errors:
            raise ReferenceUnavailable(
                "the CUDA backend is not available: " + "; ".join(self.provider_errors), hint="use --device cpu"
            )
        for op in FLOAT_OPS:
            self._bind(op, op)

    def _bind(self, key: str, op: str, fmt: str | None = None) -> Callable[..., Any]:
        kernel = select_kernel(op, self.backend, fmt)
        assert kernel.fn is not None
        self.chosen[key] = kernel.id
        self._fns[key] = kernel.fn
        return kernel.fn

    def _fn(self, key: str, op: str, fmt: str | None = None) -> Callable[..., Any]:
        fn = self._fns.get(key)
        return fn if fn is not None else self._bind(key, op, fmt)

    # -- ops ------------------------------------------------------------------------------------------------------
    def quantize(self, x: np.ndarray, profile: str) -> QuantizedActivations:
        op = "quantize_" + check_profile(profile).replace("-", "_")
        return self._fn(op, op)(x)

    def qmatmul(self, x: np.ndarray, w: QuantWeight, profile: str) -> np.ndarray:
        """Any weight times activations [T, K] → float32 [T, N]; ternary weights quantize `x` first."""
        return self.qmatmul_shared(x, (w,), profile)[0]

    def qmatmul_shared(self, x: np.ndarray, ws: tuple[QuantWeight, ...], profile: str) -> list[np.ndarray]:
        """Several weights applied to the same input (q/k/v, gate/up): the activations are quantized once."""
        qa: QuantizedActivations | None = None
        outs = []
        for w in ws:
            if not w.is_ternary:
                outs.append(self._fns["matmul_float"](x, w))
                continue
            if w.fmt not in TERNARY_FORMATS:
                raise InvalidInputError(f"{w.name}: unsupported weight format {w.fmt!r}")
            if qa is None:
                qa = self.quantize(x, profile)
            shape = "qgemv" if x.shape[0] == 1 else "qgemm"
            out = self._fn(f"{shape}:{w.fmt}", shape, w.fmt)(qa, w)
            if w.out_scale is not None:
                out *= np.float32(w.out_scale)  # in place: the kernel's output is ours
            outs.append(out)
        return outs

    def lm_head(self, x: np.ndarray, w: QuantWeight) -> np.ndarray:
        return self._fns["lm_head"](x, w)

    def embedding(self, w: QuantWeight, tokens: np.ndarray, dtype: np.dtype) -> np.ndarray:
        return self._fns["embedding"](w, tokens, dtype)

    def rmsnorm(self, x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
        return self._fns["rmsnorm"](x, weight, eps)

    def rope(self, x: np.ndarray, positions: np.ndarray, theta: float) -> np.ndarray:
        return self._fns["rope_neox"](x, positions, theta)

    def attention(self, q: np.ndarray, k: np.ndarray, v: np.ndarray, start_pos: int, **kw: Any) -> np.ndarray:
        return self._fns["attention"](q, k, v, start_pos, **kw)

    def decoder_blocks(self, config: Any, weights: Any, numerics: Any) -> tuple[Any | None, str | None]:
        """(the fused all-blocks kernel for this model, None), or (None, why the op-by-op path runs instead)."""
        found = [k for k in REGISTRY.kernels(op="decoder_blocks", backend=self.backend) if k.fn is not None]
        if not found:
            return None, f"no fused blocks kernel for backend {self.backend!r}"
        blocks, reason = found[-1].fn(config, weights, numerics)
        if blocks is not None:
            self.chosen["decoder_blocks"] = found[-1].id
        return blocks, reason

    def describe(self) -> dict[str, Any]:
        return {"backend": self.backend, "kernels": dict(sorted(self.chosen.items()))}
