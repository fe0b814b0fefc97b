"""One model, one prompt, both sides: tokenization parity, all-position logits, greedy streams, traces.

This is the library behind `xtask crossval-per-token`, the suite of `xtask crossval` and each scenario of
`crossval-sweep`. Our engine runs in the numerics profile that matches the reference: for upstream llama.cpp on arch
`bitnet` that is `block256` activations (Q8_K) with SiLU, for the bitnet.cpp fork the arch's own defaults.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bitnet.crossval.cpp import DEFAULT_TEST_FLAVOR, Manifest, find_reference
from bitnet.crossval.metrics import compare_logits

#: the documented deterministic environment of a cross-validation run
DETERMINISTIC_ENV = {
    "BITNET_DETERMINISTIC": "1",
    "BITNET_SEED": "42",
    "OMP_NUM_THREADS": "1",
    "GGML_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
}


@contextlib.contextmanager
def scoped_env(values: dict[str, str | None]) -> Iterator[None]:
    """Set (or with None, unset) environment variables for the duration of a block."""
    old = {k: os.environ.get(k) for k in values}
    try:
        for k, v in values.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def engine_options_for(flavor: str, profile: str | None, ffn_act: str | None) -> dict[str, str | None]:
    """Our engine's numerics for a reference flavor (explicit options win).

    Upstream llama.cpp: Q8_K (`block256`) activations and SiLU, F32 KV. The BitNet fork: the arch's own profile and
    activation, and `bitnet-cpp` numerics (float32 graph, F16 KV cache and f16 rounding points like the fork).
    """
    if flavor == "llama.cpp":
        return {"profile": profile or "block256", "ffn_act": ffn_act or "silu", "numerics": "default"}
    return {"profile": profile, "ffn_act": ffn_act, "numerics": "bitnet-cpp"}


@dataclass
class ParityOptions:
    flavor: str = DEFAULT_TEST_FLAVOR
    cpp_dir: Path | None = None
    profile: str | None = None
    ffn_act: str | None = None
    tokenizer: Path | None = None
    cos_tol: float = 0.999
    nmse_tol: float = 1e-6
    threads: int = 1
    n_ctx: int = 512


def load_engine(model: Path, opts: ParityOptions, trace_dir: Path | None = None) -> Any:
    """Our engine for `model` in the reference-matching profile (traces to `trace_dir` when given)."""
    from bitnet.model import load_model

    env: dict[str, str | None] = {"BITNET_TRACE_DIR": str(trace_dir) if trace_dir else None,
                                  "BITNET_TRACE_VALUES": "1" if trace_dir else None}  # fmt: skip
    with scoped_env(env):
        return load_model(model, kv_dtype="f32", threads=opts.threads, tokenizer_json=opts.tokenizer,
                          **engine_options_for(opts.flavor, opts.profile, opts.ffn_act))  # fmt: skip


def tokenization_parity(ours: list[int], ref: list[int]) -> dict[str, Any]:
    first = next((i for i, (a, b) in enumerate(zip(ours, ref, strict=False)) if a != b), None)
    if first is None and len(ours) != len(ref):
        first = min(len(ours), len(ref))
    return {"match": first is None, "ours": ours, "ref": ref, "first_mismatch_index": first,
            "ours_at_mismatch": ours[first] if first is not None and first < len(ours) else None,
            "ref_at_mismatch": ref[first] if first is not None and first < len(ref) else None}  # fmt: skip


def stream_parity(ours: list[int], ref: list[int]) -> dict[str, Any]:
    first = next((i for i, (a, b) in enumerate(zip(ours, ref, strict=False)) if a != b), None)
    if first is None and len(ours) != len(ref):
        first = min(len(ours), len(ref))
    return {"match": first is None, "ours": ours, "ref": ref, "first_mismatch_step": first,
            "n_tokens": len(ref)}  # fmt: skip


def greedy_ours(engine: Any, prompt_ids: list[int], n: int) -> list[int]:
    from bitnet.model import GenerationConfig

    cfg = GenerationConfig(max_tokens=n, temperature=0.0, stop_on_eos=False)
    return list(engine.generate(prompt_ids, cfg))


def near_tie_diagnosis(engine: Any, session: Any, prompt_ids: list[int], g: dict[str, Any]) -> dict[str, Any]:
    """At the first differing greedy step: how far apart the two candidate tokens are on each side.

    Both sides are re-evaluated on the prompt plus the common prefix. A reference margin smaller than the logits'
    max abs difference means the streams split on a near-tie, not on a systematic difference.
    """
    k = g["first_mismatch_step"]
    if k is None or k >= len(g["ours"]) or k >= len(g["ref"]):
        return {}
    ctx = prompt_ids + g["ref"][:k]
    ref_logits = session.eval_all_logits(ctx)[-1]
    ours_logits = np.asarray(engine.eval_logits_all_positions(ctx), dtype=np.float32)[-1]
    t_ref, t_ours = g["ref"][k], g["ours"][k]
    return {
        "margin_ref": float(ref_logits[t_ref] - ref_logits[t_ours]),
        "margin_ours": float(ours_logits[t_ours] - ours_logits[t_ref]),
        "max_abs_diff_at_step": float(np.max(np.abs(ref_logits - ours_logits))),
    }


def run_parity(
    model: str | os.PathLike[str],
    prompt: str,
    *,
    max_tokens: int = 4,
    opts: ParityOptions | None = None,
    manifest: Manifest | None = None,
    engine: Any = None,
    session: Any = None,
    trace_dirs: tuple[Path, Path] | None = None,
    ref_model: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Tokenization parity, then per-position logits metrics, then greedy streams of `max_tokens` tokens.

    `trace_dirs` = (ours, reference): both sides trace the all-position evaluation there (values included).
    Reuses `engine` / `session` when given (the suite runs many prompts on one load). `ref_model` gives the C++
    side a different file (default: the same), e.g. the original of a deliberately modified copy.
    """
    from bitnet.crossval.ffi import CppSession

    opts = opts or ParityOptions()
    model = Path(model)
    manifest = manifest or find_reference(opts.flavor, opts.cpp_dir)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    own_engine = engine is None or trace_dirs is not None
    if own_engine:
        engine = load_engine(model, opts, trace_dirs[0] if trace_dirs else None)
    tracer = None
    if trace_dirs is not None:
        from bitnet.crossval.cpp_trace import CppTracer

        tracer = CppTracer(trace_dirs[1], save_values=True)
    own_session = session is None or tracer is not None
    if own_session:
        session = CppSession(Path(ref_model) if ref_model else model, manifest=manifest, n_threads=opts.threads,
                             n_ctx=opts.n_ctx, tracer=tracer)  # fmt: skip
    timings["load_s"] = time.perf_counter() - t0
    try:
        t = time.perf_counter()
        if engine.tokenizer is None:
            from bitnet.errors import CheckCouldNotRun

            raise CheckCouldNotRun(f"{model} has no tokenizer for our engine; pass --tokenizer tokenizer.json")
        ours_ids = list(engine.tokenizer.encode(prompt))
        ref_ids = session.tokenize(prompt)
        tok = tokenization_parity(ours_ids, ref_ids)
        timings["tokenize_s"] = time.perf_counter() - t
        result: dict[str, Any] = {
            "model": str(model),
            "ref_model": str(ref_model or model),
            "prompt": prompt,
            "engine": engine.describe(),
            "reference": session.describe(),
            "tokenization": tok,
        }
        if not tok["match"]:
            result.update(ok=False, verdict="tokenization mismatch", timings=timings)
            return result
        t = time.perf_counter()
        ours_logits = np.asarray(engine.eval_logits_all_positions(ours_ids), dtype=np.float32)
        ref_logits = session.eval_all_logits(ref_ids)
        timings["logits_s"] = time.perf_counter() - t
        if tracer is not None:
            engine.tracer.flush()
        metrics = compare_logits(ours_logits, ref_logits, opts.cos_tol)
        metrics["nmse_tol"] = opts.nmse_tol
        metrics["nmse_ok"] = bool(metrics["nmse"] <= opts.nmse_tol)
        result["logits"] = metrics
        t = time.perf_counter()
        if max_tokens > 0:
            # tracing stops after the all-position pass: the decode steps would append to the same trace files
            if tracer is not None:
                session.tracer = None
                engine.tracer.close()
                engine.tracer.directory = None
            ours_stream = greedy_ours(engine, ours_ids, max_tokens)
            result["greedy"] = stream_parity(ours_stream, session.greedy(ref_ids, max_tokens))
            result["greedy"]["text_ref"] = session.detokenize(result["greedy"]["ref"])
            if not result["greedy"]["match"]:
                result["greedy"].update(near_tie_diagnosis(engine, session, ref_ids, result["greedy"]))
        timings["greedy_s"] = time.perf_counter() - t
        ok = metrics["ok"] and metrics["nmse_ok"] and result.get("greedy", {"match": True})["match"]
        if ok:
            verdict = "agree"
        elif not metrics["ok"]:
            verdict = f"logits diverge at position {metrics['first_divergent_position']}"
        elif not metrics["nmse_ok"]:
            verdict = f"logits NMSE {metrics['nmse']:.3g} above {opts.nmse_tol:g}"
        else:
            verdict = f"greedy streams differ at step {result['greedy']['first_mismatch_step']}"
        result.update(ok=bool(ok), verdict=verdict, timings=timings)
        return result
    finally:
        if tracer is not None and engine is not None:
            engine.tracer.close()
        if own_session and session is not None:
            session.close()
