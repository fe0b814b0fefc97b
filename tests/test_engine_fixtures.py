"""Every fixture kind against the independent float64 reference (tests/test_engine_float64_ref.py).

Kinds: TQ2_0 / TQ1_0 arch `bitnet` (SiLU, block256 activations, with and without `.scale` tensors), I2_S arch
`bitnet-b1.58` (relu², per-token), F32 (no activation quantization). All-position logits must agree to
NMSE <= 1e-10 in the matching profile, and a 64-token greedy decode must match token for token.
"""

from __future__ import annotations

import numpy as np
import pytest

from test_engine_float64_ref import RefModel, nmse

KINDS = [
    pytest.param(("tq2_0", "bitnet", False), id="tq2_0-bitnet"),
    pytest.param(("tq1_0", "bitnet", False), id="tq1_0-bitnet"),
    pytest.param(("tq2_0", "bitnet", True), id="tq2_0-bitnet-scales"),
    pytest.param(("i2_s", "bitnet-b1.58", False), id="i2_s-b158"),
    pytest.param(("f32", "bitnet-b1.58", False), id="f32-b158"),
]
PROMPT = [5, 77, 300, 12, 9, 401, 250, 33, 2, 140, 18, 64]


@pytest.fixture(params=KINDS)
def kind(request, fixture_model):
    fmt, arch, scales = request.param
    return fmt, arch, fixture_model(size="tiny", fmt=fmt, arch=arch, seed=3, scale_tensors=scales)


def test_all_positions_and_greedy_match_the_reference(kind) -> None:
    from bitnet.model import GenerationConfig, load_model

    _fmt, arch, path = kind
    engine = load_model(path)
    expected_profile = "block256" if arch == "bitnet" else "per-token"
    assert engine.profile == expected_profile
    assert engine.describe()["ffn_act"] == ("silu" if arch == "bitnet" else "relu2")
    ref = RefModel(path)
    assert ref.profile == expected_profile
    ours = engine.eval_logits_all_positions(PROMPT)
    err = nmse(ours, ref.logits(PROMPT))
    assert err <= 1e-10, err
    tokens = list(engine.generate(PROMPT[:4], GenerationConfig(max_tokens=64, stop_on_eos=False)))
    assert tokens == ref.greedy(PROMPT[:4], 64)


def test_profile_and_activation_overrides_are_honoured(fixture_model) -> None:
    from bitnet.model import load_model

    path = fixture_model(size="tiny", fmt="tq2_0", arch="bitnet", seed=3)
    engine = load_model(path, profile="per-token", ffn_act="relu2")
    d = engine.describe()
    assert (d["profile"], d["ffn_act"]) == ("per-token", "relu2")
    ours = engine.eval_logits_all_positions(PROMPT)
    assert nmse(ours, RefModel(path, profile="per-token", ffn_act="relu2").logits(PROMPT)) <= 1e-10
    default = load_model(path).eval_logits_all_positions(PROMPT)
    assert nmse(ours, default) > 1e-6  # the overrides really change the computation


def test_fixture_tokenizer_json_is_preferred(fixture_model) -> None:
    from bitnet.model import load_model

    engine = load_model(fixture_model(size="tiny", fmt="i2_s", arch="bitnet-b1.58", seed=3))
    tok = engine.tokenizer
    assert tok.source == "tokenizer.json"
    ids = tok.encode("the quick brown fox")
    assert ids[0] == tok.bos_id and tok.decode(ids) == "the quick brown fox"
    assert np.all(np.isfinite(engine.prefill(ids)))
