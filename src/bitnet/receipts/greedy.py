"""One timed greedy generation: the measurement the benchmark repeats and the replay re-runs.

Greedy means argmax with the lowest id on ties (numpy's argmax), so a run is a pure function of the model, the
prompt and the numerics. Exactly `n_tokens` are generated (EOS does not stop a benchmark, as in llama-bench).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

DIGEST_ALGORITHM = "sha256:float32-le"


@dataclass
class GreedyRun:
    token_ids: list[int]
    final_logits: np.ndarray
    prefill_ms: float
    step_ms: list[float]

    @property
    def digest(self) -> str:
        return logits_digest(self.final_logits)

    def top5(self) -> list[list[Any]]:
        idx = np.argsort(-self.final_logits, kind="stable")[:5]
        return [[int(i), float(self.final_logits[i])] for i in idx]


def logits_digest(logits: np.ndarray) -> str:
    """sha256 of the logits as little-endian float32 bytes: bit-exact identity of the final state."""
    return hashlib.sha256(np.ascontiguousarray(logits, dtype="<f4").tobytes()).hexdigest()


def greedy_run(engine: Any, prompt_tokens: list[int], n_tokens: int) -> GreedyRun:
    """Fresh session, prefill the prompt (timed), then n_tokens-1 decode steps (each timed)."""
    engine.reset()
    t0 = time.perf_counter()
    logits = engine.prefill(prompt_tokens)
    prefill_ms = (time.perf_counter() - t0) * 1000.0
    ids = [int(np.argmax(logits))]
    steps = []
    for _ in range(n_tokens - 1):
        t = time.perf_counter()
        logits = engine.decode_step(ids[-1])
        steps.append((time.perf_counter() - t) * 1000.0)
        ids.append(int(np.argmax(logits)))
    return GreedyRun(ids, np.asarray(logits, dtype=np.float32).copy(), prefill_ms, steps)
