"""`xtask`: the developer toolkit (model management, C++ reference, cross-validation, benchmarks, CI gates).

Each subcommand lives in `bitnet.cli.commands.<area>` and is a thin wrapper over one library call.
"""

from __future__ import annotations

import sys

import click

from bitnet.cli.app import LazyGroup, run_cli

COMMANDS = {
    # model management (bitnet.hub)
    "download-model": "bitnet.cli.commands.hub:download_model",
    "tokenizer": "bitnet.cli.commands.hub:tokenizer",
    "fetch-models": "bitnet.cli.commands.hub:fetch_models",
    "clean-cache": "bitnet.cli.commands.hub:clean_cache",
    # formats and fixtures (bitnet.formats)
    "gen-fixtures": "bitnet.cli.commands.formats:gen_fixtures",
    "gate": "bitnet.cli.commands.formats:gate",
    "convert": "bitnet.cli.commands.formats:convert",
    # C++ reference and cross-validation (bitnet.crossval)
    "fetch-cpp": "bitnet.cli.commands.crossval:fetch_cpp",
    "setup-crossval": "bitnet.cli.commands.crossval:setup_crossval",
    "crossval": "bitnet.cli.commands.crossval:crossval",
    "crossval-per-token": "bitnet.cli.commands.crossval:crossval_per_token",
    "full-crossval": "bitnet.cli.commands.crossval:full_crossval",
    "trace-diff": "bitnet.cli.commands.crossval:trace_diff",
    "crossval-sweep": "bitnet.cli.commands.crossval:crossval_sweep",
    # benchmarks, receipts and CI gates (bitnet.receipts)
    "benchmark": "bitnet.cli.commands.receipts:benchmark",
    "verify-receipt": "bitnet.cli.commands.receipts:verify_receipt",
    "compare-metrics": "bitnet.cli.commands.receipts:compare_metrics",
    "detect-breaking": "bitnet.cli.commands.devtools:detect_breaking",
    "check-features": "bitnet.cli.commands.devtools:check_features",
    "preflight": "bitnet.cli.commands.devtools:preflight",
    "gpu-preflight": "bitnet.cli.commands.devtools:gpu_preflight",
    "vendor-ggml": "bitnet.cli.commands.devtools:vendor_ggml",
}


@click.group(cls=LazyGroup, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="bitnet-py")
def cli() -> None:
    """Developer tasks for bitnet-py. Exit codes are documented in the README (and bitnet.errors)."""


def main(argv: list[str] | None = None) -> None:
    sys.exit(run_cli(cli, argv))


if __name__ == "__main__":
    main()
