"""HF checkpoint → GGUF: float and packed-uint8 weights, every outtype, embedded tokenizer, CLI, inspect."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from _paths import GOLDEN_DIR
from bitnet.cli.app import run_cli
from bitnet.cli.bitnet_cmd import cli as bitnet_cli
from bitnet.cli.xtask import cli as xtask_cli
from bitnet.errors import FormatError
from bitnet.formats.convert import convert_checkpoint, detect_pre_tokenizer, pack_hf, unpack_hf_packed
from bitnet.formats.fixtures import tokenizer_path_for
from bitnet.formats.gguf_reader import dequantize, open_gguf
from bitnet.formats.mapper import mapper_gate, to_gguf, to_hf, to_internal
from bitnet.formats.ternary import absmean_ternarize, ternarize, unpack_ternary
from bitnet.model.config import ModelConfig

PROJ = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")


def hf_config(cfg: ModelConfig) -> dict:
    return {
        "architectures": ["BitNetForCausalLM"], "model_type": "bitnet", "hidden_act": "relu2",
        "hidden_size": cfg.hidden_size, "intermediate_size": cfg.ffn_size, "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads, "num_key_value_heads": cfg.n_kv_heads, "vocab_size": cfg.vocab_size,
        "rope_theta": cfg.rope_theta, "rms_norm_eps": cfg.rms_eps, "max_position_embeddings": cfg.context_length,
        "tie_word_embeddings": True, "bos_token_id": cfg.bos_token_id, "eos_token_id": cfg.eos_token_id,
    }  # fmt: skip


def make_hf_folder(fixture_gguf: Path, dest: Path, packed: bool) -> dict[str, np.ndarray]:
    """An HF BitNet folder built from a generated f32 fixture; returns the float weights by GGUF name."""
    f = open_gguf(fixture_gguf)
    cfg = ModelConfig.from_gguf(f.metadata, f.tensors)
    dest.mkdir(parents=True)
    (dest / "config.json").write_text(json.dumps(hf_config(cfg)))
    shutil.copy(tokenizer_path_for(fixture_gguf), dest / "tokenizer.json")
    tensors: dict[str, np.ndarray] = {}
    floats: dict[str, np.ndarray] = {}
    for name, info in f.tensors.items():
        w = dequantize(info)
        floats[name] = w
        hf = to_hf(name)
        assert hf is not None, name
        if packed and name.split(".")[-2] in PROJ:
            codes, scale = absmean_ternarize(w)
            tensors[hf] = pack_hf(codes)
            tensors[hf + "_scale"] = np.array([np.float32(1.0) / scale], dtype=np.float32)  # a divisor in HF
        else:
            tensors[hf] = np.ascontiguousarray(w)
    save_file(tensors, str(dest / "model.safetensors"))
    return floats


@pytest.fixture(scope="module")
def hf_float_dir(fixture_model, tmp_path_factory):
    src = fixture_model("tiny", "f32", "bitnet-b1.58")
    d = tmp_path_factory.mktemp("hf") / "bitnet-tiny-hf"
    return d, make_hf_folder(src, d, packed=False)


@pytest.mark.parametrize("outtype", ["i2_s", "tq1_0", "tq2_0", "f16", "f32"])
def test_convert_float_checkpoint(hf_float_dir, tmp_path, outtype):
    src, floats = hf_float_dir
    out = convert_checkpoint(src, tmp_path / f"m-{outtype}.gguf", outtype)
    f = open_gguf(out)
    cfg = ModelConfig.from_gguf(f.metadata, f.tensors)
    assert cfg == ModelConfig.from_hf(json.loads((src / "config.json").read_text()))
    assert mapper_gate(out)["ok"] and f.n_tensors == 24
    assert f.metadata["tokenizer.ggml.pre"] == "gpt-2" and len(f.metadata["tokenizer.ggml.tokens"]) == 512
    assert f.tensors["token_embd.weight"].type_name == ("f32" if outtype == "f32" else "f16")
    for name, w in floats.items():
        info = f.tensors[name]
        got = dequantize(info)
        if name.split(".")[-2] in PROJ:
            codes, scale = ternarize(w)
            assert scale == np.float32(np.abs(w).max())  # already ternary: exact scale, not mean|W|
            assert info.type_name == outtype
            if outtype in ("tq1_0", "tq2_0"):
                c, d = unpack_ternary(outtype, info.data, info.n_elements)
                assert np.array_equal(c.reshape(w.shape), codes)
                assert np.all(d == np.float16(scale).astype(np.float32))
            else:
                want = (codes.astype(np.float32) * scale).astype(
                    np.float16 if outtype == "f16" else np.float32
                )
                assert np.array_equal(got, want.astype(np.float32)), name
        elif name == "token_embd.weight":
            assert np.array_equal(got, w)  # F16 in the fixture already
        else:
            assert info.type_name == "f32" and np.array_equal(got, w)


def test_convert_packed_checkpoint_matches_transformers(fixture_model, tmp_path):
    src = tmp_path / "packed"
    floats = make_hf_folder(fixture_model("tiny", "f32", "bitnet-b1.58"), src, packed=True)
    out = convert_checkpoint(src, tmp_path / "p.gguf", "i2_s")
    f = open_gguf(out)
    for name, w in floats.items():
        if name.split(".")[-2] not in PROJ:
            continue
        codes, scale = absmean_ternarize(w)
        c, s = unpack_ternary("i2_s", f.tensors[name].data, w.size)
        assert np.array_equal(c.reshape(w.shape), codes)
        assert s[0] == np.float32(np.float32(1.0) / (np.float32(1.0) / scale))


@pytest.mark.hf
def test_hf_packing_agrees_with_transformers():
    torch = pytest.importorskip("torch")
    from transformers.integrations.bitnet import pack_weights, unpack_weights

    rng = np.random.default_rng(0)
    codes = rng.integers(-1, 2, size=(16, 24)).astype(np.int8)
    ours = pack_hf(codes)
    theirs = pack_weights(torch.from_numpy(codes.astype(np.float32)).clone()).numpy()
    assert np.array_equal(ours, theirs)
    assert np.array_equal(
        unpack_hf_packed(ours), unpack_weights(torch.from_numpy(ours), torch.float32).numpy()
    )


def test_convert_bf16_checkpoint(fixture_model, tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file as save_torch

    src = tmp_path / "bf16"
    floats = make_hf_folder(fixture_model("tiny", "f32", "bitnet-b1.58"), src, packed=False)
    from safetensors.numpy import load_file

    arrays = load_file(str(src / "model.safetensors"))
    save_torch(
        {k: torch.from_numpy(v).to(torch.bfloat16) for k, v in arrays.items()}, str(src / "model.safetensors")
    )
    out = convert_checkpoint(src, tmp_path / "b.gguf", "tq2_0")
    f = open_gguf(out)
    w_bf16 = torch.from_numpy(floats["blk.0.ffn_up.weight"]).to(torch.bfloat16).float().numpy()
    codes, _ = ternarize(w_bf16)
    c, _ = unpack_ternary("tq2_0", f.tensors["blk.0.ffn_up.weight"].data, w_bf16.size)
    assert np.array_equal(c.reshape(w_bf16.shape), codes)
    norm = dequantize(f.tensors["blk.0.attn_norm.weight"])
    assert np.array_equal(
        norm, torch.from_numpy(floats["blk.0.attn_norm.weight"]).to(torch.bfloat16).float().numpy()
    )


def test_convert_rejects_unknown_tensors_and_bad_shapes(hf_float_dir, tmp_path):
    src, _ = hf_float_dir
    bad = tmp_path / "bad"
    shutil.copytree(src, bad)
    from safetensors.numpy import load_file

    arrays = load_file(str(bad / "model.safetensors"))
    arrays["model.layers.0.mlp.mystery.weight"] = np.zeros(4, np.float32)
    save_file(arrays, str(bad / "model.safetensors"))
    with pytest.raises(FormatError, match="no GGUF name"):
        convert_checkpoint(bad, tmp_path / "x.gguf", "i2_s")
    (bad / "model.safetensors").write_bytes(b"\xff" * 16)
    with pytest.raises(FormatError):
        convert_checkpoint(bad, tmp_path / "x.gguf", "i2_s")


def test_convert_and_inspect_cli(hf_float_dir, tmp_path, capsys):
    src, _ = hf_float_dir
    out = tmp_path / "cli.gguf"
    for cli in (bitnet_cli, xtask_cli):  # the same function behind both entry points
        assert (
            run_cli(cli, ["convert", str(src), "--outtype", "tq2_0", "--out", str(out), "--format", "json"])
            == 0
        )
        res = json.loads(capsys.readouterr().out)
        assert res["path"] == str(out) and res["tensor_types"]["tq2_0"]["count"] == 14
    assert run_cli(bitnet_cli, ["inspect", str(out), "--format", "json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["arch"] == "bitnet-b1.58" and info["config"]["ffn_act"] == "relu2"
    assert info["tokenizer"]["n_tokens"] == 512 and info["tokenizer"]["bos"]["text"] == "<|begin_of_text|>"
    assert len(info["sha256"]) == 64 and len(info["tensors"]) == 24
    assert run_cli(bitnet_cli, ["inspect", str(out)]) == 0
    assert "tq2_0" in capsys.readouterr().out
    (tmp_path / "junk.gguf").write_bytes(b"not a model at all, definitely not")
    assert run_cli(bitnet_cli, ["inspect", str(tmp_path / "junk.gguf"), "--format", "json"]) == 18


def test_mapper_names_round_trip_and_aliases():
    assert to_internal("blk.3.attn_sub_norm.weight") == "layers.3.attention.sub_layernorm.weight"
    assert (
        to_internal("model.layers.3.self_attn.inner_attn_ln.weight")
        == "layers.3.attention.sub_layernorm.weight"
    )
    assert (
        to_internal("model.layers.0.mlp.ffn_layernorm.weight") == "layers.0.feed_forward.sub_layernorm.weight"
    )
    assert to_internal("blk.0.ffn_down.scale") == "layers.0.feed_forward.down_proj.scale"
    assert to_internal("layers.1.attention.wq.weight") == "layers.1.attention.q_proj.weight"
    assert to_internal("token_embd.weight") == "embed_tokens.weight"
    assert to_internal("output_norm.weight") == "final_norm.weight"
    assert to_internal("blk.0.attn_qq.weight") is None and to_internal("rope_freqs.weight") is None
    for g in ("blk.7.ffn_gate.weight", "token_embd.weight", "output.weight", "blk.0.attn_output.weight"):
        assert to_gguf(to_hf(g)) == g and to_gguf(to_internal(g)) == g


def test_detect_pre_tokenizer():
    assert detect_pre_tokenizer({"pre_tokenizer": {"type": "ByteLevel", "use_regex": True}}) == "gpt-2"
    llama3 = {"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {
        "Regex": "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+"}}, {"type": "ByteLevel"}]}  # fmt: skip
    assert detect_pre_tokenizer({"pre_tokenizer": llama3}) == "llama-bpe"
    with pytest.raises(FormatError):
        detect_pre_tokenizer({"pre_tokenizer": {"type": "Metaspace"}})


def test_ternarize_is_exact_on_ternary_and_absmean_otherwise():
    rng = np.random.default_rng(3)
    t = rng.integers(-1, 2, size=(8, 128)).astype(np.int8)
    codes, s = ternarize(t.astype(np.float32) * np.float32(0.037))
    assert np.array_equal(codes, t) and s == np.float32(0.037)
    w = rng.standard_normal((8, 128)).astype(np.float32)
    c1, s1 = ternarize(w)
    c2, s2 = absmean_ternarize(w)
    assert np.array_equal(c1, c2) and s1 == s2


GOLDEN = GOLDEN_DIR


@pytest.mark.skipif(not GOLDEN.exists(), reason="golden bitnet.cpp files not present")
def test_requantize_f32_gguf_reproduces_llama_quantize_byte_for_byte(tmp_path, capsys):
    """`convert tiny-f32.gguf --outtype i2_s` must equal Microsoft's `llama-quantize ... I2_S 1` output, except
    the 28 unused tail bytes of each I2_S tensor (uninitialized memory in llama-quantize)."""
    out = tmp_path / "tiny-i2_s.gguf"
    code = run_cli(bitnet_cli, ["convert", str(GOLDEN / "tiny-f32.gguf"), "--outtype", "i2_s", "--out", str(out),
                                "--format", "json"])  # fmt: skip
    assert code == 0 and json.loads(capsys.readouterr().out)["tensor_types"]["i2_s"]["count"] == 14
    ours, theirs = bytearray(out.read_bytes()), bytearray((GOLDEN / "tiny-i2_s.gguf").read_bytes())
    assert len(ours) == len(theirs)
    for t in open_gguf(GOLDEN / "tiny-i2_s.gguf").tensors.values():
        if t.type_name == "i2_s":
            start, end = t.offset + t.n_elements // 4 + 4, t.offset + t.n_bytes
            ours[start:end] = theirs[start:end]
    assert ours == theirs


def test_requantize_to_tq_keeps_codes(fixture_model, tmp_path):
    src = fixture_model("tiny", "i2_s", "bitnet-b1.58")
    out = run_cli(bitnet_cli, ["convert", str(src), "--outtype", "tq1_0", "--out", str(tmp_path / "t.gguf")])
    assert out == 0
    a, b = open_gguf(src), open_gguf(tmp_path / "t.gguf")
    assert (
        b.metadata["general.file_type"] == 36
        and b.metadata["tokenizer.ggml.tokens"] == a.metadata["tokenizer.ggml.tokens"]
    )
    for name, info in a.tensors.items():
        if info.type_name == "i2_s":
            ca, _ = unpack_ternary("i2_s", info.data, info.n_elements)
            cb, _ = unpack_ternary("tq1_0", b.tensors[name].data, info.n_elements)
            assert np.array_equal(ca, cb), name
        else:
            assert np.array_equal(np.asarray(info.data), np.asarray(b.tensors[name].data)), name
