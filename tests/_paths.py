"""Where the shared reference data lives, for tests.

`shared/` (the golden logits Microsoft's bitnet.cpp produced) sits beside the checkout: `../shared` for a
developer's tree and for CI's clone. `BITNET_SHARED_DIR` overrides it; `/work/shared` is the last resort. Tests that
need a file skip (with the path in the reason) when it is missing.
"""

from __future__ import annotations

import os
from pathlib import Path


def _shared_dir() -> Path:
    candidates = [os.environ.get("BITNET_SHARED_DIR"), Path(__file__).resolve().parents[2] / "shared", "/work/shared"]
    for c in candidates:
        if c and (Path(c) / "golden").is_dir():
            return Path(c)
    return Path(candidates[1])


SHARED_DIR = _shared_dir()
GOLDEN_DIR = SHARED_DIR / "golden" / "bitnet-cpp-tiny"
