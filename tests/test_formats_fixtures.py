"""Fixture generator: real (non-trivial) weights, deterministic bytes, embedded tokenizer, mapper gate."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from tokenizers import Tokenizer

from bitnet.cli.app import run_cli
from bitnet.cli.xtask import cli
from bitnet.errors import UsageError
from bitnet.formats import fixtures
from bitnet.formats.gguf_reader import dequantize, open_gguf
from bitnet.formats.gguf_writer import TensorSpec, Typed, write_gguf
from bitnet.formats.ternary import unpack_ternary
from bitnet.model.config import ModelConfig


@pytest.mark.parametrize("fmt", ["i2_s", "tq1_0", "tq2_0", "f32"])
def test_tiny_fixture_is_a_real_model(fixture_model, fmt):
    path = fixture_model("tiny", fmt, "bitnet-b1.58")
    f = open_gguf(path)
    cfg = ModelConfig.from_gguf(f.metadata, f.tensors)
    assert cfg == fixtures.fixture_config("tiny", "bitnet-b1.58")
    assert f.n_tensors == 1 + 11 * cfg.n_layers + 1
    assert "output.weight" not in f.tensors and cfg.tie_embeddings
    q = f.tensors["blk.0.attn_q.weight"]
    assert q.type_name == fmt and q.shape == (256, 256)
    k = f.tensors["blk.1.attn_k.weight"]
    assert k.shape == (256, cfg.kv_dim)
    # ternary projections with a realistic per-tensor scale, not zeros
    scales = []
    for name in ("blk.0.attn_q.weight", "blk.0.ffn_down.weight", "blk.1.ffn_up.weight"):
        info = f.tensors[name]
        w = dequantize(info)
        n_in = info.shape[0]
        s = float(np.abs(w).max())
        assert 0.75 / np.sqrt(2 / 3 * n_in) < s < 1.3 / np.sqrt(2 / 3 * n_in)
        vals = np.unique(np.round(w / s).astype(int))
        assert vals.tolist() == [-1, 0, 1]
        assert 0.25 < float(np.mean(w == 0)) < 0.42
        if fmt != "f32":
            codes, _ = unpack_ternary(fmt, info.data, info.n_elements)
            assert np.array_equal(codes.reshape(w.shape).astype(np.float32) * s, w)
        scales.append(s * np.sqrt(n_in))
    assert len(set(np.round(scales, 5))) == 3  # varied per tensor
    norm = dequantize(f.tensors["blk.0.attn_norm.weight"])
    assert norm.dtype == np.float32 and norm.min() >= 0.8 and norm.max() <= 1.2 and norm.std() > 0.05
    emb = f.tensors["token_embd.weight"]
    assert emb.type_name == "f16" and emb.shape == (256, 512)
    e = dequantize(emb)
    assert abs(e.std() - 2 / 16) < 0.01 and abs(e.mean()) < 0.01


def test_same_seed_same_bytes_and_different_seed_differs(tmp_path):
    a = fixtures.generate_fixture("tiny", "tq2_0", "bitnet", tmp_path / "a", seed=7)
    b = fixtures.generate_fixture("tiny", "tq2_0", "bitnet", tmp_path / "b", seed=7)
    c = fixtures.generate_fixture("tiny", "tq2_0", "bitnet", tmp_path / "c", seed=8)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()
    assert fixtures.tokenizer_path_for(a).read_text() == fixtures.tokenizer_path_for(b).read_text()


def test_same_bytes_in_a_fresh_process(tmp_path, fixture_model):
    """The tokenizer is cached in-process; a new process must train the very same vocabulary."""
    ours = fixture_model("tiny", "i2_s", "bitnet-b1.58", seed=0)
    code = (
        "import sys; from bitnet.formats.fixtures import generate_fixture, sha256_file;"
        "print(sha256_file(generate_fixture('tiny', 'i2_s', 'bitnet-b1.58', sys.argv[1], 0)))"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == fixtures.sha256_file(ours)


def test_embedded_tokenizer_matches_tokenizer_json(fixture_model):
    path = fixture_model("tiny", "tq2_0", "bitnet")
    md = open_gguf(path).metadata
    tok = Tokenizer.from_file(str(fixtures.tokenizer_path_for(path)))
    assert md["tokenizer.ggml.model"] == "gpt2" and md["tokenizer.ggml.pre"] == "gpt-2"
    assert md["tokenizer.ggml.add_bos_token"] is True
    tokens = md["tokenizer.ggml.tokens"]
    assert len(tokens) == tok.get_vocab_size() == 512
    assert all(tokens[i] == tok.id_to_token(i) for i in range(512))
    assert tokens[md["tokenizer.ggml.bos_token_id"]] == "<|begin_of_text|>"
    assert tokens[md["tokenizer.ggml.eos_token_id"]] == "<|end_of_text|>"
    assert tokens[md["tokenizer.ggml.eot_token_id"]] == "<|eot_id|>"
    assert md["tokenizer.ggml.token_type"][-3:] == [3, 3, 3]
    merges = json.loads(tok.to_str())["model"]["merges"]
    assert md["tokenizer.ggml.merges"] == [" ".join(m) if isinstance(m, list) else m for m in merges]
    enc = tok.encode("The river in winter is quiet.")
    assert enc.ids[0] == md["tokenizer.ggml.bos_token_id"]
    assert len(enc.ids) < len("The river in winter is quiet.")  # merges actually compress text
    assert tok.decode(enc.ids) == "The river in winter is quiet."


def test_scale_tensors_for_arch_bitnet(fixture_model):
    path = fixture_model("tiny", "tq2_0", "bitnet", scale_tensors=True)
    f = open_gguf(path)
    s = f.tensors["blk.0.attn_q.scale"]
    assert s.type_name == "f32" and s.shape == (1,)
    assert 0.8 <= float(dequantize(s)[0]) <= 1.25
    assert ModelConfig.from_gguf(f.metadata).ffn_act == "silu"
    assert f.metadata["bitnet.attention.layer_norm_rms_epsilon"] == pytest.approx(1e-5)
    assert f.metadata["bitnet.rope.dimension_count"] == 64
    with pytest.raises(UsageError):
        fixtures.generate_fixture("tiny", "tq2_0", "bitnet-b1.58", ".", 0, scale_tensors=True)


def test_mapper_gate_passes_on_fixtures_and_fails_on_renamed_tensor(fixture_model, tmp_path, capsys):
    for args in [("tiny", "i2_s", "bitnet-b1.58"), ("tiny", "tq2_0", "bitnet"), ("tiny", "f32", "bitnet-b1.58")]:
        code = run_cli(cli, ["gate", "mapper", "--model", str(fixture_model(*args)), "--format", "json"])
        report = json.loads(capsys.readouterr().out)
        assert code == 0 and report["ok"] and report["unmapped_count"] == 0
        assert report["counts"]["n_tensors"] == 24
    scaled = fixture_model("tiny", "tq2_0", "bitnet", scale_tensors=True)
    assert run_cli(cli, ["gate", "mapper", "--model", str(scaled)]) == 0
    assert json.loads(capsys.readouterr().out)["ok"]  # text mode prints the same JSON object

    src = open_gguf(fixture_model("tiny", "tq2_0", "bitnet"))
    specs = [
        TensorSpec(n.replace("blk.1.ffn_up", "blk.1.ffn_upp"), t.ggml_type, t.shape, t.data)
        for n, t in src.tensors.items()
    ]
    md = {k: v if isinstance(v, list) else Typed(v, src.value_types[k]) for k, v in src.metadata.items()}
    bad = write_gguf(tmp_path / "renamed.gguf", src.arch, md, specs)
    code = run_cli(cli, ["gate", "mapper", "--model", str(bad), "--format", "json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 1
    assert report == {
        "schema_version": "1.0",
        "name": "mapper",
        "model": str(bad),
        "ok": False,
        "unmapped_count": 1,
        "sample_unmapped": ["blk.1.ffn_upp.weight"],
        "counts": {"n_kv": src.n_kv, "n_tensors": 24},
    }


def test_gen_fixtures_cli_json(tmp_path, capsys):
    code = run_cli(cli, ["gen-fixtures", "--size", "tiny", "--format", "tq1_0", "--format", "json",
                         "--arch", "bitnet", "--out", str(tmp_path), "--seed", "5"])  # fmt: skip
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    (fx,) = out["fixtures"]
    assert fx["path"] == str(tmp_path / "bitnet-tiny-tq1_0-bitnet.gguf")
    assert fx["fmt"] == "tq1_0" and fx["arch"] == "bitnet" and len(fx["sha256"]) == 64
    assert fx["sha256"] == fixtures.sha256_file(tmp_path / "bitnet-tiny-tq1_0-bitnet.gguf")
    assert fx["shapes"]["token_embd.weight"] == [256, 512]
    assert (tmp_path / "bitnet-tiny-tq1_0-bitnet.tokenizer.json").exists()


def test_fixture_config_2b_shapes():
    cfg = fixtures.fixture_config("2b")
    assert (cfg.hidden_size, cfg.n_layers, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim) == (2560, 30, 20, 5, 128)
    assert (cfg.ffn_size, cfg.vocab_size, cfg.rope_theta, cfg.context_length) == (6912, 128256, 500000.0, 4096)
    specs = fixtures.fixture_tensors(cfg, "i2_s", 0)
    assert len(specs) == 332  # the official 2B-4T tensor count
    total = sum(s.n_bytes for s in specs)
    assert 1.1e9 < total < 1.25e9
