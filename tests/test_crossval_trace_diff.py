"""trace-diff (library, `xtask trace-diff`, scripts/trace_diff.py) on synthetic trace directories."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import blake3
import numpy as np
import pytest

from bitnet.cli.app import run_cli
from bitnet.cli.xtask import cli
from bitnet.crossval.trace_diff import diff_traces
from bitnet.errors import InvalidInputError, NotFoundError

REPO = Path(__file__).resolve().parents[1]
STAGES = ("attn_norm", "q", "attn_sub_norm", "ffn_norm", "ffn_sub_norm", "layer_out")


def _write(d: Path, values: dict[tuple[int, int, str], np.ndarray], *, save_values: bool = True) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "values").mkdir(exist_ok=True)
    with open(d / "trace.jsonl", "w") as fh:
        for (seq, layer, stage), row in values.items():
            row = np.ascontiguousarray(row, dtype=np.float32)
            name = f"{stage}-{layer}" if layer >= 0 else stage
            fh.write(json.dumps({"seq": seq, "layer": layer, "stage": stage, "name": name, "shape": list(row.shape),
                                 "dtype": "f32", "blake3": blake3.blake3(row.tobytes()).hexdigest(),
                                 "rms": float(np.sqrt(np.mean(row.astype(np.float64) ** 2))),
                                 "num_elements": int(row.size)}) + "\n")
            if save_values:
                np.save(d / "values" / f"{seq}_{name}.npy", row)
    return d


def _trace(seed: int = 0) -> dict[tuple[int, int, str], np.ndarray]:
    rng = np.random.default_rng(seed)
    vals = {}
    for seq in range(3):
        vals[(seq, -1, "embeddings")] = rng.normal(size=16)
        for layer in range(2):
            for st in STAGES:
                vals[(seq, layer, st)] = rng.normal(size=16)
        vals[(seq, -1, "final_norm")] = rng.normal(size=16)
        vals[(seq, -1, "logits")] = rng.normal(size=32)
    return vals


def test_identical_traces_match(tmp_path):
    v = _trace()
    res = diff_traces(_write(tmp_path / "a", v), _write(tmp_path / "b", v))
    assert res["ok"] and res["first_divergence"] is None
    assert res["n_compared"] == len(v) and res["max_rel_rms_diff"] == 0.0


def test_small_float_noise_is_within_tolerance_but_a_real_change_is_not(tmp_path):
    v = _trace()
    noisy = {k: x + 1e-7 * np.abs(x).max() for k, x in v.items()}
    assert diff_traces(_write(tmp_path / "a", noisy), _write(tmp_path / "b", v))["ok"]
    bad = dict(v)
    bad[(1, 1, "ffn_norm")] = v[(1, 1, "ffn_norm")] * 1.5
    res = diff_traces(_write(tmp_path / "c", bad), _write(tmp_path / "b", v))
    assert not res["ok"] and res["n_mismatched"] == 1
    fd = res["first_divergence"]
    assert (fd["seq"], fd["layer"], fd["stage"]) == (1, 1, "ffn_norm")
    assert fd["method"] == "values" and fd["rel_rms_diff"] == pytest.approx(0.5, rel=1e-5)
    assert fd["previous"]["stage"] == "attn_sub_norm"


def test_first_divergence_is_in_graph_order_not_alphabetical(tmp_path):
    v = _trace()
    bad = dict(v)
    # later in the graph but alphabetically earlier ("attn_norm" < "ffn_sub_norm"): layer 1 vs layer 0
    bad[(0, 1, "attn_norm")] = v[(0, 1, "attn_norm")] + 1.0
    bad[(0, 0, "ffn_sub_norm")] = v[(0, 0, "ffn_sub_norm")] + 1.0
    bad[(2, -1, "embeddings")] = v[(2, -1, "embeddings")] + 1.0
    res = diff_traces(_write(tmp_path / "a", bad), _write(tmp_path / "b", v))
    fd = res["first_divergence"]
    assert (fd["seq"], fd["layer"], fd["stage"]) == (0, 0, "ffn_sub_norm")
    assert res["n_mismatched"] == 3


def test_shape_mismatch_and_rms_fallback_without_values(tmp_path):
    v = _trace()
    other = dict(v)
    other[(0, 0, "q")] = np.concatenate([v[(0, 0, "q")], [0.0]])
    res = diff_traces(_write(tmp_path / "a", other, save_values=False), _write(tmp_path / "b", v, save_values=False))
    assert res["first_divergence"]["reason"] == "shape mismatch"
    assert res["shape_mismatches"][0]["stage"] == "q"
    scaled = dict(v)
    scaled[(2, 0, "layer_out")] = v[(2, 0, "layer_out")] * 1.01
    res = diff_traces(_write(tmp_path / "c", scaled, save_values=False), _write(tmp_path / "b", v, save_values=False))
    assert res["first_divergence"]["method"] == "rms"
    assert res["first_divergence"]["stage"] == "layer_out"


def test_one_sided_stages_are_reported_not_fatal(tmp_path):
    v = _trace()
    ours = dict(v)
    ours[(0, 0, "ffn_act")] = np.ones(16)
    res = diff_traces(_write(tmp_path / "a", ours), _write(tmp_path / "b", v))
    assert res["ok"] and res["n_only_in_ours"] == 1 and res["only_in_ours"] == [[0, 0, "ffn_act"]]


def test_missing_or_bad_directories_raise_typed_errors(tmp_path):
    with pytest.raises(NotFoundError):
        diff_traces(tmp_path / "nope", tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(NotFoundError):
        diff_traces(tmp_path / "empty", tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "t.jsonl").write_text("{not json\n")
    with pytest.raises(InvalidInputError):
        diff_traces(tmp_path / "bad", tmp_path / "bad")


def test_cli_and_script_exit_codes(tmp_path, capsys):
    v = _trace()
    bad = dict(v)
    bad[(0, 0, "q")] = v[(0, 0, "q")] * 2
    a, b, c = _write(tmp_path / "a", v), _write(tmp_path / "b", v), _write(tmp_path / "c", bad)
    assert run_cli(cli, ["trace-diff", str(a), str(b), "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["schema_version"] and out["ok"] is True
    assert run_cli(cli, ["trace-diff", str(c), str(b)]) == 1
    assert "first divergence: seq=0 layer=0 stage=q" in capsys.readouterr().out
    assert run_cli(cli, ["trace-diff", str(tmp_path / "missing"), str(b)]) == 20
    script = REPO / "scripts" / "trace_diff.py"
    ok = subprocess.run([sys.executable, str(script), str(a), str(b)], capture_output=True, text=True)
    assert ok.returncode == 0 and "all tracepoints match" in ok.stdout
    div = subprocess.run([sys.executable, str(script), str(c), str(b), "--json"], capture_output=True, text=True)
    assert div.returncode == 1 and json.loads(div.stdout)["first_divergence"]["stage"] == "q"
