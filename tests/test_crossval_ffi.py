"""The ctypes FFI over the built llama.cpp reference: struct layouts, deterministic evaluation, tracing, errors.

Needs the reference built by `xtask fetch-cpp --flavor llama.cpp --sdist` (the `cpp_reference` fixture).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from bitnet.cli.app import run_cli
from bitnet.cli.xtask import cli
from bitnet.crossval.cpp import find_reference
from bitnet.crossval.cpp_trace import CppTracer
from bitnet.crossval.ffi import CppSession
from bitnet.crossval.layout import check_layouts
from bitnet.errors import InferenceError, InvalidInputError, ReferenceUnavailable

pytestmark = pytest.mark.cpp


@pytest.fixture(scope="module")
def tiny(fixture_model):
    return fixture_model("tiny", "tq2_0", "bitnet")


def test_ctypes_struct_layouts_match_the_built_headers(cpp_reference):
    res = check_layouts(cpp_reference)
    assert res["ok"], res["mismatches"]
    assert res["generation"] == "upstream-2026" and res["checked"] > 50


def test_session_is_deterministic_and_consistent(cpp_reference, tiny):
    with CppSession(tiny, manifest=cpp_reference) as a, CppSession(tiny, manifest=cpp_reference) as b:
        assert a.n_vocab == 512 and a.add_bos
        ids = a.tokenize("Count: 1,2,3,")
        assert ids[0] == a.bos_id and ids == b.tokenize("Count: 1,2,3,")
        la, lb = a.eval_all_logits(ids), b.eval_all_logits(ids)
        assert la.shape == (len(ids), 512) and la.dtype == np.float32
        assert np.array_equal(la, lb)  # same build, same thread count: bitwise identical
        assert np.array_equal(a.eval_all_logits(ids), la)  # reset between evaluations
        # greedy = argmax chain of single-token decode steps
        stream = a.greedy(ids, 5)
        a.reset()
        logits = a.prefill(ids)
        for tok in stream:
            assert int(np.argmax(logits)) == tok
            logits = a.decode_step(tok)
        assert a.detokenize(a.tokenize("hello", add_bos=False)).strip() == "hello"


def test_tracer_captures_every_engine_stage_per_position(cpp_reference, tiny, tmp_path):
    from bitnet.model.trace import STAGE_NAMES

    tr = CppTracer(tmp_path, keep_values=True)
    with CppSession(tiny, manifest=cpp_reference, tracer=tr) as s:
        ids = s.tokenize("Hello")
        s.eval_all_logits(ids)
    lines = [json.loads(x) for x in (tmp_path / "trace.jsonl").read_text().splitlines()]
    seen = {(r["seq"], r["layer"], r["stage"]) for r in lines}
    t = len(ids)
    for seq in range(t):
        for stage in STAGE_NAMES:
            layers = (-1,) if stage in ("embeddings", "final_norm", "logits") else (0, 1)
            for layer in layers:
                assert (seq, layer, stage) in seen, (seq, layer, stage)
    shapes = {r["stage"]: r["shape"] for r in lines if r["seq"] == t - 1 and r["layer"] in (-1, 1)}
    assert shapes["q"] == [256] and shapes["k"] == [128] and shapes["q_rope"] == [4, 64]
    assert shapes["attn_scores"] == [4, t] and shapes["logits"] == [512]
    # causal: the first position attends only to itself
    p0 = tr.values[(0, 0, "attn_scores")]
    assert np.allclose(p0[:, 0], 1.0) and np.all(p0[:, 1:] == 0.0)


def test_bad_inputs_raise_typed_errors(cpp_reference, tiny, tmp_path):
    with pytest.raises(InvalidInputError):
        CppSession(tmp_path / "missing.gguf", manifest=cpp_reference)
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(InferenceError):
        CppSession(junk, manifest=cpp_reference)
    with CppSession(tiny, manifest=cpp_reference) as s, pytest.raises(InferenceError):
        s.eval_all_logits([1, 100000])


def test_missing_reference_exit_19_and_allow_cpp_fail(tiny, tmp_path, monkeypatch, capsys):
    with pytest.raises(ReferenceUnavailable):
        find_reference("llama.cpp", tmp_path / "empty")
    report = tmp_path / "r.json"
    args = ["crossval", "--model", str(tiny), "--cpp-dir", str(tmp_path / "empty"), "--report", str(report)]
    assert run_cli(cli, args) == 19
    assert json.loads(report.read_text())["cpp_header_ok"] is False  # the report is written on every outcome
    monkeypatch.setenv("CROSSVAL_ALLOW_CPP_FAIL", "1")
    capsys.readouterr()
    assert run_cli(cli, [*args, "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["xfail"] is True and out["ok"] is True and out["rust_ok"] is True


def test_scenario_timeout_fails_the_check_and_is_reported(cpp_reference, tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("CROSSVAL_TIMEOUT_SECS", "0.001")
    report = tmp_path / "r.json"
    assert run_cli(cli, ["crossval", "--model", str(tiny), "--report", str(report), "--prompt", "Hello"]) == 1
    rep = json.loads(report.read_text())
    check = rep["checks"][-1]
    assert check["name"] == "prompt:Hello" and not check["ok"] and "CROSSVAL_TIMEOUT_SECS" in check["error"]
    assert rep["ok"] is False and rep["cpp_header_ok"] is True


def test_a_second_reference_in_the_same_process_is_refused(cpp_reference, tiny):
    import dataclasses

    from bitnet.crossval.cpp import Artifact
    from bitnet.crossval.ffi import open_library

    with CppSession(tiny, manifest=cpp_reference):
        pass
    other = dataclasses.replace(cpp_reference, artifacts=[Artifact("lib:llama", "/elsewhere/libllama.so", "0")])
    with pytest.raises(ReferenceUnavailable, match="already uses the C\\+\\+ reference"):
        open_library(other)
