"""ggml tensor types as they appear in GGUF files, including Microsoft's I2_S (36).

Why our own enum: `gguf.GGMLQuantizationType` (upstream) has no I2_S, and id 36 is a removed placeholder upstream, so
a file from bitnet.cpp cannot even be described with it. We keep upstream's ids and names for every other type and
add I2_S. Sizes come from `gguf.constants.GGML_QUANT_SIZES` so they never drift from gguf-py.
"""

from __future__ import annotations

from enum import IntEnum

from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

from bitnet.errors import FormatError

#: I2_S packs 128 elements into 32 bytes; the per-tensor float32 scale sits in a 32-byte tail after the codes
I2S_BLOCK = 128
I2S_BLOCK_BYTES = 32
I2S_TAIL_BYTES = 32

GGMLType = IntEnum(  # type: ignore[misc]
    "GGMLType",
    {**{t.name: int(t) for t in GGMLQuantizationType}, "I2_S": 36},
)
GGMLType.__doc__ = "ggml type ids: upstream gguf-py's list plus Microsoft's I2_S = 36."


def block_size(ggml_type: int) -> tuple[int, int]:
    """(elements per block, bytes per block). I2_S reports (128, 32) for its packed codes (the tail is extra)."""
    t = as_type(ggml_type)
    if t == GGMLType.I2_S:
        return I2S_BLOCK, I2S_BLOCK_BYTES
    return GGML_QUANT_SIZES[GGMLQuantizationType(int(t))]


def as_type(ggml_type: int | str) -> GGMLType:
    """Resolve an id or a (case-insensitive) name like "tq2_0" to a GGMLType, or raise FormatError."""
    if isinstance(ggml_type, str):
        try:
            return GGMLType[ggml_type.upper()]
        except KeyError:
            raise FormatError(f"unknown ggml type name {ggml_type!r}") from None
    try:
        return GGMLType(int(ggml_type))
    except ValueError:
        raise FormatError(f"unknown ggml type id {int(ggml_type)}") from None


def type_name(ggml_type: int) -> str:
    """Lower-case type name ("i2_s", "tq2_0", "f16", ...) as used across the project."""
    return as_type(ggml_type).name.lower()


def tensor_nbytes(ggml_type: int | str, shape: tuple[int, ...] | list[int]) -> int:
    """Bytes a tensor of `shape` (ggml order, ne0 first) occupies in a GGUF file.

    I2_S is `n/4 + 32` (ggml_nbytes special case in Microsoft's fork). Other types are whole blocks along ne0;
    a row that is not a whole number of blocks raises FormatError.
    """
    t = as_type(ggml_type)
    n = 1
    for d in shape:
        if d < 0:
            raise FormatError(f"negative dimension in shape {tuple(shape)}")
        n *= int(d)
    if t == GGMLType.I2_S:
        if n % 4:
            raise FormatError(f"I2_S tensor of {n} elements is not a multiple of 4")
        return n // 4 + I2S_TAIL_BYTES
    blk, nbytes = block_size(t)
    ne0 = int(shape[0]) if len(shape) else 1
    if ne0 % blk:
        raise FormatError(f"{t.name.lower()} needs rows that are a multiple of {blk} elements, got ne0={ne0}")
    return n // blk * nbytes


#: llama.cpp `general.file_type` (llama_ftype) for the formats we write
FILE_TYPE = {"f32": 0, "f16": 1, "tq1_0": 36, "tq2_0": 37, "i2_s": 40}
