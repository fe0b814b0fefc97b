"""Per-tensor trace of the C++ reference, written in the engine's JSONL trace format.

llama.cpp calls `cb_eval(tensor, ask, user)` for every graph node: with ask=true to learn whether we want the
tensor, then (if we said yes) with ask=false once its data is computed. We keep the tensors whose llama.cpp names
correspond to one of the engine's stages (`bitnet.model.trace.STAGES`), split them per token position and write
`{seq, layer, stage, name, shape, dtype, blake3, rms, num_elements}` lines exactly like `bitnet.model.trace.Tracer`,
so `trace-diff` can pair both sides by (seq, layer, stage).

Name mapping (checked against `src/models/bitnet.cpp` and `src/llama-graph.cpp` of the sdist's llama.cpp):
several names occur more than once per layer. `Qcur-L` is first the wq matmul output (our `q`), then its 3-D
reshape, then the RoPE'd tensor (our `q_rope`): we take the first occurrence for `q` and the last for `q_rope`.
For every other stage the *last* tensor named by any of its candidates wins (e.g. `ffn_up_s-L` after `ffn_up-L`
when the model has per-tensor scales, the second `l_out-L` after the control-vector hook).
"""

from __future__ import annotations

import ctypes as C
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import blake3
import numpy as np

from bitnet.crossval.llama_api import (
    GGML_TYPE_BF16,
    GGML_TYPE_F16,
    GGML_TYPE_F32,
    tensor_nb,
    tensor_ne,
    tensor_type,
)

#: our stage → upstream llama.cpp callback names, in order of preference (a later candidate wins); `{L}` = layer.
#: The fork's differences are in FORK_OVERRIDES (`stage_names` merges them).
CPP_STAGE_NAMES: dict[str, tuple[str, ...]] = {
    "embeddings": ("inp_embd", "embd"),
    "attn_norm": ("attn_norm-{L}",),
    "q": ("Qcur-{L}",),
    "k": ("Kcur-{L}",),
    "v": ("Vcur-{L}",),
    "q_rope": ("Qcur-{L}",),
    "k_rope": ("Kcur-{L}",),
    "attn_scores": ("kq_soft_max-{L}", "kq_soft_max_ext-{L}"),
    "attn_out": ("kqv_out-{L}",),
    "attn_sub_norm": ("attn_sub_norm-{L}",),
    "attn_o": ("attn_out-{L}",),
    "ffn_inp": ("ffn_inp-{L}",),
    "ffn_norm": ("ffn_norm-{L}",),
    "ffn_gate": ("ffn_gate-{L}", "ffn_gate_s-{L}"),
    "ffn_up": ("ffn_up-{L}", "ffn_up_s-{L}"),
    "ffn_act": ("ffn_gate_par-{L}", "ffn_swiglu-{L}", "ffn_sub_out-{L}"),
    "ffn_sub_norm": ("ffn_sub_norm-{L}",),
    "ffn_out": ("ffn_down-{L}", "ffn_down_s-{L}"),
    "layer_out": ("l_out-{L}",),
    "final_norm": ("result_norm",),
    "logits": ("result_output",),
}
#: stages whose first (not last) occurrence is the one we want
FIRST_OCCURRENCE = {"q", "k", "v"}
#: stages flattened to one vector per position (ours are [hidden] rows; llama.cpp may hold them 3-D)
FLATTEN = {"q", "k", "v", "attn_out"}

_LAYERED = re.compile(r"^(?P<base>.+)-(?P<layer>\d+)$")


def stage_order() -> tuple[str, ...]:
    """Stages in forward order, as the engine publishes them (falls back to our table's order)."""
    try:
        from bitnet.model.trace import STAGE_NAMES

        return tuple(STAGE_NAMES)
    except ImportError:  # the engine package is optional for reading C++ traces
        return tuple(CPP_STAGE_NAMES)


def _split_name(name: str) -> tuple[str, int]:
    m = _LAYERED.match(name)
    return (f"{m['base']}-{{L}}", int(m["layer"])) if m else (name, -1)


#: the BitNet fork (`build_bitnet_158`) names differently: `ffn_out-L` is the activation × up product (its
#: `llm_build_ffn` result, renamed), `ffn_down-L` the down projection, `attn_o_out-L` the output projection
FORK_OVERRIDES: dict[str, tuple[str, ...]] = {
    "ffn_act": ("ffn_gate_par-{L}", "ffn_out-{L}"),
    "ffn_out": ("ffn_down-{L}",),
    "attn_o": ("attn_o_out-{L}",),
}


def stage_names(generation: str = "upstream-2026") -> dict[str, tuple[str, ...]]:
    """Our stage → llama.cpp callback names for one API generation (see `bitnet.crossval.llama_api`)."""
    names = dict(CPP_STAGE_NAMES)
    if generation == "fork-2024":
        names.update(FORK_OVERRIDES)
    return names


def _candidates(names: dict[str, tuple[str, ...]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for stage, patterns in names.items():
        for pattern in patterns:
            out.setdefault(pattern, []).append(stage)
    return out


@dataclass
class _Pending:
    """Tensors captured during one batch, keyed by (stage, layer); resolved into records at end_batch."""

    first: dict[tuple[str, int], tuple[np.ndarray, str]] = field(default_factory=dict)
    last: dict[tuple[str, int], tuple[np.ndarray, str]] = field(default_factory=dict)


class CppTracer:
    """Collects llama.cpp tensors through `cb_eval` and writes the engine's JSONL trace format.

    Values of every row are kept in memory when `keep_values` (for the value-level diff and tests) and written as
    `values/<seq>_<name>.npy` when `save_values`.
    """

    def __init__(self, directory: str | Path, *, save_values: bool = False, keep_values: bool = False,
                 max_elements: int = 65536) -> None:  # fmt: skip
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.save_values = save_values
        self.keep_values = keep_values
        self.max_elements = max_elements
        self.path = self.directory / "trace.jsonl"
        self.path.write_text("")
        self.records: list[dict[str, Any]] = []
        self.values: dict[tuple[int, int, str], np.ndarray] = {}
        self.error: BaseException | None = None
        self._pending = _Pending()
        self._start = 0
        self._n_tokens = 0
        self.set_generation("upstream-2026")
        if save_values:
            (self.directory / "values").mkdir(exist_ok=True)

    # -- called by CppSession ----------------------------------------------------------------------------------
    def set_generation(self, generation: str) -> None:
        """Use the name table of this llama.h generation (CppSession calls this with its library's)."""
        self.generation = generation
        self.names = stage_names(generation)
        self._candidates = _candidates(self.names)

    def begin_batch(self, start: int, n_tokens: int) -> None:
        self._start, self._n_tokens = start, n_tokens
        self._pending = _Pending()

    def wants(self, name: str) -> bool:
        return _split_name(name)[0] in self._candidates

    def capture(self, lib: Any, ptr: int) -> None:
        name = lib.ggml_get_name(ptr).decode(errors="replace")
        pattern, layer = _split_name(name)
        stages = self._candidates.get(pattern)
        if not stages:
            return
        arr = _read_tensor(lib, ptr)
        if arr is None:
            return
        for stage in stages:
            key = (stage, layer)
            self._pending.first.setdefault(key, (arr, name))
            # prefer later candidates in the stage's list over earlier ones, and later tensors over earlier
            prev = self._pending.last.get(key)
            cands = self.names[stage]
            if prev is None or cands.index(pattern) >= cands.index(_split_name(prev[1])[0]):
                self._pending.last[key] = (arr, name)

    def end_batch(self) -> None:
        if self.error is not None:
            err, self.error = self.error, None
            raise RuntimeError(f"C++ trace callback failed: {err}") from err
        order = stage_order()
        keys = sorted(self._pending.last, key=lambda k: (k[1] if k[1] >= 0 else (-1 if k[0] == "embeddings" else 1 << 30),
                                                         order.index(k[0]) if k[0] in order else 99))  # fmt: skip
        with open(self.path, "a", encoding="utf-8") as fh:
            for stage, layer in keys:
                src = self._pending.first if stage in FIRST_OCCURRENCE else self._pending.last
                arr, _name = src[(stage, layer)]
                for rec in self._rows(stage, layer, arr):
                    fh.write(json.dumps(rec, separators=(",", ":")) + "\n")
        self._pending = _Pending()

    # -- rows ----------------------------------------------------------------------------------------------------
    def _rows(self, stage: str, layer: int, arr: np.ndarray) -> list[dict[str, Any]]:
        """Split a tensor (numpy view in ggml order reversed: [ne3, ne2, ne1, ne0]) into per-position rows."""
        n = self._n_tokens
        ne = arr.shape[::-1]  # ggml order
        if stage == "attn_scores":
            tok_dim = 1  # kq_soft_max: [n_kv, n_tokens, n_head]
        else:
            # the highest of dims 1..3 that holds the tokens, with only size-1 dims above it
            tok_dim = next((d for d in (3, 2, 1) if ne[d] == n and all(x == 1 for x in ne[d + 1:])), None)
            if tok_dim is None:
                return []  # e.g. a last-layer tensor reduced to the output rows when not all logits are requested
        axis = 3 - tok_dim
        out = []
        for i in range(n):
            row = np.take(arr, i, axis=axis)
            while row.ndim > 1 and row.shape[0] == 1:
                row = row[0]
            if stage == "attn_scores":
                row = row[..., : self._start + n]  # llama.cpp pads the KV length; the padding is masked (zeros)
            if stage in FLATTEN:
                row = row.reshape(-1)
            row = np.ascontiguousarray(row, dtype=np.float32)
            seq = self._start + i
            name = f"{stage}-{layer}" if layer >= 0 else stage
            rec = {
                "seq": seq,
                "layer": layer,
                "stage": stage,
                "name": name,
                "shape": list(row.shape),
                "dtype": "f32",
                "blake3": blake3.blake3(row.tobytes()).hexdigest(),
                "rms": float(np.sqrt(np.mean(row.astype(np.float64) ** 2))) if row.size else 0.0,
                "num_elements": int(row.size),
            }
            out.append(rec)
            self.records.append(rec)
            if self.keep_values:
                self.values[(seq, layer, stage)] = row
            if self.save_values and row.size <= self.max_elements:
                np.save(self.directory / "values" / f"{seq}_{name}.npy", row)
        return out


def _read_tensor(lib: Any, ptr: int) -> np.ndarray | None:
    """A float32 copy of a computed F32/F16/BF16 tensor, numpy shape [ne3, ne2, ne1, ne0] (strides honoured)."""
    ttype = tensor_type(ptr)
    itemsize = {GGML_TYPE_F32: 4, GGML_TYPE_F16: 2, GGML_TYPE_BF16: 2}.get(ttype)
    if itemsize is None:
        return None
    ne, nb = tensor_ne(ptr), tensor_nb(ptr)
    nbytes = int(lib.ggml_nbytes(ptr))
    raw = (C.c_uint8 * nbytes)()
    lib.ggml_backend_tensor_get(ptr, raw, 0, nbytes)
    buf = np.frombuffer(raw, dtype=np.uint8)
    shape = (ne[3], ne[2], ne[1], ne[0])
    strides = (nb[3], nb[2], nb[1], nb[0])
    if ttype == GGML_TYPE_BF16:
        u16 = np.lib.stride_tricks.as_strided(buf.view(np.uint16), shape=shape,
                                              strides=strides)  # fmt: skip
        return (u16.astype(np.uint32) << 16).view(np.float32).copy()
    dt = np.float32 if ttype == GGML_TYPE_F32 else np.float16
    view = np.lib.stride_tricks.as_strided(buf.view(dt), shape=shape, strides=strides)
    return view.astype(np.float32, copy=True)
