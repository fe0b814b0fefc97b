"""The GPU weight layout (`t2p128`) and the CUDA backend's behaviour without a GPU: pure numpy, runs everywhere."""

from __future__ import annotations

import numpy as np
import pytest

from bitnet.errors import FormatError, ReferenceUnavailable
from bitnet.formats.ternary import pack_i2s, pack_tq1_0, pack_tq2_0, unpack_ternary
from bitnet.kernels.gpu.layout import (
    concat_rows,
    pack_codes,
    pack_weight,
    reference_matmul_int,
    unpack_codes,
)
from bitnet.kernels.weights import QuantWeight


def _codes(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    return rng.integers(-1, 2, size=(n, k), dtype=np.int8)


@pytest.mark.parametrize("fmt", ["i2_s", "tq2_0", "tq1_0"])
def test_repack_preserves_every_weight_and_scale(fmt):
    rng = np.random.default_rng(0)
    n, k = 24, 512
    codes = _codes(rng, n, k)
    if fmt == "i2_s":
        blob = pack_i2s(codes, 0.037)
    else:
        d = rng.uniform(0.01, 0.2, size=n * k // 256).astype(np.float16).astype(np.float32)
        blob = (pack_tq2_0 if fmt == "tq2_0" else pack_tq1_0)(codes, d)
    w = QuantWeight(fmt, n, k, blob, scale=0.037 if fmt == "i2_s" else None, out_scale=1.5, name="w")
    p = pack_weight(w)
    assert p.codes.shape == (n, k // 4) and p.codes.dtype == np.uint8  # still 2 bits a weight
    np.testing.assert_array_equal(unpack_codes(p.codes, k), codes)
    _, scales = unpack_ternary(fmt, blob, n * k)
    if fmt == "i2_s":
        assert p.block_scale is None
        np.testing.assert_array_equal(p.row_scale, np.full(n, scales[0], np.float32))
    else:
        np.testing.assert_array_equal(p.block_scale, scales.reshape(n, k // 256))
        np.testing.assert_array_equal(p.row_scale, np.ones(n, np.float32))
    np.testing.assert_array_equal(p.out_scale, np.full(n, 1.5, np.float32))


def test_layout_bit_positions():
    """Byte 32g+m, bits 2j..2j+1 hold element 128g + 32j + m (the contract the kernels index by)."""
    codes = np.zeros((1, 256), np.int8)
    codes[0, 128 + 32 * 2 + 5] = 1  # g=1, j=2, m=5 → byte 37, bits 4..5 = code 2
    p = pack_codes(codes)
    assert p[0, 37] == (0b01010101 & ~(3 << 4)) | (2 << 4)
    assert p[0, 36] == 0b01010101  # all other fields are code 1 (value 0)


def test_concat_rows_and_integer_reference():
    rng = np.random.default_rng(1)
    a, b = _codes(rng, 8, 256), _codes(rng, 4, 256)
    pa = pack_weight(QuantWeight("i2_s", 8, 256, pack_i2s(a, 0.5), scale=0.5, name="a"))
    pb = pack_weight(QuantWeight("i2_s", 4, 256, pack_i2s(b, 0.25), scale=0.25, name="b"))
    both = concat_rows([pa, pb], "ab")
    assert both.n_out == 12 and both.out_scale is None
    np.testing.assert_array_equal(both.row_scale, [0.5] * 8 + [0.25] * 4)
    q = rng.integers(-128, 128, size=(3, 256), dtype=np.int8)
    np.testing.assert_array_equal(reference_matmul_int(both, q), q.astype(np.int64) @ np.vstack([a, b]).T)
    pt = pack_weight(QuantWeight("tq2_0", 4, 256, pack_tq2_0(b, 0.25), name="t"))
    with pytest.raises(FormatError):
        concat_rows([pa, pt], "mixed")


def test_bad_shapes_and_formats_are_format_errors():
    with pytest.raises(FormatError):
        pack_weight(QuantWeight("i2_s", 2, 96, np.zeros(96, np.uint8), scale=1.0, name="w"))
    with pytest.raises(FormatError):
        pack_weight(QuantWeight("tq2_0", 2, 256, np.zeros(10, np.uint8), name="w"))
    with pytest.raises(FormatError):
        pack_weight(QuantWeight("q8_0", 2, 256, np.zeros(10, np.uint8), name="w"))


def test_cuda_backend_without_gpu_fails_loudly(fixture_model):
    """No silent CPU fallback: without CUDA (or Triton) `backend="cuda"` raises ReferenceUnavailable (exit 19)."""
    from bitnet.kernels.gpu.ops import cuda_available
    from bitnet.model import load_model

    if cuda_available():
        pytest.skip("a CUDA device is present")
    path = fixture_model(size="tiny", fmt="i2_s", arch="bitnet-b1.58")
    with pytest.raises(ReferenceUnavailable):
        load_model(path, backend="cuda")
