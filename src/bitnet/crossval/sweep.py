"""`xtask crossval-sweep MODEL TOKENIZER OUTDIR`: the seed's scenarios (1, 2, 4 tokens) plus longer ones.

Per scenario (OUTDIR/<name>/): traces of both sides (`ours-traces/`, `cpp-traces/`, values included), the decoded
outputs (`ours-output.txt`, `cpp-output.txt`), `logits-comparison.json` (the full parity result), `trace-diff.json`
and a `report.txt`. At the top: `summary.md` (table + recommendations), `summary.json` and `report.html`, whose plots
of per-position cosine similarity and KL divergence (matplotlib, embedded as base64 PNG) show where it diverges.
"""

from __future__ import annotations

import base64
import html
import io
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bitnet.crossval.parity import DETERMINISTIC_ENV, ParityOptions, run_parity, scoped_env
from bitnet.crossval.report_text import per_token_text
from bitnet.crossval.suite import ScenarioTimeout, scenario_timeout, time_limit
from bitnet.crossval.trace_diff import diff_traces, format_diff
from bitnet.fsutil import atomic_write_json, atomic_write_text


@dataclass(frozen=True)
class Scenario:
    name: str
    prompt: str
    max_tokens: int


#: the seed's three scenarios, then longer prompts and streams
DEFAULT_SCENARIOS = (
    Scenario("scenario1", "2+2=", 1),
    Scenario("scenario2", "Hello", 2),
    Scenario("scenario3", "Count: 1,2,3,", 4),
    Scenario("scenario4", "The quick brown fox jumps over the lazy dog.", 16),
    Scenario("scenario5", "Once upon a time, in a land far away, there lived a small robot who loved to count "
                          "the stars every night before going to sleep.", 32),
)

#: stages that are the output of a quantized matmul (their input is quantized to int8 first)
MATMUL_STAGES = {"q", "k", "v", "attn_o", "ffn_gate", "ffn_up", "ffn_out"}
#: the seed's documented cosine thresholds for the colour of a row
GREEN, YELLOW = 0.99, 0.95


def _status(min_cos: float | None, ok: bool) -> str:
    """green: agrees; yellow: fails a check but cosine ≥ 0.95 everywhere; red: worse (the seed's colours)."""
    if ok:
        return "green"
    if min_cos is None:
        return "red"
    return "yellow" if min_cos >= YELLOW else "red"


def run_scenario(model: Path, sc: Scenario, outdir: Path, opts: ParityOptions) -> dict[str, Any]:
    d = outdir / sc.name
    d.mkdir(parents=True, exist_ok=True)
    ours_tr, cpp_tr = d / "ours-traces", d / "cpp-traces"
    t = time.perf_counter()
    row: dict[str, Any] = {"name": sc.name, "prompt": sc.prompt, "max_tokens": sc.max_tokens}
    try:
        with time_limit(scenario_timeout()):
            res = run_parity(model, sc.prompt, max_tokens=sc.max_tokens, opts=opts, trace_dirs=(ours_tr, cpp_tr))
    except ScenarioTimeout as exc:
        row.update(ok=False, error=str(exc), status="red", seconds=round(time.perf_counter() - t, 2))
        atomic_write_text(d / "report.txt", f"{sc.name}: {exc}\n")
        return row
    atomic_write_json(d / "logits-comparison.json", res, sort_keys=False)
    g = res.get("greedy") or {}
    atomic_write_text(d / "ours-output.txt", f"prompt: {sc.prompt}\ntokens: {g.get('ours')}\n")
    atomic_write_text(d / "cpp-output.txt", f"prompt: {sc.prompt}\ntokens: {g.get('ref')}\ntext: {g.get('text_ref')}\n")
    td = diff_traces(ours_tr, cpp_tr) if res["tokenization"]["match"] else None
    if td is not None:
        atomic_write_json(d / "trace-diff.json", td, sort_keys=False)
    report = per_token_text(res) + ("\n\ntrace diff:\n" + format_diff(td) if td else "")
    atomic_write_text(d / "report.txt", report + "\n")
    lg = res.get("logits") or {}
    row.update(
        ok=bool(res["ok"]),
        verdict=res["verdict"],
        n_prompt_tokens=len(res["tokenization"]["ours"]),
        tokens_match=res["tokenization"]["match"],
        min_cosine=lg.get("min_cosine"),
        nmse=lg.get("nmse"),
        max_kl=lg.get("max_kl"),
        top1_agreement=lg.get("top1_agreement"),
        first_divergent_position=lg.get("first_divergent_position"),
        greedy_match=g.get("match"),
        first_greedy_mismatch=g.get("first_mismatch_step"),
        first_trace_divergence=(td or {}).get("first_divergence"),
        trace_points=(td or {}).get("n_compared"),
        cosine=[p["cosine"] for p in lg.get("positions", [])],
        kl=[p["kl"] for p in lg.get("positions", [])],
        seconds=round(time.perf_counter() - t, 2),
    )
    row["status"] = _status(row["min_cosine"], row["ok"])
    return row


def run_sweep(model: str | Path, tokenizer: str | Path | None, outdir: str | Path, *,
              scenarios: tuple[Scenario, ...] = DEFAULT_SCENARIOS, opts: ParityOptions | None = None) -> dict[str, Any]:  # fmt: skip
    """Run every scenario, then write summary.md / summary.json / report.html. Returns the summary."""
    model, outdir = Path(model), Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    opts = opts or ParityOptions()
    if tokenizer is not None:
        opts.tokenizer = Path(tokenizer)
    t0 = time.perf_counter()
    with scoped_env(dict(DETERMINISTIC_ENV)):
        rows = [run_scenario(model, sc, outdir, opts) for sc in scenarios]
    summary = {"model": str(model), "tokenizer": str(tokenizer) if tokenizer else None, "outdir": str(outdir),
               "flavor": opts.flavor, "scenarios": rows, "ok": all(r["ok"] for r in rows),
               "seconds": round(time.perf_counter() - t0, 2)}  # fmt: skip
    summary["recommendations"] = recommendations(rows)
    atomic_write_json(outdir / "summary.json", summary, sort_keys=False)
    atomic_write_text(outdir / "summary.md", summary_markdown(summary))
    atomic_write_text(outdir / "report.html", html_report(summary))
    return summary


def recommendations(rows: list[dict[str, Any]]) -> list[str]:
    recs: list[str] = []
    if all(r["ok"] for r in rows):
        return ["All scenarios agree: logits within tolerance and identical greedy streams. Nothing to do."]
    for r in rows:
        if r["ok"]:
            continue
        if r.get("error"):
            recs.append(f"{r['name']}: {r['error']} — raise CROSSVAL_TIMEOUT_SECS or use a smaller model.")
        elif not r.get("tokens_match"):
            recs.append(f"{r['name']}: tokenization differs — fix the tokenizer first (compare tokenizer.json with "
                        "the GGUF vocabulary); logits are not comparable until the ids agree.")  # fmt: skip
        elif r.get("first_trace_divergence"):
            fd = r["first_trace_divergence"]
            where = f"{r['name']}: first divergent tracepoint seq={fd['seq']} layer={fd['layer']} stage={fd['stage']}"
            prev = fd.get("previous") or {}
            if fd["stage"] in MATMUL_STAGES and (prev.get("rel_rms_diff") or 1.0) < 1e-5:
                recs.append(f"{where}: its input ({prev['stage']}) still agreed to {prev['rel_rms_diff']:.1e}, so "
                            "this is an activation-quantization rounding flip (an int8 level changed), not a kernel "
                            "bug; only bit-exact float32 numerics (llama.cpp's summation order) would remove it.")
            else:
                recs.append(f"{where} — inspect that stage's kernel and its numerics profile.")
        elif r.get("first_divergent_position") is not None:
            recs.append(f"{r['name']}: logits diverge at position {r['first_divergent_position']} — re-run "
                        "crossval-per-token with --trace-dir and trace-diff.")  # fmt: skip
        else:
            recs.append(f"{r['name']}: {r.get('verdict')} — near-ties in argmax can flip greedy streams; compare "
                        "the top-2 logit gap at the first mismatching step.")  # fmt: skip
    return recs


def summary_markdown(s: dict[str, Any]) -> str:
    def f(x: Any) -> str:
        return f"{x:.3g}" if isinstance(x, float) else ("—" if x is None else str(x))

    lines = [f"# Cross-validation sweep: {Path(s['model']).name}", "",
             f"Reference: {s['flavor']}; deterministic (BITNET_SEED=42, 1 thread). Total {s['seconds']} s.", "",
             "| Scenario | Status | Prompt tokens | Token match | Min cosine | NMSE | Max KL | Top-1 | Greedy match "
             "| First divergent position | First divergent trace | Trace points |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in s["scenarios"]:
        fd = r.get("first_trace_divergence")
        ftd = f"seq {fd['seq']} / layer {fd['layer']} / {fd['stage']}" if fd else "—"
        lines.append(f"| {r['name']} | {r['status']} | {f(r.get('n_prompt_tokens'))} | {f(r.get('tokens_match'))} | "
                     f"{f(r.get('min_cosine'))} | {f(r.get('nmse'))} | {f(r.get('max_kl'))} | "
                     f"{f(r.get('top1_agreement'))} | {f(r.get('greedy_match'))} | "
                     f"{f(r.get('first_divergent_position'))} | {ftd} | {f(r.get('trace_points'))} |")  # fmt: skip
    lines += ["", f"Thresholds: cosine ≥ {GREEN} green, {YELLOW}–{GREEN} yellow, below red.", "",
              "## Recommendations", "", *[f"- {x}" for x in s["recommendations"]], ""]  # fmt: skip
    return "\n".join(lines)


def _plot_png(rows: list[dict[str, Any]]) -> str | None:
    """Base64 PNG of per-position 1 − cosine (top) and KL (bottom), log scale, per scenario; None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    for r in rows:
        if r.get("cosine"):
            ax1.plot(range(len(r["cosine"])), [max(1.0 - c, 1e-12) for c in r["cosine"]], marker="o", ms=3,
                     label=r["name"])
            ax2.plot(range(len(r["kl"])), [max(k, 1e-16) for k in r["kl"]], marker="o", ms=3, label=r["name"])
    ax1.set_yscale("log")
    ax1.set_ylabel("1 − cosine similarity")
    ax1.axhline(1.0 - GREEN, color="orange", lw=0.8, ls="--")
    ax1.legend(fontsize=7)
    ax2.set_yscale("log")
    ax2.set_ylabel("KL(ref ‖ ours)")
    ax2.set_xlabel("token position")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def html_report(s: dict[str, Any]) -> str:
    png = _plot_png(s["scenarios"])
    img = (f'<img alt="per-position cosine and KL" src="data:image/png;base64,{png}">' if png
           else "<p>(matplotlib is not installed: no plot; install the `crossval` extra)</p>")  # fmt: skip
    md = html.escape(summary_markdown(s))
    data = html.escape(json.dumps([{k: v for k, v in r.items() if k not in ("cosine", "kl")} for r in s["scenarios"]],
                                  indent=1, default=str))  # fmt: skip
    verdict = "PASS" if s["ok"] else "FAIL"
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>crossval sweep: {verdict}</title></head>"
            f"<body><h1>Cross-validation sweep — {verdict}</h1>{img}<pre>{md}</pre>"
            f"<details><summary>scenario data</summary><pre>{data}</pre></details></body></html>\n")  # fmt: skip
