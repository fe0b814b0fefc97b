"""`models.lock.json`: many Hub files pinned to a commit and a sha256, fetched and verified together.

The schema (documented in docs/hub.md) is enforced with jsonschema before any request is made, and every error
names the entry and field (`models[2].revision: 'main' does not match ...`), so a lockfile typo never turns into
an unpinned or unverified download.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bitnet.errors import BitnetError, Interrupted, InvalidInputError, NotFoundError, UsageError
from bitnet.hub import names
from bitnet.hub.download import Downloader, DownloadRequest

LOCKFILE_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "bitnet-py models lockfile",
    "type": "object",
    "additionalProperties": False,
    "required": ["schema_version", "models"],
    "properties": {
        "schema_version": {"const": 1},
        "models": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["repo", "revision", "file", "sha256"],
                "properties": {
                    "name": {"type": "string", "minLength": 1},
                    "repo": {"type": "string", "minLength": 1},
                    "revision": {"type": "string", "pattern": "^[0-9a-f]{40}$"},
                    "file": {"type": "string", "minLength": 1},
                    "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                    "size": {"type": "integer", "minimum": 0},
                    "license": {"type": "string"},
                },
            },
        },
    },
}


def load_lockfile(path: Path) -> list[dict[str, Any]]:
    """The validated `models` entries of a lockfile; InvalidInputError listing every problem otherwise."""
    import jsonschema

    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise NotFoundError(f"lockfile {path} not found") from None
    except (OSError, ValueError) as exc:
        raise InvalidInputError(f"lockfile {path} is not valid JSON: {exc}") from None
    validator = jsonschema.Draft202012Validator(LOCKFILE_SCHEMA)
    problems = [
        f"{_json_path(err.absolute_path)}: {err.message}"
        for err in sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.absolute_path)))
    ]
    if not problems:
        seen: set[tuple[str, str]] = set()
        for i, entry in enumerate(data["models"]):
            try:
                names.validate_repo_id(entry["repo"])
                names.validate_filename(entry["file"])
            except UsageError as exc:
                problems.append(f"models[{i}]: {exc}")
            key = (entry["repo"], entry["file"])
            if key in seen:
                problems.append(f"models[{i}]: duplicate entry for {entry['repo']}/{entry['file']}")
            seen.add(key)
    if problems:
        raise InvalidInputError(f"invalid lockfile {path}:\n  " + "\n  ".join(problems), hint="see docs/hub.md")
    return list(data["models"])


def _json_path(parts: Any) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(root)"


def fetch_models(downloader: Downloader, lock_path: Path, out_dir: Path) -> dict[str, Any]:
    """Download and verify every entry. All entries are attempted; the first failure's error is then raised
    (its type sets the exit code) with every failure listed."""
    entries = load_lockfile(lock_path)
    results: list[dict[str, Any]] = []
    failures: list[tuple[dict[str, Any], BitnetError]] = []
    for entry in entries:
        req = DownloadRequest(
            repo_id=entry["repo"], filename=entry["file"], out_dir=out_dir, revision=entry["revision"],
            sha256=entry["sha256"],
        )
        try:
            got = downloader.download(req)
            if "size" in entry and got.size != entry["size"]:
                raise InvalidInputError(
                    f"{entry['repo']}/{entry['file']}: the lockfile says {entry['size']} bytes but the file whose "
                    f"sha256 matches has {got.size}; fix the lockfile"
                )
        except Interrupted:
            raise
        except BitnetError as exc:
            failures.append((entry, exc))
            results.append({**_ident(entry), "status": "failed", "kind": exc.kind, "message": str(exc)})
            continue
        results.append({**_ident(entry), **got.to_dict(), "commit_matches": got.commit in (None, entry["revision"])})
    summary = {"ok": not failures, "lockfile": str(lock_path), "models": results}
    if failures:
        first = failures[0][1]
        listing = "; ".join(f"{e['repo']}/{e['file']}: {x}" for e, x in failures)
        raise type(first)(f"{len(failures)} of {len(entries)} lockfile entries failed - {listing}", hint=first.hint)
    return summary


def _ident(entry: dict[str, Any]) -> dict[str, Any]:
    return {"name": entry.get("name", entry["file"]), "repo": entry["repo"], "file": entry["file"]}
