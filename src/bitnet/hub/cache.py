"""`clean-cache`: what bitnet-py keeps on disk, how big it is, and removing it on request.

Only folders we create are listed: the models folder (downloads, `.part` files, sidecars), the C++ reference
builds (`$BITNET_CPP_DIR` or `~/.cache/bitnet_cpp`) and the Hugging Face cache entries of the repos this project
uses (someone may have fetched them with `hf download`). Nothing outside those paths is ever deleted.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from bitnet.errors import UsageError
from bitnet.hub.names import DEFAULT_MODEL_ID
from bitnet.hub.tokenizer import SOURCES

#: Hub repos whose entries in the Hugging Face cache count as ours
KNOWN_REPOS = (DEFAULT_MODEL_ID, *SOURCES.values())


@dataclass
class CacheEntry:
    kind: str  # "models" | "cpp" | "hf-hub"
    path: Path
    bytes: int
    files: int


def cpp_dir() -> Path:
    """Same rule as bitnet.crossval.cpp.reference_dir (kept local so cleaning works without that package)."""
    env = os.environ.get("BITNET_CPP_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "bitnet_cpp"


def hf_hub_cache() -> Path:
    """HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub - read now, not at import."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface"
    return Path(home).expanduser() / "hub"


def tree_size(path: Path) -> tuple[int, int]:
    """(bytes, files) under `path`, counting symlinks as links (never following them out of the tree)."""
    if path.is_symlink() or path.is_file():
        return path.lstat().st_size, 1
    total = count = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
                count += 1
            except FileNotFoundError:
                continue
    return total, count


def list_caches(models_dir: Path) -> list[CacheEntry]:
    candidates = [("models", models_dir), ("cpp", cpp_dir())]
    hub = hf_hub_cache()
    candidates += [("hf-hub", hub / ("models--" + repo.replace("/", "--"))) for repo in KNOWN_REPOS]
    entries = []
    for kind, path in candidates:
        if path.exists() or path.is_symlink():
            size, files = tree_size(path)
            entries.append(CacheEntry(kind, path.absolute(), size, files))
    return entries


def delete_entries(entries: list[CacheEntry]) -> list[Path]:
    """Remove each entry; refuses anything that looks like a root or a home folder (a bad env var)."""
    forbidden = {Path("/").resolve(), Path.home().resolve(), Path.cwd().resolve()}
    removed = []
    for entry in entries:
        target = entry.path
        if target.resolve() in forbidden:
            raise UsageError(f"refusing to delete {target}: it is a root, home or working folder")
        if target.is_symlink() or target.is_file():
            target.unlink()
        else:
            shutil.rmtree(target)
        removed.append(target)
    return removed
