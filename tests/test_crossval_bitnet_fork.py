"""The microsoft/BitNet fork as the reference (API generation fork-2024). CI builds only upstream llama.cpp, so these
run where `xtask fetch-cpp --flavor bitnet --source DIR` (or `--repo`) has been built, and skip elsewhere.

One C++ reference per process (two ggml builds can bind to each other), so the checks run in a child process.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from _paths import GOLDEN_DIR
from bitnet.crossval.cpp import find_reference
from bitnet.errors import ReferenceUnavailable

pytestmark = pytest.mark.cpp
GOLDEN = GOLDEN_DIR

CHILD = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    import numpy as np
    from bitnet.crossval.cpp import find_reference
    from bitnet.crossval.ffi import CppSession
    from bitnet.crossval.layout import check_layouts
    from bitnet.crossval.metrics import compare_logits
    from bitnet.crossval.parity import ParityOptions, run_parity
    from bitnet.crossval.trace_diff import diff_traces

    model, golden, tmp = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    fork = find_reference("bitnet")
    out = {"generation": fork.api_generation, "layouts_ok": check_layouts(fork)["ok"]}
    if golden.is_dir():
        tokens = np.load(golden / "tokens.npy").tolist()
        with CppSession(golden / "tiny-i2_s.gguf", manifest=fork, n_ctx=64) as s:
            out["kv_dtype"] = s.describe()["kv_dtype"]
            r = compare_logits(s.eval_all_logits(tokens), np.load(golden / "logits-tiny-i2_s-batch16.npy"))
        out["golden_nmse"], out["golden_top1"] = r["nmse"], r["top1_agreement"]
    res = run_parity(model, "Hello world", max_tokens=16, opts=ParityOptions(flavor="bitnet"), manifest=fork,
                     trace_dirs=(tmp / "ours", tmp / "cpp"))
    td = diff_traces(tmp / "ours", tmp / "cpp")
    out.update(ok=res["ok"], verdict=res["verdict"], numerics=res["engine"]["numerics"],
               ffn_act=res["engine"]["ffn_act"], nmse=res["logits"]["nmse"], greedy=res["greedy"]["match"],
               traces_ok=td["ok"], one_sided=td["n_only_in_ours"] + td["n_only_in_ref"])
    print(json.dumps(out))
""")


@pytest.fixture(scope="module")
def fork():
    try:
        return find_reference("bitnet")
    except ReferenceUnavailable as exc:
        pytest.skip(f"BitNet fork reference not built: {exc}")


def test_fork_reproduces_golden_logits_and_agrees_with_the_engine(fork, fixture_model, tmp_path):
    model = fixture_model("tiny", "i2_s", "bitnet-b1.58")
    proc = subprocess.run([sys.executable, "-c", CHILD, str(model), str(GOLDEN), str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["generation"] == "fork-2024" and out["layouts_ok"]
    if GOLDEN.is_dir():
        assert out["kv_dtype"] == "f16"
        assert out["golden_nmse"] < 1e-10 and out["golden_top1"] == 1.0
    assert out["numerics"] == "bitnet-cpp" and out["ffn_act"] == "relu2"
    assert out["ok"], out["verdict"]
    assert out["nmse"] < 1e-10 and out["greedy"]
    assert out["traces_ok"] and out["one_sided"] == 0
