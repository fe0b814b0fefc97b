"""Lazy, memory-mapped SafeTensors reading with bf16 support and no torch dependency.

Why not `safetensors.safe_open(framework="numpy")`: numpy has no bfloat16, and BitNet checkpoints are bf16. The
format is tiny (u64 header length, JSON header, raw little-endian data), so we map the file, validate the header
against the file size, and hand out zero-copy uint8 views; bf16 becomes float32 by a 16-bit shift.
"""

from __future__ import annotations

import json
import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bitnet.errors import FormatError, NotFoundError

_DTYPES: dict[str, str] = {
    "F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
    "U8": "u1", "BOOL": "u1", "U16": "<u2", "U32": "<u4", "U64": "<u8",
}  # fmt: skip
MAX_HEADER = 100 * 2**20


@dataclass
class SafeTensor:
    name: str
    dtype: str  # safetensors dtype name: "BF16", "F32", "U8", ...
    shape: tuple[int, ...]
    _buf: Any
    _start: int
    _end: int

    def raw(self) -> np.ndarray:
        """The stored values with their own numpy dtype (bf16 as uint16 bits), zero-copy."""
        dt = np.dtype(_DTYPES[self.dtype])
        count = (self._end - self._start) // dt.itemsize
        return np.frombuffer(self._buf, dtype=dt, count=count, offset=self._start).reshape(self.shape)

    def float32(self) -> np.ndarray:
        """Values as float32 (bf16 widened exactly)."""
        r = self.raw()
        if self.dtype == "BF16":
            return (r.astype(np.uint32) << 16).view(np.float32)
        return r.astype(np.float32)


def open_safetensors(path: str | Path) -> dict[str, SafeTensor]:
    """Map one .safetensors file and return its tensors (validated against the file size)."""
    p = Path(path)
    if not p.is_file():
        raise NotFoundError(f"safetensors file not found: {p}")
    size = p.stat().st_size
    if size < 8:
        raise FormatError(f"{p}: too small to be a safetensors file")
    with open(p, "rb") as fh:
        mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    (n,) = struct.unpack_from("<Q", mm, 0)
    if n > min(MAX_HEADER, size - 8):
        raise FormatError(f"{p}: header length {n} is larger than the file allows")
    try:
        header = json.loads(bytes(mm[8 : 8 + n]))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FormatError(f"{p}: header is not valid JSON: {exc}") from None
    if not isinstance(header, dict):
        raise FormatError(f"{p}: header is not a JSON object")
    base = 8 + n
    out: dict[str, SafeTensor] = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (start, end) = (
                meta["dtype"],
                tuple(int(d) for d in meta["shape"]),
                meta["data_offsets"],
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise FormatError(f"{p}: bad entry for tensor {name!r}: {exc}") from None
        if dtype not in _DTYPES:
            raise FormatError(f"{p}: tensor {name!r} has unsupported dtype {dtype}")
        nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(_DTYPES[dtype]).itemsize
        if not (0 <= start <= end and end - start == nbytes and base + end <= size):
            raise FormatError(
                f"{p}: tensor {name!r} has inconsistent offsets [{start}, {end}) for shape {shape}"
            )
        out[name] = SafeTensor(name, dtype, shape, mm, base + start, base + end)
    return out


def open_checkpoint(folder: str | Path) -> dict[str, SafeTensor]:
    """All tensors of a HF checkpoint folder: `model.safetensors`, or the shards of `*.safetensors.index.json`."""
    d = Path(folder)
    index = sorted(d.glob("*.safetensors.index.json"))
    files = sorted({d / f for f in json.loads(index[0].read_text())["weight_map"].values()}) if index else []
    if not files:
        files = sorted(d.glob("*.safetensors"))
    if not files:
        raise NotFoundError(f"no *.safetensors files in {d}")
    tensors: dict[str, SafeTensor] = {}
    for f in files:
        for name, t in open_safetensors(f).items():
            if name in tensors:
                raise FormatError(f"tensor {name!r} appears in more than one shard ({f.name})")
            tensors[name] = t
    return tensors
