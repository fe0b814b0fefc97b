"""Ternary weights: absmean ternarization and the three packed layouts BitNet files use (I2_S, TQ2_0, TQ1_0).

Codes are int8 in {-1, 0, +1}. Every pack/unpack pair is an exact round trip; the TQ packers are byte-identical to
`gguf.quants.quantize` (tests prove it), written here as codes + scales so callers that already hold ternary codes
never go through floats.

Layouts (element order is the tensor flattened row-major, ne0 fastest):
- I2_S (Microsoft bitnet.cpp, x86 layout): 128-element blocks of 32 bytes; element j of a block lives in byte
  j % 32 at bit shift 6 - 2*(j // 32); code = value + 1 (0/1/2; 3 decodes to 0 like `dequantize_row_i2_s`).
  After n/4 bytes of codes comes one little-endian float32 scale, then 28 zero bytes (blob = n/4 + 32 bytes).
- TQ2_0 (ggml): 256-element blocks of 66 bytes: qs[64] then fp16 d. Within each 32-byte half, byte m holds
  elements m + 32*k at bits 2k (k = 0..3); code = value + 1.
- TQ1_0 (ggml): 256-element blocks of 54 bytes: qs[48], qh[4], fp16 d, base-3 with 5 (or 4) trits per byte, the
  first trit most significant, each byte stored as ceil(v * 256 / 243).
"""

from __future__ import annotations

import numpy as np

from bitnet.errors import FormatError
from bitnet.formats.ggml_types import I2S_BLOCK, I2S_TAIL_BYTES

QK_K = 256
TQ2_BLOCK_BYTES = 66
TQ1_BLOCK_BYTES = 54

_POW3_5 = np.array([81, 27, 9, 3, 1], dtype=np.uint16)
_POW3_4 = np.array([81, 27, 9, 3], dtype=np.uint16)  # qh: 4 trits, shifted so the first is most significant


def absmean_ternarize(w: np.ndarray, eps: float = 1e-5) -> tuple[np.ndarray, np.float32]:
    """BitNet b1.58 weight quantization: s = mean|W| (per tensor), codes = clamp(round_half_even(W / s), -1, 1).

    Mirrors the converters (`weight_quant` in microsoft/BitNet): `inv = 1 / max(mean|W|, eps)` and `W * inv`, in
    float32. The mean is accumulated in float64 so the result does not depend on summation order.
    Returns (int8 codes with the shape of w, float32 scale).
    """
    w32 = np.asarray(w, dtype=np.float32)
    if w32.size == 0:
        raise FormatError("cannot ternarize an empty tensor")
    scale = np.float32(max(float(np.abs(w32, dtype=np.float64).mean()), eps))
    inv = np.float32(1.0) / scale
    codes = np.clip(np.rint(w32 * inv), -1, 1).astype(np.int8)
    return codes, scale


def ternarize(w: np.ndarray) -> tuple[np.ndarray, np.float32]:
    """Codes and scale of a weight: exact when `w` is already ternary x one scale, absmean otherwise.

    Why: re-applying absmean to an already fake-quantized tensor (W = T*s, e.g. an F32 GGUF from Microsoft's
    converter) keeps the codes but shrinks the scale to mean|W| = s * (fraction of nonzeros), silently changing
    the model. Like llama-quantize's `quantize_i2_s` (scale = max|W|), an exactly ternary tensor keeps s.
    """
    w32 = np.asarray(w, dtype=np.float32)
    a = np.abs(w32)
    s = np.float32(a.max()) if a.size else np.float32(0)
    if s > 0 and bool(np.all((a == 0) | (a == s))):
        return np.sign(w32).astype(np.int8), s
    return absmean_ternarize(w32)


def _check_codes(codes: np.ndarray, block: int, what: str) -> np.ndarray:
    flat = np.asarray(codes).reshape(-1)
    if flat.size == 0 or flat.size % block:
        raise FormatError(f"{what}: {flat.size} elements is not a positive multiple of {block}")
    if flat.dtype.kind not in "iu":
        raise FormatError(f"{what}: codes must be integers in {{-1, 0, 1}}, got dtype {flat.dtype}")
    if flat.size and (flat.min() < -1 or flat.max() > 1):
        raise FormatError(f"{what}: codes outside {{-1, 0, 1}}")
    return flat


# ---------------------------------------------------------------------------------------------------- I2_S


def pack_i2s(codes: np.ndarray, scale: float) -> np.ndarray:
    """Pack ternary codes (any shape, row-major; typically [n_out, n_in]) and one scale into an I2_S blob."""
    flat = _check_codes(codes, I2S_BLOCK, "I2_S")
    c = (flat.astype(np.int16) + 1).astype(np.uint8).reshape(-1, 4, 32)
    packed = (c[:, 0] << 6) | (c[:, 1] << 4) | (c[:, 2] << 2) | c[:, 3]
    tail = np.zeros(I2S_TAIL_BYTES, dtype=np.uint8)
    tail[:4] = np.frombuffer(np.float32(scale).astype("<f4").tobytes(), dtype=np.uint8)
    return np.concatenate([packed.reshape(-1), tail])


def unpack_i2s(buf: np.ndarray, n_elements: int) -> tuple[np.ndarray, np.float32]:
    """Inverse of `pack_i2s`: (int8 codes, flat, length n_elements; float32 scale). Code 3 decodes to 0."""
    raw = np.asarray(buf, dtype=np.uint8).reshape(-1)
    if n_elements <= 0 or n_elements % I2S_BLOCK:
        raise FormatError(f"I2_S: {n_elements} elements is not a positive multiple of {I2S_BLOCK}")
    need = n_elements // 4 + I2S_TAIL_BYTES
    if raw.size < need:
        raise FormatError(
            f"I2_S: blob of {raw.size} bytes is shorter than the {need} bytes {n_elements} elements need"
        )
    packed = raw[: n_elements // 4].reshape(-1, 1, 32)
    shifts = np.array([6, 4, 2, 0], dtype=np.uint8).reshape(1, 4, 1)
    c = (packed >> shifts) & 3
    lut = np.array([-1, 0, 1, 0], dtype=np.int8)
    codes = lut[c].reshape(-1)
    scale = raw[n_elements // 4 : n_elements // 4 + 4].view("<f4")[0].astype(np.float32)
    return codes, np.float32(scale)


def i2s_scale(buf: np.ndarray, n_elements: int) -> np.float32:
    """The per-tensor float32 scale stored after the packed codes, without unpacking anything."""
    raw = np.asarray(buf, dtype=np.uint8).reshape(-1)
    off = n_elements // 4
    if raw.size < off + 4:
        raise FormatError("I2_S: blob too short to hold its scale")
    return np.float32(raw[off : off + 4].view("<f4")[0])


# ---------------------------------------------------------------------------------------------------- TQ2_0


def _block_scales(d: np.ndarray | float, n_blocks: int, what: str) -> np.ndarray:
    d_arr = np.asarray(d, dtype=np.float32).reshape(-1)
    if d_arr.size == 1:
        d_arr = np.repeat(d_arr, n_blocks)
    if d_arr.size != n_blocks:
        raise FormatError(f"{what}: {d_arr.size} scales for {n_blocks} blocks")
    return d_arr.astype(np.float16).view(np.uint8).reshape(n_blocks, 2)


def ternary_block_scales(codes: np.ndarray, scale: float) -> np.ndarray:
    """Per-256-block scales that make TQ packing of `codes * scale` match `gguf.quants.quantize`.

    gguf's reference quantizer sets d = block absmax, which is `scale` for a block holding any nonzero code and 0
    for an all-zero block.
    """
    flat = np.asarray(codes).reshape(-1, QK_K)
    return np.where(np.any(flat != 0, axis=1), np.float32(scale), np.float32(0.0)).astype(np.float32)


def pack_tq2_0(codes: np.ndarray, d: np.ndarray | float) -> np.ndarray:
    """Pack codes with per-block scales `d` (one per 256 elements, or a single value) as TQ2_0 bytes."""
    flat = _check_codes(codes, QK_K, "TQ2_0")
    nb = flat.size // QK_K
    c = (flat.astype(np.int16) + 1).astype(np.uint8).reshape(nb, 2, 4, 32)
    qs = c[:, :, 0] | (c[:, :, 1] << 2) | (c[:, :, 2] << 4) | (c[:, :, 3] << 6)
    return np.concatenate([qs.reshape(nb, 64), _block_scales(d, nb, "TQ2_0")], axis=1).reshape(-1)


def unpack_tq2_0(buf: np.ndarray, n_elements: int) -> tuple[np.ndarray, np.ndarray]:
    """TQ2_0 bytes → (int8 codes, float32 per-block scales)."""
    blocks = _blocks(buf, n_elements, TQ2_BLOCK_BYTES, "TQ2_0")
    nb = blocks.shape[0]
    qs = blocks[:, :64].reshape(nb, 2, 1, 32)
    shifts = np.array([0, 2, 4, 6], dtype=np.uint8).reshape(1, 1, 4, 1)
    codes = (((qs >> shifts) & 3).astype(np.int8) - 1).reshape(-1)
    d = blocks[:, 64:66].copy().view(np.float16).reshape(-1).astype(np.float32)
    return codes, d


# ---------------------------------------------------------------------------------------------------- TQ1_0


def _base3_bytes(trits: np.ndarray, pow3: np.ndarray) -> np.ndarray:
    """trits [..., k, m] (values 0..2, first trit most significant) → ceil(v * 256 / 243) per column m."""
    v = np.tensordot(
        pow3, trits.astype(np.uint16), axes=([0], [-2])
    )  # [..., m] with the trit axis contracted
    return ((v.astype(np.uint16) * 256 + 242) // 243).astype(np.uint8)


def pack_tq1_0(codes: np.ndarray, d: np.ndarray | float) -> np.ndarray:
    """Pack codes with per-block scales `d` as TQ1_0 bytes (qs[48], qh[4], fp16 d per 256 elements)."""
    flat = _check_codes(codes, QK_K, "TQ1_0")
    nb = flat.size // QK_K
    t = (flat.astype(np.int16) + 1).astype(np.uint8).reshape(nb, QK_K)
    qs0 = _base3_bytes(t[:, :160].reshape(nb, 5, 32), _POW3_5)  # [nb, 32]
    qs1 = _base3_bytes(t[:, 160:240].reshape(nb, 5, 16), _POW3_5)  # [nb, 16]
    qh = _base3_bytes(t[:, 240:].reshape(nb, 4, 4), _POW3_4)  # [nb, 4]
    return np.concatenate([qs0, qs1, qh, _block_scales(d, nb, "TQ1_0")], axis=1).reshape(-1)


def _trits(q: np.ndarray, n: int) -> np.ndarray:
    """Decode n trits per byte: trit k = ((uint8)(q * 3^k) * 3) >> 8, giving [..., n, m]."""
    pow3 = np.array([1, 3, 9, 27, 81][:n], dtype=np.uint16).reshape(n, 1)
    qq = (q[..., None, :].astype(np.uint16) * pow3) & 0xFF
    return ((qq * 3) >> 8).astype(np.int8)


def unpack_tq1_0(buf: np.ndarray, n_elements: int) -> tuple[np.ndarray, np.ndarray]:
    """TQ1_0 bytes → (int8 codes, float32 per-block scales)."""
    blocks = _blocks(buf, n_elements, TQ1_BLOCK_BYTES, "TQ1_0")
    nb = blocks.shape[0]
    t0 = _trits(blocks[:, :32], 5).reshape(nb, 160)
    t1 = _trits(blocks[:, 32:48], 5).reshape(nb, 80)
    th = _trits(blocks[:, 48:52], 4).reshape(nb, 16)
    codes = (np.concatenate([t0, t1, th], axis=1) - 1).astype(np.int8).reshape(-1)
    d = blocks[:, 52:54].copy().view(np.float16).reshape(-1).astype(np.float32)
    return codes, d


def _blocks(buf: np.ndarray, n_elements: int, block_bytes: int, what: str) -> np.ndarray:
    raw = np.asarray(buf, dtype=np.uint8).reshape(-1)
    if n_elements <= 0 or n_elements % QK_K:
        raise FormatError(f"{what}: {n_elements} elements is not a positive multiple of {QK_K}")
    need = n_elements // QK_K * block_bytes
    if raw.size < need:
        raise FormatError(f"{what}: blob of {raw.size} bytes is shorter than the {need} bytes needed")
    return raw[:need].reshape(-1, block_bytes)


def pack_ternary(fmt: str, codes: np.ndarray, scale: float) -> np.ndarray:
    """Pack ternary codes with one per-tensor scale in `fmt` ("i2_s", "tq2_0" or "tq1_0")."""
    if fmt == "i2_s":
        return pack_i2s(codes, scale)
    if fmt == "tq2_0":
        return pack_tq2_0(codes, ternary_block_scales(codes, scale))
    if fmt == "tq1_0":
        return pack_tq1_0(codes, ternary_block_scales(codes, scale))
    raise FormatError(f"not a ternary format: {fmt!r} (expected i2_s, tq2_0 or tq1_0)")


def unpack_ternary(fmt: str, buf: np.ndarray, n_elements: int) -> tuple[np.ndarray, np.ndarray]:
    """Unpack any ternary format to (codes, scales): one scale for I2_S, one per 256-block for TQ."""
    if fmt == "i2_s":
        codes, s = unpack_i2s(buf, n_elements)
        return codes, np.array([s], dtype=np.float32)
    if fmt == "tq2_0":
        return unpack_tq2_0(buf, n_elements)
    if fmt == "tq1_0":
        return unpack_tq1_0(buf, n_elements)
    raise FormatError(f"not a ternary format: {fmt!r} (expected i2_s, tq2_0 or tq1_0)")
