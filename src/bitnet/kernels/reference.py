"""Numpy reference kernels: the definition every native and GPU kernel is tested against.

Integer parts are exact. The ternary matmuls compute int32 dot products of int8 activation codes with weight codes,
then a float32 epilogue in a fixed order. The dot products run through BLAS on integer-valued floats: every product
and partial sum is an integer below 2^24 (float32) or 2^53 (float64, chosen when K > 2^15), so the result is the exact
int32 sum whatever order BLAS adds in, and it is 20-100x faster than numpy's integer matmul.

Weights stay packed in their file layout (`QuantWeight`); each call decodes the codes it needs. Decoded matrices are
kept in a small LRU cache bounded by `BITNET_REF_CACHE_MB` (default 64 MiB), so tiny test models decode once while
large models decode per call and never hold an expanded copy.

Epilogues (T tokens, N outputs, per-token activations carry `s`, block256 activations carry `d_a[b]`):

| weights | per-token                                              | block256                                          |
|---------|--------------------------------------------------------|---------------------------------------------------|
| I2_S    | `((float)Σ code·q − Σq) / s · w_scale` (bitnet.cpp)    | `(Σ_b (float)sumi_b · d_a[b]) · w_scale`          |
| TQ2/TQ1 | `(Σ_b (float)sumi_b · d_w[b]) / s`                     | `Σ_b (float)sumi_b · (d_a[b] · d_w[b])` (ggml)    |

where `code ∈ {0,1,2}` is the raw I2_S code, `sumi_b` the int32 dot of block b with ternary values {-1,0,1}, and Σ_b
runs over 256-element blocks in order, accumulated in float32 (ggml's `sumf +=`).

Every kernel calls `REGISTRY.record(<its id>)` when it runs.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable

import numpy as np

from bitnet.errors import InvalidInputError
from bitnet.kernels.quant import QK_K, QuantizedActivations
from bitnet.kernels.registry import REGISTRY, Kernel
from bitnet.kernels.weights import QuantWeight

QK_I2_S = 128
_TQ2_BLOCK_BYTES = 66
_TQ1_BLOCK_BYTES = 54
_POW3 = np.array([1, 3, 9, 27, 81, 243], dtype=np.uint16)


# ---------------------------------------------------------------------------------------------- weight decoding
def decode_i2s_codes(w: QuantWeight) -> np.ndarray:
    """Raw I2_S codes (0, 1, 2 for -1, 0, +1) as uint8 [n_out, n_in], from bitnet.cpp's x86 layout.

    Blocks of 128 elements over the flattened tensor, 32 bytes each; element j sits in byte j % 32 at shift
    6 - 2 * (j // 32).
    """
    n = w.n_out * w.n_in
    if n % QK_I2_S:
        raise InvalidInputError(f"{w.name}: I2_S needs a multiple of {QK_I2_S} elements, got {n}")
    raw = np.asarray(w.data, dtype=np.uint8).reshape(-1)
    if raw.size < n // 4:
        raise InvalidInputError(f"{w.name}: I2_S data has {raw.size} bytes, needs {n // 4}")
    blocks = raw[: n // 4].reshape(-1, 1, 32)
    shifts = np.array([6, 4, 2, 0], dtype=np.uint8).reshape(1, 4, 1)
    codes = (blocks >> shifts) & 3
    return codes.reshape(w.n_out, w.n_in)


def decode_tq2_0(w: QuantWeight) -> tuple[np.ndarray, np.ndarray]:
    """TQ2_0 → (ternary values int8 [n_out, n_in], per-block d float32 [n_out, n_in // 256])."""
    blocks = _tq_blocks(w, _TQ2_BLOCK_BYTES)
    qs = blocks[:, :64].reshape(-1, 2, 1, 32)  # chunk c, byte m
    shifts = np.array([0, 2, 4, 6], dtype=np.uint8).reshape(1, 1, 4, 1)
    codes = (qs >> shifts) & 3  # element c*128 + n*32 + m
    d = blocks[:, 64:66].copy().view(np.float16).astype(np.float32)
    vals = codes.reshape(-1, QK_K).astype(np.int8) - 1
    return vals.reshape(w.n_out, w.n_in), d.reshape(w.n_out, w.n_in // QK_K)


def _trits(q: np.ndarray, n: int) -> np.ndarray:
    """ggml's base-3 digit extraction: ((uint8)(q * 3^i) * 3) >> 8 for i < n, stacked on a new axis 1."""
    prod = (q[:, None, :].astype(np.uint16) * _POW3[:n].reshape(1, n, 1)) & 0xFF
    return ((prod * 3) >> 8).astype(np.int8)


def decode_tq1_0(w: QuantWeight) -> tuple[np.ndarray, np.ndarray]:
    """TQ1_0 → (ternary values int8 [n_out, n_in], per-block d float32 [n_out, n_in // 256])."""
    blocks = _tq_blocks(w, _TQ1_BLOCK_BYTES)
    first = _trits(blocks[:, 0:32], 5).reshape(-1, 160)  # element n*32 + m
    second = _trits(blocks[:, 32:48], 5).reshape(-1, 80)  # element 160 + n*16 + m
    tail = _trits(blocks[:, 48:52], 4).reshape(-1, 16)  # element 240 + n*4 + j
    d = blocks[:, 52:54].copy().view(np.float16).astype(np.float32)
    vals = np.concatenate([first, second, tail], axis=1) - 1
    return vals.reshape(w.n_out, w.n_in), d.reshape(w.n_out, w.n_in // QK_K)


def _tq_blocks(w: QuantWeight, block_bytes: int) -> np.ndarray:
    if w.n_in % QK_K:
        raise InvalidInputError(f"{w.name}: {w.fmt} rows must be a multiple of {QK_K}, got {w.n_in}")
    n_blocks = w.n_out * w.n_in // QK_K
    raw = np.asarray(w.data, dtype=np.uint8).reshape(-1)
    if raw.size != n_blocks * block_bytes:
        raise InvalidInputError(f"{w.name}: {w.fmt} data has {raw.size} bytes, expected {n_blocks * block_bytes}")
    return raw.reshape(n_blocks, block_bytes)


# ---------------------------------------------------------------------------------------------- decode cache
class _DecodeCache:
    """LRU of decoded weights keyed by the identity of the packed buffer (weakly held, so it never pins a model)."""

    def __init__(self) -> None:
        self._entries: OrderedDict[tuple[int, str], tuple[weakref.ref, tuple[np.ndarray, ...], int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @staticmethod
    def budget() -> int:
        return int(float(os.environ.get("BITNET_REF_CACHE_MB", "64")) * 2**20)

    def get(self, w: QuantWeight, kind: str, make: Callable[[], tuple[np.ndarray, ...]]) -> tuple[np.ndarray, ...]:
        key = (id(w.data), kind)
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None and hit[0]() is w.data:
                self._entries.move_to_end(key)
                return hit[1]
        value = make()
        size = sum(a.nbytes for a in value)
        budget = self.budget()
        if size > budget:
            return value
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old[2]
            try:
                ref = weakref.ref(w.data)
            except TypeError:  # a buffer type without weakref support: do not cache
                return value
            self._entries[key] = (ref, value, size)
            self._bytes += size
            while self._bytes > budget or any(r() is None for r, _, _ in self._entries.values()):
                _, (_, _, sz) = self._entries.popitem(last=False)
                self._bytes -= sz
        return value

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0


DECODE_CACHE = _DecodeCache()


def _exact_dtype(k: int) -> type[np.floating]:
    """float32 holds every partial sum exactly while |sum| <= 256 * k < 2^24; beyond that use float64."""
    return np.float32 if k <= 2**15 else np.float64


def _weight_blocks(w: QuantWeight, dtype: type[np.floating], block: int, raw_codes: bool) -> tuple[np.ndarray, ...]:
    """Decoded weight as contiguous [n_blocks, block, n_out] integer-valued floats (BLAS-ready), plus the TQ d.

    `raw_codes` keeps I2_S codes 0..2 (the per-token epilogue subtracts Σq); otherwise values are -1/0/+1.
    """

    def make() -> tuple[np.ndarray, ...]:
        if w.fmt == "i2_s":
            vals, extra = decode_i2s_codes(w).astype(np.int8), ()
            if not raw_codes:
                vals = vals - 1
        else:
            vals, d = decode_tq2_0(w) if w.fmt == "tq2_0" else decode_tq1_0(w)
            extra = (d,)
        nb = w.n_in // block
        wb = np.ascontiguousarray(vals.reshape(w.n_out, nb, block).transpose(1, 2, 0), dtype=dtype)
        return (wb, *extra)

    if w.fmt not in ("i2_s", "tq2_0", "tq1_0"):
        raise InvalidInputError(f"{w.name}: {w.fmt!r} is not a ternary format")
    return DECODE_CACHE.get(w, f"{w.fmt}:{np.dtype(dtype).name}:{block}:{raw_codes}", make)


# ---------------------------------------------------------------------------------------------- ternary matmul
def block_sums(q: np.ndarray, wb: np.ndarray) -> np.ndarray:
    """Exact int32 dots per block: [n_blocks, T, N], S[b, t, n] = Σ_{k in block b} q[t, k] · w[n, k]."""
    nb, block, _ = wb.shape
    qf = q.astype(wb.dtype)
    if nb == 1:
        return np.rint(qf @ wb[0]).astype(np.int32)[None]
    # 2-D products go through BLAS; numpy's stacked matmul often does not
    return np.rint(np.stack([qf[:, b * block : (b + 1) * block] @ wb[b] for b in range(nb)])).astype(np.int32)


def _accumulate_blocks(sumi: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """float32 `acc += (float)sumi_b * scale_b`, block after block (ggml's sequential `sumf +=`)."""
    acc = np.zeros(sumi.shape[1:], dtype=np.float32)
    for b in range(sumi.shape[0]):
        acc += sumi[b].astype(np.float32) * scale[b]
    return acc


def ternary_matmul(qa: QuantizedActivations, w: QuantWeight) -> np.ndarray:
    """float32 [T, n_out] = the ternary weight times the quantized activations, with the epilogue in the table above."""
    if qa.q.shape[1] != w.n_in:
        raise InvalidInputError(f"{w.name}: activations have {qa.q.shape[1]} features, weight expects {w.n_in}")
    dtype = _exact_dtype(w.n_in)
    if w.fmt == "i2_s":
        if w.scale is None:
            raise InvalidInputError(f"{w.name}: I2_S weight without its per-tensor scale")
        w_scale = np.float32(w.scale)
        if qa.profile == "per-token":
            (wb,) = _weight_blocks(w, dtype, w.n_in, raw_codes=True)
            sumi = block_sums(qa.q, wb)[0]  # Σ code·q with codes 0..2
            out = (sumi.astype(np.float32) - qa.sums[:, 0:1].astype(np.float32)) / qa.scales[:, 0:1] * w_scale
        else:
            (wb,) = _weight_blocks(w, dtype, QK_K, raw_codes=False)
            out = _accumulate_blocks(block_sums(qa.q, wb), qa.scales.T[:, :, None]) * w_scale
    else:
        wb, d_w = _weight_blocks(w, dtype, QK_K, raw_codes=False)
        sumi = block_sums(qa.q, wb)
        if qa.profile == "per-token":
            out = _accumulate_blocks(sumi, d_w.T[:, None, :]) / qa.scales[:, 0:1]
        else:
            out = _accumulate_blocks(sumi, qa.scales.T[:, :, None] * d_w.T[:, None, :])
    return out.astype(np.float32, copy=False)


def _make_qkernel(kernel_id: str) -> Callable[[QuantizedActivations, QuantWeight], np.ndarray]:
    def kernel(qa: QuantizedActivations, w: QuantWeight) -> np.ndarray:
        REGISTRY.record(kernel_id)
        return ternary_matmul(qa, w)

    kernel.__name__ = kernel_id
    kernel.__doc__ = f"`{kernel_id}`: reference ternary matmul (see module docstring for the epilogue)."
    return kernel


i2s_gemv_ref = _make_qkernel("i2s_gemv_ref")
i2s_gemm_ref = _make_qkernel("i2s_gemm_ref")
tq2_gemv_ref = _make_qkernel("tq2_gemv_ref")
tq2_gemm_ref = _make_qkernel("tq2_gemm_ref")
tq1_gemv_ref = _make_qkernel("tq1_gemv_ref")
tq1_gemm_ref = _make_qkernel("tq1_gemm_ref")


# ---------------------------------------------------------------------------------------------- float ops
def _float_weight(w: QuantWeight, dtype: np.dtype) -> np.ndarray:
    return np.asarray(w.data).astype(dtype, copy=False)


def fp32_matmul_ref(x: np.ndarray, w: QuantWeight) -> np.ndarray:
    """Float weights (F32/F16/BF16 or dequantized): y = x · Wᵀ in the activation dtype, returned as float32."""
    REGISTRY.record("fp32_matmul_ref")
    return (x @ _float_weight(w, x.dtype).T).astype(np.float32)


#: rows of the lm_head converted per step, so a 128k-vocab F16 head never needs a full float copy
_LMHEAD_CHUNK = 8192


def f16_gemv_lmhead_ref(x: np.ndarray, w: QuantWeight) -> np.ndarray:
    """Tied/untied output head: logits[T, V] = x · Wᵀ, with the dot accumulated in float64, returned as float32.

    The weight (usually F16) is widened chunk by chunk. Products of f16-representable values are exact in float64,
    so callers that round `x` to f16 first (bitnet.cpp decode) get ggml's result up to summation order.
    """
    REGISTRY.record("f16_gemv_lmhead_ref")
    xd = x.astype(np.float64, copy=False)
    out = np.empty((x.shape[0], w.n_out), dtype=np.float32)
    for start in range(0, w.n_out, _LMHEAD_CHUNK):
        rows = np.asarray(w.data[start : start + _LMHEAD_CHUNK]).astype(np.float64)
        out[:, start : start + rows.shape[0]] = xd @ rows.T
    return out


def embedding_ref(w: QuantWeight, tokens: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Rows of the token-embedding table, widened to the activation dtype."""
    REGISTRY.record("embedding_ref")
    ids = np.asarray(tokens, dtype=np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= w.n_out):
        raise InvalidInputError(f"token id out of range [0, {w.n_out}): {ids.tolist()}")
    return np.asarray(w.data[ids]).astype(dtype)


def rmsnorm_ref(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    """ggml `rms_norm` then `mul`: squares in the input dtype summed in float64, mean and scale in the input dtype."""
    REGISTRY.record("rmsnorm_ref")
    dt = x.dtype
    ssum = (x * x).astype(np.float64).sum(axis=-1, keepdims=True)
    mean = (ssum / x.shape[-1]).astype(dt)
    scale = (dt.type(1.0) / np.sqrt(mean + dt.type(eps))).astype(dt)
    return (x * scale) * weight.astype(dt)


def rope_angles(positions: np.ndarray, dim: int, theta: float, dtype: np.dtype) -> np.ndarray:
    """Rotation angles [T, dim/2] for NEOX RoPE.

    float32: ggml's `ggml_rope_cache_init` recurrence, theta_scale = powf(base, -2/dim) and theta *= theta_scale
    in float32, pair after pair. float64: the exact pos * base^(-2i/dim).
    """
    half = dim // 2
    pos = np.asarray(positions, dtype=np.float64)
    if np.dtype(dtype) == np.float32:
        theta_scale = np.float32(np.float32(theta) ** np.float32(-2.0 / dim))
        ang = np.empty((pos.size, half), dtype=np.float32)
        cur = pos.astype(np.float32)
        for i in range(half):
            ang[:, i] = cur
            cur = (cur * theta_scale).astype(np.float32)
        return ang
    return pos[:, None] * (theta ** (-2.0 * np.arange(half, dtype=np.float64) / dim))[None, :]


def rope_neox_ref(x: np.ndarray, positions: np.ndarray, theta: float) -> np.ndarray:
    """NEOX rotary embedding on [T, H, D]: element i pairs with i + D/2 (HF `rotate_half`, llama.cpp NEOX).

    cos/sin are taken in float64 of the angle and rounded to the activation dtype (correctly rounded, like glibc
    cosf/sinf); the rotation runs in the activation dtype.
    """
    REGISTRY.record("rope_neox_ref")
    half = x.shape[2] // 2
    ang = rope_angles(positions, x.shape[2], theta, x.dtype).astype(np.float64)
    cos = np.cos(ang).astype(x.dtype)[:, None, :]
    sin = np.sin(ang).astype(x.dtype)[:, None, :]
    x0, x1 = x[..., :half], x[..., half:]
    return np.concatenate([x0 * cos - x1 * sin, x0 * sin + x1 * cos], axis=-1)


def attention_ref(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    start_pos: int,
    *,
    round_p_f16: bool = False,
    scores_out: list[np.ndarray] | None = None,
) -> np.ndarray:
    """Causal GQA softmax attention for T queries at positions start_pos.. over the first S cached keys.

    q: [T, H, D] (activation dtype), k/v: [S, Hkv, D] (cache dtype, widened). Like ggml: scores = (K·Q) · 1/sqrt(D)
    in the activation dtype, masked, max-subtracted, exp, row sums in float64, P = e · (1/sum). `round_p_f16`
    rounds P to float16 before P·V (bitnet.cpp single-token decode). P·V is accumulated in float64.
    If `scores_out` is a list, the softmax probabilities [H, T, S] are appended to it (for tracing).
    """
    REGISTRY.record("attention_ref")
    dt = q.dtype
    t, h, dim = q.shape
    s, hkv, _ = k.shape
    group = h // hkv
    kk = np.repeat(k.astype(dt), group, axis=1).transpose(1, 2, 0)  # [H, D, S]
    vv = np.repeat(v.astype(np.float64), group, axis=1).transpose(1, 0, 2)  # [H, S, D]
    scores = np.matmul(q.transpose(1, 0, 2), kk) * dt.type(1.0 / np.sqrt(dim))  # [H, T, S]
    qpos = start_pos + np.arange(t)[:, None]
    mask = np.arange(s)[None, :] > qpos
    scores = np.where(mask[None], -np.inf, scores).astype(dt)
    e = np.exp(scores - scores.max(axis=-1, keepdims=True))
    inv = (1.0 / e.astype(np.float64).sum(axis=-1, keepdims=True)).astype(dt)
    p = e * inv
    if round_p_f16:
        p = p.astype(np.float16).astype(dt)
    if scores_out is not None:
        scores_out.append(p)
    out = np.matmul(p.astype(np.float64), vv)  # [H, T, D]
    return out.transpose(1, 0, 2).astype(dt)


# ---------------------------------------------------------------------------------------------- registration
def _register() -> None:
    for fmt, short in (("i2_s", "i2s"), ("tq2_0", "tq2"), ("tq1_0", "tq1")):
        for shape in ("gemv", "gemm"):
            kid = f"{short}_{shape}_ref"
            REGISTRY.register(Kernel(kid, op=f"q{shape}", fmt=fmt, fn=globals()[kid]))
    REGISTRY.register(Kernel("fp32_matmul_ref", op="matmul_float", fn=fp32_matmul_ref))
    REGISTRY.register(Kernel("f16_gemv_lmhead_ref", op="lm_head", fn=f16_gemv_lmhead_ref))
    REGISTRY.register(Kernel("embedding_ref", op="embedding", fn=embedding_ref))
    REGISTRY.register(Kernel("rmsnorm_ref", op="rmsnorm", fn=rmsnorm_ref))
    REGISTRY.register(Kernel("rope_neox_ref", op="rope_neox", fn=rope_neox_ref))
    REGISTRY.register(Kernel("attention_ref", op="attention", fn=attention_ref))


_register()
