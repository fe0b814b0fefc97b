"""`bitnet generate` / `bitnet chat` end to end on a generated fixture (in-process, through the real CLI entry)."""

from __future__ import annotations

import io
import json

import pytest

from bitnet.cli.app import run_cli
from bitnet.cli.bitnet_cmd import cli


@pytest.fixture
def model(fixture_model):
    return fixture_model(size="tiny", fmt="i2_s", arch="bitnet-b1.58", seed=0)


def test_generate_json_is_greedy_and_matches_the_library(model, capsys) -> None:
    from bitnet.model import GenerationConfig, load_model

    rc = run_cli(cli, ["generate", "-m", str(model), "-p", "the quick brown", "-n", "12", "--temperature", "0",
                       "--format", "json"])
    assert rc == 0
    res = json.loads(capsys.readouterr().out)
    assert res["schema_version"] == "1.0" and res["n_generated"] == len(res["tokens"]) <= 12
    assert res["engine"]["profile"] == "per-token" and res["engine"]["numerics"] == "default"
    engine = load_model(model)
    ids = engine.tokenizer.encode("the quick brown")
    expect = list(engine.generate(ids, GenerationConfig(max_tokens=12)))
    assert res["tokens"] == expect and res["n_prompt_tokens"] == len(ids)
    assert res["text"] == engine.tokenizer.decode(expect)


def test_generate_text_streams_to_stdout_and_speed_to_stderr(model, capsys) -> None:
    rc = run_cli(cli, ["generate", "-m", str(model), "-p", "hello", "-n", "5", "--seed", "7", "--top-k", "5",
                       "--numerics", "bitnet-cpp"])
    assert rc == 0
    cap = capsys.readouterr()
    assert "tok/s" in cap.err and "tok/s" not in cap.out


def test_generate_bad_options_exit_codes(model, capsys) -> None:
    assert run_cli(cli, ["generate", "-m", str(model), "-p", "x", "--profile", "per-row"]) == 2
    assert run_cli(cli, ["generate", "-m", str(model), "-p", "x", "--numerics", "bitnet-cpp",
                         "--kv-dtype", "f16", "-n", "1", "--format", "json"]) == 0
    capsys.readouterr()
    assert run_cli(cli, ["generate", "-m", str(model.parent / "missing.gguf"), "-p", "x"]) == 20
    capsys.readouterr()
    # no CUDA here: a clear JSON error and a non-zero exit, never a silent CPU fallback
    rc = run_cli(cli, ["generate", "-m", str(model), "-p", "x", "--device", "cuda", "--format", "json"])
    if rc == 0:
        pytest.skip("a CUDA backend is available on this machine")
    err = json.loads(capsys.readouterr().out)
    assert err["ok"] is False and err["error"]["exit_code"] == rc


def test_chat_reads_turns_from_stdin(model, capsys, monkeypatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("hello there\n\nhow are you\n"))
    rc = run_cli(cli, ["chat", "-m", str(model), "-n", "4", "--temperature", "0", "--system", "Be brief.",
                       "--format", "json"])
    assert rc == 0
    res = json.loads(capsys.readouterr().out)
    assert [t["user"] for t in res["turns"]] == ["hello there", "how are you"]
    roles = [m["role"] for m in res["messages"]]
    assert roles == ["system", "user", "assistant", "user", "assistant"]
    # the second turn's prompt contains the whole conversation in the BitNet template
    assert res["turns"][1]["n_prompt_tokens"] > res["turns"][0]["n_prompt_tokens"]


def test_piped_chat_is_bit_identical_across_processes(model) -> None:
    """Two separate `bitnet chat` processes with sampling on and BITNET_DETERMINISTIC=1 produce the same bytes."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    exe = Path(sys.executable).with_name("bitnet")
    env = {**os.environ, "BITNET_DETERMINISTIC": "1", "BITNET_SEED": "11"}
    cmd = [str(exe), "chat", "-m", str(model), "-n", "8", "--temperature", "0.9", "--top-k", "40", "--format", "json"]
    outs = [subprocess.run(cmd, input="hello there\nand again\n", capture_output=True, text=True, env=env,
                           timeout=120, check=True).stdout for _ in range(2)]  # fmt: skip
    timing = ("prefill_seconds", "decode_seconds", "prefill_tok_s", "decode_tok_s")
    runs = [json.loads(o) for o in outs]
    for r in runs:
        for turn in r["turns"]:
            for key in timing:
                turn.pop(key)
    assert runs[0] == runs[1]  # text, token ids, messages, engine description: everything but wall-clock
    res = runs[0]
    assert len(res["turns"]) == 2 and res["engine"]["deterministic"] is True and res["engine"]["threads"] == 1
