"""Where a download reports what it is doing: NDJSON on stdout, a rich progress bar on stderr, or nowhere.

The downloader only calls `sink.emit(event, **fields)`; the sink decides how to show it. Event names are a small,
documented vocabulary (docs/hub.md): start, progress, retry, done, warning, error, and info (a note such as
"restarting from zero": nothing restarts silently).
Every string goes through the Redactor, so a token can never leak through an event.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any, Protocol, TextIO

from bitnet.hub.http import Redactor

EVENT_SCHEMA_VERSION = "1"


class EventSink(Protocol):
    def emit(self, event: str, **fields: Any) -> None: ...

    def close(self) -> None: ...


def _redact_fields(fields: dict[str, Any], redact: Redactor) -> dict[str, Any]:
    return {k: redact(v) if isinstance(v, str) else v for k, v in fields.items()}


class NullSink:
    def emit(self, event: str, **fields: Any) -> None:
        pass

    def close(self) -> None:
        pass


class NdjsonSink:
    """One JSON object per line. Progress is throttled (`interval_s`) so a fast link does not flood the pipe."""

    def __init__(self, stream: TextIO | None = None, redact: Redactor | None = None, interval_s: float = 0.25):
        self.stream = stream or sys.stdout
        self.redact = redact or Redactor(None)
        self.interval_s = interval_s
        self._last_progress = 0.0

    def emit(self, event: str, **fields: Any) -> None:
        if event == "progress":
            now = time.monotonic()
            final = fields.get("total") is not None and fields.get("bytes") == fields.get("total")
            if not final and now - self._last_progress < self.interval_s:
                return
            self._last_progress = now
        record = {"event": event, "schema_version": EVENT_SCHEMA_VERSION, "ts": round(time.time(), 3)}
        record.update(_redact_fields(fields, self.redact))
        self.stream.write(json.dumps(record, default=str) + "\n")
        self.stream.flush()

    def close(self) -> None:
        pass


class RichSink:
    """A progress bar with throughput and ETA on stderr, and one log line per start/retry/done/error."""

    def __init__(self, console: Any = None, redact: Redactor | None = None, show_progress: bool = True) -> None:
        from rich.console import Console

        self.console = console or Console(stderr=True, highlight=False)
        self.redact = redact or Redactor(None)
        self.show_progress = show_progress
        self._progress: Any = None
        self._task: Any = None

    def _bar(self, label: str, total: int | None) -> None:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._stop_bar()
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self._progress.start()
        self._task = self._progress.add_task(label, total=total)

    def _stop_bar(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def emit(self, event: str, **fields: Any) -> None:
        fields = _redact_fields(fields, self.redact)
        name = fields.get("file", "")
        if event == "start":
            resume = fields.get("resume_from") or 0
            note = f" (resuming at {resume} bytes)" if resume else ""
            self._print(f"downloading {fields.get('repo')}/{name} @ {fields.get('revision')}{note}")
            if self.show_progress:
                self._bar(name, fields.get("size"))
                if self._progress is not None:
                    self._progress.update(self._task, completed=resume)
        elif event == "progress" and self._progress is not None:
            self._progress.update(self._task, completed=fields.get("bytes", 0), total=fields.get("total"))
        elif event == "retry":
            self._print(
                f"[yellow]retry[/yellow] {name}: {fields.get('reason')} - waiting {fields.get('wait_s', 0):.2f}s "
                f"(attempt {fields.get('attempt')})"
            )
        elif event == "done":
            self._stop_bar()
            self._print(f"[green]{fields.get('status')}[/green] {fields.get('path')}")
        elif event in ("error", "warning"):
            self._stop_bar()
            if event == "warning":
                self._print(f"[yellow]warning:[/yellow] {fields.get('file')}: {fields.get('message')}")
        elif event == "info":
            self._print(str(fields.get("message", "")))

    def _print(self, text: str) -> None:
        self.console.print(text, soft_wrap=True)  # paths must stay copy-pasteable, never wrapped

    def close(self) -> None:
        self._stop_bar()
