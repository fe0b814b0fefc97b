"""CLI tests of the model-management commands: exit codes and NDJSON events per failure class, kill -9 and Ctrl-C
in the middle of a download, two concurrent downloads, tokenizer, fetch-models and clean-cache."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bitnet.cli.app import run_cli
from bitnet.cli.xtask import cli
from test_hub_fakehub import COMMIT, FakeHub, Fault

REPO = "microsoft/bitnet-b1.58-2B-4T-gguf"
MODEL = "ggml-model-i2_s.gguf"


@pytest.fixture
def hub(monkeypatch, tmp_path):
    with FakeHub() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # no saved token from the machine
        monkeypatch.delenv("HF_TOKEN", raising=False)
        monkeypatch.setenv("BITNET_HUB_MAX_WAIT", "0.01")
        yield server


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def xtask(capsys, *argv: str) -> tuple[int, list[dict], str]:
    """Run xtask in-process; returns (exit code, NDJSON events or the JSON envelope as one item, stderr)."""
    capsys.readouterr()
    code = run_cli(cli, list(argv))
    cap = capsys.readouterr()
    out = cap.out.strip()
    if "--json-events" in argv:
        return code, [json.loads(line) for line in out.splitlines() if line], cap.err
    return code, [json.loads(out)] if out.startswith("{") else [], cap.err


def _env(hub: FakeHub, tmp: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
    env |= {"HF_ENDPOINT": hub.url, "HF_HOME": str(tmp / "hf-home"), "HF_HUB_DISABLE_TELEMETRY": "1",
            "BITNET_HUB_MAX_WAIT": "0.01", **extra}
    return env


def _spawn(hub: FakeHub, tmp: Path, out: Path, *extra: str) -> subprocess.Popen:
    argv = [sys.executable, "-m", "bitnet.cli.xtask", "download-model", "--out", str(out), "--json-events",
            "--no-tokenizer", *extra]
    return subprocess.Popen(argv, env=_env(hub, tmp), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_bytes(path: Path, proc: subprocess.Popen, deadline_s: float = 30.0) -> int:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if path.exists() and path.stat().st_size > 0:
            return path.stat().st_size
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.01)
    raise AssertionError(f"{path} never received bytes")


# ---------------------------------------------------------------------------------------------- download-model
def test_download_model_json_envelope_and_tokenizer(hub, tmp_path, capsys):
    data = os.urandom(50_000)
    hub.add(REPO, MODEL, data)
    hub.add(REPO, "tokenizer.json", b"{}", lfs=False)
    code, (env,), err = xtask(capsys, "download-model", "--out", str(tmp_path / "m"), "--format", "json")
    assert code == 0 and env["ok"] and env["schema_version"]
    assert env["model"]["sha256"] == _sha(data) and env["model"]["verified"]
    assert Path(env["model"]["path"]) == (tmp_path / "m" / "microsoft-bitnet-b1.58-2B-4T-gguf" / MODEL).resolve()
    assert env["tokenizer"]["status"] == "downloaded"
    assert "export CROSSVAL_GGUF=" in err and "export TOKENIZER_PATH=" in err


def test_json_events_are_pure_ndjson(hub, tmp_path, capsys):
    data = os.urandom(50_000)
    hub.add(REPO, MODEL, data)
    code, events, _ = xtask(capsys, "download-model", "--out", str(tmp_path), "--json-events", "--no-tokenizer")
    assert code == 0
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "done" and "progress" in kinds
    assert events[-1]["sha256"] == _sha(data) and events[-1]["commit"] == COMMIT
    code, events, _ = xtask(capsys, "download-model", "--out", str(tmp_path), "--json-events", "--no-tokenizer")
    assert code == 0 and [e["event"] for e in events] == ["done"] and events[0]["status"] == "up_to_date"


FAILURES = [
    # (name, setup(hub), extra argv, env, exit code, kind)
    ("not_found", lambda h: None, ["--file", "absent.gguf"], {}, 20, "not_found"),
    ("gated", lambda h: h.add("org/gated", MODEL, b"x", token="t"), ["--id", "org/gated"], {}, 11, "auth"),
    ("rate_limit", lambda h: h.fault(Fault("status", status=429, times=99, headers={"Retry-After": "1"})), [], {},
     12, "rate_limit"),
    ("server_error", lambda h: h.fault(Fault("status", status=503, times=99)), [], {}, 14, "network"),
    ("hash_mismatch", lambda h: h.fault(Fault("wrong", times=2)), [], {}, 13, "hash_mismatch"),
    ("given_hash", lambda h: None, ["--sha256", "a" * 64], {}, 13, "hash_mismatch"),
    ("no_space", lambda h: None, [], {"BITNET_HUB_RESERVE_BYTES": str(2**62)}, 10, "no_space"),
    ("traversal", lambda h: None, ["--file", "../../evil"], {}, 2, "usage"),
    ("bad_sha", lambda h: None, ["--sha256", "xyz"], {}, 2, "usage"),
]


@pytest.mark.parametrize(("setup", "argv", "env", "code", "kind"), [f[1:] for f in FAILURES],
                         ids=[f[0] for f in FAILURES])
def test_failure_classes_exit_codes_and_error_events(hub, tmp_path, capsys, monkeypatch, setup, argv, env, code, kind):
    hub.add(REPO, MODEL, os.urandom(20_000))
    setup(hub)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    out = tmp_path / "m"
    rc, events, _ = xtask(capsys, "download-model", "--out", str(out), "--json-events", "--no-tokenizer",
                          "--retries", "2", *argv)
    assert rc == code
    assert events[-1]["event"] == "error" and events[-1]["kind"] == kind and events[-1]["exit_code"] == code
    assert not any(p.suffix == ".gguf" for p in out.rglob("*"))  # nothing ever lands at a final path
    hub.faults.clear()
    setup(hub)
    rc, (envelope,), _ = xtask(capsys, "download-model", "--out", str(out), "--format", "json", "--no-tokenizer",
                               "--retries", "0", *argv)
    assert rc == code and envelope["ok"] is False and envelope["error"]["exit_code"] == code


def test_offline_env_makes_no_request(hub, tmp_path, capsys, monkeypatch):
    data = os.urandom(10_000)
    hub.add(REPO, MODEL, data)
    assert xtask(capsys, "download-model", "--out", str(tmp_path), "--no-tokenizer")[0] == 0
    n = len(hub.requests)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rc, (env,), _ = xtask(capsys, "download-model", "--out", str(tmp_path), "--no-tokenizer", "--format", "json")
    assert rc == 0 and env["model"]["status"] == "up_to_date" and env["model"]["verified"]
    rc, _, _ = xtask(capsys, "download-model", "--out", str(tmp_path), "--file", "other.gguf", "--no-tokenizer")
    assert rc == 20 and len(hub.requests) == n


def test_usage_errors_from_click_exit_2(hub, tmp_path, capsys):
    rc, _, _ = xtask(capsys, "download-model", "--retries", "-1", "--out", str(tmp_path))
    assert rc == 2


def test_token_is_never_printed(hub, tmp_path, capsys, monkeypatch):
    secret = "hf_TOPSECRET_value_123"
    monkeypatch.setenv("HF_TOKEN", secret)
    hub.add("org/gated", MODEL, b"x", token="another")
    rc, events, err = xtask(capsys, "download-model", "--id", "org/gated", "--out", str(tmp_path), "--json-events")
    assert rc == 11 and secret not in json.dumps(events) and secret not in err
    assert any(r.headers.get("authorization") == f"Bearer {secret}" for r in hub.requests)


def test_kill_9_mid_download_then_resume(hub, tmp_path, capsys):
    data = os.urandom(1_000_000)
    hub.add(REPO, MODEL, data)
    hub.trickle = (16_384, 0.02)
    out = tmp_path / "m"
    dest = out / "microsoft-bitnet-b1.58-2B-4T-gguf" / MODEL
    part = dest.with_name(MODEL + ".part")
    proc = _spawn(hub, tmp_path, out)
    _wait_for_bytes(part, proc)
    proc.kill()  # SIGKILL: no handler runs
    proc.wait(timeout=10)
    kept = part.stat().st_size
    assert 0 < kept < len(data) and not dest.exists()
    hub.trickle = None
    rc, events, _ = xtask(capsys, "download-model", "--out", str(out), "--json-events", "--no-tokenizer")
    assert rc == 0 and events[0]["event"] == "start" and events[0]["resume_from"] == kept
    assert hub.gets()[-1].headers["range"] == f"bytes={kept}-" and hub.gets()[-1].status == 206
    assert events[-1]["sha256"] == _sha(data) and dest.read_bytes() == data


def test_ctrl_c_exits_130_and_keeps_a_resumable_part(hub, tmp_path, capsys):
    data = os.urandom(1_000_000)
    hub.add(REPO, MODEL, data)
    hub.trickle = (16_384, 0.02)
    out = tmp_path / "m"
    part = out / "microsoft-bitnet-b1.58-2B-4T-gguf" / (MODEL + ".part")
    proc = _spawn(hub, tmp_path, out)
    _wait_for_bytes(part, proc)
    proc.send_signal(signal.SIGINT)
    stdout, _ = proc.communicate(timeout=20)
    assert proc.returncode == 130
    last = json.loads(stdout.strip().splitlines()[-1])
    assert last["event"] == "error" and last["kind"] == "interrupted" and last["exit_code"] == 130
    assert part.stat().st_size > 0
    hub.trickle = None
    rc, events, _ = xtask(capsys, "download-model", "--out", str(out), "--json-events", "--no-tokenizer")
    assert rc == 0 and events[0]["resume_from"] > 0 and events[-1]["sha256"] == _sha(data)


def test_two_concurrent_downloads_make_one_correct_file(hub, tmp_path):
    data = os.urandom(400_000)
    hub.add(REPO, MODEL, data)
    hub.trickle = (32_768, 0.02)
    out = tmp_path / "m"
    procs = [_spawn(hub, tmp_path, out) for _ in range(2)]
    results = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    done = [json.loads(stdout.strip().splitlines()[-1]) for stdout, _ in results]
    assert sorted(d["status"] for d in done) == ["downloaded", "up_to_date"]
    assert all(d["sha256"] == _sha(data) for d in done)
    assert len(hub.gets()) == 1  # the body was sent once
    folder = out / "microsoft-bitnet-b1.58-2B-4T-gguf"
    assert (folder / MODEL).read_bytes() == data and not (folder / (MODEL + ".part")).exists()


# ---------------------------------------------------------------------------------------------------- tokenizer
def _tokenizer_json(vocab_size: int) -> bytes:
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel

    vocab = {f"t{i}": i for i in range(vocab_size)}
    return Tokenizer(WordLevel(vocab, unk_token="t0")).to_str().encode()


@pytest.fixture(scope="module")
def llama3_like() -> bytes:
    return _tokenizer_json(128_256)


def test_tokenizer_mirror_is_checked_and_idempotent(hub, tmp_path, capsys, llama3_like):
    hub.add("baseten/Meta-Llama-3-tokenizer", "tokenizer.json", llama3_like)
    rc, (env,), _ = xtask(capsys, "tokenizer", "--out", str(tmp_path), "--format", "json")
    assert rc == 0 and env["vocab_size"] == 128_256 and env["status"] == "downloaded"
    assert (tmp_path / "tokenizer.json").read_bytes() == llama3_like
    n = len(hub.requests)
    rc, (env,), _ = xtask(capsys, "tokenizer", "--out", str(tmp_path), "--format", "json")
    assert rc == 0 and env["status"] == "exists" and len(hub.requests) == n
    rc, events, _ = xtask(capsys, "tokenizer", "--out", str(tmp_path), "--json-events")
    assert rc == 0 and [(e["event"], e["status"]) for e in events] == [("done", "exists")]


def test_tokenizer_with_wrong_vocab_never_lands(hub, tmp_path, capsys):
    hub.add("baseten/Meta-Llama-3-tokenizer", "tokenizer.json", _tokenizer_json(1000))
    rc, (env,), _ = xtask(capsys, "tokenizer", "--out", str(tmp_path), "--format", "json")
    assert rc == 18 and "1000" in env["error"]["message"]
    assert not (tmp_path / "tokenizer.json").exists() and not (tmp_path / "tokenizer.json.part").exists()


def test_tokenizer_official_needs_a_valid_token(hub, tmp_path, capsys, monkeypatch, llama3_like):
    hub.add("meta-llama/Meta-Llama-3-8B", "tokenizer.json", llama3_like, token="good")
    rc, (env,), _ = xtask(capsys, "tokenizer", "--source", "official", "--out", str(tmp_path), "--format", "json")
    assert rc == 11 and "HF_TOKEN" in env["error"]["message"] and hub.requests == []
    monkeypatch.setenv("HF_TOKEN", "bad")
    rc, (env,), _ = xtask(capsys, "tokenizer", "--source", "official", "--out", str(tmp_path), "--format", "json")
    assert rc == 11 and "403" in env["error"]["message"] and "licence" in env["error"]["hint"]
    monkeypatch.setenv("HF_TOKEN", "good")
    rc, (env,), _ = xtask(capsys, "tokenizer", "--source", "official", "--out", str(tmp_path), "--format", "json")
    assert rc == 0 and env["source"] == "official"


# ------------------------------------------------------------------------------------------------- fetch-models
def _lock(tmp: Path, models: list[dict]) -> Path:
    path = tmp / "models.lock.json"
    path.write_text(json.dumps({"schema_version": 1, "models": models}))
    return path


def test_fetch_models_verifies_every_pinned_file(hub, tmp_path, capsys):
    a, b = os.urandom(30_000), b'{"k": 1}'
    hub.add("org/a", "a.gguf", a)
    hub.add("org/b", "sub/config.json", b, lfs=False)
    lock = _lock(tmp_path, [
        {"name": "a", "repo": "org/a", "revision": COMMIT, "file": "a.gguf", "sha256": _sha(a), "size": len(a)},
        {"repo": "org/b", "revision": COMMIT, "file": "sub/config.json", "sha256": _sha(b)},
    ])
    rc, (env,), _ = xtask(capsys, "fetch-models", "--lock", str(lock), "--out", str(tmp_path / "m"), "--format", "json")
    assert rc == 0 and [m["verified"] for m in env["models"]] == [True, True]
    assert all(m["commit_matches"] for m in env["models"])
    assert (tmp_path / "m" / "org-b" / "sub" / "config.json").read_bytes() == b
    assert all(f"/resolve/{COMMIT}/" in r.path for r in hub.requests if "/resolve/" in r.path)


def test_fetch_models_hash_mismatch_exits_13_but_tries_all(hub, tmp_path, capsys):
    a = os.urandom(10_000)
    hub.add("org/a", "a.gguf", a, lfs=False)
    hub.add("org/a", "b.gguf", a, lfs=False)
    lock = _lock(tmp_path, [
        {"repo": "org/a", "revision": COMMIT, "file": "a.gguf", "sha256": "0" * 64},
        {"repo": "org/a", "revision": COMMIT, "file": "b.gguf", "sha256": _sha(a)},
    ])
    rc, (env,), _ = xtask(capsys, "fetch-models", "--lock", str(lock), "--out", str(tmp_path / "m"), "--format", "json")
    assert rc == 13 and "1 of 2" in env["error"]["message"]
    assert (tmp_path / "m" / "org-a" / "b.gguf").exists() and not (tmp_path / "m" / "org-a" / "a.gguf").exists()


@pytest.mark.parametrize(
    ("models", "needle"),
    [
        ([{"repo": "org/a", "revision": "main", "file": "a", "sha256": "0" * 64}], "models[0].revision"),
        ([{"repo": "org/a", "revision": COMMIT, "file": "a"}], "'sha256' is a required property"),
        ([{"repo": "org/a", "revision": COMMIT, "file": "../a", "sha256": "0" * 64}], "models[0]: invalid file"),
        ([], "should be non-empty"),
        ([{"repo": "org/a", "revision": COMMIT, "file": "a", "sha256": "0" * 64, "url": "x"}], "Additional"),
    ],
)
def test_fetch_models_rejects_bad_lockfiles_before_any_request(hub, tmp_path, capsys, models, needle):
    lock = _lock(tmp_path, models)
    rc, (env,), _ = xtask(capsys, "fetch-models", "--lock", str(lock), "--format", "json")
    assert rc == 18 and needle in env["error"]["message"] and hub.requests == []


def test_fetch_models_missing_lockfile_is_not_found(hub, tmp_path, capsys):
    rc, _, _ = xtask(capsys, "fetch-models", "--lock", str(tmp_path / "nope.json"))
    assert rc == 20


# -------------------------------------------------------------------------------------------------- clean-cache
@pytest.fixture
def caches(tmp_path, monkeypatch):
    models = tmp_path / "models"
    (models / "org-a").mkdir(parents=True)
    (models / "org-a" / "a.gguf").write_bytes(b"x" * 1000)
    (models / "org-a" / "a.gguf.part").write_bytes(b"x" * 10)
    cpp = tmp_path / "cpp"
    (cpp / "bitnet").mkdir(parents=True)
    (cpp / "bitnet" / "lib.so").write_bytes(b"y" * 500)
    hub_entry = tmp_path / "hf" / "models--microsoft--bitnet-b1.58-2B-4T-gguf"
    hub_entry.mkdir(parents=True)
    (hub_entry / "blob").write_bytes(b"z" * 200)
    unrelated = tmp_path / "hf" / "models--someone--else"
    unrelated.mkdir(parents=True)
    monkeypatch.setenv("BITNET_CPP_DIR", str(cpp))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    return models, cpp, hub_entry, unrelated


def test_clean_cache_dry_run_lists_sizes(caches, capsys):
    models, cpp, hub_entry, _ = caches
    rc, (env,), _ = xtask(capsys, "clean-cache", "--models-dir", str(models), "--dry-run", "--format", "json")
    assert rc == 0 and env["deleted"] == [] and env["total_bytes"] == 1710
    assert {c["kind"]: c["bytes"] for c in env["caches"]} == {"models": 1010, "cpp": 500, "hf-hub": 200}
    assert models.exists() and cpp.exists() and hub_entry.exists()


def test_clean_cache_asks_and_respects_no(caches, capsys, monkeypatch):
    models, _, _, _ = caches
    monkeypatch.setattr("sys.stdin", io.StringIO("n\n"))
    rc, (env,), err = xtask(capsys, "clean-cache", "--models-dir", str(models), "--format", "json")
    assert rc == 0 and env["deleted"] == [] and models.exists() and "Delete these 3 caches" in err


def test_clean_cache_yes_deletes_only_our_caches(caches, capsys):
    models, cpp, hub_entry, unrelated = caches
    rc, (env,), _ = xtask(capsys, "clean-cache", "--models-dir", str(models), "--yes", "--format", "json")
    assert rc == 0 and len(env["deleted"]) == 3
    assert not models.exists() and not cpp.exists() and not hub_entry.exists() and unrelated.exists()
