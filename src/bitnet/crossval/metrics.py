"""Per-position comparison of two logits matrices (ours vs the C++ reference).

All sums are taken in float64. Definitions (the report and docs/crossval.md use the same words):
- cosine: a·b / (|a||b|); 0.0 when either vector is all zeros (the seed's convention).
- l2: sqrt(Σ(a−b)²); max_abs: max|a−b|.
- nmse: Σ(a−b)² / Σb² with b the reference (0 when both are all zeros, inf when only b is).
- kl: KL(softmax(ref) ‖ softmax(ours)), stable softmax, probabilities clamped at 1e-10 (the seed's clamp).
- top1 / top5: whether the argmax agrees, and |top5(a) ∩ top5(b)| / 5 (ties broken by the lower index).
A position *diverges* when cosine < cos_tol (or the row lengths differ); the first such one is reported.
"""

from __future__ import annotations

from typing import Any

import numpy as np

KL_CLAMP = 1e-10


def _softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _topk(x: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest values per row, ties → lower index (stable sort of −x)."""
    return np.argsort(-x, axis=-1, kind="stable")[..., :k]


def compare_logits(ours: np.ndarray, ref: np.ndarray, cos_tol: float = 0.999) -> dict[str, Any]:
    """Compare [T, V] logits position by position; see the module docstring for the metric definitions."""
    a = np.atleast_2d(np.asarray(ours, dtype=np.float64))
    b = np.atleast_2d(np.asarray(ref, dtype=np.float64))
    n = min(a.shape[0], b.shape[0])
    positions: list[dict[str, Any]] = []
    first: int | None = None
    if a.shape[1] != b.shape[1]:
        # every position is a mismatch (the seed's rule: cosine 0, l2 inf)
        for i in range(n):
            positions.append({"pos": i, "cosine": 0.0, "l2": float("inf"), "max_abs": float("inf"),
                              "nmse": float("inf"), "kl": float("inf"), "top1": False, "top5": 0.0})  # fmt: skip
        first = 0 if n else None
        return _summary(positions, first, cos_tol, n, a.shape, b.shape)
    a, b = a[:n], b[:n]
    d = a - b
    dot = np.einsum("ij,ij->i", a, b)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        cos = np.where((na > 0) & (nb > 0), dot / (na * nb), 0.0)
        sq = np.einsum("ij,ij->i", d, d)
        ref_sq = np.einsum("ij,ij->i", b, b)
        nmse_row = np.where(ref_sq > 0, sq / ref_sq, np.where(sq > 0, np.inf, 0.0))
    p, q = np.clip(_softmax(b), KL_CLAMP, None), np.clip(_softmax(a), KL_CLAMP, None)
    kl = np.sum(p * (np.log(p) - np.log(q)), axis=1)
    top_a, top_b = _topk(a, 5), _topk(b, 5)
    for i in range(n):
        c = float(min(cos[i], 1.0))
        positions.append({
            "pos": i,
            "cosine": c,
            "l2": float(np.sqrt(sq[i])),
            "max_abs": float(np.max(np.abs(d[i]))) if d.shape[1] else 0.0,
            "nmse": float(nmse_row[i]),
            "kl": float(max(kl[i], 0.0)),
            "top1": bool(top_a[i, 0] == top_b[i, 0]),
            "top5": float(len(set(top_a[i].tolist()) & set(top_b[i].tolist())) / min(5, a.shape[1] or 1)),
        })  # fmt: skip
        if first is None and c < cos_tol:
            first = i
    res = _summary(positions, first, cos_tol, n, a.shape, b.shape)
    total_ref = float(np.sum(b * b))
    res["nmse"] = float(np.sum(d * d) / total_ref) if total_ref > 0 else (0.0 if not np.any(d) else float("inf"))
    return res


def _summary(positions: list[dict[str, Any]], first: int | None, cos_tol: float, n: int,
             shape_ours: tuple[int, ...], shape_ref: tuple[int, ...]) -> dict[str, Any]:  # fmt: skip
    def agg(key: str, fn: Any) -> float | None:
        vals = [p[key] for p in positions]
        return float(fn(vals)) if vals else None

    return {
        "positions": positions,
        "n_positions": n,
        "shape_ours": list(shape_ours),
        "shape_ref": list(shape_ref),
        "first_divergent_position": first,
        "cos_tol": cos_tol,
        "min_cosine": agg("cosine", min),
        "max_abs": agg("max_abs", max),
        "max_nmse": agg("nmse", max),
        "mean_kl": agg("kl", np.mean),
        "max_kl": agg("kl", max),
        "top1_agreement": agg("top1", np.mean),
        "top5_agreement": agg("top5", np.mean),
        "nmse": float("inf"),
        "ok": first is None and tuple(shape_ours[1:]) == tuple(shape_ref[1:]),
    }
