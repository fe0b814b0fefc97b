"""`xtask benchmark`, `verify-receipt`, `compare-metrics`: thin wrappers over bitnet.receipts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from bitnet.cli.output import Output, with_output
from bitnet.errors import ExitCode, UsageError


@click.command()
@click.option("--model", "model", required=True, type=click.Path(dir_okay=False, path_type=Path), help="GGUF model.")
@click.option("--tokenizer", type=click.Path(dir_okay=False, path_type=Path), help="tokenizer.json (default: the GGUF's vocabulary).")
@click.option("--tokens", type=int, default=32, show_default=True, help="Tokens to generate per run (>= 2).")
@click.option("--prompt", default="The capital of France is", show_default=True)
@click.option("--warmup-tokens", type=int, default=4, show_default=True, help="Tokens generated and discarded first.")
@click.option("--gpu", is_flag=True, help="Run on the CUDA backend (fails if it is not usable).")
@click.option("--threads", type=int, default=None, help="Engine threads (recorded in the receipt).")
@click.option("--runs", type=int, default=3, show_default=True, help="Measured repetitions (median and spread).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=Path("ci/inference.json"), show_default=True, help="Where to write the receipt.")
@click.option("--sign", "sign_key", type=click.Path(dir_okay=False, path_type=Path), help="Ed25519 PEM private key: sign the receipt.")
@with_output
def benchmark(out: Output, model: Path, tokenizer: Path | None, tokens: int, prompt: str, warmup_tokens: int, gpu: bool,
              threads: int | None, runs: int, json_path: Path, sign_key: Path | None) -> None:
    """Time prefill and decode on a real model and write an honest receipt."""
    from bitnet.receipts.benchmark import BenchmarkSpec, run_benchmark

    spec = BenchmarkSpec(model=model, tokenizer=tokenizer, tokens=tokens, prompt=prompt, warmup_tokens=warmup_tokens,
                         backend="cuda" if gpu else "cpu", threads=threads, runs=runs)
    receipt = run_benchmark(spec, log=out.log)
    if sign_key is not None:
        from bitnet.receipts.signing import sign_receipt

        receipt = sign_receipt(receipt, sign_key)
    from bitnet.receipts.io import write_json

    write_json(json_path, receipt)
    perf = receipt["performance"]
    summary = (
        f"{receipt['run']['tokens_generated']} tokens x {runs} runs: prefill "
        f"{perf['prefill_tokens_per_second']['median']:.2f} tok/s, decode {perf['decode_tokens_per_second']['median']:.2f} tok/s "
        f"({perf['decode_ms_per_token']['median']:.2f} ms/token), compute_path={receipt['compute_path']}, "
        f"backend={receipt['backend']} -> {json_path}"
    )
    out.result({"receipt_path": str(json_path), "receipt": receipt}, text=summary)


@click.command("verify-receipt")
@click.option("--path", "path", type=click.Path(dir_okay=False, path_type=Path), default=Path("ci/inference.json"), show_default=True)
@click.option("--require-gpu-kernels", is_flag=True, help="Fail unless GPU kernels ran.")
@click.option("--replay", is_flag=True, help="Re-run the recorded prompt and check token ids and the logits digest.")
@click.option("--pubkey", type=click.Path(dir_okay=False, path_type=Path), help="Ed25519 public key the receipt must be signed with.")
@with_output
def verify_receipt(out: Output, path: Path, require_gpu_kernels: bool, replay: bool, pubkey: Path | None) -> int:
    """Check a benchmark receipt; exit 15 listing every failed check."""
    from bitnet.receipts.verify import load_receipt
    from bitnet.receipts.verify import verify_receipt as run_verify

    report = run_verify(load_receipt(path), path=str(path), require_gpu_kernels=require_gpu_kernels,
                        replay=replay, pubkey=pubkey)

    def render(console: Console) -> None:
        for c in report.checks:
            if c.severity == "info":
                mark = "skip"
            elif c.ok:
                mark = "ok"
            else:
                mark = "warn" if c.severity == "warning" else "FAIL"
            console.print(f"{mark:>4} {c.name}: {c.message}", markup=False)
        console.print("receipt verified" if report.ok else f"receipt REJECTED: {len(report.failures)} failed checks")

    out.result(report.to_dict(), text=render)
    if not report.ok:
        out.log(f"error: receipt verification failed: {', '.join(c.name for c in report.failures)}")
        return int(ExitCode.VERIFICATION_FAILED)
    return 0


def _parse_metric_thresholds(values: tuple[str, ...]) -> dict[str, float]:
    from bitnet.receipts.compare import parse_percent

    result = {}
    for item in values:
        name, sep, pct = item.partition("=")
        if not sep or not name:
            raise UsageError(f"--metric-threshold expects NAME=PCT, got {item!r}")
        result[name.strip()] = parse_percent(pct)
    return result


@click.command("compare-metrics")
@click.option("--baseline", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--current", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--threshold", default="5%", show_default=True, help="Allowed worsening per metric.")
@click.option("--metric-threshold", multiple=True, help="Per-metric threshold, NAME=PCT (repeatable).")
@click.option("--noise-floor", default="1%", show_default=True, help="Changes smaller than this never count.")
@click.option("--alpha", type=float, default=0.01, show_default=True, help="Significance level of the Mann-Whitney U test.")
@click.option("--force", is_flag=True, help="Compare even if machines or environments differ.")
@click.option("--markdown", "markdown_path", type=click.Path(dir_okay=False, path_type=Path), help="Write a markdown table here (text mode prints it).")
@with_output
def compare_metrics(out: Output, baseline: Path, current: Path, threshold: str, metric_threshold: tuple[str, ...],
                    noise_floor: str, alpha: float, force: bool, markdown_path: Path | None) -> int:
    """Exit 1 when a metric regressed beyond threshold, noise floor and significance; 0 otherwise."""
    from bitnet.receipts import compare as cmp

    result = cmp.compare_metrics(
        cmp.load_metrics(baseline), cmp.load_metrics(current), threshold_pct=cmp.parse_percent(threshold),
        metric_thresholds=_parse_metric_thresholds(metric_threshold), noise_floor_pct=cmp.parse_percent(noise_floor),
        alpha=alpha, force=force,
    )
    md = cmp.markdown_table(result)
    if markdown_path is not None:
        from bitnet.receipts.io import write_text

        write_text(markdown_path, md)
    out.result({**result, "markdown": md}, text=lambda console: _render_compare(console, result))
    return int(ExitCode.CHECK_FAILED) if result["has_regressions"] else 0


def _render_compare(console: Console, result: dict[str, Any]) -> None:
    table = Table("metric", "baseline", "current", "Δ%", "p", "verdict")
    for m in result["metrics"]:
        p = "-" if m["p_value"] is None else f"{m['p_value']:.3g}"
        table.add_row(m["name"], f"{m['baseline']:.4g}", f"{m['current']:.4g}", f"{m['delta_pct']:+.2f}", p, m["verdict"])
    console.print(table)
    for w in result["warnings"] + result["differences"]:
        console.print(f"note: {w}")
    console.print("REGRESSION: " + ", ".join(result["regressions"]) if result["has_regressions"] else "no regression")
