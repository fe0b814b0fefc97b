"""Native CPU kernels: C (scalar / AVX2 / AVX-512 VNNI, chosen at run time) behind ctypes, multi-threaded with OpenMP.

The shared object is built by `setup.py` as the optional extension `bitnet.kernels.native._bnkernels` and called
through ctypes, which releases the GIL for every call. Ternary weights are used in their file layout, straight from
the memory map: nothing is expanded or repacked at load. Each wrapper records the kernel ID of the variant that
actually ran (`REGISTRY.record`), e.g. `i2s_gemv_avx512vnni` or `f16_gemv_lmhead_avx512`.

Importing this module registers the kernels with the engine's dispatch (`bitnet.kernels.dispatch`), each with the
reference kernel it must match. When the library is missing or `BITNET_NO_NATIVE=1`, nothing is registered, one
warning says why, and the numpy reference kernels run instead (slower, same results).

Environment: `BITNET_NO_NATIVE=1` (disable), `BITNET_NATIVE_ISA=scalar|avx2|avx512vnni` (cap the instruction set),
`BITNET_THREADS=n` (threads per kernel; default: all cores).
"""

from __future__ import annotations

import ctypes
import importlib
import importlib.machinery
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from bitnet.errors import InvalidInputError
from bitnet.kernels import reference as ref
from bitnet.kernels.quant import QK_K, QuantizedActivations
from bitnet.kernels.registry import REGISTRY, Kernel
from bitnet.kernels.weights import QuantWeight

log = logging.getLogger(__name__)

ISAS = ("scalar", "avx2", "avx512vnni")
_FMT_CODE = {"i2_s": 0, "tq2_0": 1, "tq1_0": 2}
_FMT_SHORT = {"i2_s": "i2s", "tq2_0": "tq2", "tq1_0": "tq1"}
_PROFILE_CODE = {"per-token": 0, "block256": 1}
_QID = {
    (f, one): f"{short}_{'gemv' if one else 'gemm'}_"
    for f, short in _FMT_SHORT.items()
    for one in (True, False)
}
_ERRORS = {-1: "unsupported shape", -2: "out of memory", -3: "bad argument"}

_P = ctypes.c_void_p
_I64 = ctypes.c_int64
_INT = ctypes.c_int
_F32 = ctypes.c_float
_SIGNATURES: dict[str, tuple[Any, list[Any]]] = {
    "bn_best_isa": (_INT, []),
    "bn_set_isa": (_INT, [_INT]),
    "bn_get_isa": (_INT, []),
    "bn_set_threads": (None, [_INT]),
    "bn_get_threads": (_INT, []),
    "bn_has_openmp": (_INT, []),
    "bn_quantize": (_INT, [_INT, _P, _INT, _I64, _I64, _P, _P, _P]),
    "bn_ternary_matmul": (_INT, [_INT, _P, _I64, _I64, _F32, _INT, _P, _I64, _I64, _P, _I64]),
    "bn_ternary_matmul_q": (_INT, [_INT, _P, _I64, _I64, _F32, _INT, _P, _P, _P, _I64, _P, _I64]),
    "bn_ternary_block_sums": (_INT, [_INT, _P, _I64, _I64, _P, _I64, _P]),
    "bn_f16_matmul": (_INT, [_P, _I64, _I64, _P, _I64, _I64, _P, _I64]),
    "bn_rmsnorm": (None, [_P, _P, _I64, _I64, _F32, _P]),
    "bn_rope_neox": (None, [_P, _I64, _I64, _I64, _I64, _P, _F32]),
    "bn_attention": (_INT, [_P, _I64, _I64, _P, _P, _I64, _I64, _I64, _I64, _I64, _F32, _P, _I64]),
    "bn_read_bandwidth": (ctypes.c_double, [_P, _I64, _INT, _INT, _P]),
    "bn_forward_blocks": (_INT, [_P, _P, _I64, _I64, _P, _P, _I64, _P]),
    "bn_rmsnorm_f64": (None, [_P, _P, _I64, _I64, ctypes.c_double, _P]),
    "bn_rope_neox_f64": (None, [_P, _I64, _I64, _I64, _I64, _P, ctypes.c_double]),
    "bn_attention_f64": (
        _INT,
        [_P, _I64, _I64, _P, _P, _I64, _I64, _I64, _I64, _I64, ctypes.c_double, _P, _I64],
    ),
}


def _library_path() -> Path | None:
    here = Path(__file__).parent
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        cand = here / f"_bnkernels{suffix}"
        if cand.exists():
            return cand
    return None


def _load() -> tuple[ctypes.CDLL | None, Any, str | None]:
    """(ctypes handle, the CPython module of the same shared object, reason when unavailable)."""
    if os.environ.get("BITNET_NO_NATIVE", "").strip().lower() in ("1", "true", "yes"):
        return None, None, "disabled by BITNET_NO_NATIVE"
    path = _library_path()
    if path is None:
        return (
            None,
            None,
            "the C extension was not built (no compiler at install time?); reinstall with a compiler",
        )
    try:
        mod = importlib.import_module(f"{__name__}._bnkernels")
        lib = ctypes.CDLL(str(path))
        for name, (res, args) in _SIGNATURES.items():
            fn = getattr(lib, name)
            fn.restype = res
            fn.argtypes = args
    except (OSError, AttributeError, ImportError) as exc:
        return None, None, f"cannot load {path.name}: {exc}"
    return lib, mod, None


_lib, _mod, _reason = _load()
if _lib is None:
    warnings.warn(
        f"bitnet native kernels unavailable ({_reason}); using the numpy reference kernels (slower)",
        RuntimeWarning,
        stacklevel=2,
    )


def available() -> bool:
    """True when the C kernels are loaded."""
    return _lib is not None


def unavailable_reason() -> str | None:
    return _reason


def _need() -> ctypes.CDLL:
    if _lib is None:
        raise InvalidInputError(f"native kernels unavailable: {_reason}")
    return _lib


_isa_now: str | None = None  # cached: isa() is on the per-call path


def isa() -> str:
    """The instruction set the kernels dispatch to now (the `impl` part of their kernel IDs)."""
    global _isa_now
    if _isa_now is None:
        _isa_now = ISAS[_need().bn_get_isa()]
    return _isa_now


def best_isa() -> str:
    return ISAS[_need().bn_best_isa()]


def set_isa(name: str | None) -> str:
    """Cap the instruction set (None = the best the CPU has); returns the one in use."""
    if name is not None and name not in ISAS:
        raise InvalidInputError(f"unknown instruction set {name!r}; choose one of {', '.join(ISAS)}")
    global _isa_now
    _isa_now = ISAS[_need().bn_set_isa(-1 if name is None else ISAS.index(name))]
    return _isa_now


def set_threads(n: int | None) -> None:
    """Threads per kernel call (None or 0 = one per core)."""
    _need().bn_set_threads(int(n or 0))


def get_threads() -> int:
    return int(_need().bn_get_threads())


def _ptr(a: np.ndarray) -> int:
    return a.__array_interface__["data"][0]


def _c(a: np.ndarray, dtype: type) -> np.ndarray:
    """`a` itself when it already is C-contiguous `dtype` (the usual case: no copy, no numpy call)."""
    if a.dtype == dtype and a.flags.c_contiguous:
        return a
    return np.ascontiguousarray(a, dtype=dtype)


def _check(rc: int, what: str) -> None:
    if rc != 0:
        raise InvalidInputError(f"native {what}: {_ERRORS.get(rc, f'error {rc}')}")


def _f16_impl() -> str:
    return {"avx512vnni": "avx512", "avx2": "avx2", "scalar": "scalar"}[isa()]


# ---------------------------------------------------------------------------------------------- quantization
def _quantize_impl(profile: str, f64: bool) -> str:
    """The quantizer variant `bn_quantize` runs: SIMD for float32 per-token (AVX2 / AVX-512) and for float64 input
    (AVX-512 only), scalar otherwise."""
    cur = _isa_now or isa()
    if f64:
        return cur if cur == "avx512vnni" else "scalar"
    return cur if profile == "per-token" else "scalar"


def quantize(x: np.ndarray, profile: str) -> QuantizedActivations:
    """Native activation quantizer, bit-identical to `bitnet.kernels.quant` for float32 and float64 input."""
    _need()
    x = np.asarray(x)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2:
        raise InvalidInputError(f"activations must be [tokens, features], got shape {x.shape}")
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float32)
    x = np.ascontiguousarray(x)
    t, k = x.shape
    if profile == "block256":
        if k % QK_K:
            raise InvalidInputError(
                f"block256 activation quantization needs a multiple of {QK_K} features, got {k}"
            )
        nb, block = k // QK_K, QK_K
    else:
        nb, block = 1, k
    q = np.empty((t, k), dtype=np.int8)
    scales = np.empty((t, nb), dtype=np.float32)
    sums = np.empty((t, nb), dtype=np.int32)
    impl = _quantize_impl(profile, x.dtype == np.float64)
    _check(
        _mod.quantize(_PROFILE_CODE[profile], x, int(x.dtype == np.float64), t, k, q, scales, sums),
        "quantize",
    )
    REGISTRY.record(f"quantize_{profile.replace('-', '_')}_{impl}")
    return QuantizedActivations(profile, q, scales, sums, block)


def quantize_per_token(x: np.ndarray) -> QuantizedActivations:
    return quantize(x, "per-token")


def quantize_block256(x: np.ndarray) -> QuantizedActivations:
    return quantize(x, "block256")


# ---------------------------------------------------------------------------------------------- ternary matmul
def _check_weight(w: QuantWeight, k: int) -> tuple[int, float]:
    if w.fmt not in _FMT_CODE:
        raise InvalidInputError(f"{w.name}: {w.fmt!r} is not a ternary format")
    if k != w.n_in:
        raise InvalidInputError(f"{w.name}: activations have {k} features, weight expects {w.n_in}")
    if w.fmt == "i2_s":
        if w.n_in % 128:
            raise InvalidInputError(f"{w.name}: I2_S rows must be a multiple of 128, got {w.n_in}")
        need = w.n_out * w.n_in // 4
        if w.scale is None:
            raise InvalidInputError(f"{w.name}: I2_S weight without its per-tensor scale")
    else:
        if w.n_in % QK_K:
            raise InvalidInputError(f"{w.name}: {w.fmt} rows must be a multiple of {QK_K}, got {w.n_in}")
        need = w.n_out * w.n_in // QK_K * (66 if w.fmt == "tq2_0" else 54)
    if w.data.dtype != np.uint8 or not w.data.flags.c_contiguous or w.data.size < need:
        raise InvalidInputError(f"{w.name}: packed {w.fmt} data must be {need}+ contiguous uint8 bytes")
    return _FMT_CODE[w.fmt], 1.0 if w.scale is None else float(w.scale)


def ternary_matmul_q(qa: QuantizedActivations, w: QuantWeight) -> np.ndarray:
    """float32 [T, n_out] from already-quantized activations: the engine's `qgemv` / `qgemm` op.

    Kept lean (it runs ~7 times per layer and token): shapes and formats are checked here, buffer sizes and
    K-divisibility in C, which returns an error code instead of reading out of bounds."""
    fmt = _FMT_CODE.get(w.fmt)
    if fmt is None or qa.q.shape[1] != w.n_in or (fmt == 0 and w.scale is None) or _mod is None:
        _need()
        _check_weight(w, qa.q.shape[1])  # raises the precise error
    t = qa.q.shape[0]
    y = np.empty((t, w.n_out), dtype=np.float32)
    try:
        rc = _mod.ternary_matmul_q(
            fmt,
            w.data,
            w.n_out,
            w.n_in,
            1.0 if w.scale is None else w.scale,
            _PROFILE_CODE[qa.profile],
            _c(qa.q, np.int8),
            _c(qa.scales, np.float32),
            _c(qa.sums, np.int32),
            t,
            y,
        )
    except (ValueError, BufferError) as exc:  # a buffer too short or not contiguous
        _check_weight(w, qa.q.shape[1])
        raise InvalidInputError(f"{w.name}: {exc}") from exc
    if rc:
        _check_weight(w, qa.q.shape[1])
        _check(rc, f"{w.fmt} matmul")
    REGISTRY.record(_QID[w.fmt, t == 1] + (_isa_now or isa()))
    return y


def ternary_matmul(x: np.ndarray, w: QuantWeight, profile: str) -> np.ndarray:
    """Fused activation quantization + ternary matmul on float32 activations [T, K] (or [K]) → float32 [T, n_out]."""
    _need()
    x2 = np.ascontiguousarray(x.reshape(1, -1) if x.ndim == 1 else x, dtype=np.float32)
    fmt, w_scale = _check_weight(w, x2.shape[1])
    t = x2.shape[0]
    y = np.empty((t, w.n_out), dtype=np.float32)
    _check(
        _mod.ternary_matmul(fmt, w.data, w.n_out, w.n_in, w_scale, _PROFILE_CODE[profile], x2, t, y), "matmul"
    )
    impl = isa()
    REGISTRY.record(f"quantize_{profile.replace('-', '_')}_{_quantize_impl(profile, False)}")
    REGISTRY.record(f"{_FMT_SHORT[w.fmt]}_{'gemv' if t == 1 else 'gemm'}_{impl}")
    return y


def ternary_block_sums(w: QuantWeight, q: np.ndarray) -> np.ndarray:
    """Integer part only: int32 [T, n_out, n_blocks] of Σ code·q per 256-element block (I2_S: plus a 128 tail),
    with raw codes 0/1/2. Exposed so tests can compare the integer results exactly, independent of any epilogue."""
    lib = _need()
    q = np.ascontiguousarray(np.atleast_2d(q), dtype=np.int8)
    fmt, _ = _check_weight(w, q.shape[1])
    nbt = -(-w.n_in // QK_K)
    raw = np.empty((q.shape[0], w.n_out, nbt), dtype=np.int32)
    _check(
        lib.bn_ternary_block_sums(fmt, _ptr(w.data), w.n_out, w.n_in, _ptr(q), q.shape[0], _ptr(raw)),
        "block sums",
    )
    return raw


# ---------------------------------------------------------------------------------------------- float ops
def f16_matmul(x: np.ndarray, w16: np.ndarray) -> np.ndarray:
    """float32 [T, M] = x [T, K] · W16ᵀ, W16 an F16 [M, K] matrix (the tied lm_head). x is used as float32."""
    _need()
    x2 = np.ascontiguousarray(np.atleast_2d(x), dtype=np.float32)
    if w16.dtype != np.float16 or w16.ndim != 2 or not w16.flags.c_contiguous:
        raise InvalidInputError("f16_matmul needs a contiguous float16 [M, K] weight")
    m, k = w16.shape
    if x2.shape[1] != k:
        raise InvalidInputError(f"lm_head: activations have {x2.shape[1]} features, weight expects {k}")
    y = np.empty((x2.shape[0], m), dtype=np.float32)
    _check(_mod.f16_matmul(w16, m, k, x2, x2.shape[0], y), "f16 matmul")
    REGISTRY.record(f"f16_{'gemv' if x2.shape[0] == 1 else 'gemm'}_lmhead_{_f16_impl()}")
    return y


def lm_head(x: np.ndarray, w: QuantWeight) -> np.ndarray:
    """The engine's `lm_head` op: native for F16 weights; other float weights go to the reference kernel."""
    if w.fmt != "f16" or _lib is None:
        return ref.f16_gemv_lmhead_ref(x, w)
    return f16_matmul(x, np.asarray(w.data))


def _native_float(x: np.ndarray) -> bool:
    return _lib is not None and x.dtype in (np.float32, np.float64)


def rmsnorm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    """ggml rms_norm · weight, in the activation dtype (float32: ggml's float/double mix; float64: all double)."""
    if not _native_float(x):
        return ref.rmsnorm_ref(x, weight, eps)
    xc = _c(x, x.dtype.type)
    y = np.empty_like(xc)
    k = xc.shape[-1]
    _mod.rmsnorm(xc, _c(weight, np.float32), xc.size // k, k, float(eps), y, xc.dtype == np.float64)
    REGISTRY.record("rmsnorm_scalar")
    return y


def rope_neox(x: np.ndarray, positions: np.ndarray, theta: float) -> np.ndarray:
    """NEOX RoPE on [T, H, D] (a new array). float32: ggml's angle recurrence; float64: exact angles."""
    if not _native_float(x) or x.ndim != 3 or x.shape[2] % 2 or x.shape[2] > 1024:
        return ref.rope_neox_ref(x, positions, theta)
    y = np.array(x, order="C", copy=True)
    t, h, d = y.shape
    pos = _c(np.asarray(positions).reshape(-1), np.int32)
    if pos.shape[0] != t:
        raise InvalidInputError(f"rope: {pos.shape[0]} positions for {t} tokens")
    _mod.rope(y, t, h, d, pos, float(theta), y.dtype == np.float64)
    REGISTRY.record("rope_neox_scalar")
    return y


def attention(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    start_pos: int,
    *,
    round_p_f16: bool = False,
    scores_out: list[np.ndarray] | None = None,
) -> np.ndarray:
    """Causal GQA attention over an f32/f16 cache in the query dtype (f16 rounding of P and tracing: reference)."""
    if not _native_float(q) or round_p_f16 or scores_out is not None:
        return ref.attention_ref(q, k, v, start_pos, round_p_f16=round_p_f16, scores_out=scores_out)
    qc = _c(q, q.dtype.type)
    kc, vc = _c(k, np.float32), _c(v, np.float32)
    t, h, d = qc.shape
    s, hkv, _ = kc.shape
    if s < start_pos + t or h % hkv or vc.shape != kc.shape:
        raise InvalidInputError(
            f"attention: {s} cached positions / {hkv} kv heads for {t} queries at {start_pos}"
        )
    out = np.empty_like(qc)
    rc = _mod.attention(
        qc, t, h, d, kc, vc, s, hkv, start_pos, float(1.0 / np.sqrt(d)), out, qc.dtype == np.float64
    )
    _check(rc, "attention")
    REGISTRY.record(f"attention_{_isa_now or isa()}")  # loops compiled per instruction set
    return out


def read_bandwidth(nbytes: int = 1 << 30, passes: int = 5, threads: int | None = None) -> float:
    """Best read bandwidth in GB/s (1e9 B/s) over `passes` sums of an `nbytes` buffer (first touched, then timed)."""
    lib = _need()
    buf = np.ones(nbytes // 8, dtype=np.uint64)
    chk = ctypes.c_uint64(0)
    return float(
        lib.bn_read_bandwidth(
            _ptr(buf), buf.nbytes, passes, int(threads or get_threads()), ctypes.addressof(chk)
        )
    )


# ---------------------------------------------------------------------------------------------- registration
def _register() -> None:
    """Declare every variant's ID; the variant for the instruction set in use carries the function the engine's
    dispatch binds (it takes the last registered kernel with a function). IDs recorded at run time always name the
    variant that actually ran."""
    cur = isa() if _lib is not None else None

    def reg(kid: str, op: str, fn: Any, reference: str, fmt: str | None = None) -> None:
        REGISTRY.register(Kernel(kid, op=op, fmt=fmt, fn=fn, reference=reference))

    for impl in ISAS:
        live = impl == cur
        for fmt, short in _FMT_SHORT.items():
            for shape in ("gemv", "gemm"):
                reg(
                    f"{short}_{shape}_{impl}",
                    f"q{shape}",
                    ternary_matmul_q if live else None,
                    f"{short}_{shape}_ref",
                    fmt,
                )
        reg(
            f"quantize_per_token_{impl}",
            "quantize_per_token",
            quantize_per_token if live else None,
            "quantize_per_token_ref",
        )
        f16 = "avx512" if impl == "avx512vnni" else impl
        reg(f"f16_gemm_lmhead_{f16}", "lm_head", None, "f16_gemv_lmhead_ref")
        reg(f"f16_gemv_lmhead_{f16}", "lm_head", lm_head if live else None, "f16_gemv_lmhead_ref")
    live = _lib is not None
    reg("quantize_block256_avx512vnni", "quantize_block256", None, "quantize_block256_ref")  # float64 input
    reg(
        "quantize_block256_scalar",
        "quantize_block256",
        quantize_block256 if live else None,
        "quantize_block256_ref",
    )
    reg("rmsnorm_scalar", "rmsnorm", rmsnorm if live else None, "rmsnorm_ref")
    reg("rope_neox_scalar", "rope_neox", rope_neox if live else None, "rope_neox_ref")
    for impl in ISAS:
        reg(f"attention_{impl}", "attention", attention if impl == cur else None, "attention_ref")


def _configure_from_env() -> None:
    if _lib is None:
        return
    cap = os.environ.get("BITNET_NATIVE_ISA", "").strip().lower()
    if cap:
        set_isa(cap)
    threads = os.environ.get("BITNET_THREADS", "").strip()
    if threads:
        set_threads(int(threads))


_configure_from_env()
_register()
