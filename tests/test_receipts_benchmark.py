"""A real benchmark on tiny generated models: its receipt verifies (with replay); edits to it do not."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bitnet.errors import UsageError
from bitnet.kernels.registry import REGISTRY
from bitnet.receipts.benchmark import BenchmarkSpec, run_benchmark
from bitnet.receipts.signing import sign_receipt
from bitnet.receipts.verify import verify_receipt


@pytest.fixture(scope="module")
def i2s_model(tmp_path_factory) -> Path:
    from bitnet.formats.fixtures import generate_fixture

    return generate_fixture("tiny", "i2_s", "bitnet-b1.58", tmp_path_factory.mktemp("bench"), 0)


@pytest.fixture(scope="module")
def receipt(i2s_model: Path) -> dict:
    return run_benchmark(BenchmarkSpec(model=i2s_model, tokens=4, warmup_tokens=1, runs=2, threads=1))


def _failed(r: dict, **kw) -> set[str]:
    return {c.name for c in verify_receipt(r, **kw).failures}


def test_real_receipt_verifies_with_replay(receipt: dict) -> None:
    report = verify_receipt(receipt, replay=True)
    assert report.ok, report.to_dict()
    assert {c.name for c in report.checks if c.ok} >= {"replay", "json_schema", "quantization_claims"}
    assert receipt["compute_path"] == "real" and receipt["deterministic"] is True
    assert any(k.startswith("i2s_gem") for k in receipt["kernels"])
    assert len(receipt["output"]["token_ids"]) == 4
    perf = receipt["performance"]
    assert perf["decode_ms_per_token"]["n"] == 2 * 3 and len(perf["prefill_ms"]["samples"]) == 2
    assert receipt["model"]["tensor_types"]["i2_s"] > 0 and len(receipt["model"]["sha256"]) == 64


def test_kernels_come_from_the_registry(i2s_model: Path) -> None:
    r = run_benchmark(BenchmarkSpec(model=i2s_model, tokens=2, warmup_tokens=0, runs=1, threads=1))
    assert r["kernel_calls"] == REGISTRY.counts()  # exactly what the registry counted, nothing written in code


def test_replay_catches_an_edited_token_stream(receipt: dict) -> None:
    edited = copy.deepcopy(receipt)
    ids = edited["output"]["token_ids"]
    ids[-1] = (ids[-1] + 1) % edited["model"]["vocab_size"]
    assert verify_receipt(edited).ok  # the static checks cannot know the model's output...
    report = verify_receipt(edited, replay=True)
    assert {c.name for c in report.failures} == {"replay"}  # ...the replay does
    assert "token ids differ from position 3" in report.failures[0].message


def test_tampered_signed_receipt_fails(receipt: dict, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    priv, pub = tmp_path / "k.pem", tmp_path / "k.pub"
    priv.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    signed = sign_receipt(receipt, priv)
    assert verify_receipt(signed, pubkey=pub).ok

    faster = copy.deepcopy(signed)
    stat = faster["performance"]["decode_tokens_per_second"]
    stat["samples"] = [s * 2 for s in stat["samples"]]
    for k in ("median", "mean", "min", "max"):
        stat[k] *= 2
    stat["stdev"] = stat["stdev"] * 2 if stat["stdev"] is not None else None
    assert "signature" in _failed(faster, pubkey=pub)

    more_kernels = copy.deepcopy(signed)
    more_kernels["kernels"] = sorted([*more_kernels["kernels"], "i2s_gemv_avx2"])
    more_kernels["kernel_calls"]["i2s_gemv_avx2"] = 5
    assert "signature" in _failed(more_kernels, pubkey=pub)


def test_float_model_run_says_it_is_not_quantized(tmp_path: Path) -> None:
    from bitnet.formats.fixtures import generate_fixture

    model = generate_fixture("tiny", "f32", "bitnet-b1.58", tmp_path, 0)
    r = run_benchmark(BenchmarkSpec(model=model, tokens=2, warmup_tokens=0, runs=1, threads=1))
    assert r["compute_path"] != "real"
    assert {"compute_path", "cpu_quantized_kernels"} <= _failed(r)


def test_tq2_model_shows_tq2_kernels(tmp_path: Path) -> None:
    from bitnet.formats.fixtures import generate_fixture

    model = generate_fixture("tiny", "tq2_0", "bitnet", tmp_path, 0)
    r = run_benchmark(BenchmarkSpec(model=model, tokens=2, warmup_tokens=0, runs=1, threads=1))
    assert any(k.startswith("tq2_") for k in r["kernels"]), r["kernels"]
    assert verify_receipt(r).ok


def test_usage_errors(i2s_model: Path) -> None:
    with pytest.raises(UsageError):
        run_benchmark(BenchmarkSpec(model=i2s_model, tokens=0))
    res = subprocess.run([sys.executable, "-m", "bitnet.cli.xtask", "benchmark", "--model", str(i2s_model), "--tokens", "0"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "--tokens" in res.stderr


def test_cli_writes_signed_receipt_that_verifies(i2s_model: Path, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    priv, pub = tmp_path / "k.pem", tmp_path / "k.pub"
    priv.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    out = tmp_path / "ci" / "inference.json"

    def xtask(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "bitnet.cli.xtask", *args], capture_output=True, text=True, timeout=300)

    res = xtask("benchmark", "--model", str(i2s_model), "--tokens", "3", "--warmup-tokens", "1", "--runs", "1",
                "--threads", "1", "--json", str(out), "--sign", str(priv), "--format", "json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["receipt"]["signature"]["algorithm"] == "ed25519"
    ok = xtask("verify-receipt", "--path", str(out), "--pubkey", str(pub), "--replay", "--format", "json")
    assert ok.returncode == 0, ok.stdout
    data = json.loads(out.read_text())
    data["output"]["token_ids"][0] = (data["output"]["token_ids"][0] + 1) % 512
    out.write_text(json.dumps(data))
    bad = xtask("verify-receipt", "--path", str(out), "--pubkey", str(pub), "--replay", "--format", "json")
    assert bad.returncode == 15
    assert {"signature", "replay"} <= set(json.loads(bad.stdout)["failed"])


def test_replay_refuses_another_model_file(receipt: dict) -> None:
    other = copy.deepcopy(receipt)
    other["model"]["sha256"] = "0" * 64
    failures = {c.name: c.message for c in verify_receipt(other, replay=True).failures}
    assert set(failures) == {"replay"} and "sha256" in failures["replay"]
    gone = copy.deepcopy(receipt)
    gone["model"]["path"] = "/nonexistent/model.gguf"
    assert "not found" in {c.name: c.message for c in verify_receipt(gone, replay=True).failures}["replay"]
