"""The fused native blocks (bn_forward.c) against the op-by-op forward they replace: same logits bit for bit, same
KV cache, the kernels they ran counted, and a clear fallback whenever they cannot run a model."""

from __future__ import annotations

import numpy as np
import pytest

from bitnet.errors import InvalidInputError
from bitnet.kernels import native
from bitnet.kernels.registry import REGISTRY

pytestmark = pytest.mark.skipif(not native.available(), reason=f"native kernels not built: {native.unavailable_reason()}")

CASES = [  # (format, arch, .scale tensors): per-token relu² with sub-norms; block256 SiLU with scales; TQ1_0
    ("i2_s", "bitnet-b1.58", False),
    ("tq2_0", "bitnet", True),
    ("tq1_0", "bitnet-b1.58", False),
    ("tq2_0", "bitnet-b1.58", False),
]


def _engine(fixture_model, fmt, arch, scales, **kw):
    from bitnet.model import load_model

    return load_model(fixture_model(size="tiny", fmt=fmt, arch=arch, scale_tensors=scales), **kw)


def _run(engine, tokens):
    """Batch logits of all positions, then a prefill + decode session: every path a user reaches."""
    batch = engine.eval_logits_all_positions(tokens)
    engine.reset()
    steps = [engine.prefill(tokens[:9])] + [engine.decode_step(int(t)) for t in tokens[9:]]
    k, v = engine.cache.storage
    n = engine.cache.length
    return batch, np.stack(steps), k[:, :n].copy(), v[:, :n].copy()


@pytest.mark.parametrize(("fmt", "arch", "scales"), CASES)
def test_fused_blocks_equal_the_op_by_op_forward_bit_for_bit(fixture_model, fmt, arch, scales):
    engine = _engine(fixture_model, fmt, arch, scales)
    assert engine.model.blocks is not None, engine.model.blocks_reason
    assert engine.describe()["blocks"] == "fused"
    tokens = np.random.default_rng(3).integers(0, engine.config.vocab_size, 17)
    fused = _run(engine, tokens)
    counts = REGISTRY.counts()
    assert counts[f"blocks_fused_{native.isa()}"] == engine.config.n_layers * 10  # 1 batch + 1 prefill + 8 steps
    engine.model.blocks = None
    REGISTRY.reset()
    plain = _run(engine, tokens)
    assert not any(k.startswith("blocks_fused") for k in REGISTRY.counts())
    for a, b in zip(fused, plain, strict=True):
        np.testing.assert_array_equal(a, b)


def test_fused_blocks_record_the_kernels_they_ran(fixture_model):
    engine = _engine(fixture_model, "i2_s", "bitnet-b1.58", False)
    n = engine.config.n_layers
    engine.prefill([5])
    isa = native.isa()
    counts = REGISTRY.counts()
    assert counts[f"i2s_gemv_{isa}"] == 7 * n
    assert counts[f"blocks_fused_{isa}"] == n
    assert counts[f"attention_{isa}"] == n
    assert counts["rope_neox_scalar"] == n
    assert counts["rmsnorm_scalar"] == 4 * n + 1  # two norms and two sub-norms per block, plus the output norm
    assert sum(v for k, v in counts.items() if k.startswith("quantize_per_token_")) == 4 * n
    REGISTRY.reset()
    engine.prefill([5, 6, 7])
    assert REGISTRY.counts()[f"i2s_gemm_{isa}"] == 7 * n


def test_thread_count_does_not_change_fused_results(fixture_model):
    tokens = np.arange(40, 60)
    before = native.get_threads()
    try:
        outs = [_engine(fixture_model, "tq2_0", "bitnet", True, threads=t).eval_logits_all_positions(tokens)
                for t in (1, 2, 3)]
    finally:
        native.set_threads(before)
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_array_equal(outs[0], outs[2])


@pytest.mark.parametrize(
    ("kwargs", "env", "reason"),
    [
        ({"numerics": "bitnet-cpp"}, {}, "numerics 'bitnet-cpp'"),
        ({"kv_dtype": "f16"}, {}, "f16 KV cache"),
        ({}, {"BITNET_FUSED_BLOCKS": "0"}, "BITNET_FUSED_BLOCKS=0"),
        ({}, {"BITNET_KERNELS": "ref"}, "BITNET_KERNELS=ref"),
    ],
)
def test_models_the_fused_blocks_cannot_run_fall_back_with_the_reason(fixture_model, monkeypatch, kwargs, env, reason):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    engine = _engine(fixture_model, "i2_s", "bitnet-b1.58", False, **kwargs)
    assert engine.model.blocks is None
    assert reason in engine.describe()["blocks"]
    engine.prefill([1, 2, 3])
    assert not any(k.startswith("blocks_fused") for k in REGISTRY.counts())


def test_tracing_runs_op_by_op(fixture_model, tmp_path, monkeypatch):
    monkeypatch.setenv("BITNET_TRACE_DIR", str(tmp_path / "trace"))
    engine = _engine(fixture_model, "i2_s", "bitnet-b1.58", False)
    engine.prefill([1, 2, 3])
    engine.close()
    assert not any(k.startswith("blocks_fused") for k in REGISTRY.counts())
    assert any((tmp_path / "trace").iterdir())


def test_shape_mismatch_is_an_error_not_a_wild_read(fixture_model):
    from dataclasses import replace

    from bitnet.kernels.native.blocks import FusedBlocks

    engine = _engine(fixture_model, "i2_s", "bitnet-b1.58", False)
    bad = FusedBlocks(replace(engine.config, ffn_size=engine.config.ffn_size * 2), engine.weights, engine.numerics)
    cache = engine.model.new_cache()
    cache.reserve(1)
    with pytest.raises(InvalidInputError, match="unsupported shape"):
        bad(np.zeros((1, engine.config.hidden_size)), 0, cache)
    cache = engine.model.new_cache()
    with pytest.raises(InvalidInputError, match="unsupported shape"):  # nothing reserved: no room to write K/V
        engine.model.blocks(np.zeros((1, engine.config.hidden_size)), cache.storage[0].shape[1], cache)
