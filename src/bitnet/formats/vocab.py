"""Byte-level BPE vocabularies: train the fixtures' tokenizer, and turn any HF `tokenizer.json` into GGUF keys.

Why: test models must carry a real tokenizer that both our loader (from tokenizer.json or from the GGUF) and
upstream llama.cpp (`tokenizer.ggml.model = gpt2`, `pre = gpt-2`: the GPT-2 regex, same as HF's ByteLevel) read
identically, so tokenization parity can be tested without downloading anything. The training corpus ships in
`bitnet/formats/data/` and training is deterministic (same corpus + size → same merges).
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

from bitnet.errors import FormatError

BOS = "<|begin_of_text|>"
EOS = "<|end_of_text|>"
EOT = "<|eot_id|>"
SPECIALS = (BOS, EOS, EOT)

# llama.cpp token types (llama_token_type)
TOKEN_NORMAL, TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_USER_DEFINED, TOKEN_UNUSED, TOKEN_BYTE = 1, 2, 3, 4, 5, 6


def corpus_text() -> str:
    """The English text shipped with the package (self-written and public-domain), concatenated."""
    data = resources.files("bitnet.formats") / "data"
    parts = sorted((p for p in data.iterdir() if p.name.endswith(".txt")), key=lambda p: p.name)
    if not parts:
        raise FormatError("the fixture corpus (bitnet/formats/data/*.txt) is missing from the installation")
    return "\n\n".join(p.read_text(encoding="utf-8") for p in parts)


@functools.lru_cache(maxsize=8)
def train_fixture_tokenizer_json(vocab_size: int) -> str:
    """A GPT-2-style byte-level BPE of exactly `vocab_size` tokens, as tokenizer.json text.

    Layout: BPE tokens trained on the corpus (bytes first, then merges), then unreachable filler tokens
    `<|reserved_N|>` if the corpus cannot supply enough merges (the 2B-4T shape needs 128256 ids), then the three
    specials `<|begin_of_text|>` (bos), `<|end_of_text|>` (eos), `<|eot_id|>` at the last three ids. A BOS
    post-processor mirrors Llama-3's tokenizer.json, matching `tokenizer.ggml.add_bos_token = true`.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    n_bpe = vocab_size - len(SPECIALS)
    if n_bpe < 256:
        raise FormatError(
            f"vocab size {vocab_size} is too small for a byte-level BPE (needs >= {256 + len(SPECIALS)})"
        )
    trainer_tok = Tokenizer(models.BPE())
    trainer_tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    trainer = trainers.BpeTrainer(
        vocab_size=n_bpe,
        min_frequency=1,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    trainer_tok.train_from_iterator([corpus_text()], trainer)
    model = json.loads(trainer_tok.to_str())["model"]
    vocab: dict[str, int] = dict(model["vocab"])
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ", 1)) for m in model["merges"]]
    for i in range(n_bpe - len(vocab)):
        vocab[f"<|reserved_{i}|>"] = len(vocab)

    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(list(SPECIALS))
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(
                single=f"{BOS}:0 $A:0", pair=f"{BOS}:0 $A:0 {BOS}:1 $B:1", special_tokens=[(BOS, bos_id)]
            ),
        ]
    )
    if tok.get_vocab_size() != vocab_size:
        raise FormatError(
            f"internal error: built a vocabulary of {tok.get_vocab_size()} tokens, wanted {vocab_size}"
        )
    return tok.to_str(pretty=False)


def gguf_tokenizer_metadata(
    tokenizer_json: str | dict[str, Any],
    *,
    bos_token: str | None = None,
    eos_token: str | None = None,
    eot_token: str | None = None,
    add_bos: bool = True,
    pre: str = "gpt-2",
    vocab_size: int | None = None,
) -> dict[str, Any]:
    """GGUF `tokenizer.ggml.*` keys (gpt2 BPE) for a byte-level BPE tokenizer.json.

    Token ids come from the model vocab plus `added_tokens` (specials → CONTROL, others → USER_DEFINED, filler
    `<|reserved_N|>` → UNUSED). `vocab_size` pads with unused tokens when the model's embedding is larger than the
    tokenizer (common for Llama-3 style checkpoints). bos/eos default to the fixtures' specials if present.
    """
    data = json.loads(tokenizer_json) if isinstance(tokenizer_json, str) else tokenizer_json
    model = data.get("model") or {}
    if model.get("type") not in (None, "BPE") or "vocab" not in model:
        raise FormatError(f"tokenizer.json: only BPE models are supported, got {model.get('type')!r}")
    id_to_tok: dict[int, str] = {int(i): t for t, i in model["vocab"].items()}
    types: dict[int, int] = {}
    for added in data.get("added_tokens") or []:
        i = int(added["id"])
        id_to_tok[i] = added["content"]
        types[i] = TOKEN_CONTROL if added.get("special") else TOKEN_USER_DEFINED
    n = max(id_to_tok) + 1 if id_to_tok else 0
    if vocab_size is not None:
        if vocab_size < n:
            raise FormatError(f"tokenizer has {n} tokens but the model's vocab is only {vocab_size}")
        n = vocab_size
    tokens, token_type = [], []
    for i in range(n):
        t = id_to_tok.get(i)
        if t is None:
            tokens.append(f"[PAD{i}]")
            token_type.append(TOKEN_UNUSED)
            continue
        tokens.append(t)
        default = TOKEN_UNUSED if t.startswith("<|reserved_") else TOKEN_NORMAL
        token_type.append(types.get(i, default))
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges") or []]
    lookup = {t: i for i, t in enumerate(tokens)}

    def token_id(explicit: str | None, fallback: str) -> int | None:
        name = explicit if explicit is not None else fallback
        return lookup.get(name)

    md: dict[str, Any] = {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": pre,
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": token_type,
        "tokenizer.ggml.merges": merges,
    }
    for key, explicit, fallback in (
        ("bos", bos_token, BOS),
        ("eos", eos_token, EOS),
        ("eot", eot_token, EOT),
    ):
        tid = token_id(explicit, fallback)
        if tid is None and explicit is not None:
            raise FormatError(f"tokenizer.json has no token {explicit!r} for {key}")
        if tid is not None:
            md[f"tokenizer.ggml.{key}_token_id"] = tid
    md["tokenizer.ggml.add_bos_token"] = bool(add_bos)
    md["tokenizer.ggml.add_eos_token"] = False
    return md
