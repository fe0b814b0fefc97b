"""Validation of Hub names and the local layout they map to.

Repo ids, revisions and file names come from the command line and from lockfiles, and end up in URLs and local
paths. A name like `../../etc/passwd` must be refused before it reaches either, so every entry point goes through
these functions and gets a `UsageError` (exit 2) naming the bad part.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

from bitnet.errors import UsageError

DEFAULT_MODEL_ID = "microsoft/bitnet-b1.58-2B-4T-gguf"
DEFAULT_MODEL_FILE = "ggml-model-i2_s.gguf"
DEFAULT_REVISION = "main"

_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


def validate_repo_id(repo_id: str) -> str:
    """Check `repo_id` with huggingface_hub's own rules (so we accept exactly what the Hub accepts)."""
    from huggingface_hub.utils import HFValidationError
    from huggingface_hub.utils import validate_repo_id as hub_validate

    try:
        hub_validate(repo_id)
    except HFValidationError as exc:
        raise UsageError(f"invalid repo id {repo_id!r}: {exc}") from None
    return repo_id


def validate_revision(revision: str) -> str:
    """A branch, tag or commit. `/` is allowed (refs/pr/1); `..`, control characters and empty names are not."""
    if not revision or _CONTROL_RE.search(revision) or ".." in revision or revision.startswith("/"):
        raise UsageError(f"invalid revision {revision!r}")
    return revision


def validate_filename(filename: str) -> str:
    """A relative POSIX path inside the repo: no absolute paths, no `..`/`.` parts, no backslashes."""
    if not filename or _CONTROL_RE.search(filename) or "\\" in filename:
        raise UsageError(f"invalid file name {filename!r}")
    path = PurePosixPath(filename)
    if path.is_absolute() or any(part in ("", ".", "..") for part in filename.split("/")):
        raise UsageError(f"invalid file name {filename!r}: must be a relative path without '.' or '..' parts")
    return filename


def is_commit(revision: str) -> bool:
    return bool(_COMMIT_RE.fullmatch(revision))


def normalize_sha256(value: str | None) -> str | None:
    """Lower-case hex sha256 or None; anything else is a usage error (a typo must not disable verification)."""
    if value is None:
        return None
    value = value.strip().lower()
    if value.startswith("sha256:"):
        value = value[len("sha256:") :]
    if not _SHA256_RE.fullmatch(value):
        raise UsageError(f"invalid sha256 {value!r}: expected 64 hexadecimal characters")
    return value


def looks_like_sha256(value: str | None) -> bool:
    return bool(value and _SHA256_RE.fullmatch(value))


def repo_dirname(repo_id: str) -> str:
    """The folder a repo's files land in under `--out`: `microsoft/x` → `microsoft-x` (the original xtask's layout)."""
    return repo_id.replace("/", "-")


def local_path(out_dir: Path, repo_id: str, filename: str) -> Path:
    """Where `filename` of `repo_id` lands under `out_dir`, guaranteed to stay inside `out_dir`."""
    validate_repo_id(repo_id)
    validate_filename(filename)
    root = out_dir.resolve()
    dest = (root / repo_dirname(repo_id) / filename).resolve()
    if not dest.is_relative_to(root) or dest == root:
        raise UsageError(f"file {filename!r} of {repo_id!r} would land outside {out_dir}")
    return dest
