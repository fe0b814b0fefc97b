"""Text in, text out: prompt → tokens → `Engine.generate` → streamed text, with timings. Also multi-turn chat.

The CLI (`bitnet generate`, `bitnet chat`) is a thin shell over `generate_text` and `ChatSession`.
Streaming decodes the whole generated sequence each step and emits only the new suffix, holding back a trailing
U+FFFD so a multi-byte character split across tokens is printed once it is complete.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bitnet.errors import InferenceError
from bitnet.model.engine import Engine
from bitnet.model.sampling import GenerationConfig


@dataclass
class GenerationResult:
    prompt_tokens: list[int]
    tokens: list[int]
    text: str
    prefill_seconds: float
    decode_seconds: float
    stop_reason: str

    @property
    def prefill_tok_s(self) -> float:
        return len(self.prompt_tokens) / self.prefill_seconds if self.prefill_seconds > 0 else 0.0

    @property
    def decode_tok_s(self) -> float:
        n = max(0, len(self.tokens) - 1)
        return n / self.decode_seconds if self.decode_seconds > 0 and n else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "tokens": self.tokens,
            "n_prompt_tokens": len(self.prompt_tokens),
            "n_generated": len(self.tokens),
            "stop_reason": self.stop_reason,
            "prefill_seconds": round(self.prefill_seconds, 6),
            "decode_seconds": round(self.decode_seconds, 6),
            "prefill_tok_s": round(self.prefill_tok_s, 3),
            "decode_tok_s": round(self.decode_tok_s, 3),
        }


def _require_tokenizer(engine: Engine) -> Any:
    if engine.tokenizer is None:
        raise InferenceError("the model has no tokenizer", hint="pass --tokenizer PATH/tokenizer.json")
    return engine.tokenizer


def generate_tokens(
    engine: Engine,
    prompt_tokens: list[int],
    cfg: GenerationConfig,
    on_text: Callable[[str], None] | None = None,
) -> GenerationResult:
    """Run generation from token ids, streaming decoded text pieces to `on_text`."""
    tok = engine.tokenizer
    out: list[int] = []
    emitted = ""
    t0 = time.perf_counter()
    t_first: float | None = None
    for token in engine.generate(prompt_tokens, cfg):
        if t_first is None:
            t_first = time.perf_counter()
        out.append(token)
        if on_text is not None and tok is not None:
            text = tok.decode(out)
            if not text.endswith("\ufffd") and text.startswith(emitted):
                on_text(text[len(emitted) :])
                emitted = text
    t_end = time.perf_counter()
    t_first = t_first if t_first is not None else t_end
    text = tok.decode(out) if tok is not None else ""
    if on_text is not None and text.startswith(emitted) and len(text) > len(emitted):
        on_text(text[len(emitted) :])
    reason = "max_tokens" if len(out) >= cfg.max_tokens else "stop_token"
    return GenerationResult(list(prompt_tokens), out, text, t_first - t0, t_end - t_first, reason)


def generate_text(
    engine: Engine, prompt: str, cfg: GenerationConfig, on_text: Callable[[str], None] | None = None
) -> GenerationResult:
    """Tokenize `prompt` (with BOS per the tokenizer), generate, and return the text and timings."""
    tok = _require_tokenizer(engine)
    ids = tok.encode(prompt)
    if not ids:
        raise InferenceError("the prompt encodes to no tokens")
    return generate_tokens(engine, ids, cfg, on_text)


@dataclass
class ChatSession:
    """A multi-turn conversation in the BitNet chat template. Each turn re-renders the conversation and generates."""

    engine: Engine
    cfg: GenerationConfig
    system: str | None = None
    messages: list[dict[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.system:
            self.messages.append({"role": "system", "content": self.system})

    def send(self, user_message: str, on_text: Callable[[str], None] | None = None) -> GenerationResult:
        tok = _require_tokenizer(self.engine)
        self.messages.append({"role": "user", "content": user_message})
        prompt = tok.apply_chat_template(self.messages, add_generation_prompt=True)
        result = generate_tokens(self.engine, tok.encode(prompt), self.cfg, on_text)
        self.messages.append({"role": "assistant", "content": result.text})
        return result
