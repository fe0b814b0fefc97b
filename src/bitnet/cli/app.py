"""Shared plumbing for the `xtask` and `bitnet` entry points: lazy command loading and exit-code mapping."""

from __future__ import annotations

import importlib
import json
import os
import sys
from typing import Any

import click

from bitnet.cli.output import OUTPUT_SCHEMA_VERSION, current_output
from bitnet.errors import BitnetError, CheckCouldNotRun, ExitCode, exit_code_for


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use ("module:attr" strings).

    Keeps `xtask --help` fast and lets a command whose optional dependency is missing fail alone, with a clear
    message, instead of breaking every other command.
    """

    def __init__(self, *args: Any, lazy: dict[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self.lazy))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy:
            module_name, attr = self.lazy[cmd_name].split(":")
            try:
                cmd = getattr(importlib.import_module(module_name), attr)
            except (ImportError, AttributeError) as exc:
                return _unavailable_command(cmd_name, exc)
            cmd.name = cmd_name
            return cmd
        return super().get_command(ctx, cmd_name)


def _unavailable_command(name: str, exc: Exception) -> click.Command:
    """A command whose module cannot be imported (usually a missing optional dependency) fails alone, clearly."""

    def run(**_: Any) -> None:
        raise CheckCouldNotRun(
            f"command {name!r} is unavailable: {exc}",
            hint="install the extra it needs (see `xtask check-features`)",
        )

    return click.Command(
        name,
        callback=run,
        help=f"(unavailable: {exc})",
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    )


def run_cli(group: click.Group, argv: list[str] | None = None) -> int:
    """Run a click group and turn every outcome into a documented exit code (see bitnet.errors)."""
    try:
        result = group.main(args=argv, standalone_mode=False)
    except click.exceptions.Exit as exc:  # --help, ctx.exit(n)
        return int(exc.exit_code)
    except click.exceptions.Abort:  # click turns KeyboardInterrupt into Abort
        _report_error(KeyboardInterrupt(), ExitCode.INTERRUPTED)
        return int(ExitCode.INTERRUPTED)
    except click.ClickException as exc:  # usage errors: bad flags, missing arguments
        exc.show()
        return int(ExitCode.USAGE) if isinstance(exc, click.UsageError) else int(exc.exit_code or 1)
    except (BitnetError, KeyboardInterrupt, OSError) as exc:
        code = exit_code_for(exc)
        _report_error(exc, code)
        return int(code)
    return int(result) if isinstance(result, int) else 0


def _report_error(exc: BaseException, code: ExitCode) -> None:
    message = "interrupted" if isinstance(exc, KeyboardInterrupt) else str(exc)
    hint = getattr(exc, "hint", None)
    out = current_output()
    if out is not None and out.json:
        kind = getattr(exc, "kind", type(exc).__name__)
        error = {"kind": kind, "message": message, "exit_code": int(code), "hint": hint}
        click.echo(json.dumps({"schema_version": OUTPUT_SCHEMA_VERSION, "ok": False, "error": error}, indent=2))
    click.echo(f"error: {message}", err=True)
    if hint:
        click.echo(f"hint: {hint}", err=True)
    if os.environ.get("BITNET_DEBUG") == "1":
        import traceback

        traceback.print_exception(exc, file=sys.stderr)
