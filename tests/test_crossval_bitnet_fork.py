"""The microsoft/BitNet fork as the reference (API generation fork-2024). CI builds only upstream llama.cpp, so these
run where `xtask fetch-cpp --flavor bitnet --source DIR` (or `--repo`) has been built, and skip elsewhere."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bitnet.crossval.cpp import find_reference
from bitnet.crossval.ffi import CppSession
from bitnet.crossval.layout import check_layouts
from bitnet.crossval.metrics import compare_logits
from bitnet.crossval.parity import ParityOptions, run_parity
from bitnet.crossval.trace_diff import diff_traces
from bitnet.errors import ReferenceUnavailable

pytestmark = pytest.mark.cpp
GOLDEN = Path("/work/shared/golden/bitnet-cpp-tiny")


@pytest.fixture(scope="module")
def fork():
    try:
        return find_reference("bitnet")
    except ReferenceUnavailable as exc:
        pytest.skip(f"BitNet fork reference not built: {exc}")


def test_fork_layouts_and_golden_logits(fork):
    assert fork.api_generation == "fork-2024"
    assert check_layouts(fork)["ok"]
    if not GOLDEN.is_dir():
        pytest.skip("golden bitnet.cpp logits not present")
    tokens = np.load(GOLDEN / "tokens.npy").tolist()
    with CppSession(GOLDEN / "tiny-i2_s.gguf", manifest=fork, n_ctx=64) as s:
        assert s.describe()["kv_dtype"] == "f16"
        ours = s.eval_all_logits(tokens)
    r = compare_logits(ours, np.load(GOLDEN / "logits-tiny-i2_s-batch16.npy"))
    assert r["nmse"] < 1e-10 and r["top1_agreement"] == 1.0


def test_engine_agrees_with_the_fork_and_traces_pair(fork, fixture_model, tmp_path):
    model = fixture_model("tiny", "i2_s", "bitnet-b1.58")
    opts = ParityOptions(flavor="bitnet")
    res = run_parity(model, "Hello world", max_tokens=16, opts=opts, manifest=fork,
                     trace_dirs=(tmp_path / "ours", tmp_path / "cpp"))
    assert res["engine"]["numerics"] == "bitnet-cpp" and res["engine"]["ffn_act"] == "relu2"
    assert res["ok"], res["verdict"]
    assert res["logits"]["nmse"] < 1e-10 and res["greedy"]["match"]
    td = diff_traces(tmp_path / "ours", tmp_path / "cpp")
    assert td["ok"] and td["n_only_in_ours"] == 0 and td["n_only_in_ref"] == 0
