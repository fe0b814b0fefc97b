"""`xtask detect-breaking`, `check-features`, `preflight`, `gpu-preflight`, `vendor-ggml`: thin wrappers over
bitnet.receipts.{breaking,features,gpu,ggml_coverage}."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console

from bitnet.cli.output import Output, with_output
from bitnet.errors import ExitCode, UsageError


def _project_root() -> Path:
    """The checkout this package runs from (walk up to pyproject.toml), else the current folder."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "pyproject.toml").is_file():
            return parent
    return Path.cwd()


def _parse_cli_entries(values: tuple[str, ...]) -> dict[str, str] | None:
    if not values:
        return None
    entries = {}
    for item in values:
        label, sep, spec = item.partition("=")
        if not sep or ":" not in spec:
            raise UsageError(f"--cli expects LABEL=module:attr, got {item!r}")
        entries[label] = spec
    return entries


@click.command("detect-breaking")
@click.option("--against", default=None, help="Git ref to compare with (default: latest tag, else HEAD).")
@click.option("--repo", type=click.Path(file_okay=False, path_type=Path), default=None, help="Repository (default: this checkout).")
@click.option("--package", default="bitnet", show_default=True)
@click.option("--src", default="src", show_default=True, help="Folder holding the package, relative to --repo.")
@click.option("--cli", "cli_entries", multiple=True, help="LABEL=module:attr of a click CLI to diff (default: xtask and bitnet).")
@click.option("--allow", "allow_file", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Allow list (default: <repo>/.breaking-allow.json).")
@with_output
def detect_breaking(out: Output, against: str | None, repo: Path | None, package: str, src: str,
                    cli_entries: tuple[str, ...], allow_file: Path | None) -> int:
    """Breaks in the public API, the CLI and the JSON schemas since a git ref (exit 1; 22 if it could not run)."""
    from bitnet.receipts.breaking import detect_breaking as run

    report = run(repo or _project_root(), against, package=package, src=src,
                 cli_entries=_parse_cli_entries(cli_entries), allow_file=allow_file)

    def render(console: Console) -> None:
        for note in report["notes"] + [f"warning: {w}" for w in report["warnings"]]:
            console.print(note, markup=False)
        for b in report["allowed"]:
            console.print(f"allowed  {b['kind']}  {b['path']}: {b['message']} ({b['allowed_reason']})", markup=False)
        for b in report["breaks"]:
            console.print(f"BREAK    {b['kind']}  {b['path']}: {b['message']}", markup=False)
        n = len(report["breaks"])
        console.print(f"{n} breaking change(s) against {report['against']}" if n else f"no breaking change against {report['against']}")

    out.result(report, text=render)
    return int(ExitCode.CHECK_FAILED) if report["breaks"] else 0


@click.command("check-features")
@click.option("--project", type=click.Path(file_okay=False, path_type=Path), default=None, help="Folder with pyproject.toml.")
@click.option("--no-import-check", is_flag=True, help="Do not import the installed packages of each extra.")
@with_output
def check_features(out: Output, project: Path | None, no_import_check: bool) -> int:
    """Extras in pyproject.toml agree with the imports: optional imports guarded, extras importable (exit 1 if not)."""
    from bitnet.receipts.features import check_features as run

    report = run(project or _project_root(), import_check=not no_import_check)

    def render(console: Console) -> None:
        for extra, info in report["extras"].items():
            pkgs = ", ".join(f"{p['dist']}{'' if p.get('installed') else ' (not installed)'}" for p in info["packages"]) or "-"
            console.print(f"[{extra}] {pkgs}", markup=False)
        for e in report["errors"]:
            console.print(f"ERROR {e}", markup=False)
        console.print("features consistent" if report["ok"] else f"{len(report['errors'])} problem(s)")

    out.result(report, text=render)
    return 0 if report["ok"] else int(ExitCode.CHECK_FAILED)


@click.command()
@with_output
def preflight(out: Output) -> int:
    """Exit 0 when a GPU backend is usable (torch with CUDA + Triton), 1 otherwise, saying what was found."""
    from bitnet.receipts.gpu import preflight as run

    report = run()

    def render(console: Console) -> None:
        t = report["torch"]
        console.print(f"torch: {t['version'] or 'not installed'} (CUDA build: {t['cuda_build']})", markup=False)
        console.print(f"CUDA devices: {report['cuda']['device_count']} {report['cuda']['devices']}", markup=False)
        console.print(f"triton: {report['triton']['version'] if report['triton']['installed'] else 'not importable'}", markup=False)
        for r in report["reasons"]:
            console.print(f"- {r}", markup=False)
        console.print("GPU backend usable: cuda" if report["usable"] else "no GPU backend usable (CPU only)")

    out.result(report, text=render)
    return 0 if report["usable"] else int(ExitCode.CHECK_FAILED)


@click.command("gpu-preflight")
@with_output
def gpu_preflight(out: Output) -> int:
    """Device name, memory, compute capability, and self-checking kernels on each GPU (exit 1 without one)."""
    from bitnet.receipts.gpu import gpu_preflight as run

    report = run()

    def render(console: Console) -> None:
        for d in report["devices"]:
            console.print(f"[{d['index']}] {d['name']} cc {d['compute_capability']}, "
                          f"{d['memory_total_bytes'] / 2**30:.1f} GiB ({d['memory_free_bytes'] / 2**30:.1f} free)", markup=False)
            for t in d["tests"]:
                console.print(f"    {'ok  ' if t['ok'] else 'FAIL'} {t['name']} {t.get('error', '')}", markup=False)
        console.print(report["message"], markup=False)

    out.result(report, text=render)
    return 0 if report["ok"] else int(ExitCode.CHECK_FAILED)


@click.command("vendor-ggml")
@click.option("--lib", "lib_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="libggml-base.so to cross-check against (default: $BITNET_GGML_LIB or the fetch-cpp llama.cpp build).")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), default=Path("ci/ggml-coverage.json"), show_default=True)
@with_output
def vendor_ggml(out: Output, lib_path: Path | None, output: Path) -> int:
    """Which ggml types we can dequantize (gguf-py, numpy, ggml C), cross-checked against ggml's C; writes JSON."""
    from bitnet.receipts.ggml_coverage import coverage
    from bitnet.receipts.io import write_json

    report = coverage(lib_path)
    write_json(output, report)

    def render(console: Console) -> None:
        for r in report["types"]:
            diff = "" if r["max_abs_diff"] is None else f" max|Δ|={r['max_abs_diff']:.3g}"
            console.print(f"{r['type']:<8} via {r['via'] or '-':<8} C: {r['crosscheck']}{diff}", markup=False)
        console.print(f"usable: {len(report['usable'])}/{len(report['types'])}; not usable: {report['not_usable']}; "
                      f"C library: {report['ggml_library'] or 'none found'} -> {output}", markup=False)

    out.result({**report, "output": str(output)}, text=render)
    return int(ExitCode.CHECK_FAILED) if report["mismatches"] else 0


