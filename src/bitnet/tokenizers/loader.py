"""One tokenizer interface over `tokenizer.json` files and GGUF-embedded vocabularies.

Source preference: an explicit `tokenizer_json`, else `<model stem>.tokenizer.json` or `tokenizer.json` next to the
model file, else the GGUF's own vocabulary. When both a tokenizer.json and a GGUF vocabulary exist, both are built and compared on probe strings; a
disagreement is reported with `warnings.warn` (shown on stderr), since it usually means the wrong tokenizer file.

BOS/EOS ids and add_bos come from the GGUF metadata when there is one, else from a `tokenizer_config.json` next to
the tokenizer.json, else from well-known special-token names.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer as HFTokenizer

from bitnet.errors import FormatError, NotFoundError
from bitnet.tokenizers.chat import EOT, render_bitnet_chat
from bitnet.tokenizers.gguf_vocab import tokenizer_from_gguf

PROBES = ("Hello, world! The quick brown fox.", "  tabs\tand\nnewlines 12345 ünïcödé", "User: hi<|eot_id|>")
_BOS_NAMES = ("<|begin_of_text|>", "<s>", "<|startoftext|>", "<|endoftext|>")
_EOS_NAMES = ("<|end_of_text|>", "</s>", "<|endoftext|>", "<|eot_id|>")


class Tokenizer:
    """Text ↔ token ids, special ids and the chat template. `source` is "tokenizer.json" or "gguf"."""

    def __init__(
        self, tk: HFTokenizer, *, source: str, bos_id: int | None, eos_id: int | None, add_bos: bool
    ) -> None:
        self._tk = tk
        self.source = source
        self.bos_id = bos_id
        self.eos_id = eos_id
        self.add_bos = add_bos and bos_id is not None
        self.eot_id = tk.token_to_id(EOT)

    @property
    def vocab_size(self) -> int:
        return int(self._tk.get_vocab_size(with_added_tokens=True))

    def encode(self, text: str, add_bos: bool | None = None) -> list[int]:
        ids = list(self._tk.encode(text, add_special_tokens=False).ids)
        if (self.add_bos if add_bos is None else add_bos) and self.bos_id is not None:
            ids.insert(0, self.bos_id)
        return ids

    def decode(self, ids: Sequence[int], skip_special: bool = True) -> str:
        return self._tk.decode(list(ids), skip_special_tokens=skip_special)

    def token_to_piece(self, token: int) -> str | None:
        return self._tk.id_to_token(int(token))

    def apply_chat_template(self, messages: Sequence[Mapping[str, str]], add_generation_prompt: bool = True) -> str:
        return render_bitnet_chat(messages, add_generation_prompt)

    def describe(self) -> dict[str, Any]:
        return {"source": self.source, "vocab_size": self.vocab_size, "bos_id": self.bos_id, "eos_id": self.eos_id,
                "add_bos": self.add_bos}


def _gguf_specials(md: Mapping[str, Any]) -> tuple[int | None, int | None, bool]:
    bos, eos = md.get("tokenizer.ggml.bos_token_id"), md.get("tokenizer.ggml.eos_token_id")
    add_bos = md.get("tokenizer.ggml.add_bos_token")
    bos = int(bos) if bos is not None else None
    return bos, (int(eos) if eos is not None else None), bool(add_bos) if add_bos is not None else bos is not None


def _json_specials(tk: HFTokenizer, path: Path) -> tuple[int | None, int | None, bool]:
    cfg_path = path.with_name("tokenizer_config.json")
    bos = eos = None
    add_bos: bool | None = None
    if cfg_path.is_file():
        try:
            cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise FormatError(f"{cfg_path}: invalid JSON: {exc}") from None

        def tok_id(v: Any) -> int | None:
            name = v.get("content") if isinstance(v, dict) else v
            return tk.token_to_id(name) if isinstance(name, str) else None

        bos, eos = tok_id(cfg.get("bos_token")), tok_id(cfg.get("eos_token"))
        add_bos = cfg.get("add_bos_token")
    if bos is None:
        bos = next((i for n in _BOS_NAMES if (i := tk.token_to_id(n)) is not None), None)
    if eos is None:
        eos = next((i for n in _EOS_NAMES if (i := tk.token_to_id(n)) is not None), None)
    return bos, eos, bool(add_bos) if add_bos is not None else bos is not None


def _compare(a: HFTokenizer, b: HFTokenizer, where: str) -> None:
    for probe in PROBES:
        ia, ib = a.encode(probe, add_special_tokens=False).ids, b.encode(probe, add_special_tokens=False).ids
        if ia != ib:
            warnings.warn(
                f"tokenizer.json and the GGUF vocabulary of {where} disagree on {probe!r}: {ia[:12]} vs {ib[:12]}; "
                "using tokenizer.json",
                stacklevel=3,
            )
            return


def _sibling_tokenizer_json(model_path: Path) -> Path | None:
    """`<dir>/tokenizer.json` for a model directory; `<stem>.tokenizer.json` or `tokenizer.json` next to a file."""
    if model_path.is_dir():
        cands = [model_path / "tokenizer.json"]
    else:
        cands = [model_path.with_name(model_path.stem + ".tokenizer.json"), model_path.with_name("tokenizer.json")]
    return next((c for c in cands if c.is_file()), None)


def load_tokenizer(
    model_path: str | os.PathLike[str] | None = None,
    tokenizer_json: str | os.PathLike[str] | None = None,
    *,
    gguf: Any = None,
) -> Tokenizer:
    """Load the tokenizer for a model file (GGUF) and/or an explicit tokenizer.json (see module docstring).

    `gguf` may pass an already opened `GGUFFile` of `model_path` to avoid mapping it twice.
    """
    metadata: Mapping[str, Any] | None = None
    if gguf is not None:
        metadata = gguf.metadata
    elif model_path is not None and str(model_path).endswith(".gguf"):
        from bitnet.formats.gguf_reader import open_gguf

        with open_gguf(model_path) as gf:
            metadata = dict(gf.metadata)
    json_path: Path | None = Path(tokenizer_json) if tokenizer_json is not None else None
    if json_path is None and model_path is not None:
        json_path = _sibling_tokenizer_json(Path(model_path))
    if json_path is not None:
        if not json_path.is_file():
            raise NotFoundError(f"tokenizer file not found: {json_path}")
        try:
            tk = HFTokenizer.from_file(str(json_path))
        except Exception as exc:  # tokenizers raises plain Exception subclasses on bad JSON
            raise FormatError(f"{json_path}: not a valid tokenizer.json: {exc}") from None
        has_vocab = metadata is not None and "tokenizer.ggml.tokens" in metadata
        if has_vocab:
            assert metadata is not None
            _compare(tk, tokenizer_from_gguf(metadata), str(model_path))
            bos, eos, add_bos = _gguf_specials(metadata)
        else:
            bos, eos, add_bos = _json_specials(tk, json_path)
        return Tokenizer(tk, source="tokenizer.json", bos_id=bos, eos_id=eos, add_bos=add_bos)
    if metadata is None:
        raise NotFoundError(
            "no tokenizer: the model has no embedded vocabulary and no tokenizer.json was found",
            hint="pass --tokenizer PATH/tokenizer.json",
        )
    tk = tokenizer_from_gguf(metadata)
    bos, eos, add_bos = _gguf_specials(metadata)
    return Tokenizer(tk, source="gguf", bos_id=bos, eos_id=eos, add_bos=add_bos)
