"""GGUF reader/writer: agreement with gguf-py, I2_S write/read identity, typed metadata, atomic writes."""

from __future__ import annotations

import gguf
import numpy as np
import pytest

from _paths import GOLDEN_DIR
from bitnet.errors import FormatError
from bitnet.formats.ggml_types import GGMLType, tensor_nbytes
from bitnet.formats.gguf_reader import dequantize, open_gguf
from bitnet.formats.gguf_writer import TensorSpec, Typed, ValueType, float_tensor, ternary_tensor, write_gguf
from bitnet.formats.ternary import absmean_ternarize
from bitnet.model.config import ModelConfig

GOLDEN = GOLDEN_DIR
needs_golden = pytest.mark.skipif(not GOLDEN.exists(), reason="golden bitnet.cpp files not present")


def test_tensor_nbytes():
    assert tensor_nbytes("i2_s", (2560, 6912)) == 2560 * 6912 // 4 + 32
    assert tensor_nbytes(GGMLType.TQ2_0, (256, 3)) == 3 * 66
    assert tensor_nbytes(GGMLType.TQ1_0, (512, 2)) == 4 * 54
    assert tensor_nbytes(GGMLType.F16, (7, 3)) == 42
    with pytest.raises(FormatError):
        tensor_nbytes(GGMLType.TQ2_0, (128, 2))  # ne0 not a multiple of 256
    with pytest.raises(FormatError):
        tensor_nbytes(99, (1,))


def test_i2s_written_file_reads_back_identically(tmp_path):
    rng = np.random.default_rng(1)
    w = rng.standard_normal((64, 256)).astype(np.float32)
    codes, scale = absmean_ternarize(w)
    emb = rng.standard_normal((32, 256)).astype(np.float16)
    specs = [
        float_tensor("token_embd.weight", emb, "f16"),
        ternary_tensor("blk.0.attn_q.weight", codes, scale, "i2_s"),
        ternary_tensor("blk.0.attn_k.weight", codes, scale, "tq2_0"),
        ternary_tensor("blk.0.attn_v.weight", codes, scale, "tq1_0"),
        float_tensor("blk.0.attn_norm.weight", np.linspace(0.9, 1.1, 256, dtype=np.float32)),
        float_tensor("bf", w[:2], "bf16"),
    ]
    md = {
        "general.name": "rt",
        "bitnet-b1.58.block_count": 1,
        "bitnet-b1.58.attention.layer_norm_rms_epsilon": 1e-5,
        "tokenizer.ggml.tokens": ["a", "b", "Ġc"],
        "tokenizer.ggml.token_type": [1, 1, 3],
        "tokenizer.ggml.add_bos_token": True,
        "x.i64": Typed(-(2**40), ValueType.INT64),
        "x.f64": Typed(0.1, ValueType.FLOAT64),
        "x.u8list": Typed([1, 2, 255], ValueType.UINT8),
    }
    path = write_gguf(tmp_path / "m.gguf", "bitnet-b1.58", md, specs)
    f = open_gguf(path)
    assert f.version == 3 and f.n_tensors == len(specs) and f.arch == "bitnet-b1.58"
    assert list(f.tensors) == [s.name for s in specs]
    for k, v in md.items():
        got = f.metadata[k]
        want = v.value if isinstance(v, Typed) else v
        assert got == pytest.approx(want) if isinstance(want, float) else got == want, k
    assert f.value_types["bitnet-b1.58.block_count"] == ValueType.UINT32
    assert f.value_types["bitnet-b1.58.attention.layer_norm_rms_epsilon"] == ValueType.FLOAT32
    q = f.tensors["blk.0.attn_q.weight"]
    assert q.type_name == "i2_s" and q.shape == (256, 64) and q.n_bytes == 64 * 256 // 4 + 32
    assert q.offset % 32 == 0
    for name in ("blk.0.attn_q.weight", "blk.0.attn_k.weight", "blk.0.attn_v.weight"):
        deq = dequantize(f.tensors[name])
        assert deq.shape == (64, 256)
        s = np.float16(scale).astype(np.float32) if "attn_q" not in name else scale
        assert np.array_equal(deq, codes.astype(np.float32) * s), name
    assert np.array_equal(dequantize(f.tensors["token_embd.weight"]), emb.astype(np.float32))
    bf = dequantize(f.tensors["bf"])
    assert np.allclose(bf, w[:2], rtol=2**-8)
    # the I2_S bytes on disk are exactly our packer's output
    from bitnet.formats.ternary import pack_i2s

    assert np.array_equal(np.asarray(q.data), pack_i2s(codes, scale))
    f.close()


def test_gguf_py_reads_our_non_i2s_files(tmp_path):
    rng = np.random.default_rng(2)
    codes = rng.integers(-1, 2, size=(8, 512)).astype(np.int8)
    specs = [ternary_tensor("w", codes, 0.5, "tq2_0"), float_tensor("n", np.ones(512, np.float32))]
    path = write_gguf(tmp_path / "t.gguf", "bitnet", {"bitnet.block_count": 1, "s": "x"}, specs)
    r = gguf.GGUFReader(path)
    assert r.fields["general.architecture"].contents() == "bitnet"
    assert r.fields["bitnet.block_count"].contents() == 1
    t = {t.name: t for t in r.tensors}
    assert t["w"].tensor_type == gguf.GGMLQuantizationType.TQ2_0
    ours = open_gguf(path)
    assert np.array_equal(np.asarray(t["w"].data).reshape(-1), np.asarray(ours.tensors["w"].data))


@needs_golden
def test_reader_agrees_with_gguf_py_on_golden_f32():
    path = GOLDEN / "tiny-f32.gguf"
    ours = open_gguf(path)
    ref = gguf.GGUFReader(path)
    assert ours.n_kv == len([k for k in ref.fields if not k.startswith("GGUF.")])
    for key, field in ref.fields.items():
        if key.startswith("GGUF."):
            continue
        want = field.contents()
        got = ours.metadata[key]
        assert (got == pytest.approx(want)) if isinstance(want, float) else got == want, key
    for t in ref.tensors:
        info = ours.tensors[t.name]
        assert info.offset == t.data_offset and info.n_bytes == t.n_bytes
        assert tuple(int(x) for x in t.shape) == info.shape
        assert np.array_equal(dequantize(info), np.asarray(t.data, dtype=np.float32).reshape(info.np_shape))


@needs_golden
def test_rewriting_microsofts_i2s_file_is_byte_identical(tmp_path):
    src = open_gguf(GOLDEN / "tiny-i2_s.gguf")
    specs = [TensorSpec(t.name, t.ggml_type, t.shape, t.data) for t in src.tensors.values()]
    md = {
        k: (v if isinstance(v, list) else Typed(v, src.value_types[k]))
        for k, v in src.metadata.items()
        if k != "general.architecture"
    }
    out = write_gguf(tmp_path / "copy.gguf", src.arch, md, specs)
    assert out.read_bytes() == (GOLDEN / "tiny-i2_s.gguf").read_bytes()


@needs_golden
def test_model_config_from_golden_gguf():
    f = open_gguf(GOLDEN / "tiny-i2_s.gguf")
    cfg = ModelConfig.from_gguf(f.metadata, f.tensors)
    assert (cfg.arch, cfg.hidden_size, cfg.n_layers, cfg.n_heads, cfg.n_kv_heads) == (
        "bitnet-b1.58",
        256,
        2,
        4,
        2,
    )
    assert (cfg.head_dim, cfg.ffn_size, cfg.vocab_size, cfg.context_length) == (64, 512, 512, 512)
    assert cfg.rope_theta == 500000.0 and cfg.rms_eps == pytest.approx(1e-5)
    assert cfg.ffn_act == "relu2" and cfg.tie_embeddings
    assert (cfg.bos_token_id, cfg.eos_token_id) == (510, 511)


def test_model_config_activation_by_arch_and_override():
    base = {
        "embedding_length": 256,
        "block_count": 2,
        "attention.head_count": 4,
        "attention.head_count_kv": 2,
        "feed_forward_length": 512,
        "context_length": 512,
        "vocab_size": 512,
    }
    for arch, act in [("bitnet", "silu"), ("bitnet-25", "relu2"), ("bitnet-b1.58", "relu2")]:
        md = {"general.architecture": arch, **{f"{arch}.{k}": v for k, v in base.items()}}
        assert ModelConfig.from_gguf(md).ffn_act == act
        md[f"{arch}.hidden_activation"] = "relu2" if act == "silu" else "silu"
        assert ModelConfig.from_gguf(md).ffn_act != act
    with pytest.raises(FormatError, match="lacks required key"):
        ModelConfig.from_gguf({"general.architecture": "bitnet", "bitnet.embedding_length": 256})
    with pytest.raises(FormatError, match="unsupported architecture"):
        ModelConfig.from_gguf({"general.architecture": "llama"})


def test_model_config_from_hf_bitnet_2b():
    cfg = ModelConfig.from_hf(
        {
            "architectures": ["BitNetForCausalLM"],
            "model_type": "bitnet",
            "hidden_act": "relu2",
            "hidden_size": 2560,
            "intermediate_size": 6912,
            "num_hidden_layers": 30,
            "num_attention_heads": 20,
            "num_key_value_heads": 5,
            "vocab_size": 128256,
            "rope_theta": 500000.0,
            "rms_norm_eps": 1e-5,
            "max_position_embeddings": 4096,
            "tie_word_embeddings": True,
            "bos_token_id": 128000,
            "eos_token_id": 128001,
        }
    )
    assert cfg.arch == "bitnet-b1.58" and cfg.ffn_act == "relu2" and cfg.head_dim == 128 and cfg.kv_dim == 640
    md = cfg.gguf_metadata()
    assert md["bitnet-b1.58.rope.dimension_count"] == 128 and md["bitnet-b1.58.feed_forward_length"] == 6912


def test_write_is_atomic_and_checks_producer_size(tmp_path):
    target = tmp_path / "bad.gguf"
    spec = TensorSpec("w", int(GGMLType.F32), (4,), lambda: np.zeros(3, np.float32))
    with pytest.raises(FormatError, match="produced 12 bytes"):
        write_gguf(target, "bitnet", {}, [spec])
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []  # no temp file left behind


def test_streamed_chunks(tmp_path):
    def chunks():
        for i in range(4):
            yield np.full(256, i, dtype=np.float32)

    path = write_gguf(
        tmp_path / "c.gguf", "bitnet", {}, [TensorSpec("w", int(GGMLType.F32), (256, 4), chunks)]
    )
    w = dequantize(open_gguf(path).tensors["w"])
    assert w.shape == (4, 256) and np.array_equal(w[:, 0], [0, 1, 2, 3])
