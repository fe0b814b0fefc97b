"""Token sampling: repetition penalty, temperature, top-k, top-p, then a draw from a seeded numpy Generator.

Order and semantics follow llama.cpp's common sampler: the repetition penalty divides positive logits and multiplies
negative ones of tokens seen in the last `repeat_last_n` tokens; temperature <= 0 means greedy (argmax, lowest id
on ties); top-k keeps the k largest logits; top-p keeps the smallest prefix of the sorted distribution whose mass
reaches p. Probabilities are computed in float64 so a seed gives the same draw on every machine.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from bitnet.errors import UsageError


@dataclass(frozen=True)
class GenerationConfig:
    """How `Engine.generate` picks and stops. `seed` None → `BITNET_SEED` in deterministic mode, else fresh entropy."""

    max_tokens: int = 128
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    repeat_penalty: float = 1.0
    repeat_last_n: int = 64
    seed: int | None = None
    stop_tokens: tuple[int, ...] = field(default_factory=tuple)
    stop_on_eos: bool = True

    def __post_init__(self) -> None:
        if self.max_tokens < 0:
            raise UsageError(f"max_tokens must be >= 0, got {self.max_tokens}")
        if self.temperature < 0:
            raise UsageError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise UsageError(f"top_k must be >= 0 (0 = off), got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise UsageError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.repeat_penalty <= 0:
            raise UsageError(f"repeat_penalty must be > 0, got {self.repeat_penalty}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


def apply_repeat_penalty(logits: np.ndarray, history: Sequence[int], penalty: float, last_n: int) -> np.ndarray:
    if penalty == 1.0 or not history:
        return logits
    out = logits.astype(np.float64, copy=True)
    recent = np.unique(np.asarray(list(history)[-last_n:] if last_n > 0 else list(history), dtype=np.int64))
    vals = out[recent]
    out[recent] = np.where(vals > 0, vals / penalty, vals * penalty)
    return out


def sample_token(
    logits: np.ndarray, cfg: GenerationConfig, rng: np.random.Generator, history: Sequence[int] = ()
) -> int:
    """Pick the next token id from one row of logits."""
    x = apply_repeat_penalty(np.asarray(logits, dtype=np.float64), history, cfg.repeat_penalty, cfg.repeat_last_n)
    if cfg.greedy:
        return int(np.argmax(x))
    x = x / cfg.temperature
    order = np.argsort(-x, kind="stable")
    if cfg.top_k > 0:
        order = order[: cfg.top_k]
    z = x[order]
    p = np.exp(z - z[0])
    p /= p.sum()
    if cfg.top_p < 1.0:
        keep = int(np.searchsorted(np.cumsum(p), cfg.top_p) + 1)
        order, p = order[:keep], p[:keep] / p[:keep].sum()
    return int(order[rng.choice(p.size, p=p)])
