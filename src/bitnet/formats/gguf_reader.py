"""GGUF reader on a read-only memory map, with Microsoft's I2_S (type 36) and strict validation.

Why not `gguf.GGUFReader`: it rejects type 36 (so it cannot open bitnet.cpp's official model) and it trusts counts
from the file (a corrupt header can make it allocate or loop for a very long time). This parser is small, bounds
every count by the bytes actually left in the file *before* allocating anything, and raises
`bitnet.errors.FormatError` naming the field that is wrong. Tensor data is never copied: `TensorInfo.data` is a
uint8 view into the map. Dequantization of the many non-ternary ggml types is delegated to `gguf.quants`.

Layout (GGUF v2/v3, little-endian): magic "GGUF", u32 version, u64 n_tensors, u64 n_kv; n_kv x (string key,
u32 value type, value); n_tensors x (string name, u32 n_dims, u64 dims[n_dims], u32 type, u64 offset); padding to
`general.alignment` (default 32); tensor data, each tensor at data_offset + offset.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bitnet.errors import FormatError, NotFoundError
from bitnet.formats.ggml_types import GGMLType, as_type, block_size, tensor_nbytes, type_name

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
GGML_MAX_DIMS = 4
MAX_ARRAY_NESTING = 2

# GGUF value types (gguf spec): id -> (name, struct format or None for string/array)
_SCALARS: dict[int, tuple[str, str]] = {
    0: ("uint8", "<B"),
    1: ("int8", "<b"),
    2: ("uint16", "<H"),
    3: ("int16", "<h"),
    4: ("uint32", "<I"),
    5: ("int32", "<i"),
    6: ("float32", "<f"),
    7: ("bool", "<?"),
    10: ("uint64", "<Q"),
    11: ("int64", "<q"),
    12: ("float64", "<d"),
}
_NUMPY_OF: dict[int, str] = {
    0: "<u1",
    1: "<i1",
    2: "<u2",
    3: "<i2",
    4: "<u4",
    5: "<i4",
    6: "<f4",
    7: "<u1",
    10: "<u8",
    11: "<i8",
    12: "<f8",
}
STRING, ARRAY = 8, 9


@dataclass
class TensorInfo:
    """One tensor of a GGUF file. `shape` is ggml order (ne0 first); numpy arrays use `shape[::-1]`."""

    name: str
    ggml_type: int
    type_name: str
    shape: tuple[int, ...]
    n_elements: int
    n_bytes: int
    offset: int
    _buffer: Any = field(default=None, repr=False, compare=False)

    @property
    def data(self) -> np.ndarray:
        """uint8 view (no copy) of exactly `n_bytes` bytes of the mapped file."""
        return np.frombuffer(self._buffer, dtype=np.uint8, count=self.n_bytes, offset=self.offset)

    @property
    def np_shape(self) -> tuple[int, ...]:
        return tuple(reversed(self.shape))


@dataclass
class GGUFFile:
    """A validated, memory-mapped GGUF file. Close it (or use `with`) to release the map."""

    path: Path
    version: int
    n_kv: int
    n_tensors: int
    alignment: int
    data_offset: int
    file_size: int
    metadata: dict[str, Any]
    tensors: dict[str, TensorInfo]
    value_types: dict[str, int] = field(default_factory=dict, repr=False)
    #: element type of each array-valued key (so a file can be rewritten with the same types)
    array_types: dict[str, int] = field(default_factory=dict, repr=False)
    _mmap: Any = field(default=None, repr=False)

    @property
    def arch(self) -> str:
        return str(self.metadata.get("general.architecture", ""))

    def close(self) -> None:
        """Release the memory map. Views handed out earlier keep the map alive until they are dropped."""
        m, self._mmap = self._mmap, None
        if m is not None:
            with contextlib.suppress(BufferError):  # numpy views still reference it; the GC unmaps it later
                m.close()

    def __enter__(self) -> GGUFFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Cursor:
    """Bounds-checked little-endian reads over the mapped header."""

    def __init__(self, buf: Any, size: int) -> None:
        self.buf = buf
        self.size = size
        self.pos = 0
        self.last_etype: int | None = None

    def remaining(self) -> int:
        return self.size - self.pos

    def need(self, n: int, what: str) -> None:
        if n < 0 or n > self.size - self.pos:
            raise FormatError(
                f"truncated file: {what} needs {n} bytes at offset {self.pos}, only {self.size - self.pos} left"
            )

    def unpack(self, fmt: str, what: str) -> Any:
        n = struct.calcsize(fmt)
        self.need(n, what)
        (v,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += n
        return v

    def u32(self, what: str) -> int:
        return int(self.unpack("<I", what))

    def u64(self, what: str) -> int:
        return int(self.unpack("<Q", what))

    def raw_string(self, what: str) -> bytes:
        n = self.u64(f"length of {what}")
        self.need(n, what)
        b = bytes(self.buf[self.pos : self.pos + n])
        self.pos += n
        return b

    def string(self, what: str) -> str:
        b = self.raw_string(what)
        try:
            return b.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise FormatError(f"{what} is not valid UTF-8 ({exc.reason} at byte {exc.start})") from None

    def value(self, vtype: int, what: str, depth: int = 0) -> Any:
        if vtype in _SCALARS:
            v = self.unpack(_SCALARS[vtype][1], what)
            if vtype == 7:
                return bool(v)
            if vtype == 6:  # shortest decimal that round-trips in float32: 1e-05, not 9.999999747378752e-06
                return float(str(np.float32(v)))
            return v
        if vtype == STRING:
            b = self.raw_string(what)
            return b.decode("utf-8", errors="surrogateescape")
        if vtype == ARRAY:
            if depth >= MAX_ARRAY_NESTING:
                raise FormatError(f"{what}: arrays nested deeper than {MAX_ARRAY_NESTING}")
            etype = self.u32(f"element type of {what}")
            if depth == 0:
                self.last_etype = etype
            count = self.u64(f"element count of {what}")
            return self.array(etype, count, what, depth + 1)
        raise FormatError(f"{what}: unknown GGUF value type {vtype}")

    def array(self, etype: int, count: int, what: str, depth: int) -> list[Any]:
        if etype in _SCALARS:
            esize = struct.calcsize(_SCALARS[etype][1])
            self.need(count * esize, f"{count} elements of {what}")
            arr = np.frombuffer(self.buf, dtype=_NUMPY_OF[etype], count=count, offset=self.pos)
            self.pos += count * esize
            return [bool(x) for x in arr] if etype == 7 else arr.tolist()
        if etype == STRING:
            # every string costs at least its 8-byte length: bound the count before the loop
            self.need(count * 8, f"{count} strings of {what}")
            out: list[str] = []
            buf, pos, size = self.buf, self.pos, self.size
            unpack_from = struct.unpack_from
            for i in range(count):
                if pos + 8 > size:
                    self.pos = pos
                    self.need(8, f"length of string {i} of {what}")
                (n,) = unpack_from("<Q", buf, pos)
                pos += 8
                if n > size - pos:
                    self.pos = pos
                    self.need(n, f"string {i} of {what}")
                out.append(bytes(buf[pos : pos + n]).decode("utf-8", errors="surrogateescape"))
                pos += n
            self.pos = pos
            return out
        if etype == ARRAY:
            self.need(count * 12, f"{count} nested arrays of {what}")
            return [self.value(ARRAY, f"{what}[{i}]", depth) for i in range(count)]
        raise FormatError(f"{what}: unknown GGUF array element type {etype}")


def open_gguf(path: str | os.PathLike[str]) -> GGUFFile:
    """Open and validate a GGUF file (memory-mapped, read-only). Raises FormatError on any inconsistency."""
    p = Path(path)
    if not p.is_file():
        raise NotFoundError(f"model file not found: {p}")
    size = p.stat().st_size
    if size < 24:
        raise FormatError(f"{p}: file of {size} bytes is too small to be GGUF (header is 24 bytes)")
    with open(p, "rb") as fh:
        mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        return _parse(p, mm, size)
    except FormatError as exc:
        mm.close()
        raise FormatError(f"{p}: {exc}", hint=exc.hint) from None
    except BaseException:
        mm.close()
        raise


def _parse(path: Path, mm: mmap.mmap, size: int) -> GGUFFile:
    cur = _Cursor(mm, size)
    magic = bytes(mm[0:4])
    cur.pos = 4
    if magic != GGUF_MAGIC:
        raise FormatError(f"bad magic {magic!r}: not a GGUF file (expected b'GGUF')")
    version = cur.u32("version")
    if version not in SUPPORTED_VERSIONS:
        hint = "big-endian GGUF files are not supported" if version > 0xFFFF else None
        raise FormatError(f"unsupported GGUF version {version} (supported: 2, 3)", hint=hint)
    n_tensors = cur.u64("tensor count")
    n_kv = cur.u64("metadata count")
    # smallest possible KV: 8-byte key length + empty key + 4-byte type + 1-byte value
    if n_kv * 13 > cur.remaining():
        raise FormatError(f"metadata count {n_kv} cannot fit in the {cur.remaining()} bytes left in the file")
    # smallest possible tensor info: 8 (name len) + 4 (n_dims) + 8 (one dim) + 4 (type) + 8 (offset)
    if n_tensors * 32 > cur.remaining():
        raise FormatError(
            f"tensor count {n_tensors} cannot fit in the {cur.remaining()} bytes left in the file"
        )

    metadata: dict[str, Any] = {}
    value_types: dict[str, int] = {}
    array_types: dict[str, int] = {}
    for i in range(n_kv):
        key = cur.string(f"key of metadata entry {i}")
        vtype = cur.u32(f"value type of {key!r}")
        if key in metadata:
            raise FormatError(f"duplicate metadata key {key!r}")
        metadata[key] = cur.value(vtype, f"value of {key!r}")
        value_types[key] = vtype
        if vtype == ARRAY and cur.last_etype is not None:
            array_types[key] = cur.last_etype

    alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if (
        not isinstance(alignment, int)
        or isinstance(alignment, bool)
        or alignment <= 0
        or alignment & (alignment - 1)
    ):
        raise FormatError(f"general.alignment must be a positive power of two, got {alignment!r}")

    raw_infos: list[tuple[str, int, tuple[int, ...], int]] = []
    seen: set[str] = set()
    for i in range(n_tensors):
        name = cur.string(f"name of tensor {i}")
        if name in seen:
            raise FormatError(f"duplicate tensor name {name!r}")
        seen.add(name)
        n_dims = cur.u32(f"n_dims of tensor {name!r}")
        if not 1 <= n_dims <= GGML_MAX_DIMS:
            raise FormatError(f"tensor {name!r}: n_dims {n_dims} outside 1..{GGML_MAX_DIMS}")
        dims = tuple(cur.u64(f"dimension {d} of tensor {name!r}") for d in range(n_dims))
        ttype = cur.u32(f"type of tensor {name!r}")
        offset = cur.u64(f"offset of tensor {name!r}")
        raw_infos.append((name, ttype, dims, offset))

    data_offset = -(-cur.pos // alignment) * alignment
    if data_offset > size:
        raise FormatError(f"data section would start at {data_offset}, past the end of the {size}-byte file")

    tensors: dict[str, TensorInfo] = {}
    for name, ttype, dims, offset in raw_infos:
        tensors[name] = _tensor_info(name, ttype, dims, offset, data_offset, alignment, size, mm)

    return GGUFFile(
        path=path,
        version=version,
        n_kv=n_kv,
        n_tensors=n_tensors,
        alignment=alignment,
        data_offset=data_offset,
        file_size=size,
        metadata=metadata,
        tensors=tensors,
        value_types=value_types,
        array_types=array_types,
        _mmap=mm,
    )


def _tensor_info(
    name: str,
    ttype: int,
    dims: tuple[int, ...],
    offset: int,
    data_offset: int,
    alignment: int,
    size: int,
    mm: Any,
) -> TensorInfo:
    try:
        gtype = as_type(ttype)
    except FormatError:
        raise FormatError(f"tensor {name!r} has unknown ggml type id {ttype}") from None
    n = 1
    for d in dims:
        if d == 0 or d > size * 8:  # no type packs more than 8 elements per byte... and the data must fit
            raise FormatError(
                f"tensor {name!r}: dimension {d} in shape {dims} is impossible for a {size}-byte file"
            )
        n *= d
    if n > size * 8:
        raise FormatError(f"tensor {name!r}: {n} elements cannot fit in a {size}-byte file")
    if gtype != GGMLType.I2_S:
        blk = block_size(gtype)[0]
        if dims[0] % blk:
            raise FormatError(
                f"tensor {name!r}: ne0={dims[0]} is not a multiple of the {type_name(gtype)} block ({blk})"
            )
    nbytes = tensor_nbytes(gtype, dims)
    if offset % alignment:
        raise FormatError(f"tensor {name!r}: offset {offset} is not aligned to {alignment}")
    start = data_offset + offset
    if start + nbytes > size:
        raise FormatError(
            f"tensor {name!r}: data [{start}, {start + nbytes}) runs past the end of the file ({size} bytes)"
        )
    return TensorInfo(
        name=name,
        ggml_type=int(gtype),
        type_name=type_name(gtype),
        shape=dims,
        n_elements=n,
        n_bytes=nbytes,
        offset=start,
        _buffer=mm,
    )


def dequantize(info: TensorInfo) -> np.ndarray:
    """Tensor → float32 array of numpy shape `shape[::-1]`. I2_S/TQ use our ternary module, others gguf.quants."""
    from bitnet.formats import ternary

    raw = info.data
    t = GGMLType(info.ggml_type)
    if t == GGMLType.F32:
        out = raw.view("<f4").astype(np.float32)
    elif t == GGMLType.F16:
        out = raw.view("<f2").astype(np.float32)
    elif t == GGMLType.BF16:
        out = (raw.view("<u2").astype(np.uint32) << 16).view(np.float32)
    elif t == GGMLType.I2_S:
        codes, scale = ternary.unpack_i2s(raw, info.n_elements)
        out = codes.astype(np.float32) * scale
    elif t in (GGMLType.TQ2_0, GGMLType.TQ1_0):
        codes, d = ternary.unpack_ternary(info.type_name, raw, info.n_elements)
        out = (codes.reshape(-1, ternary.QK_K).astype(np.float32) * d[:, None]).reshape(-1)
    else:
        from gguf import quants
        from gguf.constants import GGMLQuantizationType

        try:
            out = quants.dequantize(raw, GGMLQuantizationType(int(t)))
        except NotImplementedError as exc:
            raise FormatError(
                f"tensor {info.name!r}: cannot dequantize type {info.type_name}: {exc}"
            ) from None
        out = np.asarray(out, dtype=np.float32)
    return out.reshape(info.np_shape)
