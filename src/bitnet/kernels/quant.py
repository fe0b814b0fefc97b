"""Activation quantizers: the int8 side of every ternary matmul.

Two profiles, selectable per engine and recorded in every output (docs/ARCHITECTURE.md has the contract):

- `per-token` — bitnet.cpp `quantize_row_i8_s`, HF `ActQuant`, the BitNet paper. One scale per row:
  `max = max(1e-5, max|x|)` in float64, `s = float32(127 / max)`, `q = clamp(round_half_even(float32(x * s)),
  -128, 127)`, plus `sum(q)` as int32 (the I2_S epilogue subtracts it because the weight codes are stored +1).
- `block256` — llama.cpp `quantize_row_q8_K_ref` (checked against ggml-quants.c): per 256-element block, `max` is
  the *signed* element with the largest |x| (first one on ties); if it is 0 the block is all zeros with d = 0;
  otherwise `iscale = float32(-127 / max)`, `q = min(127, nearest_int(float32(iscale * x)))`, `d = 1 / iscale`.
  The lower clamp is missing on purpose: |iscale * x| <= 127 by construction, so q >= -127 already.

Both quantizers accept float32 or float64 input. For float32 input every product is the IEEE float32 product, so
the result is bit-identical to the C code. For float64 input (the engine's default numerics) the product is taken
in float64 and rounded once to float32, the natural extension of the same definition.

`nearest_int` in ggml is the `x + 12582912.f` trick, i.e. round-half-to-even, which is `np.rint`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bitnet.errors import InvalidInputError, UsageError
from bitnet.kernels.registry import REGISTRY, Kernel

PROFILES = ("per-token", "block256")
#: elements per activation block in the block256 profile (ggml QK_K)
QK_K = 256


@dataclass(frozen=True)
class QuantizedActivations:
    """int8 activations of shape [T, K] plus their per-group float scales and int32 code sums.

    `block` is the group width: K for `per-token` (one group per row), 256 for `block256`. `scales` and `sums` have
    shape [T, K // block]. Meaning of `scales` differs by profile, as in the C code it mirrors:
    per-token stores the multiplier `s` (x ≈ q / s), block256 stores `d` (x ≈ q * d).
    """

    profile: str
    q: np.ndarray
    scales: np.ndarray
    sums: np.ndarray
    block: int

    @property
    def n_tokens(self) -> int:
        return int(self.q.shape[0])

    @property
    def n_blocks(self) -> int:
        return int(self.scales.shape[1])

    def dequantize(self) -> np.ndarray:
        """Float64 values the codes stand for (used by tests and traces, never by the matmul)."""
        t, k = self.q.shape
        qb = self.q.reshape(t, self.n_blocks, self.block).astype(np.float64)
        sc = self.scales.astype(np.float64)[:, :, None]
        out = qb / sc if self.profile == "per-token" else qb * sc
        return out.reshape(t, k)


def _as_2d_float(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float32)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2:
        raise InvalidInputError(f"activations must be [tokens, features], got shape {x.shape}")
    return x


def quantize_per_token(x: np.ndarray) -> QuantizedActivations:
    """bitnet.cpp `quantize_row_i8_s` applied to every row of `x` ([T, K] or [K])."""
    REGISTRY.record("quantize_per_token_ref")
    x = _as_2d_float(x)
    amax = np.maximum(np.max(np.abs(x.astype(np.float64)), axis=1), 1e-5)
    s = (127.0 / amax).astype(np.float32)
    scaled = (x * s[:, None].astype(x.dtype)).astype(np.float32)
    q = np.clip(np.rint(scaled), -128, 127).astype(np.int8)
    sums = q.sum(axis=1, dtype=np.int32)
    return QuantizedActivations("per-token", q, s[:, None], sums[:, None], x.shape[1])


def quantize_block256(x: np.ndarray) -> QuantizedActivations:
    """llama.cpp `quantize_row_q8_K_ref` applied to every row of `x`; K must be a multiple of 256."""
    REGISTRY.record("quantize_block256_ref")
    x = _as_2d_float(x)
    t, k = x.shape
    if k % QK_K:
        raise InvalidInputError(f"block256 activation quantization needs a multiple of {QK_K} features, got {k}")
    nb = k // QK_K
    xb = x.reshape(t, nb, QK_K)
    idx = np.argmax(np.abs(xb), axis=2)  # first index of the largest |x|, like the C loop's strict '>'
    mx = np.take_along_axis(xb, idx[:, :, None], axis=2)[:, :, 0].astype(np.float32)
    zero = mx == 0
    with np.errstate(divide="ignore", invalid="ignore"):
        iscale = np.where(zero, np.float32(0), np.float32(-127.0) / np.where(zero, np.float32(1), mx))
        iscale = iscale.astype(np.float32)
        d = np.where(zero, np.float32(0), np.float32(1.0) / np.where(zero, np.float32(1), iscale))
    scaled = (xb * iscale[:, :, None].astype(x.dtype)).astype(np.float32)
    q = np.minimum(np.rint(scaled), 127).astype(np.int8)
    q[zero] = 0
    sums = q.sum(axis=2, dtype=np.int32)
    return QuantizedActivations("block256", q.reshape(t, k), d.astype(np.float32), sums, QK_K)


_QUANTIZERS = {"per-token": quantize_per_token, "block256": quantize_block256}


def check_profile(profile: str) -> str:
    """Validate a profile name; the CLI and load_model funnel every user-given profile through here."""
    if profile not in _QUANTIZERS:
        raise UsageError(f"unknown activation-quantization profile {profile!r}; choose one of {', '.join(PROFILES)}")
    return profile


def quantize(x: np.ndarray, profile: str) -> QuantizedActivations:
    """Quantize with the named profile."""
    return _QUANTIZERS[check_profile(profile)](x)


REGISTRY.register(Kernel("quantize_per_token_ref", op="quantize_per_token", fn=quantize_per_token))
REGISTRY.register(Kernel("quantize_block256_ref", op="quantize_block256", fn=quantize_block256))
