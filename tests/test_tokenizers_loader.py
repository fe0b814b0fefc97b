"""Tokenizer loading: GGUF gpt2 / llama (SPM) vocabularies, tokenizer.json preference and disagreement warning,
BOS/EOS metadata, and the BitNet chat template."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import pytest

from _paths import GOLDEN_DIR
from bitnet.errors import FormatError, NotFoundError, UsageError
from bitnet.tokenizers import load_tokenizer, render_bitnet_chat, tokenizer_from_gguf

GOLDEN = GOLDEN_DIR / "tiny-i2_s.gguf"


@pytest.mark.skipif(not GOLDEN.is_file(), reason="golden model not present")
def test_gguf_gpt2_vocabulary_round_trips_with_bos() -> None:
    tok = load_tokenizer(GOLDEN)
    assert (tok.source, tok.bos_id, tok.eos_id, tok.add_bos, tok.vocab_size) == ("gguf", 510, 511, True, 512)
    text = "Hello, wörld!\n  tabs\there 123"
    ids = tok.encode(text)
    assert ids[0] == 510 and tok.encode(text, add_bos=False) == ids[1:]
    assert tok.decode(ids) == text  # BOS is special and skipped
    assert tok.token_to_piece(ids[1]) == "H"


def test_fixture_tokenizer_json_matches_its_gguf_vocabulary(fixture_model) -> None:
    path = fixture_model(size="tiny", fmt="i2_s", arch="bitnet-b1.58", seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the two agree: no warning
        from_json = load_tokenizer(path)
    assert from_json.source == "tokenizer.json"
    from bitnet.formats.gguf_reader import open_gguf

    with open_gguf(path) as gf:
        from_gguf = tokenizer_from_gguf(gf.metadata)
    for text in ("the quick brown fox jumps", "Numbers 12345 and symbols #$%"):
        assert from_json.encode(text, add_bos=False) == from_gguf.encode(text).ids


@pytest.mark.skipif(not GOLDEN.is_file(), reason="golden model not present")
def test_disagreeing_tokenizer_json_warns_and_wins(tmp_path: Path, fixture_model) -> None:
    model = tmp_path / "model.gguf"
    shutil.copy(GOLDEN, model)
    other = fixture_model(size="tiny", fmt="i2_s", arch="bitnet-b1.58", seed=0)
    from bitnet.formats.fixtures import tokenizer_path_for

    shutil.copy(tokenizer_path_for(other), tmp_path / "tokenizer.json")
    with pytest.warns(UserWarning, match="disagree"):
        tok = load_tokenizer(model)
    assert tok.source == "tokenizer.json"
    assert tok.bos_id == 510  # special ids still come from the GGUF metadata


def _spm_metadata() -> dict:
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + ["▁", "▁hello", "▁world", "hel", "lo"]
    scores = [0.0, 0.0, 0.0] + [-100.0] * 256 + [-2.0, -1.0, -1.0, -5.0, -5.0]
    types = [2, 3, 3] + [6] * 256 + [1] * 5
    return {"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": tokens, "tokenizer.ggml.scores": scores,
            "tokenizer.ggml.token_type": types, "tokenizer.ggml.bos_token_id": 1, "tokenizer.ggml.eos_token_id": 2,
            "tokenizer.ggml.unknown_token_id": 0}  # fmt: skip


def test_llama_spm_vocabulary_with_byte_fallback() -> None:
    tk = tokenizer_from_gguf(_spm_metadata())
    enc = tk.encode("hello world")
    assert enc.tokens == ["▁hello", "▁world"]
    e = tk.encode("hello é")
    assert "<0xC3>" in e.tokens and "<0xA9>" in e.tokens
    assert tk.decode(e.ids) == "hello é"
    assert tk.decode(tk.encode("<s>").ids, skip_special_tokens=False) == "<s>"


def test_bad_vocabularies_are_format_errors() -> None:
    with pytest.raises(FormatError):
        tokenizer_from_gguf({"tokenizer.ggml.model": "rwkv", "tokenizer.ggml.tokens": ["a"]})
    md = _spm_metadata()
    md["tokenizer.ggml.scores"] = md["tokenizer.ggml.scores"][:-1]
    with pytest.raises(FormatError):
        tokenizer_from_gguf(md)
    with pytest.raises(FormatError):
        tokenizer_from_gguf({"tokenizer.ggml.model": "gpt2"})


def test_missing_tokenizer_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError):
        load_tokenizer(tmp_path / "nothing.bin")
    with pytest.raises(NotFoundError):
        load_tokenizer(tokenizer_json=tmp_path / "missing.json")


def test_bitnet_chat_template() -> None:
    assert render_bitnet_chat([{"role": "user", "content": "Hi"}]) == "User: Hi<|eot_id|>Assistant: "
    convo = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
             {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Bye"}]
    assert render_bitnet_chat(convo) == (
        "System: Be brief.<|eot_id|>User: Hi<|eot_id|>Assistant: Hello.<|eot_id|>User: Bye<|eot_id|>Assistant: "
    )
    with pytest.raises(UsageError):
        render_bitnet_chat([{"role": "tool", "content": "x"}])
