"""Ternary packing: golden byte vectors, exact round trips, byte-identity with gguf.quants, Microsoft's I2_S file."""

from __future__ import annotations

import numpy as np
import pytest
from gguf import quants
from gguf.constants import GGMLQuantizationType
from hypothesis import given, settings
from hypothesis import strategies as st

from _paths import GOLDEN_DIR
from bitnet.errors import FormatError
from bitnet.formats import ternary
from bitnet.formats.gguf_reader import dequantize, open_gguf

GOLDEN = GOLDEN_DIR

# ------------------------------------------------------------------------------------------ golden vectors


def test_i2s_golden_bytes_hand_checked():
    codes = np.zeros(128, dtype=np.int8)  # code 1 everywhere -> 0b01010101
    codes[0] = 1  # byte 0, bits 7:6 = 0b10
    codes[32] = -1  # byte 0, bits 5:4 = 0b00
    codes[127] = 1  # byte 31, bits 1:0 = 0b10
    blob = ternary.pack_i2s(codes, 1.0)
    assert blob.size == 128 // 4 + 32
    assert blob[0] == 0b10_00_01_01
    assert blob[1:31].tolist() == [0x55] * 30
    assert blob[31] == 0b01_01_01_10
    assert bytes(blob[32:36]) == b"\x00\x00\x80\x3f"  # float32 1.0, little-endian
    assert blob[36:].tolist() == [0] * 28
    back, scale = ternary.unpack_i2s(blob, 128)
    assert np.array_equal(back, codes) and scale == np.float32(1.0)


def test_i2s_code3_decodes_to_zero_like_bitnet_cpp():
    blob = np.zeros(128 // 4 + 32, dtype=np.uint8)
    blob[:32] = 0xFF
    codes, _ = ternary.unpack_i2s(blob, 128)
    assert not codes.any()


def test_tq2_0_golden_bytes_hand_checked():
    codes = np.zeros(256, dtype=np.int8)
    codes[0] = 1  # byte 0, bits 1:0 = 0b10
    codes[32] = -1  # byte 0, bits 3:2 = 0b00
    codes[128] = 1  # second 32-byte half: byte 32, bits 1:0
    blob = ternary.pack_tq2_0(codes, 1.0)
    assert blob.size == 66
    assert blob[0] == 0b01_01_00_10
    assert blob[32] == 0b01_01_01_10
    assert blob[1] == 0x55
    assert bytes(blob[64:66]) == b"\x00\x3c"  # fp16 1.0 last


def test_tq1_0_golden_bytes_hand_checked():
    codes = np.zeros(256, dtype=np.int8)  # every trit is 1
    codes[0] = 1  # first trit of byte 0 (most significant): v = 2*81 + 27 + 9 + 3 + 1 = 202
    blob = ternary.pack_tq1_0(codes, 1.0)
    assert blob.size == 54
    assert blob[0] == (202 * 256 + 242) // 243 == 213
    assert blob[1] == (121 * 256 + 242) // 243 == 128  # 11111 in base 3
    assert blob[48] == (120 * 256 + 242) // 243 == 127  # qh: 4 trits shifted up by one place
    assert bytes(blob[52:54]) == b"\x00\x3c"


# ------------------------------------------------------------------------------------------ properties


@st.composite
def codes_strategy(draw):
    """Ternary code vectors of 1..6 TQ blocks: random, constant, or sparse (hypothesis picks the shape)."""
    n = 256 * draw(st.integers(1, 6))
    kind = draw(st.sampled_from(["random", "constant", "sparse"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if kind == "constant":
        return np.full(n, draw(st.integers(-1, 1)), dtype=np.int8)
    codes = rng.integers(-1, 2, size=n, dtype=np.int8)
    if kind == "sparse":
        codes[rng.random(n) < 0.95] = 0
    return codes


scale_strategy = st.floats(2.0**-12, 16.0, allow_nan=False, width=32)


@settings(max_examples=100, deadline=None)
@given(codes=codes_strategy(), scale=scale_strategy)
def test_i2s_round_trip(codes, scale):
    c = np.array(codes, dtype=np.int8)
    back, s = ternary.unpack_i2s(ternary.pack_i2s(c, scale), c.size)
    assert np.array_equal(back, c)
    assert s == np.float32(scale)


@settings(max_examples=100, deadline=None)
@given(codes=codes_strategy(), scale=scale_strategy, fmt=st.sampled_from(["tq2_0", "tq1_0"]))
def test_tq_round_trip_and_byte_identity_with_gguf(codes, scale, fmt):
    c = np.array(codes, dtype=np.int8)
    qtype = GGMLQuantizationType.TQ2_0 if fmt == "tq2_0" else GGMLQuantizationType.TQ1_0
    ours = ternary.pack_ternary(fmt, c, scale)
    ref = quants.quantize((c.astype(np.float32) * np.float32(scale)).reshape(1, -1), qtype).reshape(-1)
    assert np.array_equal(ours, ref)
    back, d = ternary.unpack_ternary(fmt, ours, c.size)
    assert np.array_equal(back, c)
    blocks = c.reshape(-1, 256)
    expected_d = np.where(blocks.any(axis=1), np.float16(scale), np.float16(0)).astype(np.float32)
    assert np.array_equal(d, expected_d)


@settings(max_examples=40, deadline=None)
@given(
    rows=st.integers(1, 4),
    cols_blocks=st.integers(1, 3),
    seed=st.integers(0, 2**31),
)
def test_tq_dequantize_matches_gguf(rows, cols_blocks, seed):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((rows, 256 * cols_blocks)).astype(np.float32)
    for qtype, fmt in [(GGMLQuantizationType.TQ2_0, "tq2_0"), (GGMLQuantizationType.TQ1_0, "tq1_0")]:
        raw = quants.quantize(w, qtype)
        codes, d = ternary.unpack_ternary(fmt, raw, w.size)
        ours = (codes.reshape(-1, 256).astype(np.float32) * d[:, None]).reshape(w.shape)
        assert np.array_equal(ours, quants.dequantize(raw, qtype))


def test_absmean_ternarize_rounds_half_to_even_and_clamps():
    # mean|w| = 1 -> codes = clamp(round(w), -1, 1); 0.5 and -0.5 round to 0 (half to even), 1.5 -> 2 -> 1
    w = np.array([0.5, -0.5, 1.5, -2.5, 0.49, 1.0, 0.0, 0.01], dtype=np.float32)
    w = w / np.float32(np.abs(w).mean())
    codes, scale = ternary.absmean_ternarize(w)
    assert scale == pytest.approx(np.abs(w).mean(), rel=1e-6)
    assert codes.dtype == np.int8
    assert codes.tolist() == np.clip(np.rint(w / scale), -1, 1).astype(int).tolist()
    assert set(codes.tolist()) <= {-1, 0, 1}


def test_absmean_ternarize_zero_tensor_uses_eps():
    codes, scale = ternary.absmean_ternarize(np.zeros((4, 4), dtype=np.float32))
    assert scale == np.float32(1e-5) and not codes.any()


def test_bad_inputs_raise_format_error():
    with pytest.raises(FormatError):
        ternary.pack_i2s(np.zeros(100, dtype=np.int8), 1.0)  # not a multiple of 128
    with pytest.raises(FormatError):
        ternary.pack_tq2_0(np.full(256, 2, dtype=np.int8), 1.0)  # code out of range
    with pytest.raises(FormatError):
        ternary.unpack_i2s(np.zeros(10, dtype=np.uint8), 128)  # blob too short
    with pytest.raises(FormatError):
        ternary.pack_ternary("q4_0", np.zeros(256, dtype=np.int8), 1.0)


# ------------------------------------------------------------------------------------------ Microsoft's file


@pytest.mark.skipif(not (GOLDEN / "tiny-i2_s.gguf").exists(), reason="golden bitnet.cpp files not present")
def test_bitnet_cpp_i2s_file_matches_its_f32_source():
    """tiny-i2_s.gguf was made by Microsoft's llama-quantize from tiny-f32.gguf: unpacking must give exactly the
    ternary codes and the scale (max|W|, quantize_i2_s) of the F32 tensors."""
    f32 = open_gguf(GOLDEN / "tiny-f32.gguf")
    i2s = open_gguf(GOLDEN / "tiny-i2_s.gguf")
    checked = 0
    for name, info in i2s.tensors.items():
        if info.type_name != "i2_s":
            continue
        w = dequantize(f32.tensors[name])
        codes, scale = ternary.unpack_i2s(info.data, info.n_elements)
        assert info.n_bytes == info.n_elements // 4 + 32
        assert scale == np.float32(np.abs(w.astype(np.float64)).max())
        expected = np.where(np.abs(w) < 1e-6, 0, np.sign(w)).astype(np.int8).reshape(-1)
        assert np.array_equal(codes, expected), name
        assert np.array_equal(codes.reshape(w.shape).astype(np.float32) * scale, w), name
        # our packer reproduces Microsoft's codes and scale bytes exactly (the 28 unused tail bytes are whatever
        # llama-quantize's buffer held, so they are not compared)
        used = info.n_elements // 4 + 4
        assert np.array_equal(ternary.pack_i2s(codes, scale)[:used], np.asarray(info.data)[:used]), name
        checked += 1
    assert checked == 14
