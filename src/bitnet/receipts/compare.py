"""compare-metrics: did the current build regress against a baseline?

A metric counts as a regression only when all three hold (the asv / pyperf rules, see ecosystem.md §3):
  1. it moved in the *worse* direction (tok/s down, latency up) by more than its threshold (default 5%);
  2. the move is larger than the noise floor (default 1%), so tiny timings never trip the gate;
  3. when both sides carry raw samples (>= MIN_SAMPLES each), a one-sided Mann-Whitney U test finds the shift
     significant (p < alpha). Without samples only rules 1-2 apply, and the result says so.
Runs from different machines or environments are refused unless forced: a number from another host is not a
baseline.

Inputs: benchmark receipts (`receipt_type: bitnet.benchmark`) or a plain metrics file:
  {"metrics": {name: number | [samples] | {"value"|"median", "samples", "direction": "higher"|"lower", "unit"}},
   "machine": {...}, "environment": {...}}   (the seed's {device, model, metrics:{tok_s, latency_p95_ms, ...}} too)
"""

from __future__ import annotations

import hashlib
import json
import re
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bitnet.errors import CheckCouldNotRun, InvalidInputError, NotFoundError, UsageError

DEFAULT_THRESHOLD_PCT = 5.0
DEFAULT_NOISE_FLOOR_PCT = 1.0
DEFAULT_ALPHA = 0.01
#: fewer samples than this per side give the rank test no power (n=m=3 cannot reach p < 0.05)
MIN_SAMPLES = 5

#: receipt metrics and the direction in which they get better
RECEIPT_METRICS: dict[str, str] = {
    "decode_tokens_per_second": "higher",
    "prefill_tokens_per_second": "higher",
    "decode_ms_per_token": "lower",
    "prefill_ms": "lower",
}


#: engine description fields that must match for two receipts to be comparable
NUMERICS_KEYS = ("profile", "ffn_act", "kv_dtype", "numerics", "activation_dtype", "backend")


@dataclass
class Metric:
    name: str
    value: float
    direction: str  # "higher" or "lower" is better
    unit: str = ""
    samples: list[float] | None = None


@dataclass
class MetricsDoc:
    """One side of the comparison: its metrics plus what identifies the machine and the workload."""

    name: str
    metrics: dict[str, Metric]
    machine: dict[str, Any] | None
    environment: dict[str, Any] | None


@dataclass
class MetricComparison:
    name: str
    direction: str
    unit: str
    baseline: float
    current: float
    delta_pct: float
    threshold_pct: float
    noise_floor_pct: float
    p_value: float | None
    test: str
    verdict: str  # regression | improvement | stable | noise


def parse_percent(text: str | float) -> float:
    """'5%', '5' → 5.0 (percent). Fractions like 0.05 are taken as 0.05 %, so always write the % sign."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*%?\s*", str(text))
    if not m:
        raise UsageError(f"not a percentage: {text!r} (write e.g. 5%)")
    return float(m.group(1))


def direction_for(name: str) -> str:
    """Which way is better, from the metric name (the seed's heuristic, extended)."""
    n = name.lower()
    if any(s in n for s in ("tok_s", "tokens_per_second", "per_sec", "throughput", "acc", "tps")):
        return "higher"
    return "lower"  # latency, ms, ppl, memory: smaller is better


def _metric(name: str, raw: Any) -> Metric:
    if isinstance(raw, bool):
        raise InvalidInputError(f"metric {name!r}: a boolean is not a measurement")
    if isinstance(raw, (int, float)):
        return Metric(name, float(raw), direction_for(name))
    if isinstance(raw, list):
        samples = [float(v) for v in raw]
        if not samples:
            raise InvalidInputError(f"metric {name!r}: empty sample list")
        return Metric(name, statistics.median(samples), direction_for(name), samples=samples)
    if isinstance(raw, dict):
        samples = [float(v) for v in raw.get("samples") or []] or None
        value = raw.get("median", raw.get("value"))
        if value is None and samples:
            value = statistics.median(samples)
        if not isinstance(value, (int, float)):
            raise InvalidInputError(f"metric {name!r}: no numeric value/median")
        direction = raw.get("direction") or direction_for(name)
        if direction not in ("higher", "lower"):
            raise InvalidInputError(f"metric {name!r}: direction must be 'higher' or 'lower'")
        return Metric(name, float(value), direction, str(raw.get("unit", "")), samples)
    raise InvalidInputError(f"metric {name!r}: unsupported value {raw!r}")


def load_metrics(path: str | Path) -> MetricsDoc:
    p = Path(path)
    if not p.is_file():
        raise NotFoundError(f"metrics file not found: {p}")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInputError(f"{p}: not valid JSON ({exc})") from exc
    if isinstance(data, list):
        return metrics_from_llama_bench(data, name=str(p))
    if not isinstance(data, dict):
        raise InvalidInputError(f"{p}: expected a JSON object (or llama-bench's JSON array)")
    return metrics_from_document(data, name=str(p))


#: llama-bench row fields that identify the machine / the workload (llama.cpp's compare-llama-bench KEY_PROPERTIES)
LLAMA_BENCH_MACHINE = ("cpu_info", "gpu_info", "backends")
LLAMA_BENCH_WORKLOAD = ("model_type", "model_size", "n_threads", "n_gpu_layers", "n_batch", "n_ubatch", "type_k",
                        "type_v", "flash_attn")


def metrics_from_llama_bench(rows: list[Any], name: str = "") -> MetricsDoc:
    """llama-bench `-o json` output: one metric per test (`pp512_tok_s`, `tg128_tok_s`) from `samples_ts`."""
    if not rows or not all(isinstance(r, dict) and "samples_ts" in r for r in rows):
        raise InvalidInputError(f"{name}: a JSON array must be llama-bench -o json output (rows with samples_ts)")
    metrics: dict[str, Metric] = {}
    for r in rows:
        n_prompt, n_gen = int(r.get("n_prompt", 0)), int(r.get("n_gen", 0))
        key = f"pp{n_prompt}_tok_s" if n_gen == 0 else f"tg{n_gen}_tok_s" if n_prompt == 0 else f"pp{n_prompt}tg{n_gen}_tok_s"
        metrics[key] = _metric(key, {"samples": r["samples_ts"], "unit": "tok/s", "direction": "higher"})
    first = rows[0]
    return MetricsDoc(name, metrics, {k: first.get(k) for k in LLAMA_BENCH_MACHINE},
                      {k: first.get(k) for k in LLAMA_BENCH_WORKLOAD})


def metrics_from_document(data: dict[str, Any], name: str = "") -> MetricsDoc:
    if data.get("receipt_type") == "bitnet.benchmark":
        return _from_receipt(data, name)
    raw_metrics = data.get("metrics")
    if not isinstance(raw_metrics, dict) or not raw_metrics:
        raise InvalidInputError(f"{name}: neither a benchmark receipt nor a file with a 'metrics' object")
    metrics = {k: _metric(k, v) for k, v in raw_metrics.items() if v is not None}
    machine = data.get("machine") or data.get("device")
    environment = data.get("environment")
    if environment is None and "model" in data:
        environment = {"model": data["model"]}
    return MetricsDoc(name, metrics, machine, environment)


def _from_receipt(r: dict[str, Any], name: str) -> MetricsDoc:
    perf = r.get("performance") or {}
    metrics = {}
    for key, direction in RECEIPT_METRICS.items():
        stat = perf.get(key)
        if isinstance(stat, dict):
            m = _metric(key, stat)
            m.direction = direction
            metrics[key] = m
    machine = r.get("machine") or {}
    run = r.get("run") or {}
    environment = {
        "model_sha256": (r.get("model") or {}).get("sha256"),
        "backend": r.get("backend"),
        "threads": (r.get("environment") or {}).get("threads"),
        # the numerics that define the workload; not the kernel choice, which is what a new build may change
        "numerics": {k: ((r.get("engine") or {}).get("numerics") or {}).get(k) for k in NUMERICS_KEYS},
        "prompt_tokens": len(run.get("prompt_tokens") or []),
        "tokens": run.get("tokens_requested"),
    }
    return MetricsDoc(name, metrics, {"fingerprint": machine.get("fingerprint")}, environment)


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _differences(a: dict[str, Any] | None, b: dict[str, Any] | None, what: str) -> list[str]:
    if a is None or b is None:
        return []
    keys = sorted(set(a) | set(b))
    return [f"{what}.{k}: {a.get(k)!r} != {b.get(k)!r}" for k in keys if _digest(a.get(k)) != _digest(b.get(k))]


def _robust_test(base: list[float], cur: list[float], direction: str) -> float:
    from scipy.stats import mannwhitneyu

    # H1: current is worse. For "higher is better" that means current samples are stochastically smaller.
    alternative = "less" if direction == "higher" else "greater"
    return float(mannwhitneyu(cur, base, alternative=alternative).pvalue)


def compare_one(
    base: Metric, cur: Metric, threshold_pct: float, noise_floor_pct: float, alpha: float
) -> MetricComparison:
    if base.value == 0:
        delta_pct = 0.0 if cur.value == 0 else float("inf")
    else:
        delta_pct = (cur.value - base.value) / abs(base.value) * 100.0
    worse_pct = -delta_pct if base.direction == "higher" else delta_pct
    p_value: float | None = None
    test = "threshold only (no samples)"
    if base.samples and cur.samples:
        if len(base.samples) >= MIN_SAMPLES and len(cur.samples) >= MIN_SAMPLES:
            p_value = _robust_test(base.samples, cur.samples, base.direction)
            if worse_pct < 0:  # improvement: test the other tail
                flipped = "lower" if base.direction == "higher" else "higher"
                p_value = _robust_test(base.samples, cur.samples, flipped)
            test = f"mann-whitney-u one-sided, alpha={alpha:g}"
        else:
            test = f"threshold only (fewer than {MIN_SAMPLES} samples per side)"
    beyond = abs(worse_pct) > threshold_pct and abs(worse_pct) > noise_floor_pct
    significant = p_value is None or p_value < alpha
    if beyond and significant:
        verdict = "regression" if worse_pct > 0 else "improvement"
    elif beyond:
        verdict = "noise"
    else:
        verdict = "stable"
    return MetricComparison(
        base.name, base.direction, base.unit or cur.unit, base.value, cur.value, delta_pct, threshold_pct,
        noise_floor_pct, p_value, test, verdict,
    )


def compare_metrics(
    baseline: MetricsDoc,
    current: MetricsDoc,
    *,
    threshold_pct: float = DEFAULT_THRESHOLD_PCT,
    metric_thresholds: dict[str, float] | None = None,
    noise_floor_pct: float = DEFAULT_NOISE_FLOOR_PCT,
    alpha: float = DEFAULT_ALPHA,
    force: bool = False,
) -> dict[str, Any]:
    """Compare every metric present on both sides. Raises CheckCouldNotRun for incomparable inputs."""
    differences = _differences(baseline.machine, current.machine, "machine") + _differences(
        baseline.environment, current.environment, "environment"
    )
    warnings = []
    if baseline.machine is None or current.machine is None:
        warnings.append("one side does not record its machine: cannot confirm the runs are comparable")
    if differences and not force:
        raise CheckCouldNotRun(
            "refusing to compare runs from different machines or environments: " + "; ".join(differences),
            hint="re-run the baseline on this machine, or pass --force to compare anyway",
        )
    common = [k for k in baseline.metrics if k in current.metrics]
    if not common:
        raise CheckCouldNotRun(
            f"no metric in common (baseline: {sorted(baseline.metrics)}, current: {sorted(current.metrics)})"
        )
    overrides = metric_thresholds or {}
    unknown = sorted(set(overrides) - set(common))
    if unknown:
        warnings.append(f"thresholds given for metrics not compared: {unknown}")
    rows = [
        compare_one(baseline.metrics[k], current.metrics[k], overrides.get(k, threshold_pct), noise_floor_pct, alpha)
        for k in common
    ]
    regressions = [r.name for r in rows if r.verdict == "regression"]
    return {
        "baseline": baseline.name,
        "current": current.name,
        "has_regressions": bool(regressions),
        "regressions": regressions,
        "improvements": [r.name for r in rows if r.verdict == "improvement"],
        "forced": bool(differences and force),
        "differences": differences,
        "warnings": warnings,
        "metrics": [asdict(r) for r in rows],
    }


def markdown_table(result: dict[str, Any]) -> str:
    """A GitHub-flavoured table for a CI comment."""
    icon = {"regression": "❌ regression", "improvement": "✅ improvement", "stable": "stable", "noise": "noise (n.s.)"}
    lines = [
        f"**compare-metrics**: {'regression detected' if result['has_regressions'] else 'no regression'}",
        "",
        "| metric | better | baseline | current | Δ% | threshold | p-value | verdict |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for m in result["metrics"]:
        p = "—" if m["p_value"] is None else f"{m['p_value']:.3g}"
        unit = f" {m['unit']}" if m["unit"] else ""
        lines.append(
            f"| {m['name']} | {m['direction']} | {m['baseline']:.4g}{unit} | {m['current']:.4g}{unit} | "
            f"{m['delta_pct']:+.2f} | {m['threshold_pct']:g}% | {p} | {icon[m['verdict']]} |"
        )
    for w in result["warnings"] + result["differences"]:
        lines.append(f"\n> {w}")
    return "\n".join(lines) + "\n"
