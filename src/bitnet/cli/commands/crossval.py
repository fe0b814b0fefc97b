"""CLI wrappers for the C++ reference and cross-validation (`bitnet.crossval`). One library call per command."""

from __future__ import annotations

from pathlib import Path

import click

from bitnet.cli.output import Output, with_output
from bitnet.fsutil import atomic_write_text


def verdict_exit(out: Output, ok: bool, message: str) -> int:
    """0 when the check passed; else 1 (CheckFailed's code), returned rather than raised so that JSON mode prints
    exactly one document (the result, whose `ok` is false) and text mode one line on stderr."""
    from bitnet.errors import ExitCode

    if ok:
        return 0
    out.err.print(f"FAILED: {message}", markup=False)
    return int(ExitCode.CHECK_FAILED)


@click.command()
@click.option("--flavor", type=click.Choice(["bitnet", "llama.cpp"]), default="bitnet", show_default=True,
              help="microsoft/BitNet (fork with I2_S) or upstream llama.cpp.")
@click.option("--rev", default=None, help="git revision to check out (with --repo / the default BitNet repo).")
@click.option("--repo", default=None, help="clone this git URL (needs network).")
@click.option("--source", "source", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="build from this local source tree (copied into the cache).")
@click.option("--sdist", is_flag=True, help="llama.cpp only: build the llama.cpp vendored in the llama-cpp-python sdist.")
@click.option("--sdist-version", default=None, help="llama-cpp-python version for --sdist (default: the pinned one).")
@click.option("--backend", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--cmake-flags", "cmake_flags", multiple=True, help="extra cmake flag (repeatable), e.g. -DGGML_AVX512=ON")
@click.option("--force", is_flag=True, help="rebuild even when the inputs are unchanged.")
@click.option("--clean", is_flag=True, help="wipe this flavor's cache folder first.")
@click.option("--jobs", "-j", type=int, default=2, show_default=True, help="parallel compile jobs.")
@click.option("--cpp-dir", type=click.Path(path_type=Path), default=None,
              help="cache root (default $BITNET_CPP_DIR or ~/.cache/bitnet_cpp).")
@with_output
def fetch_cpp(out: Output, flavor: str, rev: str | None, repo: str | None, source: Path | None, sdist: bool,
              sdist_version: str | None, backend: str, cmake_flags: tuple[str, ...], force: bool, clean: bool,
              jobs: int, cpp_dir: Path | None) -> int:
    """Build the C++ reference into the cache (idempotent). Exit 21 on a failed build, 19 when unavailable."""
    from bitnet.crossval.build import FetchRequest
    from bitnet.crossval.build import fetch_cpp as run_fetch
    from bitnet.crossval.sources import SDIST_VERSION

    req = FetchRequest(flavor=flavor, rev=rev, repo=repo, source=source, sdist=sdist,
                       sdist_version=sdist_version or SDIST_VERSION, backend=backend, cmake_flags=list(cmake_flags),
                       force=force, clean=clean, jobs=jobs, cpp_dir=cpp_dir)  # fmt: skip
    res = run_fetch(req)
    m = res.manifest
    out.result(
        {"ok": True, "rebuilt": res.rebuilt, "flavor": m.flavor, "revision": m.revision, "manifest": res.manifest_path,
         "build_seconds": m.build_seconds if res.rebuilt else 0.0, "seconds": round(res.seconds, 2),
         "api_generation": m.api_generation, "artifacts": [a.__dict__ for a in m.artifacts], "message": res.message},
        text=res.message,
    )  # fmt: skip
    return 0


@click.command()
@click.option("--cpp-dir", type=click.Path(path_type=Path), default=None, help="cache root of the C++ reference.")
@click.option("--model", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="also export CROSSVAL_GGUF for this model.")
@click.option("--write", "write_to", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="write the exports to this file (to `source` it) instead of printing them.")
@with_output
def setup_crossval(out: Output, cpp_dir: Path | None, model: Path | None, write_to: Path | None) -> int:
    """Print (or write) the environment for cross-validation: library paths, deterministic variables.

    Exit 19 when no C++ reference has been built yet (run `xtask fetch-cpp` first).
    """
    from bitnet.crossval.env import crossval_environment, shell_exports
    from bitnet.errors import ReferenceUnavailable

    res = crossval_environment(cpp_dir, model)
    if not res["ok"]:
        raise ReferenceUnavailable(f"no C++ reference built under {res['cpp_dir']}",
                                   hint="xtask fetch-cpp --flavor llama.cpp --sdist")
    text = shell_exports(res["env"])
    if write_to is not None:
        atomic_write_text(write_to, text + "\n")
        res["written_to"] = str(write_to)
    out.result(res, text=text if write_to is None else f"wrote {write_to} (source it)")
    return 0


_FLAVOR = click.option("--flavor", type=click.Choice(["bitnet", "llama.cpp"]), default="llama.cpp", show_default=True,
                       help="which C++ reference to compare with.")
_CPP_DIR = click.option("--cpp-dir", type=click.Path(path_type=Path), default=None,
                        help="cache root of the C++ reference (default $BITNET_CPP_DIR or ~/.cache/bitnet_cpp).")
_PROFILE = click.option("--profile", type=click.Choice(["per-token", "block256"]), default=None,
                        help="our activation quantization (default: the one matching the reference).")
_FFN_ACT = click.option("--ffn-act", type=click.Choice(["relu2", "silu"]), default=None,
                        help="our FFN activation (default: the one matching the reference).")


@click.command()
@click.option("--model", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="GGUF to validate (default $CROSSVAL_GGUF, else the first models/**/*.gguf).")
@_CPP_DIR
@_FLAVOR
@click.option("--prompt", "prompts", multiple=True, help="prompt to check (repeatable; default: a built-in set).")
@click.option("--max-tokens", type=int, default=32, show_default=True, help="greedy tokens compared per prompt.")
@click.option("--cos-tol", type=float, default=0.999, show_default=True)
@click.option("--nmse-tol", type=float, default=1e-6, show_default=True)
@_PROFILE
@_FFN_ACT
@click.option("--report", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="report path (default target/crossval_report.json).")
@with_output
def crossval(out: Output, model: Path | None, cpp_dir: Path | None, flavor: str, prompts: tuple[str, ...],
             max_tokens: int, cos_tol: float, nmse_tol: float, profile: str | None, ffn_act: str | None,
             report: Path | None) -> int:
    """Deterministic cross-validation suite against the C++ reference; writes target/crossval_report.json.

    Exit 0 on agreement (or xfail with CROSSVAL_ALLOW_CPP_FAIL=1), 1 on divergence, 18 for a bad model,
    19 when the C++ reference is missing.
    """
    from bitnet.crossval.suite import (
        DEFAULT_PROMPTS,
        DEFAULT_REPORT,
        SuiteOptions,
        run_suite,
        summarize,
    )

    opts = SuiteOptions(model=model, flavor=flavor, cpp_dir=cpp_dir, prompts=prompts or DEFAULT_PROMPTS,
                        max_tokens=max_tokens, cos_tol=cos_tol, nmse_tol=nmse_tol, profile=profile, ffn_act=ffn_act,
                        report=report or DEFAULT_REPORT)  # fmt: skip
    rep = run_suite(opts)
    out.result({**rep, "report_path": str(opts.report)}, text=summarize(rep) + f"\nreport: {opts.report}")
    return verdict_exit(out, rep["ok"], "crossval diverges: " + "; ".join(rep["notes"]))


@click.command()
@click.option("--model", type=click.Path(path_type=Path, dir_okay=False, exists=True), required=True)
@click.option("--tokenizer", type=click.Path(path_type=Path, dir_okay=False, exists=True), default=None,
              help="tokenizer.json for our side (default: the GGUF's own vocabulary).")
@click.option("--prompt", required=True)
@click.option("--max-tokens", type=int, default=4, show_default=True, help="greedy tokens decoded on both sides.")
@click.option("--cos-tol", type=float, default=0.999, show_default=True,
              help="a position diverges when its cosine similarity is below this.")
@click.option("--nmse-tol", type=float, default=1e-6, show_default=True)
@_PROFILE
@_FFN_ACT
@_FLAVOR
@_CPP_DIR
@click.option("--trace-dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="also trace both sides into TRACE_DIR/ours and TRACE_DIR/cpp (for trace-diff).")
@click.option("--cpp-model", type=click.Path(path_type=Path, dir_okay=False, exists=True), default=None,
              help="give the C++ reference this GGUF instead of --model (e.g. the original of a modified copy).")
@with_output
def crossval_per_token(out: Output, model: Path, tokenizer: Path | None, prompt: str, max_tokens: int,
                       cos_tol: float, nmse_tol: float, profile: str | None, ffn_act: str | None, flavor: str,
                       cpp_dir: Path | None, trace_dir: Path | None, cpp_model: Path | None) -> int:
    """Per-position logits comparison with the C++ reference, then greedy streams.

    Exit 0 when tokens, logits (cosine ≥ --cos-tol, NMSE ≤ --nmse-tol) and greedy streams agree; 1 (CheckFailed)
    on the first divergence, which is named in the output.
    """
    from bitnet.crossval.parity import DETERMINISTIC_ENV, ParityOptions, run_parity, scoped_env
    from bitnet.crossval.report_text import per_token_text
    opts = ParityOptions(flavor=flavor, cpp_dir=cpp_dir, profile=profile, ffn_act=ffn_act, tokenizer=tokenizer,
                         cos_tol=cos_tol, nmse_tol=nmse_tol)  # fmt: skip
    dirs = (trace_dir / "ours", trace_dir / "cpp") if trace_dir else None
    with scoped_env(dict(DETERMINISTIC_ENV)):
        res = run_parity(model, prompt, max_tokens=max_tokens, opts=opts, trace_dirs=dirs, ref_model=cpp_model)
    if dirs:
        res["trace_dirs"] = {"ours": str(dirs[0]), "cpp": str(dirs[1])}
    lg = res.get("logits") or {}
    # the seed's JSON fields, kept for scripts written against it
    res.update(first_divergence_token=lg.get("first_divergent_position"),
               per_token_cosine_sim=[p["cosine"] for p in lg.get("positions", [])],
               per_token_l2_dist=[p["l2"] for p in lg.get("positions", [])],
               max_absolute_diff=lg.get("max_abs"), threshold=cos_tol, status="ok" if res["ok"] else "diverged")
    out.result(res, text=lambda console: console.print(per_token_text(res), markup=False))
    hint = "" if trace_dir else " (trace both sides with --trace-dir D, then `xtask trace-diff D/ours D/cpp`)"
    return verdict_exit(out, res["ok"], f"divergence: {res['verdict']}{hint}")


@click.command()
@click.argument("ours_dir", type=click.Path(path_type=Path))
@click.argument("cpp_dir", type=click.Path(path_type=Path))
@click.option("--rel-tol", type=float, default=1e-3, show_default=True,
              help="relative rms of the difference allowed per tracepoint.")
@with_output
def trace_diff(out: Output, ours_dir: Path, cpp_dir: Path, rel_tol: float) -> int:
    """First divergent (seq, layer, stage) between two trace dirs. Exit 0 match, 1 divergence, 20 missing dir."""
    from bitnet.crossval.trace_diff import diff_traces, format_diff
    res = diff_traces(ours_dir, cpp_dir, rel_tol=rel_tol)
    out.result(res, text=lambda console: console.print(format_diff(res), markup=False))
    fd = res["first_divergence"]
    where = f"seq={fd['seq']} layer={fd['layer']} stage={fd['stage']}" if fd else "no common tracepoints"
    return verdict_exit(out, res["ok"], f"traces diverge: {where}")


@click.command()
@click.option("--offline", is_flag=True,
              help="no downloads: generate the default tiny TQ2_0 `bitnet` model and build llama.cpp from the sdist.")
@click.option("--model", type=click.Path(path_type=Path, dir_okay=False, exists=True), default=None,
              help="use this GGUF instead of downloading / generating one.")
@click.option("--flavor", type=click.Choice(["bitnet", "llama.cpp"]), default=None,
              help="reference flavor (default: llama.cpp offline, bitnet online).")
@_CPP_DIR
@click.option("--max-tokens", type=int, default=32, show_default=True)
@click.option("--report", type=click.Path(path_type=Path, dir_okay=False), default=None)
@click.option("--force", is_flag=True, help="regenerate the offline model.")
@with_output
def full_crossval(out: Output, offline: bool, model: Path | None, flavor: str | None, cpp_dir: Path | None,
                  max_tokens: int, report: Path | None, force: bool) -> int:
    """Model → fetch-cpp → crossval in one command, with one verdict. Exit codes as `crossval` (plus 21, 14)."""
    from bitnet.crossval.full import FullOptions, run_full
    from bitnet.crossval.suite import DEFAULT_REPORT, summarize

    res = run_full(FullOptions(offline=offline, model=model, flavor=flavor, cpp_dir=cpp_dir, max_tokens=max_tokens,
                               report=report or DEFAULT_REPORT, force=force))  # fmt: skip
    steps = res["steps"]

    def text(console) -> None:
        console.print(f"model: {steps['model']['path']} ({steps['model']['seconds']} s)", markup=False)
        fc = steps["fetch_cpp"]
        console.print(f"fetch-cpp: {res['flavor']} {fc['revision']} "
                      f"({'built' if fc['rebuilt'] else 'cached'}, {fc['seconds']} s)", markup=False)  # fmt: skip
        console.print(summarize(res["report"]), markup=False)
        verdict = "PASS: our engine agrees with the C++ reference" if res["ok"] else "FAIL: see the report"
        console.print(f"VERDICT: {verdict} (total {res['seconds']} s; report {res['report_path']})", markup=False)

    out.result(res, text=text)
    return verdict_exit(out, res["ok"], "full-crossval: " + ("; ".join(res["report"]["notes"]) or "failed"))


@click.command()
@click.argument("model", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.argument("tokenizer", type=click.Path(path_type=Path, dir_okay=False), required=False)
@click.argument("outdir", type=click.Path(path_type=Path, file_okay=False), default=Path("crossval-results"))
@_FLAVOR
@_CPP_DIR
@_PROFILE
@_FFN_ACT
@click.option("--cos-tol", type=float, default=0.999, show_default=True)
@with_output
def crossval_sweep(out: Output, model: Path, tokenizer: Path | None, outdir: Path, flavor: str, cpp_dir: Path | None,
                   profile: str | None, ffn_act: str | None, cos_tol: float) -> int:
    """Scenarios of 1, 2, 4, 16 and 32 tokens with traces, per-scenario reports, summary.md and report.html.

    TOKENIZER may be `-` or omitted to use the GGUF's vocabulary. Exit 0 when every scenario agrees, else 1.
    """
    from bitnet.crossval.parity import ParityOptions
    from bitnet.crossval.sweep import run_sweep, summary_markdown
    tok = None if tokenizer is None or str(tokenizer) == "-" else tokenizer
    opts = ParityOptions(flavor=flavor, cpp_dir=cpp_dir, profile=profile, ffn_act=ffn_act, cos_tol=cos_tol)
    res = run_sweep(model, tok, outdir, opts=opts)
    out.result(res, text=lambda console: console.print(summary_markdown(res) + f"\nreport: {outdir / 'report.html'}",
                                                         markup=False))  # fmt: skip
    n_bad = sum(not r["ok"] for r in res["scenarios"])
    return verdict_exit(out, res["ok"], f"{n_bad} scenario(s) diverge; see {outdir}/summary.md")
