"""Logits comparison metrics (bitnet.crossval.metrics): definitions, divergence detection, edge cases."""

from __future__ import annotations

import numpy as np
import pytest

from bitnet.crossval.metrics import compare_logits


def _rand(t: int = 6, v: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(t, v)).astype(np.float32)


def test_identical_logits_agree_everywhere():
    a = _rand()
    r = compare_logits(a, a.copy())
    assert r["ok"] and r["first_divergent_position"] is None
    assert r["nmse"] == 0.0 and r["max_abs"] == 0.0
    assert r["min_cosine"] == pytest.approx(1.0)
    assert r["top1_agreement"] == 1.0 and r["top5_agreement"] == 1.0
    assert all(p["kl"] == pytest.approx(0.0, abs=1e-12) for p in r["positions"])


def test_metrics_match_their_definitions():
    ref = _rand(seed=1)
    ours = ref + np.random.default_rng(2).normal(scale=0.01, size=ref.shape).astype(np.float32)
    r = compare_logits(ours, ref)
    a, b = ours.astype(np.float64), ref.astype(np.float64)
    assert r["nmse"] == pytest.approx(np.sum((a - b) ** 2) / np.sum(b**2), rel=1e-9)
    p0 = r["positions"][0]
    cos = a[0] @ b[0] / np.linalg.norm(a[0]) / np.linalg.norm(b[0])
    assert p0["cosine"] == pytest.approx(cos, rel=1e-12)
    assert p0["l2"] == pytest.approx(np.linalg.norm(a[0] - b[0]), rel=1e-9)
    assert p0["max_abs"] == pytest.approx(np.max(np.abs(a[0] - b[0])), rel=1e-9)
    pr = np.exp(b[0] - b[0].max())
    pr /= pr.sum()
    qo = np.exp(a[0] - a[0].max())
    qo /= qo.sum()
    assert p0["kl"] == pytest.approx(np.sum(pr * np.log(pr / qo)), rel=1e-6)


def test_first_divergent_position_honours_cos_tol():
    ref = _rand(t=8, seed=3)
    ours = ref.copy()
    ours[5] = -ours[5]  # cosine -1 at position 5
    ours[6] += 0.3 * np.random.default_rng(4).normal(size=ours.shape[1])  # mild at 6
    r = compare_logits(ours, ref, cos_tol=0.999)
    assert r["first_divergent_position"] == 5
    assert not r["ok"]
    assert r["positions"][5]["top1"] is False
    loose = compare_logits(ours[:5], ref[:5], cos_tol=0.999)
    assert loose["ok"]


def test_row_length_mismatch_is_a_divergence_at_zero():
    r = compare_logits(_rand(v=10), _rand(v=12))
    assert r["first_divergent_position"] == 0 and not r["ok"]
    assert r["positions"][0]["cosine"] == 0.0 and r["positions"][0]["l2"] == float("inf")


def test_zero_vector_cosine_is_zero_and_fewer_positions_compare_the_common_prefix():
    ref = _rand(t=4)
    ours = ref[:3].copy()
    ours[1] = 0.0
    r = compare_logits(ours, ref)
    assert r["n_positions"] == 3
    assert r["positions"][1]["cosine"] == 0.0
    assert r["first_divergent_position"] == 1


def test_top5_ties_break_to_the_lower_index():
    ref = np.zeros((1, 10), dtype=np.float32)
    ref[0, [2, 7]] = 1.0
    ours = ref.copy()
    r = compare_logits(ours, ref)
    assert r["positions"][0]["top1"] is True and r["positions"][0]["top5"] == 1.0
