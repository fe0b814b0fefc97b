"""Our engine (block256 + SiLU) against upstream llama.cpp on the `bitnet` fixtures, through the library and the
xtask commands: tokenization, all-position logits NMSE, 32-token greedy streams, a perturbed model caught by
crossval-per-token and trace-diff, the crossval report, full-crossval --offline and the sweep.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from bitnet.cli.app import run_cli
from bitnet.cli.xtask import cli
from bitnet.crossval.parity import ParityOptions, run_parity

pytestmark = pytest.mark.cpp
PROMPTS = ("Hello", "The quick brown fox jumps over the lazy dog.")


@pytest.mark.parametrize("fmt", ["tq2_0", "tq1_0"])
def test_engine_agrees_with_llama_cpp(cpp_reference, fixture_model, fmt):
    model = fixture_model("tiny", fmt, "bitnet")
    for prompt in PROMPTS:
        res = run_parity(model, prompt, max_tokens=32, opts=ParityOptions(), manifest=cpp_reference)
        assert res["tokenization"]["match"], res["tokenization"]
        lg = res["logits"]
        assert lg["nmse"] <= 1e-6, lg["nmse"]
        assert lg["first_divergent_position"] is None and lg["top1_agreement"] == 1.0
        assert res["greedy"]["match"] and len(res["greedy"]["ours"]) == 32, res["greedy"]
        assert res["engine"]["profile"] == "block256" and res["engine"]["ffn_act"] == "silu"
        assert res["ok"] and res["verdict"] == "agree"


def _perturb_sub_norm(src, dst):
    """Copy the GGUF and scale a few elements of layer 1's FFN sub-norm weight (F32) in place."""
    from bitnet.formats.gguf_reader import open_gguf

    shutil.copy(src, dst)
    info = open_gguf(src).tensors["blk.1.ffn_sub_norm.weight"]
    w = np.frombuffer(bytes(info.data), dtype=np.float32).copy()
    w[:8] *= 8.0
    with open(dst, "r+b") as fh:
        fh.seek(info.offset)
        fh.write(w.tobytes())
    return dst


def test_perturbed_model_is_caught_with_position_layer_and_stage(cpp_reference, fixture_model, tmp_path, capsys):
    original = fixture_model("tiny", "tq2_0", "bitnet")
    bad = _perturb_sub_norm(original, tmp_path / "perturbed.gguf")
    args = ["crossval-per-token", "--model", str(bad), "--cpp-model", str(original), "--prompt", "Count: 1,2,3,",
            "--max-tokens", "4", "--trace-dir", str(tmp_path / "tr"), "--format", "json"]
    assert run_cli(cli, args) == 1
    res = json.loads(capsys.readouterr().out)
    assert res["schema_version"] and res["ok"] is False
    assert res["tokenization"]["match"] and res["logits"]["nmse"] > 1e-6
    assert isinstance(res["logits"]["first_divergent_position"], int)
    assert run_cli(cli, ["trace-diff", str(tmp_path / "tr" / "ours"), str(tmp_path / "tr" / "cpp"), "--format",
                         "json"]) == 1
    td = json.loads(capsys.readouterr().out)
    fd = td["first_divergence"]
    assert (fd["seq"], fd["layer"], fd["stage"]) == (0, 1, "ffn_sub_norm")
    # the unmodified model passes the same command
    from bitnet.formats.fixtures import tokenizer_path_for

    ok_args = ["crossval-per-token", "--model", str(original), "--tokenizer", str(tokenizer_path_for(original)),
               "--prompt", "Count: 1,2,3,", "--max-tokens", "4"]
    assert run_cli(cli, ok_args) == 0
    assert "verdict: AGREE" in capsys.readouterr().out


def test_crossval_report_and_full_crossval_offline(cpp_reference, fixture_model, tmp_path, monkeypatch, capsys):
    model = fixture_model("tiny", "tq2_0", "bitnet")
    report = tmp_path / "report.json"
    assert run_cli(cli, ["crossval", "--model", str(model), "--report", str(report), "--prompt", "Hello",
                         "--max-tokens", "8"]) == 0
    rep = json.loads(report.read_text())
    for key in ("schema_version", "model", "rust_ok", "cpp_header_ok", "cpp_full_ok", "xfail", "notes", "timestamp",
                "platform", "gguf_version_detected", "n_kv", "n_tensors", "data_offset", "file_size", "checks"):
        assert key in rep, key
    assert rep["ok"] and rep["cpp_full_ok"] and rep["gguf_version_detected"] == 3
    names = [c["name"] for c in rep["checks"]]
    assert names == ["gguf_reader", "cpp_preflight", "prompt:Hello"]
    assert rep["checks"][2]["greedy_match"] and rep["checks"][2]["nmse"] <= 1e-6
    # one command, offline: generated default model + the (already built) sdist reference + the suite
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert run_cli(cli, ["full-crossval", "--offline", "--max-tokens", "8"]) == 0
    out = capsys.readouterr().out
    assert "VERDICT: PASS" in out
    assert (tmp_path / "target" / "crossval_report.json").is_file()
    assert (tmp_path / "target" / "crossval-fixtures" / "bitnet-tiny-tq2_0-bitnet.gguf").is_file()


def test_sweep_writes_scenarios_summary_and_html(cpp_reference, fixture_model, tmp_path):
    from bitnet.crossval.sweep import Scenario, run_sweep

    model = fixture_model("tiny", "tq2_0", "bitnet")
    scenarios = (Scenario("scenario1", "2+2=", 1), Scenario("scenario2", "Hello", 2))
    res = run_sweep(model, None, tmp_path / "out", scenarios=scenarios)
    assert res["ok"] and [r["status"] for r in res["scenarios"]] == ["green", "green"]
    for sc in ("scenario1", "scenario2"):
        d = tmp_path / "out" / sc
        for name in ("logits-comparison.json", "trace-diff.json", "report.txt", "ours-output.txt", "cpp-output.txt"):
            assert (d / name).is_file(), name
        assert (d / "ours-traces" / "trace.jsonl").is_file() and (d / "cpp-traces" / "trace.jsonl").is_file()
        assert json.loads((d / "trace-diff.json").read_text())["ok"]
    md = (tmp_path / "out" / "summary.md").read_text()
    assert "| scenario1 | green |" in md and "## Recommendations" in md
    html = (tmp_path / "out" / "report.html").read_text()
    assert "data:image/png;base64," in html and "PASS" in html
