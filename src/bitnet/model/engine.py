"""`Engine`: a loaded model plus its session state (KV cache), with the public inference API.

State model: `prefill(tokens)` appends tokens to the current session (call `reset()` to start a new one),
`decode_step(token)` appends one more; `eval_logits_all_positions(tokens)` evaluates a fresh sequence in a
private cache and leaves the session untouched; `generate()` resets, prefills the prompt and decodes.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bitnet.errors import FormatError, InferenceError, ReferenceUnavailable, UsageError
from bitnet.kernels.dispatch import OpTable
from bitnet.model.forward import Transformer
from bitnet.model.kv_cache import KVCache
from bitnet.model.numerics import Numerics
from bitnet.model.runtime import apply_threads, deterministic, make_rng, resolve_threads
from bitnet.model.sampling import GenerationConfig, sample_token
from bitnet.model.trace import Tracer
from bitnet.model.weights import ModelWeights


def default_profile(arch: str) -> str:
    """llama.cpp's arch `bitnet` runs TQ kernels with Q8_K (block256) activations; Microsoft's archs per-token."""
    return "block256" if arch == "bitnet" else "per-token"


class Engine:
    """Inference on one model. Not thread-safe: one session per engine."""

    def __init__(
        self,
        config: Any,
        weights: ModelWeights,
        tokenizer: Any = None,
        *,
        profile: str | None = None,
        ffn_act: str | None = None,
        kv_dtype: str = "f32",
        numerics: str = "default",
        backend: str = "cpu",
        threads: int | None = None,
        source: str | os.PathLike[str] | None = None,
        keepalive: Any = None,
    ) -> None:
        self.config = config
        self.weights = weights
        self.tokenizer = tokenizer
        if numerics == "bitnet-cpp" and kv_dtype == "f32":
            kv_dtype = "f16"  # bitnet.cpp's cache; the documented default of kv_dtype yields to the numerics mode
        self.numerics = Numerics(
            name=numerics,
            profile=profile or default_profile(config.arch),
            ffn_act=ffn_act or config.ffn_act,
            kv_dtype=kv_dtype,
        )
        rope_dim = getattr(config, "rope_dim", None)
        if rope_dim not in (None, config.head_dim):
            raise FormatError(
                f"rope dimension {rope_dim} != head_dim {config.head_dim}: BitNet rotates whole heads (llama.cpp "
                "rejects n_rot != head_dim for these archs)"
            )
        if numerics == "bitnet-cpp" and weights.output_type not in ("f16", "f32"):
            warnings.warn(
                f"numerics 'bitnet-cpp' models F16/F32 output heads only; this model's head is "
                f"{weights.output_type} (bitnet.cpp quantizes the head input to it), so logits will not match "
                "bitnet.cpp bit for bit",
                stacklevel=2,
            )
        self.threads = resolve_threads(threads)
        self.threads_applied = apply_threads(self.threads)
        self.ops = OpTable(backend)
        self.tracer = Tracer.from_env()
        self.model = Transformer(config, weights, self.ops, self.numerics, self.tracer)
        self.cache: KVCache = self.model.new_cache()
        self.source = Path(source) if source is not None else None
        self._keepalive = keepalive  # the memory-mapped file the weights view

    # -- properties ----------------------------------------------------------------------------------------------
    @property
    def profile(self) -> str:
        return self.numerics.profile

    @property
    def n_past(self) -> int:
        return self.cache.length

    # -- evaluation ----------------------------------------------------------------------------------------------
    def _check_tokens(self, tokens: Sequence[int] | np.ndarray) -> np.ndarray:
        arr = np.asarray(tokens, dtype=np.int64).reshape(-1)
        if arr.size == 0:
            raise InferenceError("no tokens to evaluate")
        if arr.min() < 0 or arr.max() >= self.config.vocab_size:
            raise InferenceError(f"token id outside the vocabulary [0, {self.config.vocab_size})")
        return arr

    def eval_logits_all_positions(self, tokens: Sequence[int] | np.ndarray) -> np.ndarray:
        """float32 [T, V]: logits of every position of `tokens`, evaluated as one batch from an empty cache."""
        arr = self._check_tokens(tokens)
        return self.model.forward(arr, self.model.new_cache(), all_logits=True)

    def prefill(self, tokens: Sequence[int] | np.ndarray) -> np.ndarray:
        """Append `tokens` to the session in one batch; returns float32 [V], the logits of the last one."""
        return self.model.forward(self._check_tokens(tokens), self.cache, all_logits=False)[0]

    def decode_step(self, token: int) -> np.ndarray:
        """Append one token; returns its float32 [V] logits."""
        return self.model.forward(self._check_tokens([token]), self.cache, all_logits=False)[0]

    def reset(self) -> None:
        self.cache.clear()

    def close(self) -> None:
        """Close the trace file and release the model's memory map (the engine is unusable afterwards)."""
        self.tracer.close()
        closer = getattr(self._keepalive, "close", None)
        if closer is not None:
            closer()
        self._keepalive = None

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- generation ----------------------------------------------------------------------------------------------
    def stop_ids(self, cfg: GenerationConfig) -> set[int]:
        stops = set(cfg.stop_tokens)
        if cfg.stop_on_eos:
            eos = getattr(self.tokenizer, "eos_id", None)
            if eos is None:
                eos = getattr(self.config, "eos_token_id", None)
            if eos is not None:
                stops.add(int(eos))
            eot = getattr(self.tokenizer, "eot_id", None)
            if eot is not None:
                stops.add(int(eot))
        return stops

    def generate(
        self, prompt_tokens: Sequence[int], cfg: GenerationConfig | None = None, *, keep_session: bool = False
    ) -> Iterator[int]:
        """Yield generated token ids. A stop token ends generation and is not yielded.

        `keep_session=True` appends the prompt to the current session instead of resetting (multi-turn chat).
        """
        cfg = cfg or GenerationConfig()
        if not prompt_tokens:
            raise UsageError("generate needs at least one prompt token")
        if not keep_session:
            self.reset()
        rng = make_rng(cfg.seed)
        stops = self.stop_ids(cfg)
        history = list(int(t) for t in prompt_tokens)
        if cfg.max_tokens == 0:
            return
        logits = self.prefill(prompt_tokens)
        for i in range(cfg.max_tokens):
            tok = sample_token(logits, cfg, rng, history)
            if tok in stops:
                return
            history.append(tok)
            yield tok
            if i + 1 < cfg.max_tokens:
                logits = self.decode_step(tok)

    # -- reporting -----------------------------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """What produced the numbers: recorded in every output (JSON results, receipts, benchmark tables)."""
        c = self.config
        return {
            "model": str(self.source) if self.source else None,
            "arch": c.arch,
            "profile": self.numerics.profile,
            "ffn_act": self.numerics.ffn_act,
            "kv_dtype": self.numerics.kv_dtype,
            "numerics": self.numerics.name,
            "activation_dtype": self.numerics.act_dtype.name,
            "backend": self.ops.backend,
            "threads": self.threads,
            "threads_applied": self.threads_applied,
            "deterministic": deterministic(),
            "weight_formats": self.weights.formats(),
            "output_type": self.weights.output_type,
            "kernels": self.ops.describe()["kernels"],
            "blocks": "fused" if self.model.blocks is not None else f"op-by-op ({self.model.blocks_reason})",
            "tokenizer": getattr(self.tokenizer, "source", None),
            "trace_dir": str(self.tracer.directory) if self.tracer.enabled else None,
            "shape": c.shape_summary(),
        }


def load_model(
    path: str | os.PathLike[str],
    *,
    profile: str | None = None,
    ffn_act: str | None = None,
    kv_dtype: str = "f32",
    numerics: str = "default",
    backend: str = "cpu",
    threads: int | None = None,
    tokenizer_json: str | os.PathLike[str] | None = None,
) -> Any:
    """Open a GGUF model (memory-mapped) and build an `Engine`. `profile` None → from the arch.

    `backend="cuda"` returns the device engine of `bitnet.model.gpu` (same interface); it fails with
    `ReferenceUnavailable` (exit 19) when torch/Triton or a GPU are missing, never falling back to the CPU silently.
    """
    if backend == "cuda":
        try:
            from bitnet.model.gpu import load_gpu_engine
        except ImportError as exc:
            raise ReferenceUnavailable(f"the CUDA backend is not available: {exc}", hint="use --device cpu") from None
        return load_gpu_engine(path, profile=profile, ffn_act=ffn_act, kv_dtype=kv_dtype, numerics=numerics,
                               threads=threads, tokenizer_json=tokenizer_json)
    if backend != "cpu":
        raise UsageError(f"unknown backend {backend!r}; choose cpu or cuda")
    from bitnet.model.loader import open_model

    gf, config, weights, tokenizer = open_model(path, tokenizer_json)
    return Engine(
        config,
        weights,
        tokenizer,
        profile=profile,
        ffn_act=ffn_act,
        kv_dtype=kv_dtype,
        numerics=numerics,
        backend=backend,
        threads=threads,
        source=path,
        keepalive=gf,
    )
