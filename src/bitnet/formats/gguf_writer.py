"""GGUF v3 writer: typed metadata, any ggml type (I2_S included), tensors streamed one at a time, atomic landing.

Why our own writer instead of `gguf.GGUFWriter`: that class cannot describe type 36 (I2_S) and keeps every tensor
in memory until `write_tensors_to_file`. Here the header is computed from each tensor's declared type and shape
(`tensor_nbytes`), then each tensor's bytes are produced and written in turn — a producer may be a callable that
yields chunks, so a 1.2 GB model is written with only one tensor (or one chunk) in memory. The file goes to a
temporary name in the target folder, is fsynced, and renamed into place, so readers never see a partial model.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bitnet.errors import FormatError
from bitnet.formats.ggml_types import GGMLType, as_type, tensor_nbytes
from bitnet.formats.gguf_reader import _NUMPY_OF, _SCALARS, ARRAY, DEFAULT_ALIGNMENT, STRING
from bitnet.fsutil import atomic_open

Chunk = np.ndarray | bytes | bytearray | memoryview
Producer = Chunk | Callable[[], Chunk | Iterable[Chunk]]


class ValueType:
    """GGUF metadata value type ids (the gguf spec)."""

    UINT8, INT8, UINT16, INT16, UINT32, INT32, FLOAT32, BOOL, STRING, ARRAY, UINT64, INT64, FLOAT64 = range(
        13
    )


# the reader's tables are the one definition of GGUF value types
_FMT = {vtype: fmt for vtype, (_, fmt) in _SCALARS.items()}
_NP = _NUMPY_OF


@dataclass(frozen=True)
class Typed:
    """A metadata value with an explicit GGUF type (for arrays, `vtype` is the element type)."""

    value: Any
    vtype: int


@dataclass
class TensorSpec:
    """A tensor to write: `shape` in ggml order (ne0 first), `data` the raw bytes or a producer of them."""

    name: str
    ggml_type: int
    shape: tuple[int, ...]
    data: Producer

    @property
    def n_bytes(self) -> int:
        return tensor_nbytes(self.ggml_type, self.shape)


def float_tensor(name: str, array: np.ndarray, fmt: str = "f32") -> TensorSpec:
    """A float tensor (numpy shape [.., n_out, n_in]) stored as f32, f16 or bf16."""
    arr = np.asarray(array)
    shape = tuple(int(d) for d in arr.shape[::-1])
    if fmt == "f32":
        return TensorSpec(name, int(GGMLType.F32), shape, lambda: np.ascontiguousarray(arr, dtype="<f4"))
    if fmt == "f16":
        return TensorSpec(name, int(GGMLType.F16), shape, lambda: np.ascontiguousarray(arr, dtype="<f2"))
    if fmt == "bf16":
        return TensorSpec(name, int(GGMLType.BF16), shape, lambda: _to_bf16(arr))
    raise FormatError(f"float_tensor: unsupported format {fmt!r} (f32, f16, bf16)")


def ternary_tensor(name: str, codes: np.ndarray, scale: float, fmt: str) -> TensorSpec:
    """A ternary weight (codes [n_out, n_in] in {-1,0,1}, per-tensor scale) packed as i2_s, tq2_0 or tq1_0."""
    from bitnet.formats.ternary import pack_ternary

    if codes.ndim != 2:
        raise FormatError(f"{name}: ternary weights must be 2-D [n_out, n_in], got shape {codes.shape}")
    shape = (int(codes.shape[1]), int(codes.shape[0]))
    return TensorSpec(name, int(as_type(fmt)), shape, lambda: pack_ternary(fmt, codes, scale))


def _to_bf16(arr: np.ndarray) -> np.ndarray:
    """float32 → bf16 bits with round-to-nearest-even (NaN kept quiet), like torch and ggml."""
    bits = np.ascontiguousarray(arr, dtype="<f4").view("<u4").astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    is_nan = np.isnan(np.asarray(arr, dtype=np.float32))
    return np.where(is_nan, (bits >> 16) | 0x40, rounded).astype("<u2")


def _infer_type(key: str, value: Any) -> tuple[int, Any]:
    if isinstance(value, Typed):
        v = value.value
        if isinstance(v, (list, tuple, np.ndarray)):  # a typed array: vtype is the element type
            return ValueType.ARRAY, Typed(v.tolist() if isinstance(v, np.ndarray) else list(v), value.vtype)
        return value.vtype, v
    if isinstance(value, (bool, np.bool_)):
        return ValueType.BOOL, bool(value)
    if isinstance(value, (int, np.integer)):
        v = int(value)
        if 0 <= v < 2**32:
            return ValueType.UINT32, v
        if -(2**31) <= v < 0:
            return ValueType.INT32, v
        return ValueType.INT64 if v < 0 else ValueType.UINT64, v
    if isinstance(value, (float, np.floating)):
        return ValueType.FLOAT32, float(value)
    if isinstance(value, str):
        return ValueType.STRING, value
    if isinstance(value, np.ndarray):
        kinds = {"f": ValueType.FLOAT32, "i": ValueType.INT32, "u": ValueType.UINT32, "b": ValueType.BOOL}
        if value.dtype.kind not in kinds:
            raise FormatError(f"metadata {key!r}: cannot store a numpy array of dtype {value.dtype}")
        return ValueType.ARRAY, Typed(value.tolist(), kinds[value.dtype.kind])
    if isinstance(value, (list, tuple)):
        if not value:
            return ValueType.ARRAY, Typed([], ValueType.INT32)
        first = value[0]
        if isinstance(first, str):
            etype = ValueType.STRING
        elif isinstance(first, (bool, np.bool_)):
            etype = ValueType.BOOL
        elif isinstance(first, (int, np.integer)):
            etype = ValueType.INT32
        elif isinstance(first, (float, np.floating)):
            etype = ValueType.FLOAT32
        else:
            raise FormatError(
                f"metadata {key!r}: cannot infer a GGUF type for list of {type(first).__name__}"
            )
        return ValueType.ARRAY, Typed(list(value), etype)
    raise FormatError(f"metadata {key!r}: cannot infer a GGUF type for {type(value).__name__}")


def _pack_string(s: str) -> bytes:
    b = s.encode("utf-8", errors="surrogateescape")
    return struct.pack("<Q", len(b)) + b


def _pack_value(key: str, vtype: int, value: Any) -> bytes:
    if vtype in _FMT:
        try:
            return struct.pack(_FMT[vtype], value)
        except struct.error as exc:
            raise FormatError(f"metadata {key!r}: value {value!r} does not fit type {vtype}: {exc}") from None
    if vtype == STRING:
        return _pack_string(str(value))
    if vtype == ARRAY:
        arr = (
            value if isinstance(value, Typed) else Typed(list(value), _infer_type(key, list(value))[1].vtype)
        )
        items = list(arr.value)
        head = struct.pack("<IQ", arr.vtype, len(items))
        if arr.vtype in _NP:
            try:
                return head + np.asarray(items, dtype=_NP[arr.vtype]).tobytes()
            except (OverflowError, ValueError) as exc:
                raise FormatError(
                    f"metadata {key!r}: array values do not fit type {arr.vtype}: {exc}"
                ) from None
        if arr.vtype == STRING:
            return head + b"".join(_pack_string(str(s)) for s in items)
        raise FormatError(f"metadata {key!r}: unsupported array element type {arr.vtype}")
    raise FormatError(f"metadata {key!r}: unknown GGUF value type {vtype}")


def _chunks(spec: TensorSpec) -> Iterator[bytes | memoryview]:
    data = spec.data() if callable(spec.data) else spec.data
    if isinstance(data, (np.ndarray, bytes, bytearray, memoryview)):
        data = [data]
    for chunk in data:
        if isinstance(chunk, np.ndarray):
            yield memoryview(np.ascontiguousarray(chunk)).cast("B")
        else:
            yield memoryview(chunk).cast("B")


def _normalize_tensors(tensors: Iterable[TensorSpec] | Mapping[str, np.ndarray]) -> list[TensorSpec]:
    if isinstance(tensors, Mapping):
        specs = []
        for name, arr in tensors.items():
            a = np.asarray(arr)
            fmt = {np.dtype(np.float16): "f16", np.dtype(np.float32): "f32"}.get(a.dtype)
            if fmt is None:
                raise FormatError(
                    f"tensor {name!r}: pass a TensorSpec for dtype {a.dtype} (plain arrays: f32/f16)"
                )
            specs.append(float_tensor(name, a, fmt))
        return specs
    return list(tensors)


def build_header(
    arch: str, metadata: Mapping[str, Any], specs: list[TensorSpec], alignment: int = DEFAULT_ALIGNMENT
) -> tuple[bytes, list[int]]:
    """Serialize header + metadata + tensor infos (padded to `alignment`); returns (bytes, relative offsets)."""
    kv: dict[str, Any] = {"general.architecture": arch}
    kv.update({k: v for k, v in metadata.items() if k != "general.architecture"})
    if alignment != DEFAULT_ALIGNMENT:
        kv["general.alignment"] = Typed(alignment, ValueType.UINT32)
    parts = [b"GGUF", struct.pack("<IQQ", 3, len(specs), len(kv))]
    for key, value in kv.items():
        vtype, v = _infer_type(key, value)
        parts += [_pack_string(key), struct.pack("<I", vtype), _pack_value(key, vtype, v)]
    offsets, off, names = [], 0, set()
    for spec in specs:
        if spec.name in names:
            raise FormatError(f"duplicate tensor name {spec.name!r}")
        names.add(spec.name)
        parts += [_pack_string(spec.name), struct.pack("<I", len(spec.shape))]
        parts.append(struct.pack(f"<{len(spec.shape)}Q", *spec.shape))
        parts.append(struct.pack("<IQ", int(spec.ggml_type), off))
        offsets.append(off)
        off += -(-spec.n_bytes // alignment) * alignment
    header = b"".join(parts)
    header += b"\0" * (-len(header) % alignment)
    return header, offsets


def write_gguf(
    path: str | os.PathLike[str],
    arch: str,
    metadata: Mapping[str, Any],
    tensors: Iterable[TensorSpec] | Mapping[str, np.ndarray],
    *,
    alignment: int = DEFAULT_ALIGNMENT,
    progress: Callable[[str, int, int], None] | None = None,
) -> Path:
    """Write a GGUF v3 file atomically. `metadata` keys are full keys; ints default to uint32, floats to float32
    (wrap a value in `Typed` to choose). Returns the final path."""
    out = Path(path)
    specs = _normalize_tensors(tensors)
    header, _ = build_header(arch, metadata, specs, alignment)
    with atomic_open(out, "wb") as fh:
        fh.write(header)
        for i, spec in enumerate(specs):
            written = 0
            for chunk in _chunks(spec):
                fh.write(chunk)
                written += chunk.nbytes
            if written != spec.n_bytes:
                raise FormatError(
                    f"tensor {spec.name!r}: produced {written} bytes, its type and shape need {spec.n_bytes}"
                )
            fh.write(b"\0" * (-written % alignment))
            if progress is not None:
                progress(spec.name, i + 1, len(specs))
    return out


def typed_metadata(f: Any, *, skip: tuple[str, ...] = ("general.architecture",)) -> dict[str, Any]:
    """A read GGUFFile's metadata wrapped in `Typed`, so rewriting it keeps every key's original GGUF type."""
    out: dict[str, Any] = {}
    for key, value in f.metadata.items():
        if key in skip:
            continue
        vtype = f.value_types[key]
        if vtype == ARRAY:
            etype = f.array_types.get(key)
            out[key] = Typed(value, etype) if etype is not None and etype != ARRAY else value
        else:
            out[key] = Typed(value, vtype)
    return out
