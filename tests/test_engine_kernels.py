"""Reference kernels and activation quantizers: exact integer parts, the documented rounding, registry records."""

from __future__ import annotations

import numpy as np
import pytest
from gguf import GGMLQuantizationType as GT
from gguf.quants import dequantize as gguf_dequantize
from gguf.quants import quantize as gguf_quantize

from bitnet.errors import InvalidInputError, UsageError
from bitnet.kernels import reference as R
from bitnet.kernels.quant import quantize, quantize_block256, quantize_per_token
from bitnet.kernels.registry import REGISTRY
from bitnet.kernels.weights import QuantWeight


def _ternary(rng: np.random.Generator, n_out: int, n_in: int) -> np.ndarray:
    return rng.integers(-1, 2, size=(n_out, n_in)).astype(np.int8)


def _pack_i2s(codes: np.ndarray, scale: float) -> np.ndarray:
    """I2_S packer written here from the layout description (not the formats module)."""
    flat = (codes.reshape(-1).astype(np.uint8) + 1).reshape(-1, 4, 32)  # block, group g (shift 6-2g), byte
    packed = (flat[:, 0] << 6) | (flat[:, 1] << 4) | (flat[:, 2] << 2) | flat[:, 3]
    tail = np.zeros(32, dtype=np.uint8)
    tail[:4] = np.frombuffer(np.float32(scale).tobytes(), dtype=np.uint8)
    return np.concatenate([packed.reshape(-1), tail])


def test_per_token_rounds_half_to_even_and_keeps_sums() -> None:
    x = np.array([[127.0, 0.5, 1.5, 2.5, -0.5, -1.5, 0.0, -127.0]], dtype=np.float32)
    qa = quantize_per_token(x)
    assert qa.scales[0, 0] == np.float32(1.0)
    assert qa.q[0].tolist() == [127, 0, 2, 2, 0, -2, 0, -127]
    assert qa.sums[0, 0] == sum(qa.q[0].tolist())
    assert REGISTRY.counts()["quantize_per_token_ref"] == 1


def test_per_token_floor_on_tiny_rows() -> None:
    qa = quantize_per_token(np.zeros((2, 16), dtype=np.float32))
    assert (qa.q == 0).all() and np.allclose(qa.scales, np.float32(127 / 1e-5))


def test_block256_uses_signed_max_and_zero_blocks() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 512)).astype(np.float32)
    x[0, 256:] = 0.0
    x[1, 7] = -10.0  # largest magnitude is negative → iscale positive
    qa = quantize_block256(x)
    assert qa.scales.shape == (2, 2) and qa.scales[0, 1] == 0 and (qa.q[0, 256:] == 0).all()
    assert qa.q[1, 7] == -127 and qa.q.max() <= 127 and qa.q.min() >= -127
    iscale = np.float32(-127.0) / np.float32(-10.0)
    assert qa.scales[1, 0] == np.float32(1.0) / iscale
    np.testing.assert_allclose(qa.dequantize(), x, atol=float(np.abs(x).max()) / 127)


def test_unknown_profile_is_a_usage_error() -> None:
    with pytest.raises(UsageError):
        quantize(np.ones((1, 256)), "per-channel")
    with pytest.raises(InvalidInputError):
        quantize_block256(np.ones((1, 100), dtype=np.float32))


@pytest.mark.parametrize("qt", [GT.TQ2_0, GT.TQ1_0])
def test_tq_decoders_match_gguf_py(qt: GT) -> None:
    rng = np.random.default_rng(2)
    w = _ternary(rng, 6, 768).astype(np.float32) * rng.uniform(0.1, 1.0, size=(6, 1)).astype(np.float32)
    raw = gguf_quantize(w, qt)
    qw = QuantWeight(qt.name.lower(), 6, 768, raw.reshape(-1))
    vals, d = (R.decode_tq2_0 if qt == GT.TQ2_0 else R.decode_tq1_0)(qw)
    got = (vals.reshape(6, 3, 256).astype(np.float32) * d[:, :, None]).reshape(6, 768)
    np.testing.assert_array_equal(got, gguf_dequantize(raw, qt))


def test_i2s_decoder_matches_the_layout_and_the_formats_packer() -> None:
    from bitnet.formats.ternary import pack_i2s

    rng = np.random.default_rng(3)
    codes = _ternary(rng, 8, 256)
    ours = _pack_i2s(codes, 0.25)
    np.testing.assert_array_equal(ours, pack_i2s(codes, 0.25))
    qw = QuantWeight("i2_s", 8, 256, ours, scale=0.25)
    np.testing.assert_array_equal(R.decode_i2s_codes(qw).astype(np.int8) - 1, codes)


@pytest.mark.parametrize("fmt", ["i2_s", "tq2_0", "tq1_0"])
@pytest.mark.parametrize("profile", ["per-token", "block256"])
@pytest.mark.parametrize("n_tok", [1, 5])
def test_ternary_matmul_integer_parts_are_exact(fmt: str, profile: str, n_tok: int) -> None:
    rng = np.random.default_rng(4)
    n_out, n_in = 32, 512
    codes = _ternary(rng, n_out, n_in)
    if fmt == "i2_s":
        w = QuantWeight("i2_s", n_out, n_in, _pack_i2s(codes, 0.5), scale=0.5)
        d_w = np.full((n_out, n_in // 256), 0.5, dtype=np.float32)
    else:
        qt = GT.TQ2_0 if fmt == "tq2_0" else GT.TQ1_0
        d_w = rng.uniform(0.2, 1.0, size=(n_out, n_in // 256)).astype(np.float16).astype(np.float32)
        dense = (codes.reshape(n_out, -1, 256) * d_w[:, :, None]).reshape(n_out, n_in).astype(np.float32)
        w = QuantWeight(fmt, n_out, n_in, gguf_quantize(dense, qt).reshape(-1))
    x = rng.normal(size=(n_tok, n_in)) * 3
    qa = quantize(x, profile)
    y = R.ternary_matmul(qa, w)
    # the integer dot of every 256-block, in int64, then the documented float32 epilogue
    qb = qa.q.astype(np.int64).reshape(n_tok, -1, 256)
    sumi = np.einsum("tbk,nbk->btn", qb, codes.astype(np.int64).reshape(n_out, -1, 256))
    acc = np.zeros((n_tok, n_out), dtype=np.float32)
    for b in range(sumi.shape[0]):
        if profile == "per-token":
            acc += sumi[b].astype(np.float32) * d_w[None, :, b]
        else:
            acc += sumi[b].astype(np.float32) * (qa.scales[:, b : b + 1] * d_w[None, :, b])
    if profile == "per-token" and fmt == "i2_s":
        expect = sumi.sum(axis=0).astype(np.float32) / qa.scales[:, :1] * np.float32(0.5)
    elif profile == "per-token":
        expect = acc / qa.scales[:, :1]
    elif fmt == "i2_s":
        acc = np.zeros((n_tok, n_out), dtype=np.float32)
        for b in range(sumi.shape[0]):
            acc += sumi[b].astype(np.float32) * qa.scales[:, b : b + 1]
        expect = acc * np.float32(0.5)
    else:
        expect = acc
    np.testing.assert_array_equal(y, expect.astype(np.float32))
    # and the result approximates the float product
    ref = x @ (codes * d_w.repeat(256, axis=1)).T
    assert np.abs(y - ref).max() <= 0.05 * np.abs(ref).max()


def test_i2s_per_token_epilogue_uses_raw_codes_minus_act_sum() -> None:
    rng = np.random.default_rng(5)
    codes = _ternary(rng, 4, 128)
    w = QuantWeight("i2_s", 4, 128, _pack_i2s(codes, 1.0), scale=1.0)
    qa = quantize_per_token(rng.normal(size=(1, 128)))
    sumi_codes = (qa.q.astype(np.int64) @ (codes.astype(np.int64) + 1).T)[0]
    expect = (sumi_codes.astype(np.float32) - np.float32(qa.sums[0, 0])) / qa.scales[0, 0] * np.float32(1.0)
    np.testing.assert_array_equal(R.i2s_gemv_ref(qa, w)[0], expect)
    assert REGISTRY.counts()["i2s_gemv_ref"] == 1


def test_bad_weights_fail_loudly() -> None:
    with pytest.raises(InvalidInputError):
        R.ternary_matmul(quantize_per_token(np.ones((1, 256))), QuantWeight("i2_s", 2, 256, np.zeros(10, np.uint8),
                                                                            scale=1.0))
    with pytest.raises(InvalidInputError):
        R.ternary_matmul(quantize_per_token(np.ones((1, 128))), QuantWeight("i2_s", 2, 256, np.zeros(160, np.uint8),
                                                                            scale=1.0))


def test_rmsnorm_float32_follows_ggml_order() -> None:
    x = np.random.default_rng(6).normal(size=(3, 64)).astype(np.float32)
    w = np.linspace(0.5, 1.5, 64).astype(np.float32)
    y = R.rmsnorm_ref(x, w, 1e-5)
    mean = ((x * x).astype(np.float64).sum(axis=1) / 64).astype(np.float32)
    scale = np.float32(1.0) / np.sqrt(mean + np.float32(1e-5))
    np.testing.assert_array_equal(y, (x * scale[:, None]) * w)


def test_rope_neox_rotates_pairs_half_apart() -> None:
    x = np.random.default_rng(7).normal(size=(3, 2, 8))
    y = R.rope_neox_ref(x, np.array([0, 1, 5]), 10000.0)
    np.testing.assert_array_equal(y[0], x[0])  # position 0: identity
    ang = 5 * 10000.0 ** (-np.arange(4) * 2 / 8)
    np.testing.assert_allclose(y[2, :, :4], x[2, :, :4] * np.cos(ang) - x[2, :, 4:] * np.sin(ang), rtol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(y, axis=2), np.linalg.norm(x, axis=2), rtol=1e-12)


def test_attention_is_causal_and_groups_kv_heads() -> None:
    rng = np.random.default_rng(8)
    q = rng.normal(size=(3, 4, 8))
    k, v = rng.normal(size=(3, 2, 8)), rng.normal(size=(3, 2, 8))
    out = R.attention_ref(q, k, v, 0)
    # position 0 sees only key 0: output = v[0] of its kv head (h // 2)
    np.testing.assert_allclose(out[0], v[0][[0, 0, 1, 1]], rtol=1e-12)
    s = q[2, 3] @ k[:, 1].T / np.sqrt(8)
    p = np.exp(s - s.max())
    np.testing.assert_allclose(out[2, 3], (p / p.sum()) @ v[:, 1], rtol=1e-12)
