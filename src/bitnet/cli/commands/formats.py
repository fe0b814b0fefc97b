"""CLI commands of the formats area: `xtask gen-fixtures`, `xtask gate mapper`, `convert`, `bitnet inspect`.

Each command is a thin wrapper over one library function in `bitnet.formats`; results go through `Output`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from bitnet.cli.output import Output, with_output

WEIGHT_FORMATS = ("i2_s", "tq1_0", "tq2_0", "f32")


@click.command("gen-fixtures")
@click.option(
    "--size",
    "sizes",
    multiple=True,
    default=("tiny",),
    show_default=True,
    type=click.Choice(["tiny", "small", "medium", "2b"]),
    help="Model size (repeatable).",
)
@click.option(
    "--format",
    "formats",
    multiple=True,
    type=click.Choice([*WEIGHT_FORMATS, "text", "json"]),
    help="Weight format (repeatable; default tq2_0). `--format json` / `text` choose the output as on "
    "every other command, so `--format i2_s --format json` is valid.",
)
@click.option(
    "--arch", default="bitnet-b1.58", show_default=True, type=click.Choice(["bitnet-b1.58", "bitnet"])
)
@click.option(
    "--out",
    "out_dir",
    default="fixtures",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
)
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--scale-tensors", is_flag=True, help="Add per-tensor `.scale` tensors (arch bitnet only).")
def gen_fixtures(
    sizes: tuple[str, ...], formats: tuple[str, ...], arch: str, out_dir: Path, seed: int, scale_tensors: bool
) -> None:
    """Generate deterministic BitNet test models (GGUF + tokenizer.json)."""
    from bitnet.formats.fixtures import fixture_summary, generate_fixture

    out = Output("json" if "json" in formats else "text")
    fmts = [f for f in formats if f in WEIGHT_FORMATS] or ["tq2_0"]
    results: list[dict[str, Any]] = []
    for size in sizes:
        for fmt in fmts:
            t0 = time.perf_counter()
            out.log(f"generating {size} {fmt} ({arch}) in {out_dir} ...")
            path = generate_fixture(size, fmt, arch, out_dir, seed, scale_tensors=scale_tensors)
            summary = fixture_summary(path)
            summary["seconds"] = round(time.perf_counter() - t0, 3)
            summary["seed"] = seed
            results.append(summary)

    def render(console: Any) -> None:
        table = Table(title="fixtures")
        for col in ("path", "arch", "fmt", "MiB", "sha256", "s"):
            table.add_column(col, overflow="fold", no_wrap=col != "path")
        for r in results:
            table.add_row(r["path"], r["arch"], str(r["fmt"]), f"{r['size_bytes'] / 2**20:.1f}", r["sha256"][:16],
                          f"{r['seconds']:.1f}")  # fmt: skip
        console.print(table)

    out.result({"fixtures": results}, text=render)


@click.group("gate")
def gate() -> None:
    """CI gates over model files."""


@gate.command("mapper")
@click.option("--model", "model", required=True, type=click.Path(dir_okay=False, path_type=Path))
@with_output
def gate_mapper(model: Path, out: Output) -> int:
    """Dry-run the tensor-name mapper over a GGUF's tensor table; exit 1 if any name does not map."""
    import json

    from bitnet.errors import ExitCode
    from bitnet.formats.mapper import mapper_gate

    report = mapper_gate(model)
    # the JSON object is the gate's output: print it in text mode too (on stdout, one line). A failing gate
    # exits with CheckFailed's code (1) without a second JSON error document, so stdout stays one object.
    out.result(report, text=json.dumps(report))
    if not report["ok"]:
        out.log(
            f"error: {report['unmapped_count']} tensor name(s) do not map, e.g. {report['sample_unmapped'][:3]}"
        )
        return int(ExitCode.CHECK_FAILED)
    return 0


@click.command("convert")
@click.argument("src", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--outtype",
    default="i2_s",
    show_default=True,
    type=click.Choice(["i2_s", "tq1_0", "tq2_0", "f16", "f32"]),
)
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Output GGUF (default: ggml-model-<outtype>.gguf in SRC, or next to a GGUF SRC).")  # fmt: skip
@click.option(
    "--pre", default=None, help="llama.cpp pre-tokenizer name (default: detected from tokenizer.json)."
)
@with_output
def convert(src: Path, outtype: str, out_path: Path | None, pre: str | None, out: Output) -> None:
    """Convert a Hugging Face BitNet checkpoint folder (bf16 or packed uint8) to GGUF, or re-encode the
    projections of a BitNet GGUF file (like bitnet.cpp's `llama-quantize ... I2_S 1`)."""
    from bitnet.errors import UsageError
    from bitnet.formats.convert import convert_checkpoint, requantize_gguf
    from bitnet.formats.inspect import inspect_model

    def log(name: str, i: int, n: int) -> None:
        out.log(f"[{i}/{n}] {name}")

    t0 = time.perf_counter()
    if src.is_dir():
        path = convert_checkpoint(
            src, out_path or src / f"ggml-model-{outtype}.gguf", outtype, pre=pre, progress=log
        )
    else:
        if pre is not None:
            raise UsageError("--pre applies to HF checkpoint folders; a GGUF source keeps its vocabulary")
        target = out_path or src.with_name(f"{src.stem}-{outtype}.gguf")
        if target.resolve() == src.resolve():
            raise UsageError("--out must differ from the source file")
        path = requantize_gguf(src, target, outtype, progress=log)
    info = inspect_model(path, with_tensors=False)
    info["seconds"] = round(time.perf_counter() - t0, 3)
    out.result(
        info,
        text=f"wrote {path} ({info['size_bytes'] / 2**20:.1f} MiB, {outtype}, sha256 {info['sha256'][:16]})",
    )


@click.command("inspect")
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--no-hash", is_flag=True, help="Skip the sha256 of the file (slow on multi-GB models).")
@with_output
def inspect(model: Path, no_hash: bool, out: Output) -> None:
    """Show a GGUF model's arch, config, tensors and tokenizer."""
    from bitnet.formats.inspect import inspect_model, render_inspect

    info = inspect_model(model, with_hash=not no_hash)
    out.result(info, text=lambda console: render_inspect(info, console))
