"""Summaries of raw timing samples. Receipts keep the samples, so every summary can be recomputed and checked."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

#: relative tolerance when re-deriving a summary from its samples (JSON round-trips floats exactly; this is slack
#: for other writers that round)
SUMMARY_RTOL = 1e-6


def summarize(samples: Sequence[float], unit: str) -> dict[str, Any]:
    """median, mean, stdev (None for one sample), min, max, n and the samples themselves."""
    if not samples:
        raise ValueError("cannot summarize an empty sample list")
    values = [float(v) for v in samples]
    return {
        "median": statistics.median(values),
        "mean": statistics.fmean(values),
        "stdev": statistics.stdev(values) if len(values) > 1 else None,
        "min": min(values),
        "max": max(values),
        "n": len(values),
        "unit": unit,
        "samples": values,
    }


def summary_mismatches(stat: dict[str, Any]) -> list[str]:
    """Fields of a summary that do not follow from its own samples (an edited median shows up here)."""
    samples = stat.get("samples") or []
    if not samples:
        return ["no samples"]
    expected = summarize(samples, str(stat.get("unit", "")))
    problems = []
    for key in ("median", "mean", "min", "max", "n"):
        got, want = stat.get(key), expected[key]
        if not isinstance(got, (int, float)) or abs(float(got) - float(want)) > SUMMARY_RTOL * max(abs(want), 1e-12):
            problems.append(f"{key}={got!r} but the samples give {want!r}")
    return problems
