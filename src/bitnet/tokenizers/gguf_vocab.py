"""Build a Hugging Face `tokenizers.Tokenizer` from a GGUF-embedded vocabulary (`tokenizer.ggml.*`).

- `gpt2` (byte-level BPE, also Llama-3 / BitNet-2B-4T): tokens + merges → `models.BPE`, ByteLevel pre-tokenizer and
  decoder. `tokenizer.ggml.pre` = `llama-bpe`/`llama3`/... selects the Llama-3 split regex instead of GPT-2's.
- `llama` (SentencePiece): tokens + scores → `models.Unigram` with byte fallback and the `▁` metaspace, which is
  how sentencepiece itself segments with those scores.

Token types 3 (control) and 4 (user-defined) become special added tokens, so `<|eot_id|>` in a chat template
encodes to its id.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

from bitnet.errors import FormatError

#: Llama-3's pre-tokenizer split pattern (tokenizer.json of Meta-Llama-3 / BitNet-b1.58-2B-4T)
LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)
_LLAMA3_PRE = {"llama-bpe", "llama3", "llama-v3", "smaug-bpe", "dbrx"}
CONTROL, USER_DEFINED = 3, 4


def _special_tokens(tokens: list[str], types: list[int] | None) -> list[AddedToken]:
    if not types:
        return []
    return [AddedToken(tok, special=True, normalized=False) for tok, t in zip(tokens, types, strict=False)
            if t in (CONTROL, USER_DEFINED)]


def tokenizer_from_gguf(metadata: Mapping[str, Any]) -> Tokenizer:
    """A `tokenizers.Tokenizer` equivalent to the GGUF's vocabulary. FormatError if it has none we support."""
    model = metadata.get("tokenizer.ggml.model")
    tokens = metadata.get("tokenizer.ggml.tokens")
    if not isinstance(tokens, list) or not tokens:
        raise FormatError("GGUF has no tokenizer.ggml.tokens")
    types = metadata.get("tokenizer.ggml.token_type")
    if model == "gpt2":
        merges_raw = metadata.get("tokenizer.ggml.merges") or []
        merges = []
        for m in merges_raw:
            parts = m.split(" ")
            if len(parts) != 2:
                raise FormatError(f"tokenizer.ggml.merges: malformed merge {m!r}")
            merges.append((parts[0], parts[1]))
        vocab = {tok: i for i, tok in enumerate(tokens)}
        # llama.cpp tolerates merges whose parts or result are not tokens (it falls back to bytes); the
        # `tokenizers` BPE refuses them, and they can never fire anyway, so drop them.
        merges = [(a, b) for a, b in merges if a in vocab and b in vocab and a + b in vocab]
        tk = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, ignore_merges=False))
        if str(metadata.get("tokenizer.ggml.pre", "")).lower() in _LLAMA3_PRE:
            tk.pre_tokenizer = pre_tokenizers.Sequence(
                [
                    pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated"),
                    pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
                ]
            )
        else:
            tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        tk.decoder = decoders.ByteLevel()
    elif model == "llama":
        scores = metadata.get("tokenizer.ggml.scores")
        if not isinstance(scores, list) or len(scores) != len(tokens):
            raise FormatError("SentencePiece GGUF vocabulary needs tokenizer.ggml.scores, one per token")
        unk = metadata.get("tokenizer.ggml.unknown_token_id", 0)
        tk = Tokenizer(
            models.Unigram([(t, float(s)) for t, s in zip(tokens, scores, strict=True)], unk_id=int(unk),
                           byte_fallback=True)
        )
        tk.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
        tk.pre_tokenizer = None
        tk.decoder = decoders.Sequence(
            [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
        )
    else:
        raise FormatError(f"unsupported GGUF tokenizer model {model!r} (supported: gpt2, llama)")
    specials = _special_tokens(tokens, types if isinstance(types, list) else None)
    if specials:
        tk.add_special_tokens(specials)
    return tk
