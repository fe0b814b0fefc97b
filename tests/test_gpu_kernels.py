"""GPU kernels against the numpy references: integer parts bit-identical, epilogues to float32 rounding.

Runs on a CUDA device; without one it runs through Triton's CPU interpreter when `TRITON_INTERPRET=1` is set
(slow, small shapes), and otherwise skips.
"""

from __future__ import annotations

import numpy as np
import pytest

from bitnet.formats.ternary import pack_i2s, pack_tq1_0, pack_tq2_0
from bitnet.kernels import quant
from bitnet.kernels.gpu.layout import pack_weight, reference_matmul_int
from bitnet.kernels.registry import REGISTRY
from bitnet.kernels.weights import QuantWeight

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.gpu


@pytest.fixture
def dev(gpu_device: str) -> str:
    return gpu_device


def _ternary(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    return rng.integers(-1, 2, size=(n, k), dtype=np.int8)


def _weight(fmt: str, codes: np.ndarray, rng: np.random.Generator) -> QuantWeight:
    n, k = codes.shape
    if fmt == "i2_s":
        scale = np.float32(rng.uniform(0.01, 0.1))
        return QuantWeight("i2_s", n, k, pack_i2s(codes, scale), scale=float(scale), name="w")
    d = rng.uniform(0.01, 0.1, size=n * k // 256).astype(np.float16).astype(np.float32)
    packer = pack_tq2_0 if fmt == "tq2_0" else pack_tq1_0
    return QuantWeight(fmt, n, k, packer(codes, d), name="w")


def _to(dev: str, a: np.ndarray):
    return torch.from_numpy(np.ascontiguousarray(a)).to(dev)


def _quant_ref(x: np.ndarray, profile: str) -> quant.QuantizedActivations:
    return quant.quantize_per_token(x) if profile == "per-token" else quant.quantize_block256(x)


def _act(dev: str, qa: quant.QuantizedActivations):
    from bitnet.kernels.gpu.ops import QuantAct

    return QuantAct(qa.profile, _to(dev, qa.q), _to(dev, qa.scales.astype(np.float32)), _to(dev, qa.sums))


@pytest.mark.parametrize("profile", ["per-token", "block256"])
@pytest.mark.parametrize("with_norm", [False, True])
def test_norm_quantize_matches_numpy(dev, profile, with_norm):
    from bitnet.kernels.gpu.ops import norm_quantize

    rng = np.random.default_rng(1)
    x = (rng.standard_normal((3, 512)) * rng.uniform(0.1, 10, size=(3, 1))).astype(np.float32)
    x[1, 7] = 40.0  # an outlier, and a negative block max elsewhere
    x[2, 300] = -55.0
    x[0, 256:512] = 0.0  # an all-zero block (block256: d = 0, q = 0)
    w = rng.uniform(0.5, 1.5, size=512).astype(np.float32)
    ref_in = x
    if with_norm:
        ss = (x.astype(np.float64) ** 2).sum(axis=1)
        mean = (ss / 512).astype(np.float32)
        rs = (np.float32(1.0) / np.sqrt(mean + np.float32(1e-5))).astype(np.float32)
        ref_in = ((x * rs[:, None]).astype(np.float32) * w).astype(np.float32)
    qa = norm_quantize(_to(dev, x), profile, _to(dev, w) if with_norm else None, 1e-5)
    ref = _quant_ref(ref_in, profile)
    np.testing.assert_array_equal(qa.q.cpu().numpy(), ref.q)
    np.testing.assert_array_equal(qa.scales.cpu().numpy(), ref.scales.astype(np.float32))
    np.testing.assert_array_equal(qa.sums.cpu().numpy(), ref.sums)
    assert REGISTRY.counts()[f"cuda_quantize_{profile.replace('-', '_')}_triton"] == 1


@pytest.mark.parametrize("glu", ["relu2", "silu"])
def test_glu_norm_float_output(dev, glu):
    from bitnet.kernels.gpu.ops import norm_quantize

    rng = np.random.default_rng(2)
    gu = rng.standard_normal((2, 2 * 384)).astype(np.float32)
    w = rng.uniform(0.5, 1.5, size=384).astype(np.float32)
    y = norm_quantize(_to(dev, gu), None, _to(dev, w), 1e-6, glu=glu).cpu().numpy()
    g, u = gu[:, :384].astype(np.float64), gu[:, 384:].astype(np.float64)
    h = (np.maximum(g, 0) ** 2 if glu == "relu2" else g / (1 + np.exp(-g))) * u
    ref = h / np.sqrt((h**2).mean(axis=1, keepdims=True) + 1e-6) * w
    np.testing.assert_allclose(y, ref, rtol=2e-5, atol=1e-6)


SHAPES = [(64, 384), (40, 640), (130, 1024)]


@pytest.mark.parametrize("fmt", ["i2_s", "tq2_0", "tq1_0"])
@pytest.mark.parametrize("kind", ["gemv", "gemm"])
def test_integer_part_is_exact(dev, fmt, kind):
    from bitnet.kernels.gpu.ops import ternary_matmul, upload_ternary

    rng = np.random.default_rng(3)
    for n, k in SHAPES:
        if fmt != "i2_s" and k % 256:
            continue
        codes = _ternary(rng, n, k)
        packed = pack_weight(_weight(fmt, codes, rng))
        w = upload_ternary(packed, dev)
        m = 1 if kind == "gemv" else 37
        q = rng.integers(-128, 128, size=(m, k), dtype=np.int8)
        q[0, :] = 127  # the extreme that wraps bitnet.cpp's int16 lanes: int32 here must not
        ref = codes.astype(np.int64) @ q.T.astype(np.int64)
        np.testing.assert_array_equal(reference_matmul_int(packed, q), ref.T)
        qa = _act(dev, quant.QuantizedActivations("per-token", q, np.ones((m, 1), np.float32),
                                                  q.sum(1, dtype=np.int32)[:, None], k))  # fmt: skip
        variants = [None] if kind == "gemm" or dev == "cpu" else [False, True]
        for dp4a in variants:
            got = ternary_matmul(qa, w, raw=True, force=kind, use_dp4a=dp4a).cpu().numpy()
            np.testing.assert_array_equal(
                got, ref.T.astype(np.int32), err_msg=f"{fmt} {kind} {n}x{k} dp4a={dp4a}"
            )
    assert REGISTRY.counts()[f"cuda_{fmt.split('_')[0].replace('i2', 'i2s')}_{kind}_triton"] >= 1


def _epilogue_ref(packed, qa: quant.QuantizedActivations) -> np.ndarray:
    """The float epilogues of the CPU reference, written out: per-token I2_S and block256 TQ (float32 sequential)."""
    vals = __import__("bitnet.kernels.gpu.layout", fromlist=["unpack_codes"]).unpack_codes(
        packed.codes, packed.n_in
    )
    m, k = qa.q.shape
    if packed.block_scale is None and qa.profile == "per-token":
        sumi = (qa.q.astype(np.int64) @ vals.T.astype(np.int64)).astype(np.float32)
        return (sumi / qa.scales.astype(np.float32)) * packed.row_scale[None, :]
    nb = k // 256
    out = np.zeros((m, packed.n_out), np.float32)
    for b in range(nb):
        sl = slice(256 * b, 256 * (b + 1))
        sumi = (qa.q[:, sl].astype(np.int64) @ vals[:, sl].T.astype(np.int64)).astype(np.float32)
        da = qa.scales[:, b : b + 1].astype(np.float32) if qa.profile == "block256" else np.float32(1)
        dw = packed.block_scale[:, b][None, :] if packed.block_scale is not None else np.float32(1)
        out = (out + sumi * (da * dw).astype(np.float32)).astype(np.float32)
    if qa.profile == "per-token":
        out = out / qa.scales.astype(np.float32)
    return (out * packed.row_scale[None, :]).astype(np.float32)


@pytest.mark.parametrize(("fmt", "profile"), [("i2_s", "per-token"), ("tq2_0", "block256"), ("tq2_0", "per-token"),
                                              ("i2_s", "block256")])  # fmt: skip
@pytest.mark.parametrize("m", [1, 3, 20])
def test_epilogue_matches_reference(dev, fmt, profile, m):
    from bitnet.kernels.gpu.ops import ternary_matmul, upload_ternary

    rng = np.random.default_rng(4)
    n, k = 72, 512
    packed = pack_weight(_weight(fmt, _ternary(rng, n, k), rng))
    w = upload_ternary(packed, dev)
    x = rng.standard_normal((m, k)).astype(np.float32)
    qa = _quant_ref(x, profile)
    res = rng.standard_normal((m, n)).astype(np.float32)
    got = ternary_matmul(_act(dev, qa), w, residual=_to(dev, res)).cpu().numpy()
    ref = _epilogue_ref(packed, qa)
    np.testing.assert_allclose(got, res + ref, rtol=1e-6, atol=1e-6)
    got_nores = ternary_matmul(_act(dev, qa), w).cpu().numpy()
    np.testing.assert_allclose(got_nores, ref, rtol=1e-6, atol=1e-7)


def test_float_gemv_and_bad_input(dev):
    from bitnet.errors import InvalidInputError
    from bitnet.kernels.gpu.ops import QuantAct, float_gemv, ternary_matmul, upload_ternary

    rng = np.random.default_rng(5)
    wf = rng.standard_normal((300, 256)).astype(np.float16)
    x = rng.standard_normal((2, 256)).astype(np.float32)
    got = float_gemv(_to(dev, x), _to(dev, wf), tag="f16").cpu().numpy()
    np.testing.assert_allclose(got, x.astype(np.float64) @ wf.astype(np.float64).T, rtol=1e-5, atol=1e-4)
    packed = pack_weight(_weight("i2_s", _ternary(rng, 8, 256), rng))
    w = upload_ternary(packed, dev)
    bad = QuantAct("per-token", _to(dev, np.zeros((1, 128), np.int8)), _to(dev, np.ones((1, 1), np.float32)),
                   _to(dev, np.zeros((1, 1), np.int32)))  # fmt: skip
    with pytest.raises(InvalidInputError):
        ternary_matmul(bad, w)


@pytest.mark.parametrize("n", [1, 5, 40, 77])
def test_decode_attention_matches_reference(dev, n):
    from bitnet.kernels.gpu.ops import decode_attention
    from bitnet.kernels.reference import attention_ref

    rng = np.random.default_rng(6 + n)
    h, hkv, d, n_ctx = 4, 2, 64, 96
    q = rng.standard_normal((h, d))
    kc = rng.standard_normal((n_ctx, hkv, d)).astype(np.float32)
    vc = rng.standard_normal((n_ctx, hkv, d)).astype(np.float32)
    kc[n:] = np.nan  # positions past the query must never be read into the result
    ref = attention_ref(q[None], kc[:n], vc[:n], n - 1)[0]
    pos = _to(dev, np.array([n - 1], dtype=np.int32))
    for split in (False, True):
        out = torch.full((h, d), float("nan"), dtype=torch.float64, device=dev)
        decode_attention(_to(dev, q), _to(dev, kc), _to(dev, vc), pos, out, hkv, split=split)
        np.testing.assert_allclose(out.cpu().numpy(), ref, rtol=1e-12, atol=1e-13, err_msg=f"split={split}")
