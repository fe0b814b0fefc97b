"""`bitnet`: run models (generate, chat) and look at model files (inspect, convert)."""

from __future__ import annotations

import sys

import click

from bitnet.cli.app import LazyGroup, run_cli

COMMANDS = {
    "generate": "bitnet.cli.commands.run:generate",
    "chat": "bitnet.cli.commands.run:chat",
    "inspect": "bitnet.cli.commands.formats:inspect",
    "convert": "bitnet.cli.commands.formats:convert",
}


@click.group(cls=LazyGroup, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="bitnet-py")
def cli() -> None:
    """BitNet b1.58 inference: generate, chat, inspect and convert models."""


def main(argv: list[str] | None = None) -> None:
    sys.exit(run_cli(cli, argv))


if __name__ == "__main__":
    main()
