"""xtask benchmark: warm up, then time prefill and decode separately over repeated greedy runs, and build the
receipt from what actually happened.

Nothing in the receipt is asserted by this code: kernels and call counts come from `REGISTRY.counts()` over the
measured runs, `compute_path` is derived from them, `deterministic` is whether the runs reproduced each other, and
every summary keeps its raw samples (see docs/receipts.md).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bitnet.errors import BenchmarkError, NotFoundError, UsageError
from bitnet.receipts import kernel_ids
from bitnet.receipts.greedy import DIGEST_ALGORITHM, GreedyRun, greedy_run
from bitnet.receipts.machine import environment_info, git_state, machine_info
from bitnet.receipts.schema import RECEIPT_SCHEMA_VERSION, RECEIPT_TYPE
from bitnet.receipts.stats import summarize


@dataclass
class BenchmarkSpec:
    model: Path
    tokenizer: Path | None = None
    tokens: int = 32
    prompt: str = "The capital of France is"
    warmup_tokens: int = 4
    backend: str = "cpu"
    threads: int | None = None
    runs: int = 3

    def validate(self) -> None:
        if self.tokens < 2:
            raise UsageError(f"--tokens must be at least 2 (got {self.tokens}): decode is timed over tokens 2..N")
        if self.runs < 1:
            raise UsageError(f"--runs must be at least 1 (got {self.runs})")
        if self.warmup_tokens < 0:
            raise UsageError("--warmup-tokens cannot be negative")
        if self.threads is not None and self.threads < 1:
            raise UsageError("--threads must be at least 1")
        if not self.prompt:
            raise UsageError("--prompt cannot be empty")
        if self.backend not in ("cpu", "cuda"):
            raise UsageError(f"unknown backend {self.backend!r}")
        if not Path(self.model).is_file():
            raise NotFoundError(f"model not found: {self.model}")
        if self.tokenizer is not None and not Path(self.tokenizer).is_file():
            raise NotFoundError(f"tokenizer not found: {self.tokenizer}")


def model_info(path: Path) -> dict[str, Any]:
    """sha256, size, arch and tensor types of the GGUF; `bytes_per_token` = weight bytes one decode step reads."""
    from bitnet.formats.gguf_reader import open_gguf
    from bitnet.fsutil import sha256_file

    with open_gguf(path) as gf:
        types: dict[str, int] = {}
        type_bytes: dict[str, int] = {}
        for info in gf.tensors.values():
            types[info.type_name] = types.get(info.type_name, 0) + 1
            type_bytes[info.type_name] = type_bytes.get(info.type_name, 0) + int(info.n_bytes)
        tied = "output.weight" not in gf.tensors
        embd = gf.tensors.get("token_embd.weight")
        # an untied embedding is read one row per token; a tied one is also the lm_head, read in full
        per_token = sum(int(t.n_bytes) for t in gf.tensors.values())
        if embd is not None and not tied:
            per_token -= int(embd.n_bytes) - int(embd.n_bytes) // max(int(embd.shape[-1]), 1)
        arch = str(gf.metadata.get("general.architecture", "unknown"))
        n_layers = gf.metadata.get(f"{arch}.block_count")
        return {
            "path": str(path),
            "sha256": sha256_file(path),
            "size_bytes": int(gf.file_size),
            "arch": arch,
            "n_tensors": len(gf.tensors),
            "tensor_types": dict(sorted(types.items())),
            "tensor_bytes": dict(sorted(type_bytes.items())),
            "bytes_per_token": max(int(per_token), 1),
            "n_layers": int(n_layers) if n_layers is not None else None,
            "vocab_size": int(embd.shape[-1]) if embd is not None else None,
        }


def tokenizer_info(engine: Any, path: Path | None) -> dict[str, Any]:
    """sha256 of the tokenizer that ran: its serialized tokenizer.json (the same bytes whatever its source), plus
    the special-token decisions that live outside it (bos/eos/add_bos from the GGUF)."""
    import hashlib

    tok = engine.tokenizer
    # bitnet.tokenizers.Tokenizer exposes no serializer; its wrapped `tokenizers.Tokenizer` has `to_str()`
    inner = getattr(tok, "_tk", None)
    serialized = inner.to_str() if inner is not None and hasattr(inner, "to_str") else None
    return {
        "source": str(getattr(tok, "source", "unknown")),
        "path": str(path) if path is not None else None,
        "sha256": hashlib.sha256(serialized.encode("utf-8")).hexdigest() if serialized is not None else None,
        "vocab_size": getattr(tok, "vocab_size", None),
        "specials": {k: getattr(tok, k, None) for k in ("bos_id", "eos_id", "add_bos")},
    }


def load_engine(model: Path, *, backend: str, threads: int | None, tokenizer: Path | None,
                numerics: dict[str, Any] | None = None) -> Any:
    from bitnet.model import load_model

    kwargs: dict[str, Any] = {}
    if numerics:
        kwargs = {k: numerics[k] for k in ("profile", "ffn_act", "kv_dtype") if numerics.get(k)}
        if numerics.get("numerics"):
            kwargs["numerics"] = numerics["numerics"]
    return load_model(model, backend=backend, threads=threads, tokenizer_json=tokenizer, **kwargs)


def run_benchmark(spec: BenchmarkSpec, log: Callable[[str], None] = lambda _m: None) -> dict[str, Any]:
    """Measure and return the receipt (unsigned; see signing.sign_receipt)."""
    from bitnet.kernels.registry import REGISTRY

    spec.validate()
    engine = load_engine(spec.model, backend=spec.backend, threads=spec.threads, tokenizer=spec.tokenizer)
    if engine.tokenizer is None:
        raise UsageError("the model has no tokenizer: pass --tokenizer tokenizer.json")
    prompt_tokens = [int(t) for t in engine.tokenizer.encode(spec.prompt)]
    if not prompt_tokens:
        raise UsageError("the prompt encodes to no tokens")
    ctx = int(engine.config.context_length)
    if len(prompt_tokens) + spec.tokens > ctx:
        raise UsageError(f"{len(prompt_tokens)} prompt + {spec.tokens} tokens exceed the context ({ctx})")
    description = engine.describe()

    if spec.warmup_tokens:
        log(f"warm-up: {spec.warmup_tokens} tokens")
        greedy_run(engine, prompt_tokens, max(spec.warmup_tokens, 1))
    REGISTRY.reset()  # count only the measured runs
    runs: list[GreedyRun] = []
    for i in range(spec.runs):
        run = greedy_run(engine, prompt_tokens, spec.tokens)
        log(f"run {i + 1}/{spec.runs}: prefill {run.prefill_ms:.1f} ms, decode {sum(run.step_ms) / len(run.step_ms):.2f} ms/token")
        runs.append(run)
    raw_counts = REGISTRY.counts()
    if any(n < 0 for n in raw_counts.values()):
        raise BenchmarkError(f"the kernel registry holds negative call counts: {raw_counts}")
    counts = {k: n for k, n in raw_counts.items() if n > 0}  # an ID whose calls were taken back did not run
    if not counts:
        raise BenchmarkError("no kernel recorded a call: the engine ran nothing the registry knows")
    compute_path, reason = kernel_ids.derive_compute_path(counts)
    first = runs[0]
    identical = all(r.token_ids == first.token_ids and r.digest == first.digest for r in runs)
    decode_steps = spec.tokens - 1
    commit, dirty = git_state()
    from bitnet import __version__
    from bitnet.kernels.gpu.ops import cuda_available

    selected = str(description.get("backend", spec.backend))
    return {
        "schema_version": RECEIPT_SCHEMA_VERSION,
        "receipt_type": RECEIPT_TYPE,
        "timestamp": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "compute_path": compute_path,
        "compute_path_reason": reason,
        "deterministic": identical,
        "backend": selected,
        "backend_info": {"requested": spec.backend, "selected": selected,
                         "detected": ["cpu", "cuda"] if cuda_available() else ["cpu"]},
        "kernels": sorted(counts),
        "kernel_calls": counts,
        "kernel_scope": "measured runs only (warm-up excluded)",
        "model": model_info(spec.model),
        "tokenizer": tokenizer_info(engine, spec.tokenizer),
        "engine": {"name": "bitnet-py", "version": __version__, "git_commit": commit, "git_dirty": dirty,
                   "numerics": description},
        "machine": machine_info(selected),
        "environment": environment_info(description.get("threads", spec.threads)),
        "run": {
            "prompt": spec.prompt,
            "prompt_tokens": prompt_tokens,
            "tokens_requested": spec.tokens,
            "tokens_generated": len(first.token_ids),
            "warmup_tokens": spec.warmup_tokens,
            "runs": spec.runs,
            "forward_passes": spec.runs * spec.tokens,
            "sampling": {"strategy": "greedy", "temperature": 0.0, "ties": "lowest id", "stop_on_eos": False},
        },
        "performance": {
            "prefill_tokens_per_second": summarize([len(prompt_tokens) * 1000.0 / r.prefill_ms for r in runs], "tok/s"),
            "decode_tokens_per_second": summarize([decode_steps * 1000.0 / sum(r.step_ms) for r in runs], "tok/s"),
            "decode_ms_per_token": summarize([ms for r in runs for ms in r.step_ms], "ms"),
            "prefill_ms": summarize([r.prefill_ms for r in runs], "ms"),
        },
        "output": {
            "token_ids": first.token_ids,
            "text": engine.tokenizer.decode(first.token_ids),
            "logits_digest": {"algorithm": DIGEST_ALGORITHM, "value": first.digest},
            "top5": first.top5(),
        },
    }
