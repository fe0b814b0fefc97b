"""Native C kernels against the numpy reference kernels: exact integers, bit-identical float epilogues, every ISA."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from bitnet.formats.ternary import pack_i2s, pack_tq1_0, pack_tq2_0
from bitnet.kernels import quant, reference
from bitnet.kernels.registry import REGISTRY
from bitnet.kernels.weights import QuantWeight

native = pytest.importorskip("bitnet.kernels.native")
if not native.available():
    pytest.skip(f"native kernels not built: {native.unavailable_reason()}", allow_module_level=True)

ISAS = native.ISAS[: native.ISAS.index(native.best_isa()) + 1]


@pytest.fixture(params=ISAS)
def isa(request):
    used = native.set_isa(request.param)
    assert used == request.param
    yield used
    native.set_isa(None)


def make_weight(fmt: str, codes: np.ndarray, rng: np.random.Generator) -> QuantWeight:
    """A packed weight from ternary codes [n_out, n_in]; TQ formats get random per-block scales."""
    n_out, n_in = codes.shape
    if fmt == "i2_s":
        scale = np.float32(rng.uniform(0.01, 2.0))
        return QuantWeight("i2_s", n_out, n_in, pack_i2s(codes, scale), scale=float(scale), name="w")
    d = rng.uniform(0.001, 1.0, size=codes.size // 256).astype(np.float32)
    packed = pack_tq2_0(codes, d) if fmt == "tq2_0" else pack_tq1_0(codes, d)
    return QuantWeight(fmt, n_out, n_in, packed, name="w")


def reference_codes(w: QuantWeight) -> np.ndarray:
    """Raw codes 0/1/2 [n_out, n_in] decoded by the reference decoders."""
    if w.fmt == "i2_s":
        return reference.decode_i2s_codes(w).astype(np.int64)
    vals, _ = reference.decode_tq2_0(w) if w.fmt == "tq2_0" else reference.decode_tq1_0(w)
    return vals.astype(np.int64) + 1


FORMATS = ("i2_s", "tq2_0", "tq1_0")


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("k", [128, 256, 2560, 6912])
def test_integer_block_sums_exact(fmt, k, isa):
    if fmt != "i2_s" and k % 256:
        pytest.skip("TQ rows are whole 256-blocks")
    rng = np.random.default_rng(k + len(fmt))
    n_out, t = 7, 6  # not multiples of the 4x4 tile: exercises the row and token remainders
    w = make_weight(fmt, rng.integers(-1, 2, size=(n_out, k)).astype(np.int8), rng)
    q = rng.integers(-128, 128, size=(t, k)).astype(np.int8)
    got = native.ternary_block_sums(w, q)
    codes = reference_codes(w)
    nbt = -(-k // 256)
    want = np.zeros((t, n_out, nbt), dtype=np.int64)
    for b in range(nbt):
        sl = slice(256 * b, min(k, 256 * b + 256))
        want[:, :, b] = q[:, sl].astype(np.int64) @ codes[:, sl].T
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("fmt", FORMATS)
def test_extreme_values_exact(fmt, isa):
    """All-(+1) weights against maximum-magnitude activations: the largest possible per-lane sums."""
    rng = np.random.default_rng(1)
    k = 6912
    w = make_weight(fmt, np.ones((5, k), dtype=np.int8), rng)
    q = np.stack([np.full(k, 127, np.int8), np.full(k, -128, np.int8), np.where(np.arange(k) % 2, 127, -128)])
    got = native.ternary_block_sums(w, q.astype(np.int8)).sum(axis=2)
    np.testing.assert_array_equal(got, np.broadcast_to((2 * q.astype(np.int64)).sum(axis=1)[:, None], (3, 5)))


def _activations(rng: np.random.Generator, t: int, k: int, dtype) -> np.ndarray:
    x = rng.standard_normal((t, k)) * rng.uniform(0.1, 10.0, size=(t, 1))
    x[0, : k // 3] = 0.0  # a zero stretch (an all-zero block256 block)
    if t > 1:
        x[1, 5] = 1e30  # maximum-magnitude outlier
        x[1, 6] = -1e30
    return x.astype(dtype)


@pytest.mark.parametrize("profile", quant.PROFILES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_quantizers_bit_identical(profile, dtype, isa):
    rng = np.random.default_rng(7)
    x = _activations(rng, 5, 2560, dtype)
    # exact halfway cases: per-token scale is 127/4 for max 4.0, so 2/127*... hits .5 after scaling
    x[2, :8] = np.array([4.0, -4.0, 2.0 / 127 * 4 * 0.5, 1.5 * 4 / 127, 2.5 * 4 / 127, -0.5 * 4 / 127, 0, 0])
    got = native.quantize(x, profile)
    want = quant.quantize(x, profile)
    np.testing.assert_array_equal(got.q, want.q)
    np.testing.assert_array_equal(got.scales, want.scales)
    np.testing.assert_array_equal(got.sums, want.sums)
    assert got.block == want.block and got.profile == want.profile


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("profile", quant.PROFILES)
@pytest.mark.parametrize("k,t", [(256, 1), (2560, 1), (2560, 5), (6912, 8)])
def test_matmul_bit_identical_to_reference(fmt, profile, k, t, isa):
    rng = np.random.default_rng(k * 10 + t)
    n_out = 13
    w = make_weight(fmt, rng.integers(-1, 2, size=(n_out, k)).astype(np.int8), rng)
    qa = quant.quantize(_activations(rng, t, k, np.float64), profile)
    want = reference.ternary_matmul(qa, w)
    REGISTRY.reset()
    got = native.ternary_matmul_q(qa, w)
    np.testing.assert_array_equal(got, want)
    short = {"i2_s": "i2s", "tq2_0": "tq2", "tq1_0": "tq1"}[fmt]
    assert REGISTRY.counts() == {f"{short}_{'gemv' if t == 1 else 'gemm'}_{isa}": 1}


@pytest.mark.parametrize("fmt", FORMATS)
def test_fused_quantize_matmul_matches_two_step(fmt, isa):
    rng = np.random.default_rng(3)
    k, t = 2560, 6
    w = make_weight(fmt, rng.integers(-1, 2, size=(9, k)).astype(np.int8), rng)
    x = _activations(rng, t, k, np.float32)
    for profile in quant.PROFILES:
        want = reference.ternary_matmul(quant.quantize(x, profile), w)
        np.testing.assert_array_equal(native.ternary_matmul(x, w, profile), want)


def test_thread_count_does_not_change_results():
    rng = np.random.default_rng(5)
    w = make_weight("i2_s", rng.integers(-1, 2, size=(640, 2560)).astype(np.int8), rng)
    x = _activations(rng, 7, 2560, np.float32)
    outs = []
    for n in (1, 2, 3):
        native.set_threads(n)
        outs.append(native.ternary_matmul(x, w, "per-token"))
    native.set_threads(None)
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_array_equal(outs[0], outs[2])


def test_bad_shapes_raise():
    from bitnet.errors import InvalidInputError

    rng = np.random.default_rng(0)
    w = make_weight("tq2_0", rng.integers(-1, 2, size=(4, 256)).astype(np.int8), rng)
    with pytest.raises(InvalidInputError, match="features"):
        native.ternary_matmul(np.zeros((1, 512), np.float32), w, "per-token")
    short = QuantWeight("tq2_0", 4, 256, w.data[:-1], name="cut")
    with pytest.raises(InvalidInputError, match="contiguous uint8"):
        native.ternary_matmul(np.zeros((1, 256), np.float32), short, "per-token")
    with pytest.raises(InvalidInputError, match="contiguous uint8"):
        native.ternary_matmul_q(quant.quantize(np.ones((1, 256)), "per-token"), short)
    odd = QuantWeight("tq2_0", 4, 256, w.data.reshape(4, 66)[:, :33], name="strided")  # not contiguous
    with pytest.raises(InvalidInputError):
        native.ternary_matmul_q(quant.quantize(np.ones((1, 256)), "per-token"), odd)


@pytest.mark.parametrize("t", [1, 3, 9])
def test_f16_lm_head_close_to_reference(t, isa):
    rng = np.random.default_rng(t)
    w16 = (rng.standard_normal((1000, 2560)) * 0.05).astype(np.float16)
    x = rng.standard_normal((t, 2560)).astype(np.float32)
    wq = QuantWeight("f16", 1000, 2560, w16, name="token_embd.weight")
    want = reference.f16_gemv_lmhead_ref(x, wq)
    REGISTRY.reset()
    got = native.lm_head(x, wq)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    impl = {"avx512vnni": "avx512"}.get(isa, isa)
    assert REGISTRY.counts() == {f"f16_{'gemv' if t == 1 else 'gemm'}_lmhead_{impl}": 1}


def test_float_ops_close_to_reference(isa):
    rng = np.random.default_rng(11)
    x = rng.standard_normal((3, 2560)).astype(np.float32)
    wn = rng.uniform(0.5, 1.5, 2560).astype(np.float32)
    np.testing.assert_allclose(native.rmsnorm(x, wn, 1e-5), reference.rmsnorm_ref(x, wn, 1e-5), rtol=1e-6)
    qh = rng.standard_normal((3, 20, 128)).astype(np.float32)
    pos = np.array([0, 7, 4000])
    np.testing.assert_allclose(
        native.rope_neox(qh, pos, 500000.0), reference.rope_neox_ref(qh, pos, 500000.0), rtol=1e-5, atol=1e-5
    )
    k = rng.standard_normal((12, 5, 128)).astype(np.float32)
    v = rng.standard_normal((12, 5, 128)).astype(np.float32)
    for t, start in ((1, 11), (3, 9)):
        q = rng.standard_normal((t, 20, 128)).astype(np.float32)
        np.testing.assert_allclose(
            native.attention(q, k, v, start), reference.attention_ref(q, k, v, start), rtol=1e-5, atol=1e-5
        )
    # float64 activations (the default numerics) run natively in double
    xd, qd = x.astype(np.float64), rng.standard_normal((2, 20, 128))
    np.testing.assert_allclose(native.rmsnorm(xd, wn, 1e-5), reference.rmsnorm_ref(xd, wn, 1e-5), rtol=1e-12)
    pos2 = np.array([3, 4000])
    np.testing.assert_allclose(
        native.rope_neox(qd, pos2, 500000.0),
        reference.rope_neox_ref(qd, pos2, 500000.0),
        rtol=1e-9,
        atol=1e-12,
    )
    np.testing.assert_allclose(
        native.attention(qd, k, v, 10), reference.attention_ref(qd, k, v, 10), rtol=1e-10
    )
    # f16 rounding of P is served by the reference kernel, and the receipt says so
    REGISTRY.reset()
    native.attention(q, k, v, start, round_p_f16=True)
    assert REGISTRY.counts() == {"attention_ref": 1}


def test_dispatch_selects_native_kernels():
    from bitnet.kernels.dispatch import select_kernel

    assert select_kernel("qgemv", "cpu", "i2_s").id == f"i2s_gemv_{native.isa()}"
    assert select_kernel("qgemm", "cpu", "tq1_0").id == f"tq1_gemm_{native.isa()}"
    assert select_kernel("quantize_per_token", "cpu").id == f"quantize_per_token_{native.isa()}"
    assert select_kernel("rmsnorm", "cpu").id == "rmsnorm_scalar"
    assert select_kernel("attention", "cpu").id == f"attention_{native.isa()}"


def test_no_native_env_falls_back_with_warning():
    code = (
        "import warnings, sys\n"
        "with warnings.catch_warnings(record=True) as ws:\n"
        "    warnings.simplefilter('always')\n"
        "    import bitnet.kernels.native as n\n"
        "from bitnet.kernels.dispatch import select_kernel\n"
        "assert not n.available()\n"
        "assert any('BITNET_NO_NATIVE' in str(w.message) for w in ws), [str(w.message) for w in ws]\n"
        "assert select_kernel('qgemv', 'cpu', 'i2_s').id == 'i2s_gemv_ref'\n"
        "print('ok')\n"
    )
    env = dict(os.environ, BITNET_NO_NATIVE="1")
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "ok"


def test_engine_thread_count_reaches_the_native_kernels(fixture_model) -> None:
    from bitnet.kernels import native
    from bitnet.model import load_model

    if not native.available():
        pytest.skip(f"native kernels not built: {native.unavailable_reason()}")
    before = native.get_threads()
    try:
        engine = load_model(fixture_model(size="tiny", fmt="tq2_0", arch="bitnet"), threads=1)
        assert native.get_threads() == 1
        engine.close()
    finally:
        native.set_threads(before)
