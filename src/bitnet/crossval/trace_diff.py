"""Compare two trace directories (ours vs the C++ reference) and find the first divergence in graph order.

Both sides write JSONL records `{seq, layer, stage, name, shape, dtype, blake3, rms, num_elements}` (one per token
position and stage; see `bitnet.model.trace`). Records are paired by (seq, layer, stage) and walked in forward
order: position by position, embeddings first, then layer by layer in the engine's stage order, then the final
norm and the logits. The first pair that differs is the divergence:

- a shape or element-count mismatch, or a stage present on one side only (reported, but only stages both sides
  traced decide the verdict: llama.cpp never exposes some of ours, e.g. pre-RoPE K in some generations);
- values: when both sides saved the row as `values/<seq>_<name>.npy`, the relative RMS of the difference
  ‖a−b‖/‖b‖ must be ≤ `rel_tol`; otherwise the rms statistics are compared with the same relative tolerance
  (identical blake3 hashes always match).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bitnet.errors import InvalidInputError, NotFoundError

Key = tuple[int, int, str]


@dataclass
class TraceSet:
    """The records of one trace directory, keyed by (seq, layer, stage); the last record of a key wins."""

    directory: Path
    records: dict[Key, dict[str, Any]] = field(default_factory=dict)
    skipped: int = 0

    def values(self, key: Key) -> np.ndarray | None:
        rec = self.records[key]
        p = self.directory / "values" / f"{rec['seq']}_{rec['name']}.npy"
        return np.load(p) if p.is_file() else None


def load_traces(directory: str | Path) -> TraceSet:
    """Read every `*.jsonl` (and single-record `*.trace`) file of a directory, one JSON object per line."""
    d = Path(directory)
    if not d.is_dir():
        raise NotFoundError(f"trace directory not found: {d}")
    files = sorted([*d.glob("*.jsonl"), *d.glob("*.trace")])
    if not files:
        raise NotFoundError(f"no *.jsonl or *.trace files in {d}")
    ts = TraceSet(d)
    for f in files:
        for ln, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InvalidInputError(f"{f}:{ln}: not JSON ({exc.msg}); traces must be one record per line") from exc
            if not all(k in rec for k in ("seq", "layer", "stage")):
                ts.skipped += 1
                continue
            ts.records[(int(rec["seq"]), int(rec["layer"]), str(rec["stage"]))] = rec
    return ts


def _graph_order(key: Key, stage_index: dict[str, int]) -> tuple[int, int, int]:
    seq, layer, stage = key
    if layer >= 0:
        block = layer
    else:
        block = -1 if stage == "embeddings" else 1 << 30
    return (seq, block, stage_index.get(stage, len(stage_index)))


def _stage_index() -> dict[str, int]:
    from bitnet.crossval.cpp_trace import stage_order

    return {s: i for i, s in enumerate(stage_order())}


def compare_pair(a: dict[str, Any], b: dict[str, Any], va: np.ndarray | None, vb: np.ndarray | None,
                 rel_tol: float) -> dict[str, Any]:  # fmt: skip
    """How one stage's record differs between ours (a) and the reference (b)."""
    shape_ok = list(a.get("shape", [])) == list(b.get("shape", [])) and a.get("num_elements") == b.get("num_elements")
    dtype_ok = a.get("dtype") == b.get("dtype")
    hash_ok = a.get("blake3") == b.get("blake3")
    out: dict[str, Any] = {"shapes_match": shape_ok, "dtypes_match": dtype_ok, "hashes_match": hash_ok,
                           "rms_ours": a.get("rms"), "rms_ref": b.get("rms")}  # fmt: skip
    if not shape_ok:
        out.update(ok=False, reason="shape mismatch", shape_ours=a.get("shape"), shape_ref=b.get("shape"))
        return out
    if hash_ok:
        out.update(ok=True, method="blake3", rel_rms_diff=0.0)
        return out
    if va is not None and vb is not None and va.shape == vb.shape:
        da, db = va.astype(np.float64), vb.astype(np.float64)
        diff_rms = float(np.sqrt(np.mean((da - db) ** 2))) if da.size else 0.0
        ref_rms = float(np.sqrt(np.mean(db**2))) if db.size else 0.0
        rel = diff_rms / ref_rms if ref_rms > 0 else (0.0 if diff_rms == 0 else math.inf)
        out.update(method="values", rms_diff=diff_rms, rel_rms_diff=rel, max_abs_diff=float(np.max(np.abs(da - db))))
    else:
        ra, rb = float(a.get("rms", 0.0)), float(b.get("rms", 0.0))
        rel = abs(ra - rb) / abs(rb) if rb else (0.0 if ra == rb else math.inf)
        out.update(method="rms", rms_diff=abs(ra - rb), rel_rms_diff=rel)
    out["ok"] = bool(out["rel_rms_diff"] <= rel_tol)
    if not out["ok"]:
        out["reason"] = f"values differ (relative rms of the difference {out['rel_rms_diff']:.3g} > {rel_tol:g})"
    return out


def diff_traces(ours_dir: str | Path, ref_dir: str | Path, *, rel_tol: float = 1e-3) -> dict[str, Any]:
    """The first divergent (seq, layer, stage) between two trace dirs, plus counts; see the module docstring."""
    ours, ref = load_traces(ours_dir), load_traces(ref_dir)
    idx = _stage_index()
    common = sorted(set(ours.records) & set(ref.records), key=lambda k: _graph_order(k, idx))
    only_ours = sorted(set(ours.records) - set(ref.records), key=lambda k: _graph_order(k, idx))
    only_ref = sorted(set(ref.records) - set(ours.records), key=lambda k: _graph_order(k, idx))
    first: dict[str, Any] | None = None
    worst = 0.0
    n_mismatch = 0
    shape_mismatches: list[dict[str, Any]] = []
    prev: tuple[Key, dict[str, Any]] | None = None
    for key in common:
        a, b = ours.records[key], ref.records[key]
        res = compare_pair(a, b, ours.values(key), ref.values(key), rel_tol)
        if not res["shapes_match"]:
            shape_mismatches.append({"seq": key[0], "layer": key[1], "stage": key[2],
                                     "shape_ours": a.get("shape"), "shape_ref": b.get("shape")})  # fmt: skip
        if not res["dtypes_match"]:
            res.setdefault("reason", "dtype mismatch")
        worst = max(worst, float(res.get("rel_rms_diff", 0.0) or 0.0)) if res["shapes_match"] else worst
        if not res["ok"]:
            n_mismatch += 1
            if first is None:
                first = {"seq": key[0], "layer": key[1], "stage": key[2], "name_ours": a.get("name"),
                         "name_ref": b.get("name"), **res}  # fmt: skip
                if prev is not None and prev[0][0] == key[0]:
                    # the tracepoint just before, which still matched: tells a rounding flip from a real bug
                    first["previous"] = {"layer": prev[0][1], "stage": prev[0][2],
                                         "rel_rms_diff": prev[1].get("rel_rms_diff")}  # fmt: skip
        prev = (key, res)
    return {
        "ours": str(ours.directory),
        "ref": str(ref.directory),
        "rel_tol": rel_tol,
        "n_compared": len(common),
        "n_mismatched": n_mismatch,
        "max_rel_rms_diff": worst,
        "first_divergence": first,
        "shape_mismatches": shape_mismatches[:20],
        "only_in_ours": [list(k) for k in only_ours[:20]],
        "only_in_ref": [list(k) for k in only_ref[:20]],
        "n_only_in_ours": len(only_ours),
        "n_only_in_ref": len(only_ref),
        "skipped_records": ours.skipped + ref.skipped,
        "ok": first is None and len(common) > 0,
    }


def format_diff(res: dict[str, Any]) -> str:
    """A human summary of `diff_traces`' result."""
    lines = [f"compared {res['n_compared']} tracepoints (rel tol {res['rel_tol']:g}); "
             f"only ours: {res['n_only_in_ours']}, only reference: {res['n_only_in_ref']}"]  # fmt: skip
    fd = res["first_divergence"]
    if res["n_compared"] == 0:
        lines.append("✗ no tracepoints in common: nothing to compare")
    elif fd is None:
        lines.append(f"✓ all tracepoints match (max relative rms difference {res['max_rel_rms_diff']:.3g})")
    else:
        lines.append(f"✗ first divergence: seq={fd['seq']} layer={fd['layer']} stage={fd['stage']} "
                     f"({fd.get('name_ours')} vs {fd.get('name_ref')}): {fd.get('reason')}")  # fmt: skip
        lines.append(f"  rms ours={fd.get('rms_ours')} ref={fd.get('rms_ref')} method={fd.get('method', 'shape')}")
        lines.append(f"  {res['n_mismatched']} of {res['n_compared']} tracepoints differ")
    for sm in res["shape_mismatches"][:5]:
        lines.append(f"  shape mismatch at seq={sm['seq']} layer={sm['layer']} stage={sm['stage']}: "
                     f"{sm['shape_ours']} vs {sm['shape_ref']}")  # fmt: skip
    return "\n".join(lines)
