"""GPU engine against the CPU engine on generated fixtures: logits (NMSE <= 1e-6) and identical greedy streams.

Runs on a CUDA device; without one, under Triton's CPU interpreter when TRITON_INTERPRET=1; otherwise skips.
"""

from __future__ import annotations

import numpy as np
import pytest

from bitnet.kernels.registry import REGISTRY
from bitnet.model import GenerationConfig, load_model

pytest.importorskip("torch")
pytestmark = pytest.mark.gpu

CASES = [
    ("i2_s", "bitnet-b1.58", False),  # per-token profile, relu², I2_S epilogue
    ("tq2_0", "bitnet", True),  # block256 profile, SiLU, TQ2_0 per-block scales, `.scale` tensors
    ("tq1_0", "bitnet-b1.58", False),  # TQ1_0 re-packed at load, per-token profile on TQ weights
]
TOKENS = [1, 17, 250, 3, 99, 511, 42, 7, 300, 12, 5, 64]


def nmse(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return float(((a - b) ** 2).sum() / (b**2).sum())


@pytest.fixture(params=CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def engines(request, gpu_device, fixture_model):
    fmt, arch, scales = request.param
    path = fixture_model(size="tiny", fmt=fmt, arch=arch, seed=3, scale_tensors=scales)
    cpu = load_model(path)
    gpu = load_model(path, backend="cuda")
    return cpu, gpu


def test_all_position_logits_match_cpu(engines):
    cpu, gpu = engines
    ref = cpu.eval_logits_all_positions(TOKENS)
    REGISTRY.reset()
    got = gpu.eval_logits_all_positions(TOKENS)
    assert got.shape == ref.shape and got.dtype == np.float32
    assert nmse(got, ref) <= 1e-6
    assert (got.argmax(axis=1) == ref.argmax(axis=1)).all()
    ids = REGISTRY.counts()
    assert any(k.startswith("cuda_") and k.endswith("_gemm_triton") for k in ids), ids
    assert not any(k.endswith("_ref") for k in ids), ids  # nothing fell back to the numpy kernels


def test_prefill_then_decode_matches_cpu(engines):
    cpu, gpu = engines
    ref = [cpu.prefill(TOKENS[:5])] + [cpu.decode_step(t) for t in TOKENS[5:9]]
    got = [gpu.prefill(TOKENS[:5])] + [gpu.decode_step(t) for t in TOKENS[5:9]]
    for i, (g, r) in enumerate(zip(got, ref, strict=True)):
        assert nmse(g, r) <= 1e-6, f"step {i}"
    assert gpu.n_past == cpu.n_past == 9
    assert (
        REGISTRY.counts().get("cuda_attention_triton", 0) >= 4
    )  # single-token decode ran on the device kernel


def test_greedy_stream_identical(engines):
    cpu, gpu = engines
    cfg = GenerationConfig(max_tokens=12, stop_on_eos=False)
    assert list(gpu.generate(TOKENS[:4], cfg)) == list(cpu.generate(TOKENS[:4], cfg))
    sampled = GenerationConfig(max_tokens=8, temperature=0.8, top_k=40, top_p=0.95, seed=11, stop_on_eos=False,
                               repeat_penalty=1.1)  # fmt: skip
    assert list(gpu.generate(TOKENS[:4], sampled)) == list(cpu.generate(TOKENS[:4], sampled))
    assert gpu.describe()["backend"] == "cuda"


def test_bad_requests_fail_loudly(engines):
    from bitnet.errors import InferenceError, UsageError

    _, gpu = engines
    with pytest.raises(InferenceError):
        gpu.decode_step(10**6)
    with pytest.raises(InferenceError):
        gpu.prefill([])
    gpu.reset()
    with pytest.raises(InferenceError):
        gpu.prefill(list(range(3)) * 200)  # past the 512-token context
    with pytest.raises(UsageError):
        load_model(gpu.source, backend="cuda", numerics="bitnet-cpp")
