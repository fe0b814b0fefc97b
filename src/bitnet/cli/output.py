"""One output sink for every command: results on stdout (text or JSON), everything else on stderr.

Commands never print directly. They call `out.result(data, text=...)`; in JSON mode only `data` is printed (with
`schema_version`), in text mode the human rendering. Progress bars, logs and warnings go through `out.err` (a rich
Console on stderr), so stdout stays parseable.
"""

from __future__ import annotations

import contextvars
import functools
import json
from collections.abc import Callable
from typing import Any

import click
from rich.console import Console

#: version of the JSON envelope every command prints in --format json
OUTPUT_SCHEMA_VERSION = "1.0"

_current: contextvars.ContextVar[Output | None] = contextvars.ContextVar("bitnet_output", default=None)


def to_jsonable(obj: Any) -> Any:
    """Best-effort conversion of numpy scalars/arrays, paths and dataclasses for json.dumps."""
    import dataclasses
    import os

    import numpy as np

    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(dataclasses.asdict(obj))
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, float) and (obj != obj or obj in (float("inf"), float("-inf"))):
        return None
    return obj


class Output:
    """Where a command writes. `fmt` is "text" or "json"."""

    def __init__(self, fmt: str = "text") -> None:
        self.fmt = fmt
        self.out = Console(soft_wrap=True, highlight=False)
        self.err = Console(stderr=True, highlight=False)
        _current.set(self)

    @property
    def json(self) -> bool:
        return self.fmt == "json"

    def result(self, data: dict[str, Any], text: str | Callable[[Console], None] | None = None) -> None:
        """Print the command's result: JSON envelope in json mode, `text` (or a key: value dump) otherwise."""
        if self.json:
            payload = {"schema_version": OUTPUT_SCHEMA_VERSION, **to_jsonable(data)}
            click.echo(json.dumps(payload, indent=2, sort_keys=False, allow_nan=False))
            return
        if callable(text):
            text(self.out)
        elif text is not None:
            self.out.print(text)
        else:
            for key, value in data.items():
                self.out.print(f"{key}: {value}")

    def log(self, message: str) -> None:
        self.err.print(message)

    def warn(self, message: str) -> None:
        self.err.print(f"[yellow]warning:[/yellow] {message}")


def current_output() -> Output | None:
    return _current.get()


def with_output(func: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator for click commands: adds `--format text|json` and passes `out: Output`."""

    @click.option(
        "--format",
        "fmt",
        type=click.Choice(["text", "json"]),
        default="text",
        show_default=True,
        help="Output format: human text, or JSON on stdout (with schema_version).",
    )
    @functools.wraps(func)
    def wrapper(*args: Any, fmt: str, **kwargs: Any) -> Any:
        return func(*args, out=Output(fmt), **kwargs)

    return wrapper
