"""A malformed-GGUF corpus, generated from valid files: every case must give a clean FormatError, fast.

No crash, no hang, no giant allocation: counts and sizes are checked against the bytes left in the file before
anything is allocated, so the "huge count" cases return immediately.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bitnet.errors import FormatError
from bitnet.formats.gguf_reader import open_gguf
from bitnet.formats.gguf_writer import float_tensor, ternary_tensor, write_gguf


class Layout:
    """A small valid GGUF built field by field, remembering where each field starts."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.at: dict[str, int] = {}

    def put(self, field: str, data: bytes) -> None:
        self.at[field] = len(self.buf)
        self.buf += data

    def string(self, field: str, s: bytes) -> None:
        self.put(field + ".len", struct.pack("<Q", len(s)))
        self.put(field, s)


def build_valid(kv1_key: bytes = b"bitnet.block_count") -> Layout:
    lay = Layout()
    lay.put("magic", b"GGUF")
    lay.put("version", struct.pack("<I", 3))
    lay.put("n_tensors", struct.pack("<Q", 2))
    lay.put("n_kv", struct.pack("<Q", 3))
    lay.string("kv0.key", b"general.architecture")
    lay.put("kv0.type", struct.pack("<I", 8))
    lay.string("kv0.value", b"bitnet")
    lay.string("kv1.key", kv1_key)
    lay.put("kv1.type", struct.pack("<I", 4))
    lay.put("kv1.value", struct.pack("<I", 1))
    lay.string("kv2.key", b"tokenizer.ggml.tokens")
    lay.put("kv2.type", struct.pack("<I", 9))
    lay.put("kv2.etype", struct.pack("<I", 8))
    lay.put("kv2.count", struct.pack("<Q", 2))
    lay.string("kv2.s0", b"a")
    lay.string("kv2.s1", b"b")
    # tensor 0: f32 [8]; tensor 1: i2_s [128, 2] (n/4 + 32 = 96 bytes)
    lay.string("t0.name", b"norm.weight")
    lay.put("t0.n_dims", struct.pack("<I", 1))
    lay.put("t0.dim0", struct.pack("<Q", 8))
    lay.put("t0.type", struct.pack("<I", 0))
    lay.put("t0.offset", struct.pack("<Q", 0))
    lay.string("t1.name", b"blk.0.attn_q.weight")
    lay.put("t1.n_dims", struct.pack("<I", 2))
    lay.put("t1.dim0", struct.pack("<Q", 128))
    lay.put("t1.dim1", struct.pack("<Q", 2))
    lay.put("t1.type", struct.pack("<I", 36))
    lay.put("t1.offset", struct.pack("<Q", 32))
    lay.put("pad", b"\0" * (-len(lay.buf) % 32))
    lay.put("data", np.arange(8, dtype="<f4").tobytes() + b"\0" * 0)
    lay.put("data1", b"\x55" * 64 + struct.pack("<f", 0.5) + b"\0" * 28)
    return lay


def patched(lay: Layout, field: str, data: bytes) -> bytes:
    b = bytearray(lay.buf)
    b[lay.at[field] : lay.at[field] + len(data)] = data
    return bytes(b)


def expect_format_error(tmp_path: Path, blob: bytes, match: str | None = None) -> FormatError:
    p = tmp_path / "bad.gguf"
    p.write_bytes(blob)
    with pytest.raises(FormatError) as info:
        open_gguf(p)
    if match is not None:
        assert match in str(info.value), str(info.value)
    return info.value


def test_the_base_file_is_valid(tmp_path):
    p = tmp_path / "ok.gguf"
    p.write_bytes(build_valid().buf)
    f = open_gguf(p)
    assert f.metadata["tokenizer.ggml.tokens"] == ["a", "b"]
    assert f.tensors["blk.0.attn_q.weight"].n_bytes == 96
    assert f.tensors["norm.weight"].data.view("<f4").tolist() == list(range(8))


def test_truncation_at_every_byte_of_the_header_and_data(tmp_path):
    lay = build_valid()
    for cut in range(len(lay.buf)):
        err = expect_format_error(tmp_path, bytes(lay.buf[:cut]))
        assert str(err)  # names the problem


def test_truncation_at_every_header_field_of_a_real_fixture(tmp_path, fixture_model):
    """A full tiny model: cut at the start, middle and end of many fields, then in the tensor data."""
    blob = Path(fixture_model("tiny", "i2_s", "bitnet-b1.58")).read_bytes()
    f = open_gguf(fixture_model("tiny", "i2_s", "bitnet-b1.58"))
    cuts = sorted({*range(0, 64), *range(64, f.data_offset, 97), f.data_offset - 1, f.data_offset + 1,
                   len(blob) - 1, len(blob) - 33})  # fmt: skip
    for cut in cuts:
        expect_format_error(tmp_path, blob[:cut])


CASES = [
    ("magic", b"GGML", "bad magic"),
    ("magic", b"\0\0\0\0", "bad magic"),
    ("version", struct.pack("<I", 1), "unsupported GGUF version 1"),
    ("version", struct.pack("<I", 4), "unsupported GGUF version 4"),
    ("version", struct.pack(">I", 3), "unsupported GGUF version"),  # big-endian file
    ("n_tensors", struct.pack("<Q", 2**63), "tensor count"),
    ("n_tensors", struct.pack("<Q", 10**6), "tensor count"),
    ("n_kv", struct.pack("<Q", 2**64 - 1), "metadata count"),
    ("n_kv", struct.pack("<Q", 4), None),  # one more KV than present: runs into the tensor infos
    ("kv0.key.len", struct.pack("<Q", 2**62), "truncated"),
    ("kv0.key", b"\xff\xfe", "UTF-8"),
    ("kv0.type", struct.pack("<I", 99), "unknown GGUF value type 99"),
    ("kv0.value.len", struct.pack("<Q", 2**40), "truncated"),
    ("kv2.etype", struct.pack("<I", 77), "unknown GGUF array element type 77"),
    ("kv2.count", struct.pack("<Q", 2**61), "truncated"),
    ("kv2.s1.len", struct.pack("<Q", 2**33), "truncated"),
    ("t0.n_dims", struct.pack("<I", 0), "n_dims 0"),
    ("t0.n_dims", struct.pack("<I", 7), "n_dims 7"),
    ("t0.dim0", struct.pack("<Q", 0), "impossible"),
    ("t0.dim0", struct.pack("<Q", 2**63), "impossible"),
    ("t1.dim0", struct.pack("<Q", 2**32), "impossible"),
    ("t0.type", struct.pack("<I", 99), "unknown ggml type id 99"),
    ("t0.type", struct.pack("<I", 31), "unknown ggml type id 31"),  # removed upstream, not I2_S
    ("t1.type", struct.pack("<I", 35), "not a multiple of the tq2_0 block"),  # ne0=128 is not a TQ row
    ("t0.offset", struct.pack("<Q", 4), "not aligned"),
    ("t0.offset", struct.pack("<Q", 2**60), "past the end"),
    ("t1.offset", struct.pack("<Q", 64), "past the end"),
]


@pytest.mark.parametrize(("field", "data", "match"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_corrupt_header_fields(tmp_path, field, data, match):
    expect_format_error(tmp_path, patched(build_valid(), field, data), match)


def test_duplicate_metadata_key(tmp_path):
    expect_format_error(tmp_path, bytes(build_valid(b"general.architecture").buf), "duplicate metadata key")


def test_duplicate_tensor_name(tmp_path):
    lay = build_valid()
    blob = bytearray(lay.buf)
    # rename tensor 1 to tensor 0's name (same length prefix rewritten)
    name0 = b"norm.weight"
    start = lay.at["t1.name.len"]
    new = struct.pack("<Q", len(name0)) + name0
    old_len = 8 + len(b"blk.0.attn_q.weight")
    blob[start : start + old_len] = new
    expect_format_error(tmp_path, bytes(blob), "duplicate tensor name")


def test_bad_alignment_key(tmp_path):
    specs = [float_tensor("a.weight", np.ones(8, np.float32))]
    from bitnet.formats.gguf_writer import Typed, ValueType

    p = write_gguf(tmp_path / "al.gguf", "bitnet", {"general.alignment": Typed(3, ValueType.UINT32)}, specs)
    with pytest.raises(FormatError, match="power of two"):
        open_gguf(p)


def test_nested_arrays_are_bounded(tmp_path):
    lay = build_valid()
    # turn kv2 into an array of arrays of arrays: etype ARRAY, count 1, then etype ARRAY again...
    b = bytearray(lay.buf[: lay.at["kv2.etype"]])
    b += struct.pack("<IQ", 9, 1) + struct.pack("<IQ", 9, 1) + struct.pack("<IQ", 9, 1) + struct.pack("<IQ", 4, 0)
    b += lay.buf[lay.at["t0.name.len"] :]
    expect_format_error(tmp_path, bytes(b), "nested deeper")


def test_empty_and_tiny_files(tmp_path):
    expect_format_error(tmp_path, b"", "too small")
    expect_format_error(tmp_path, b"GGUF\x03\0\0\0", "too small")


def test_i2s_tensor_must_be_whole_in_file(tmp_path, fixture_model):
    """Cut the last I2_S tensor's scale off: the reader must notice before anyone reads it."""
    src = Path(fixture_model("tiny", "i2_s", "bitnet-b1.58"))
    f = open_gguf(src)
    last = max(f.tensors.values(), key=lambda t: t.offset)
    blob = src.read_bytes()[: last.offset + last.n_bytes - 1]
    expect_format_error(tmp_path, blob, "past the end")


def test_writer_rejects_bad_ternary(tmp_path):
    with pytest.raises(FormatError):
        ternary_tensor("w", np.zeros(256, np.int8), 1.0, "i2_s")  # 1-D


def test_gguf_v2_is_read(tmp_path):
    p = tmp_path / "v2.gguf"
    p.write_bytes(patched(build_valid(), "version", struct.pack("<I", 2)))
    assert open_gguf(p).version == 2


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_header_corruption_gives_format_error_or_a_valid_file(tmp_path, data):
    """Flip random bytes anywhere in the header: the reader either accepts the file or raises FormatError."""
    lay = build_valid()
    blob = bytearray(lay.buf)
    header_end = lay.at["pad"]
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, header_end - 1))
        blob[pos] = data.draw(st.integers(0, 255))
    p = tmp_path / "fuzz.gguf"
    p.write_bytes(bytes(blob))
    try:
        f = open_gguf(p)
    except FormatError as exc:
        assert str(exc)
        return
    for info in f.tensors.values():  # whatever was accepted is fully inside the file
        assert info.offset + info.n_bytes <= f.file_size
        assert info.data.size == info.n_bytes
    f.close()


def test_other_ggml_types_dequantize_through_gguf_py(tmp_path):
    from gguf import quants
    from gguf.constants import GGMLQuantizationType

    from bitnet.formats.gguf_reader import dequantize
    from bitnet.formats.gguf_writer import TensorSpec

    w = np.random.default_rng(0).standard_normal((4, 256)).astype(np.float32)
    specs = []
    raws = {}
    for qt in (GGMLQuantizationType.Q8_0, GGMLQuantizationType.Q4_0, GGMLQuantizationType.Q5_0):
        raws[qt] = quants.quantize(w, qt)
    # gguf-py cannot quantize K-quants; random bytes still exercise the dequantizer path
    rng = np.random.default_rng(1)
    raws[GGMLQuantizationType.Q6_K] = rng.integers(0, 256, size=(4, 210), dtype=np.uint8)
    specs = [TensorSpec(qt.name.lower(), int(qt), (256, 4), raw) for qt, raw in raws.items()]
    p = write_gguf(tmp_path / "q.gguf", "bitnet", {}, specs)
    f = open_gguf(p)
    for qt, raw in raws.items():
        got = dequantize(f.tensors[qt.name.lower()])
        assert got.shape == (4, 256)
        assert np.array_equal(got, quants.dequantize(raw, qt).reshape(4, 256), equal_nan=True), qt.name
