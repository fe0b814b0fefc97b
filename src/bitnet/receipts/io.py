"""Writing receipts and reports: pretty JSON, landed atomically (temp file + fsync + rename)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bitnet.fsutil import atomic_write_bytes


def write_json(path: str | Path, data: dict[str, Any]) -> Path:
    p = Path(path)
    atomic_write_bytes(p, (json.dumps(data, indent=2, allow_nan=False) + "\n").encode("utf-8"))
    return p


def write_text(path: str | Path, text: str) -> Path:
    p = Path(path)
    atomic_write_bytes(p, text.encode("utf-8"))
    return p
