"""verify-receipt: every check runs, and every failure is listed (a receipt is rejected for all its reasons at once).

The checks (documented in docs/receipts.md):
  schema_version, json_schema, compute_path, compute_path_derivation, kernel_hygiene, kernel_calls,
  gpu_evidence, cpu_quantized_kernels, quantization_claims, timing_consistency, decode_plausibility,
  output_consistency, signature (when signed or --pubkey), replay (with --replay).
The first eight follow the seed xtask (bitnet-rs.md §1), tightened where the seed could be fooled.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bitnet.errors import BitnetError, InvalidInputError, NotFoundError, VerificationError
from bitnet.kernels.registry import KERNEL_ID_RE
from bitnet.receipts import kernel_ids as kid
from bitnet.receipts.schema import schema_errors
from bitnet.receipts.signing import SIGNATURE_FIELD, check_signature
from bitnet.receipts.stats import summary_mismatches

#: generous memory-bandwidth ceilings (bytes/s) for the decode plausibility bound. Real machines: ~15 GB/s per
#: core DRAM read on the project VM, ~4.8 TB/s on an H200. The CPU figure is set near L2 bandwidth so a model that
#: fits in cache is not flagged.
CPU_BANDWIDTH_PER_CORE = 50e9
CPU_BANDWIDTH_MIN = 100e9
GPU_BANDWIDTH = 8e12
#: how far above the bound a decode rate may be before it is called implausible
PLAUSIBILITY_FACTOR = 4.0
SCHEMA_VERSION_RE = re.compile(r"^1\.[0-9]+(\.[0-9]+)?$")


@dataclass
class Check:
    name: str
    ok: bool
    message: str
    #: "error" checks decide the verdict; "warning" checks are reported only
    severity: str = "error"


@dataclass
class VerificationReport:
    path: str | None
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks if c.severity == "error")

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.ok and c.severity == "error"]

    @property
    def warnings(self) -> list[Check]:
        return [c for c in self.checks if not c.ok and c.severity == "warning"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "ok": self.ok,
            "failed": [c.name for c in self.failures],
            "checks": [asdict(c) for c in self.checks],
        }

    def raise_for_failures(self) -> None:
        if not self.ok:
            lines = "; ".join(f"{c.name}: {c.message}" for c in self.failures)
            raise VerificationError(f"receipt verification failed ({len(self.failures)} checks): {lines}")


def load_receipt(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise NotFoundError(f"receipt not found: {p}", hint="run `xtask benchmark --json PATH` first")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInputError(f"{p}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise InvalidInputError(f"{p}: a receipt is a JSON object, got {type(data).__name__}")
    return data


def verify_receipt(
    receipt: dict[str, Any],
    *,
    path: str | None = None,
    require_gpu_kernels: bool = False,
    replay: bool = False,
    pubkey: str | Path | None = None,
) -> VerificationReport:
    """Run every check; never raises for a bad receipt (call `raise_for_failures()` for that)."""
    report = VerificationReport(path=path)
    checks: list[tuple[str, Callable[[dict[str, Any]], tuple[bool, str] | None]]] = [
        ("schema_version", _check_schema_version),
        ("json_schema", _check_json_schema),
        ("compute_path", _check_compute_path),
        ("compute_path_derivation", _check_compute_path_derivation),
        ("kernel_hygiene", _check_kernel_hygiene),
        ("kernel_calls", _check_kernel_calls),
        ("gpu_evidence", lambda r: _check_gpu_evidence(r, require_gpu_kernels)),
        ("cpu_quantized_kernels", _check_cpu_quantized),
        ("quantization_claims", _check_quantization_claims),
        ("timing_consistency", _check_timing_consistency),
        ("decode_plausibility", _check_decode_plausibility),
        ("output_consistency", _check_output_consistency),
    ]
    if SIGNATURE_FIELD in receipt or pubkey is not None:
        checks.append(("signature", lambda r: check_signature(r, pubkey)))
    for name, fn in checks:
        report.checks.append(_run(name, fn, receipt))
    duplicates = _duplicate_kernels(receipt)
    if duplicates:
        report.checks.append(Check("kernel_duplicates", False, f"duplicate kernel ids: {duplicates}", "warning"))
    if replay:
        from bitnet.receipts.replay import replay_receipt

        report.checks.append(_run("replay", replay_receipt, receipt))
    return report


def _run(name: str, fn: Callable[[dict[str, Any]], tuple[bool, str] | None], receipt: dict[str, Any]) -> Check:
    try:
        result = fn(receipt)
    except (KeyError, TypeError, ValueError, AttributeError, ZeroDivisionError) as exc:
        return Check(name, False, f"missing or malformed field ({type(exc).__name__}: {exc})")
    except BitnetError as exc:  # e.g. a replay whose backend or model is unavailable here
        return Check(name, False, f"could not run: {exc}")
    if result is None:
        return Check(name, True, "not applicable", "info")
    ok, message = result
    return Check(name, ok, message)


def _kernels(receipt: dict[str, Any]) -> list[str]:
    kernels = receipt.get("kernels")
    if not isinstance(kernels, list):
        raise TypeError("'kernels' must be a list of kernel ids")
    return [k for k in kernels if isinstance(k, str)]


def _duplicate_kernels(receipt: dict[str, Any]) -> list[str]:
    try:
        ks = _kernels(receipt)
    except TypeError:
        return []
    return sorted({k for k in ks if ks.count(k) > 1})


def _check_schema_version(r: dict[str, Any]) -> tuple[bool, str]:
    v = r.get("schema_version")
    if isinstance(v, str) and SCHEMA_VERSION_RE.match(v):
        return True, f"schema {v}"
    return False, f"unsupported schema_version {v!r} (expected 1.x)"


def _check_json_schema(r: dict[str, Any]) -> tuple[bool, str]:
    errors = schema_errors(r)
    if not errors:
        return True, "valid against receipt.schema.json"
    shown = errors[:20]
    more = f" (+{len(errors) - 20} more)" if len(errors) > 20 else ""
    return False, f"{len(errors)} schema errors: " + "; ".join(shown) + more


def _check_compute_path(r: dict[str, Any]) -> tuple[bool, str]:
    cp = r.get("compute_path")
    return (cp == "real", f"compute_path is {cp!r}" + ("" if cp == "real" else " (must be 'real')"))


def _check_compute_path_derivation(r: dict[str, Any]) -> tuple[bool, str]:
    derived, reason = kid.derive_compute_path(_kernels(r))
    recorded = r.get("compute_path")
    if derived == recorded:
        return True, f"'{derived}' follows from the kernels: {reason}"
    return False, f"compute_path {recorded!r} but the kernels that ran say {derived!r}: {reason}"


def _check_kernel_hygiene(r: dict[str, Any]) -> tuple[bool, str]:
    kernels = r.get("kernels")
    if not isinstance(kernels, list) or not kernels:
        return False, "kernels must be a non-empty array"
    problems = []
    if len(kernels) > kid.MAX_KERNEL_ENTRIES:
        problems.append(f"{len(kernels)} entries (limit {kid.MAX_KERNEL_ENTRIES})")
    for k in kernels:
        if not isinstance(k, str):
            problems.append(f"non-string id {k!r}")
        elif not k.strip():
            problems.append("blank id")
        elif len(k) > kid.MAX_KERNEL_ID_LEN:
            problems.append(f"id longer than {kid.MAX_KERNEL_ID_LEN} chars: {k[:40]}...")
        elif not KERNEL_ID_RE.match(k):
            problems.append(f"id {k!r} is outside the kernel id grammar")
    if problems:
        return False, "; ".join(problems[:20])
    return True, f"{len(kernels)} kernel ids, all well-formed"


def _check_kernel_calls(r: dict[str, Any]) -> tuple[bool, str]:
    calls = r["kernel_calls"]
    kernels = _kernels(r)
    if sorted(set(kernels)) != sorted(calls):
        extra = sorted(set(kernels) - set(calls))
        missing = sorted(set(calls) - set(kernels))
        return False, f"kernels and kernel_calls disagree (listed without counts: {extra}; counted but unlisted: {missing})"
    quant_calls = sum(int(n) for k, n in calls.items() if kid.is_quantized_kernel(k))
    passes = int(r["run"].get("forward_passes") or r["run"]["runs"] * r["run"]["tokens_generated"])
    if quant_calls and quant_calls < passes:
        return False, f"{quant_calls} quantized matmul calls for {passes} forward passes (each pass needs at least one)"
    return True, f"{sum(calls.values())} kernel calls recorded, {quant_calls} quantized matmul calls over {passes} forward passes"


def _check_gpu_evidence(r: dict[str, Any], required: bool) -> tuple[bool, str] | None:
    backend = str(r.get("backend", "cpu")).lower()
    if not (required or backend == "cuda"):
        return None
    kernels = _kernels(r)
    gpu = [k for k in kernels if kid.is_gpu_kernel(k)]
    if not gpu:
        why = "--require-gpu-kernels" if required else "backend is cuda"
        return False, f"{why} but no GPU kernel ran (GPU ids start with cuda_, gemm_, wmma_, cublas_, cutlass_, tl*_gpu_)"
    problems = []
    if backend == "cuda" and not any(kid.is_gpu_quantized_kernel(k) for k in kernels):
        problems.append("no quantized matmul ran on the GPU")
    machine_gpu = (r.get("machine") or {}).get("gpu")
    if not machine_gpu:
        problems.append("machine.gpu is empty: no GPU was recorded")
    if problems:
        return False, "; ".join(problems)
    return True, f"GPU kernels ran: {', '.join(sorted(gpu))}"


def _check_cpu_quantized(r: dict[str, Any]) -> tuple[bool, str] | None:
    if str(r.get("backend", "cpu")).lower() != "cpu":
        return None
    kernels = _kernels(r)
    quant = [k for k in kernels if kid.is_cpu_quantized_kernel(k)]
    fallbacks = [k for k in kernels if kid.is_fallback_kernel(k)]
    if quant:
        note = f" (also {len(fallbacks)} fallback kernels: {', '.join(fallbacks)})" if fallbacks else ""
        return True, f"CPU quantized kernels ran: {', '.join(sorted(quant))}{note}"
    msg = "CPU backend verification failed: no quantized kernels found"
    if fallbacks:
        msg += f"; {len(fallbacks)} fallback patterns detected: {', '.join(fallbacks)}"
    return False, msg


def _check_quantization_claims(r: dict[str, Any]) -> tuple[bool, str]:
    kernels = _kernels(r)
    quant = [k for k in kernels if kid.is_quantized_kernel(k)]
    fallbacks = [k for k in kernels if kid.is_fallback_kernel(k)]
    problems = []
    if not quant and fallbacks:
        problems.append("the receipt claims quantized computation but only float fallback kernels ran")
    model_types = {t for t, n in r["model"]["tensor_types"].items() if int(n) > 0}
    ternary_in_model = sorted(t for t in model_types if t in kid.FORMAT_PREFIXES.values())
    ran_formats = {kid.kernel_format(k) for k in quant} - {None}
    for fmt in ternary_in_model:
        if fmt not in ran_formats:
            problems.append(f"the model has {fmt} tensors but no {fmt} kernel ran")
    for k in quant:
        fmt = kid.kernel_format(k)
        if fmt is not None and fmt not in model_types:
            problems.append(f"kernel {k} multiplies {fmt} weights but the model has no {fmt} tensors")
    if problems:
        return False, "; ".join(problems)
    return True, f"model ternary types {ternary_in_model} each ran their own kernels"


def _check_timing_consistency(r: dict[str, Any]) -> tuple[bool, str]:
    perf = r["performance"]
    problems = []
    for name in ("prefill_tokens_per_second", "decode_tokens_per_second", "decode_ms_per_token", "prefill_ms"):
        problems += [f"{name}: {p}" for p in summary_mismatches(perf[name])]
    # per-run rates are derived from the latency samples: recompute them exactly
    runs, steps = int(r["run"]["runs"]), int(r["run"]["tokens_generated"]) - 1
    n_prompt = len(r["run"]["prompt_tokens"])
    step_ms = perf["decode_ms_per_token"]["samples"]
    decode_tps = perf["decode_tokens_per_second"]["samples"]
    prefill_ms = perf["prefill_ms"]["samples"]
    prefill_tps = perf["prefill_tokens_per_second"]["samples"]
    if len(step_ms) != runs * steps or len(decode_tps) != runs or len(prefill_ms) != runs or len(prefill_tps) != runs:
        problems.append(f"sample counts do not match {runs} runs x {steps} decode steps")
    else:
        for i in range(runs):
            want = steps * 1000.0 / sum(step_ms[i * steps:(i + 1) * steps])
            if abs(decode_tps[i] - want) > 1e-6 * want:
                problems.append(f"run {i + 1}: decode {decode_tps[i]:.6g} tok/s but its step latencies give {want:.6g}")
            want = n_prompt * 1000.0 / prefill_ms[i]
            if abs(prefill_tps[i] - want) > 1e-6 * want:
                problems.append(f"run {i + 1}: prefill {prefill_tps[i]:.6g} tok/s but {prefill_ms[i]:.6g} ms gives {want:.6g}")
    if problems:
        return False, "; ".join(problems)
    return True, "every summary follows from its raw samples; tok/s and latencies agree"


def decode_rate_bound(r: dict[str, Any]) -> tuple[float, str]:
    """The largest believable decode tok/s for this model on the recorded machine, and how it was derived."""
    bytes_per_token = int(r["model"]["bytes_per_token"])
    if str(r.get("backend")).lower() == "cuda":
        bandwidth, where = GPU_BANDWIDTH, "GPU"
    else:
        cores = int((r.get("machine") or {}).get("cores_logical") or 1)
        bandwidth, where = max(CPU_BANDWIDTH_MIN, CPU_BANDWIDTH_PER_CORE * cores), f"CPU x{cores} cores"
    bound = PLAUSIBILITY_FACTOR * bandwidth / bytes_per_token
    how = f"{PLAUSIBILITY_FACTOR:g} x {bandwidth / 1e9:.0f} GB/s ({where}) / {bytes_per_token} bytes per token"
    return bound, how


def _check_decode_plausibility(r: dict[str, Any]) -> tuple[bool, str]:
    bound, how = decode_rate_bound(r)
    fastest = float(r["performance"]["decode_tokens_per_second"]["max"])
    if fastest > bound:
        return False, f"decode {fastest:.4g} tok/s exceeds the bandwidth bound {bound:.4g} tok/s = {how}"
    return True, f"decode max {fastest:.4g} tok/s within the bound {bound:.4g} tok/s ({how})"


def _check_output_consistency(r: dict[str, Any]) -> tuple[bool, str]:
    run, output = r["run"], r["output"]
    ids = output["token_ids"]
    problems = []
    if len(ids) != run["tokens_generated"]:
        problems.append(f"{len(ids)} token ids but tokens_generated={run['tokens_generated']}")
    if run["tokens_generated"] != run["tokens_requested"]:
        problems.append(f"generated {run['tokens_generated']} of {run['tokens_requested']} requested tokens")
    vocab = r["model"].get("vocab_size")
    if vocab and any(not 0 <= t < vocab for t in ids + run["prompt_tokens"]):
        problems.append(f"token ids outside the vocabulary (size {vocab})")
    if not r.get("deterministic"):
        problems.append("the runs did not reproduce each other (deterministic=false)")
    if problems:
        return False, "; ".join(problems)
    return True, f"{len(ids)} tokens generated as requested, identical in every run"
