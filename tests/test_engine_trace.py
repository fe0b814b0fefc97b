"""BITNET_TRACE_DIR: one JSONL record per stage, layer and token position, with hashes of the saved values."""

from __future__ import annotations

import json
from pathlib import Path

import blake3
import numpy as np
import pytest

from _paths import GOLDEN_DIR

GOLDEN = GOLDEN_DIR / "tiny-i2_s.gguf"
pytestmark = pytest.mark.skipif(not GOLDEN.is_file(), reason="golden model not present")


def test_trace_covers_every_stage_and_position(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bitnet.model import load_model
    from bitnet.model.trace import STAGES

    monkeypatch.setenv("BITNET_TRACE_DIR", str(tmp_path))
    monkeypatch.setenv("BITNET_TRACE_VALUES", "1")
    engine = load_model(GOLDEN)
    tokens = [510, 17, 256]
    logits = engine.prefill(tokens)
    engine.decode_step(99)
    engine.close()

    lines = (tmp_path / "trace.jsonl").read_text().splitlines()
    recs = [json.loads(line) for line in lines]
    assert all(set(r) == {"seq", "layer", "stage", "name", "shape", "dtype", "blake3", "rms", "num_elements"}
               for r in recs)
    seen = {(r["seq"], r["layer"], r["stage"]) for r in recs}
    n_layers = engine.config.n_layers
    for stage, per_layer in STAGES:
        for layer in range(n_layers) if per_layer else [-1]:
            # prefill evaluates the final norm and logits only for the last prompt position
            positions = [2, 3] if stage in ("final_norm", "logits") else [0, 1, 2, 3]
            for pos in positions:
                assert (pos, layer, stage) in seen, (pos, layer, stage)
    assert len(recs) == len(seen)  # exactly one record per (position, layer, stage)

    by_key = {(r["seq"], r["layer"], r["stage"]): r for r in recs}
    logit_rec = by_key[(2, -1, "logits")]
    assert logit_rec["shape"] == [engine.config.vocab_size]
    np.testing.assert_array_equal(np.load(tmp_path / "values" / "2_logits.npy"), logits)
    assert logit_rec["blake3"] == blake3.blake3(logits.astype(np.float32).tobytes()).hexdigest()
    scores = by_key[(3, 1, "attn_scores")]
    assert scores["shape"] == [engine.config.n_heads, 4]  # the decode step attends over 4 positions
    assert by_key[(0, 0, "q_rope")]["shape"] == [engine.config.n_heads, engine.config.head_dim]
    for r in recs:
        vals = np.load(tmp_path / "values" / f"{r['seq']}_{r['name']}.npy")
        assert blake3.blake3(vals.tobytes()).hexdigest() == r["blake3"]
        assert r["rms"] == pytest.approx(float(np.sqrt(np.mean(vals.astype(np.float64) ** 2))))


def test_no_trace_without_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bitnet.model import load_model

    monkeypatch.delenv("BITNET_TRACE_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    engine = load_model(GOLDEN)
    engine.prefill([1, 2])
    assert not engine.tracer.enabled and list(tmp_path.iterdir()) == []
