"""The GPU weight layout for ternary matrices, built at load time from I2_S / TQ2_0 / TQ1_0 (still 2 bits a weight).

Why a layout of our own: the Triton kernels want every row of a matrix to be one contiguous run of bytes, the 2-bit
fields of a byte to cover *contiguous 32-element slices* of the activation (so one shift yields a slice that lines
up with a plain strided load of x, and an int8 `tl.dot` can take it directly), and the scales out of the code
stream (TQ2_0 interleaves an fp16 `d` after every 64 code bytes, which breaks 16-byte vector loads).

Layout `t2p128` ("ternary, 2-bit, planar over 128-element groups"), for a weight of logical shape [N, K]:

- `codes`: uint8 [N, K / 4]. Byte `32*g + m` of row n holds, in bits `2j .. 2j+1` (j = 0..3), the code of element
  `128*g + 32*j + m`. Code = value + 1 (0, 1, 2), the same +1 convention as I2_S and TQ2_0, so the kernels can
  use the bitnet.cpp epilogue `(Σ code·q − Σq)`. Code 3 is never produced by a quantizer; I2_S's matmul kernels
  read it as +2 (only the I2_S *dequantizer* maps it to 0) and so do ours.
- `row_scale`: float32 [N] — I2_S's per-tensor scale repeated per row (so matrices can be concatenated, e.g.
  q/k/v into one launch, without changing any per-element arithmetic), or 1.0 for TQ formats.
- `block_scale`: float32 [N, K / 256] — the TQ2_0 / TQ1_0 per-block `d` (fp16 widened exactly), or None for I2_S.

I2_S is already planar over 128-element blocks (shift `6 − 2j` instead of `2j`, and its blocks run over the
flattened tensor, so row n is bytes `[n*K/4, (n+1)*K/4)`): converting it is one 256-entry byte lookup. TQ2_0's 64
code bytes per block are exactly this layout with its `d` cut out. TQ1_0 (base 3) is decoded and re-packed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bitnet.errors import FormatError
from bitnet.formats.ternary import unpack_tq1_0
from bitnet.kernels.weights import QuantWeight

#: elements covered by one 32-byte group of the layout
GROUP = 128
#: elements per TQ block (ggml QK_K)
QK_K = 256
TQ2_BLOCK_BYTES = 66


def _i2s_byte_lut() -> np.ndarray:
    """Byte → byte map reversing the order of the four 2-bit fields (I2_S shift 6-2j → our shift 2j)."""
    b = np.arange(256, dtype=np.uint16)
    out = ((b >> 6) & 3) | (((b >> 4) & 3) << 2) | (((b >> 2) & 3) << 4) | ((b & 3) << 6)
    return out.astype(np.uint8)


_I2S_LUT = _i2s_byte_lut()


@dataclass(frozen=True)
class PackedTernary:
    """A ternary matrix in the `t2p128` layout, still on the host (numpy); `bitnet.kernels.gpu.ops` uploads it."""

    n_out: int
    n_in: int
    codes: np.ndarray
    row_scale: np.ndarray
    block_scale: np.ndarray | None
    src_fmt: str
    #: per-row factor applied after the matmul (arch `bitnet`'s `.scale` tensors), or None
    out_scale: np.ndarray | None = None
    name: str = ""

    @property
    def nbytes(self) -> int:
        extra = 0 if self.block_scale is None else self.block_scale.nbytes
        return int(self.codes.nbytes + self.row_scale.nbytes + extra)


def _check_shape(w: QuantWeight, multiple: int) -> None:
    if w.n_in % multiple or w.n_in <= 0 or w.n_out <= 0:
        raise FormatError(
            f"{w.name or 'weight'}: {w.fmt} matrix [{w.n_out}, {w.n_in}] needs n_in to be a positive multiple of "
            f"{multiple} for the GPU kernels"
        )


def pack_codes(codes: np.ndarray) -> np.ndarray:
    """Ternary values (int8 in {-1, 0, 1}, shape [N, K], K % 128 == 0) → `t2p128` code bytes [N, K/4]."""
    c = np.asarray(codes)
    if c.ndim != 2 or c.shape[1] % GROUP:
        raise FormatError(f"t2p128 packing needs [N, K] codes with K a multiple of {GROUP}, got {c.shape}")
    n, k = c.shape
    u = (c.astype(np.int16) + 1).astype(np.uint8).reshape(n, k // GROUP, 4, 32)
    packed = u[:, :, 0] | (u[:, :, 1] << 2) | (u[:, :, 2] << 4) | (u[:, :, 3] << 6)
    return np.ascontiguousarray(packed.reshape(n, k // 4))


def unpack_codes(packed: np.ndarray, n_in: int) -> np.ndarray:
    """Inverse of `pack_codes` for codes 0..2: `t2p128` bytes [N, K/4] → int8 values [N, K] (code − 1)."""
    p = np.asarray(packed, dtype=np.uint8)
    n = p.shape[0]
    g = p.reshape(n, n_in // GROUP, 1, 32)
    shifts = np.array([0, 2, 4, 6], dtype=np.uint8).reshape(1, 1, 4, 1)
    return (((g >> shifts) & 3).astype(np.int8) - 1).reshape(n, n_in)


def pack_weight(w: QuantWeight) -> PackedTernary:
    """Re-pack one ternary `QuantWeight` (file layout) into `t2p128`. Float weights are not handled here."""
    n, k = w.n_out, w.n_in
    raw = np.asarray(w.data, dtype=np.uint8).reshape(-1)
    if w.fmt == "i2_s":
        _check_shape(w, GROUP)
        if raw.size < n * k // 4 + 4:
            raise FormatError(f"{w.name}: I2_S blob of {raw.size} bytes is too short for [{n}, {k}]")
        codes = _I2S_LUT[raw[: n * k // 4]].reshape(n, k // 4)
        scale = (
            np.float32(w.scale) if w.scale is not None else raw[n * k // 4 : n * k // 4 + 4].view("<f4")[0]
        )
        row_scale = np.full(n, scale, dtype=np.float32)
        block_scale = None
    elif w.fmt == "tq2_0":
        _check_shape(w, QK_K)
        nb = k // QK_K
        if raw.size < n * nb * TQ2_BLOCK_BYTES:
            raise FormatError(f"{w.name}: TQ2_0 blob of {raw.size} bytes is too short for [{n}, {k}]")
        blocks = raw[: n * nb * TQ2_BLOCK_BYTES].reshape(n, nb, TQ2_BLOCK_BYTES)
        codes = np.ascontiguousarray(blocks[:, :, :64]).reshape(n, k // 4)
        block_scale = blocks[:, :, 64:66].copy().view(np.float16).reshape(n, nb).astype(np.float32)
        row_scale = np.ones(n, dtype=np.float32)
    elif w.fmt == "tq1_0":
        _check_shape(w, QK_K)
        vals, d = unpack_tq1_0(raw, n * k)
        codes = pack_codes(vals.reshape(n, k))
        block_scale = d.reshape(n, k // QK_K).astype(np.float32)
        row_scale = np.ones(n, dtype=np.float32)
    else:
        raise FormatError(
            f"{w.name}: {w.fmt!r} is not a ternary format the GPU kernels take (i2_s, tq2_0, tq1_0)"
        )
    return PackedTernary(
        n_out=n,
        n_in=k,
        codes=np.ascontiguousarray(codes),
        row_scale=row_scale,
        block_scale=None if block_scale is None else np.ascontiguousarray(block_scale),
        src_fmt=w.fmt,
        out_scale=None if w.out_scale is None else np.full(n, w.out_scale, dtype=np.float32),
        name=w.name,
    )


def concat_rows(parts: list[PackedTernary], name: str) -> PackedTernary:
    """Stack matrices that share an input (q/k/v, gate/up) so one launch computes all of them.

    Per-element arithmetic is unchanged: each row keeps its own scale, and `out_scale` (arch `bitnet`) becomes a
    per-row factor the kernels apply in their epilogue. All parts must come from one source format and agree on n_in.
    """
    if not parts:
        raise FormatError("concat_rows needs at least one matrix")
    k, fmt = parts[0].n_in, parts[0].src_fmt
    for p in parts:
        if p.n_in != k or (p.block_scale is None) != (parts[0].block_scale is None):
            raise FormatError(
                f"{name}: cannot stack {p.name} ({p.src_fmt} [{p.n_out}, {p.n_in}]) with {fmt} n_in={k}"
            )
    bs = None if parts[0].block_scale is None else np.concatenate([p.block_scale for p in parts])  # type: ignore[misc]
    os_ = None
    if any(p.out_scale is not None for p in parts):
        os_ = np.concatenate(
            [p.out_scale if p.out_scale is not None else np.ones(p.n_out, np.float32) for p in parts]
        )
    return PackedTernary(
        n_out=sum(p.n_out for p in parts),
        n_in=k,
        codes=np.concatenate([p.codes for p in parts]),
        row_scale=np.concatenate([p.row_scale for p in parts]),
        block_scale=bs,
        src_fmt=fmt,
        out_scale=os_,
        name=name,
    )


def reference_matmul_int(packed: PackedTernary, q: np.ndarray) -> np.ndarray:
    """Exact integer Σ_k value[n,k]·q[m,k] (int64) from the packed layout: what the kernels' integer part must give."""
    vals = unpack_codes(packed.codes, packed.n_in).astype(np.int64)
    return np.asarray(q, dtype=np.int64) @ vals.T
