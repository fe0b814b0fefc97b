"""Fused transformer blocks: every layer of a forward pass in one native call (`bn_forward_blocks`, bn_forward.c).

The op-by-op forward (`bitnet.model.forward.Transformer._block`) makes about fifteen kernel calls per layer, and at
2B shapes the Python between them costs more than the float work itself. `FusedBlocks` hands the C library one
description of the model (pointers into the memory-mapped weights, built once) and then runs all blocks of a
forward with a single call, which also runs q/k/v and gate/up as one parallel region each.

It covers the engine's default numerics (float64 hidden states, float32 KV cache) with ternary projections; for
anything else (`bitnet-cpp` numerics, an F16 cache, float projection weights, tracing) `prepare` returns None with
the reason and the engine runs the op-by-op path. The results equal that path's bit for bit for relu² models
(same C functions, same order); SiLU may differ in the last bit (libm exp vs numpy's). The C side counts every
kernel it runs; the counts are recorded in the registry under the IDs the op-by-op path would record, plus
`blocks_fused_{isa}` once per layer.

Environment: `BITNET_FUSED_BLOCKS=0` disables it (for A/B timing and bisecting).
"""

from __future__ import annotations

import ctypes
import os
from typing import Any

import numpy as np

from bitnet.errors import InvalidInputError
from bitnet.kernels import native
from bitnet.kernels.registry import REGISTRY, Kernel

_FMT = {"i2_s": 0, "tq2_0": 1, "tq1_0": 2}
_SHORT = ("i2s", "tq2", "tq1")
_N_COUNTS = 14  # BN_NCOUNTS


class _QWeight(ctypes.Structure):
    _fields_ = [
        ("data", ctypes.c_void_p),
        ("n_out", ctypes.c_int64),
        ("n_in", ctypes.c_int64),
        ("fmt", ctypes.c_int32),
        ("scale", ctypes.c_float),
        ("out_scale", ctypes.c_float),
        ("has_out_scale", ctypes.c_int32),
    ]


_PROJECTIONS = ("wq", "wk", "wv", "wo", "w_gate", "w_up", "w_down")


class _Block(ctypes.Structure):
    _fields_ = [(n, ctypes.c_void_p) for n in ("attn_norm", "attn_sub_norm", "ffn_norm", "ffn_sub_norm")] + [
        (n, _QWeight) for n in ("wq", "wk", "wv", "wo", "wg", "wu", "wd")
    ]


class _Stack(ctypes.Structure):
    _fields_ = [(n, ctypes.c_int64) for n in ("n_layers", "dim", "n_heads", "n_kv", "head_dim", "ffn_dim")] + [
        ("eps", ctypes.c_double),
        ("theta", ctypes.c_double),
        ("profile", ctypes.c_int32),
        ("act", ctypes.c_int32),
        ("blocks", ctypes.c_void_p),
    ]


def why_not(config: Any, weights: Any, numerics: Any) -> str | None:
    """None when the fused blocks can run this model and numerics, else the reason they cannot."""
    if os.environ.get("BITNET_FUSED_BLOCKS", "").strip() == "0":
        return "disabled by BITNET_FUSED_BLOCKS=0"
    if os.environ.get("BITNET_KERNELS", "").strip().lower() == "ref":
        return "BITNET_KERNELS=ref runs the reference kernels"
    if native._lib is None:
        return f"native kernels unavailable: {native.unavailable_reason()}"
    if numerics.act_dtype != np.float64:
        return f"numerics {numerics.name!r} (the fused blocks implement the default float64 numerics)"
    if numerics.kv_dtype != "f32":
        return f"{numerics.kv_dtype} KV cache (the fused blocks keep float32)"
    for layer in weights.layers:
        for name in _PROJECTIONS:
            w = getattr(layer, name)
            if w.fmt not in _FMT:
                return f"{w.name or name} is {w.fmt}, not a ternary format"
    if config.head_dim % 2 or config.head_dim > 1024:
        return f"head_dim {config.head_dim}"
    return None


class FusedBlocks:
    """The native description of one model's blocks; call it with hidden states to run them all."""

    def __init__(self, config: Any, weights: Any, numerics: Any) -> None:
        self._keep: list[np.ndarray] = []  # the float32 norm vectors the C structs point into
        blocks = (_Block * len(weights.layers))()
        fmts: set[str] = set()
        for i, layer in enumerate(weights.layers):
            b = blocks[i]
            b.attn_norm, b.attn_sub_norm = self._norm(layer.attn_norm), self._norm(layer.attn_sub_norm)
            b.ffn_norm, b.ffn_sub_norm = self._norm(layer.ffn_norm), self._norm(layer.ffn_sub_norm)
            for field, name in zip(("wq", "wk", "wv", "wo", "wg", "wu", "wd"), _PROJECTIONS, strict=True):
                w = getattr(layer, name)
                if not w.data.flags.c_contiguous or w.data.dtype != np.uint8:
                    raise InvalidInputError(f"{w.name}: packed weights must be contiguous uint8")
                fmts.add(w.fmt)
                setattr(
                    b,
                    field,
                    _QWeight(
                        w.data.__array_interface__["data"][0],
                        w.n_out,
                        w.n_in,
                        _FMT[w.fmt],
                        1.0 if w.scale is None else float(w.scale),
                        1.0 if w.out_scale is None else float(w.out_scale),
                        int(w.out_scale is not None),
                    ),
                )
        self._blocks = blocks
        self._stack = _Stack(
            len(weights.layers),
            config.hidden_size,
            config.n_heads,
            config.n_kv_heads,
            config.head_dim,
            config.ffn_size,
            float(config.rms_eps),
            float(config.rope_theta),
            0 if numerics.profile == "per-token" else 1,
            0 if numerics.ffn_act == "relu2" else 1,
            ctypes.addressof(blocks),
        )
        self.profile = numerics.profile
        self.n_layers = len(weights.layers)
        self.formats = sorted(fmts)
        self._counts = np.zeros(_N_COUNTS, dtype=np.int64)
        #: nanoseconds spent in the ternary matmuls (with their quantizer) and in the whole calls, summed over the
        #: calls since the last `reset_timing()`: what a decode step costs beyond its matmuls, measured in place
        self.timing = {"matmul_ns": 0, "total_ns": 0, "calls": 0}

    def reset_timing(self) -> None:
        self.timing = {"matmul_ns": 0, "total_ns": 0, "calls": 0}

    def _norm(self, v: np.ndarray | None) -> int | None:
        if v is None:
            return None
        a = np.ascontiguousarray(v, dtype=np.float32)
        self._keep.append(a)
        return a.__array_interface__["data"][0]

    def __call__(self, x: np.ndarray, start: int, cache: Any) -> np.ndarray:
        """Run every block on float64 hidden states x [T, dim] of the tokens at positions start..start+T-1.

        Writes their keys/values into `cache` (float32, already `reserve`d) and returns the new hidden states."""
        lib = native._lib
        assert lib is not None  # prepare() checked
        x = np.array(x, dtype=np.float64, order="C", copy=True)
        k, v = cache.storage
        if k.dtype != np.float32 or not (k.flags.c_contiguous and v.flags.c_contiguous):
            raise InvalidInputError("the fused blocks need a contiguous float32 KV cache")
        counts = self._counts
        counts[:] = 0
        rc = lib.bn_forward_blocks(
            ctypes.addressof(self._stack),
            x.ctypes.data,
            x.shape[0],
            start,
            k.ctypes.data,
            v.ctypes.data,
            k.shape[1],
            counts.ctypes.data,
        )
        if rc:
            raise InvalidInputError(f"native fused blocks: {native._ERRORS.get(rc, f'error {rc}')}")
        self._record(counts, x.shape[0])
        self.timing["matmul_ns"] += int(counts[12])
        self.timing["total_ns"] += int(counts[13])
        self.timing["calls"] += 1
        return x

    def _record(self, c: np.ndarray, t: int) -> None:
        isa = native.isa()
        for fmt in range(3):
            for multi in (0, 1):
                n = int(c[2 * fmt + multi])
                if n:
                    REGISTRY.record(f"{_SHORT[fmt]}_{'gemm' if multi else 'gemv'}_{isa}", n)
        prof = self.profile.replace("-", "_")
        for slot, kid in (
            (6, f"quantize_{prof}_{isa}"),
            (7, f"quantize_{prof}_scalar"),
            (8, "rmsnorm_scalar"),
            (9, "rope_neox_scalar"),
            (10, f"attention_{isa}"),
            (11, f"blocks_fused_{isa}"),
        ):
            if c[slot]:
                REGISTRY.record(kid, int(c[slot]))


def prepare(config: Any, weights: Any, numerics: Any) -> tuple[FusedBlocks | None, str | None]:
    """(the fused blocks for this model, None) or (None, why they cannot run it): the `decoder_blocks` op."""
    reason = why_not(config, weights, numerics)
    if reason is not None:
        return None, reason
    return FusedBlocks(config, weights, numerics), None


def _register() -> None:
    """One ID per instruction set; the one in use carries `prepare`, which the engine's dispatch binds."""
    cur = native.isa() if native._lib is not None else None
    for impl in native.ISAS:
        fn = prepare if impl == cur else None
        REGISTRY.register(Kernel(f"blocks_fused_{impl}", op="decoder_blocks", fn=fn, reference="op_by_op_blocks"))


_register()
