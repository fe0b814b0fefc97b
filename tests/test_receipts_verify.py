"""verify-receipt on the seed's fixture cases, tampering, signatures, and the CLI's exit code."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bitnet.receipts import kernel_ids as kid
from bitnet.receipts.signing import sign_receipt
from bitnet.receipts.verify import load_receipt, verify_receipt

FIXTURES = Path(__file__).parent / "fixtures" / "receipts"

# fixture → (verdict, checks that must fail)
CASES = {
    "valid_receipt.json": (True, set()),
    "valid_gpu_receipt.json": (True, set()),
    "cpu_fallback_only.json": (False, {"cpu_quantized_kernels", "quantization_claims", "compute_path_derivation"}),
    "cpu_contains_trap.json": (False, {"cpu_quantized_kernels", "compute_path_derivation"}),
    "cpu_no_quant_kernels.json": (False, {"cpu_quantized_kernels", "quantization_claims"}),
    "gpu_cpu_kernels_only.json": (False, {"gpu_evidence"}),
    "invalid_compute_path.json": (False, {"compute_path"}),
    "invalid_gpu_receipt.json": (False, {"gpu_evidence"}),
    "missing_kernels.json": (False, {"json_schema", "kernel_hygiene"}),
    # real receipts written by `xtask benchmark` (tiny I2_S fixture): 2-core Xeon CPU, and an H200 (backend cuda)
    "real_cpu_receipt.json": (True, set()),
    "real_h200_gpu_receipt.json": (True, set()),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_seed_fixture_verdicts(name: str) -> None:
    ok, must_fail = CASES[name]
    report = verify_receipt(load_receipt(FIXTURES / name))
    failed = {c.name for c in report.failures}
    assert report.ok is ok, report.to_dict()
    assert must_fail <= failed, failed


def test_contains_trap_is_not_a_quantized_kernel() -> None:
    assert not kid.is_cpu_quantized_kernel("dequantize_i2s_helper")
    assert kid.is_cpu_quantized_kernel("i2s_gemv_avx512vnni")
    assert kid.is_fallback_kernel("dequant_i2s_ref") and not kid.is_quantized_kernel("dequant_i2s_ref")
    assert kid.is_gpu_kernel("cuda_i2s_gemv_triton") and kid.kernel_format("cuda_tq2_gemv_triton") == "tq2_0"
    assert not kid.is_gpu_kernel("i2s_cpu_gemv")
    assert kid.derive_compute_path(["mock_inference", "i2s_gemv_ref"])[0] == "mock"
    # the GPU engine's float projection (F32 models) is a fallback, like fp32_matmul_* on the CPU
    assert kid.derive_compute_path(["cuda_float_matmul_torch", "cuda_rmsnorm_triton"])[0] == "fallback"


def test_require_gpu_kernels_rejects_cpu_receipt() -> None:
    report = verify_receipt(load_receipt(FIXTURES / "valid_receipt.json"), require_gpu_kernels=True)
    assert not report.ok and {c.name for c in report.failures} == {"gpu_evidence"}


def _valid() -> dict:
    return load_receipt(FIXTURES / "valid_receipt.json")


def test_edited_tokens_per_second_is_caught_without_signature() -> None:
    r = _valid()
    r["performance"]["decode_tokens_per_second"]["median"] *= 3
    report = verify_receipt(r)
    assert "timing_consistency" in {c.name for c in report.failures}


def test_implausible_decode_rate_is_caught() -> None:
    r = _valid()
    stat = r["performance"]["decode_tokens_per_second"]
    stat["samples"] = [s * 1e5 for s in stat["samples"]]
    for k in ("median", "mean", "min", "max"):
        stat[k] *= 1e5
    stat["stdev"] *= 1e5
    failed = {c.name for c in verify_receipt(r).failures}
    assert "decode_plausibility" in failed


def test_quantization_claim_must_match_model_types() -> None:
    r = _valid()
    r["kernels"].append("tq2_gemv_ref")
    r["kernels"].sort()
    r["kernel_calls"]["tq2_gemv_ref"] = 10
    failed = {c.name: c.message for c in verify_receipt(r).failures}
    assert "tq2_0" in failed["quantization_claims"]


def test_kernel_lists_must_agree() -> None:
    r = _valid()
    r["kernels"].append("i2s_gemv_avx2")
    assert "kernel_calls" in {c.name for c in verify_receipt(r).failures}


@pytest.fixture
def keypair(tmp_path: Path) -> tuple[Path, Path]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    priv = tmp_path / "key.pem"
    pub = tmp_path / "key.pub.pem"
    priv.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo))
    return priv, pub


def test_signature_roundtrip_and_tampering(keypair: tuple[Path, Path], tmp_path: Path) -> None:
    priv, pub = keypair
    signed = sign_receipt(_valid(), priv)
    # key order and whitespace do not matter (RFC 8785)
    reordered = json.loads(json.dumps(signed, sort_keys=True))
    assert verify_receipt(reordered, pubkey=pub).ok

    tampered = copy.deepcopy(signed)
    tampered["kernel_calls"]["i2s_gemv_ref"] += 1  # a consistent-looking edit the other checks cannot see
    report = verify_receipt(tampered, pubkey=pub)
    assert not report.ok and "signature" in {c.name for c in report.failures}

    edited_tps = copy.deepcopy(signed)
    edited_tps["performance"]["decode_tokens_per_second"]["samples"][0] *= 1.01
    assert "signature" in {c.name for c in verify_receipt(edited_tps).failures}


def test_other_key_and_unsigned_are_rejected_with_pubkey(keypair: tuple[Path, Path], tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    _priv, pub = keypair
    other = tmp_path / "other.pem"
    other.write_bytes(Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    signed_by_other = sign_receipt(_valid(), other)
    assert "signature" in {c.name for c in verify_receipt(signed_by_other, pubkey=pub).failures}
    assert "signature" in {c.name for c in verify_receipt(_valid(), pubkey=pub).failures}


def _xtask(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bitnet.cli.xtask", *args], capture_output=True, text=True, timeout=120)


def test_cli_exit_codes_and_json_listing() -> None:
    ok = _xtask("verify-receipt", "--path", str(FIXTURES / "valid_receipt.json"), "--format", "json")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["ok"] is True
    bad = _xtask("verify-receipt", "--path", str(FIXTURES / "cpu_fallback_only.json"), "--format", "json")
    assert bad.returncode == 15
    payload = json.loads(bad.stdout)
    assert payload["ok"] is False and "cpu_quantized_kernels" in payload["failed"]
    missing = _xtask("verify-receipt", "--path", str(FIXTURES / "nope.json"))
    assert missing.returncode == 20


def test_real_gpu_receipt_needs_gpu_evidence() -> None:
    r = load_receipt(FIXTURES / "real_h200_gpu_receipt.json")
    assert verify_receipt(r, require_gpu_kernels=True).ok
    stripped = copy.deepcopy(r)
    stripped["kernel_calls"] = {k: n for k, n in r["kernel_calls"].items() if not k.startswith("cuda_i2s")}
    stripped["kernels"] = sorted(stripped["kernel_calls"])
    failed = {c.name for c in verify_receipt(stripped).failures}
    assert {"gpu_evidence", "quantization_claims", "compute_path_derivation"} <= failed
