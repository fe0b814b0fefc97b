"""detect-breaking: breaks in the public Python API, the CLI surface and the JSON schemas since a git ref.

- API: griffe loads the package statically from the working tree and from the ref's tree, and
  `griffe.find_breaking_changes` lists removed objects, removed/required/moved parameters, ...
  `ATTRIBUTE_CHANGED_VALUE` (e.g. a bumped `__version__`) is a warning, not a break.
- CLI: both trees' click command trees are walked in subprocesses (cli_surface.py): removed commands and options,
  options that became required, new required arguments, removed choices.
- Schemas: every `*.schema.json` under the source tree (schema_diff.py).
The ref's tree is exported with `git archive` into a temporary folder, so the shared repository's worktree list
and index are never touched. An allow list (`.breaking-allow.json`: [{"kind", "path", "reason"}], fnmatch
patterns) accepts intended breaks. Exit: 0 none, 1 breaks found, 22 the check could not run.
"""

from __future__ import annotations

import fnmatch
import io
import json
import re
import subprocess
import tarfile
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bitnet.errors import CheckCouldNotRun
from bitnet.receipts.cli_surface import extract_cli_surface
from bitnet.receipts.schema_diff import diff_schema

DEFAULT_CLI = {"xtask": "bitnet.cli.xtask:cli", "bitnet": "bitnet.cli.bitnet_cmd:cli"}
DEFAULT_ALLOW_FILE = ".breaking-allow.json"
#: griffe kinds reported as warnings only (value changes of module attributes are rarely contract changes)
WARN_ONLY_API_KINDS = {"attribute_changed_value"}
_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # griffe colours its explanations


@dataclass
class Break:
    kind: str
    path: str
    message: str
    allowed_reason: str | None = None


def _git(repo: Path, *args: str, binary: bool = False) -> Any:
    proc = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=not binary, timeout=120)
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace") if binary else proc.stderr
        raise CheckCouldNotRun(f"git {' '.join(args)} failed: {err.strip()}")
    return proc.stdout


def resolve_ref(repo: Path, against: str | None) -> tuple[str, str, list[str]]:
    """(ref name, commit sha, notes). Without `against`: the latest tag, else HEAD."""
    notes = []
    if against is None:
        proc = subprocess.run(["git", "-C", str(repo), "describe", "--tags", "--abbrev=0"], capture_output=True, text=True)
        if proc.returncode == 0:
            against = proc.stdout.strip()
        else:
            against = "HEAD"
            notes.append("no tag found: comparing the working tree against HEAD")
    sha = _git(repo, "rev-parse", "--verify", "--quiet", f"{against}^{{commit}}").strip()
    return against, sha, notes


def export_tree(repo: Path, sha: str, dest: Path) -> Path:
    data = _git(repo, "archive", "--format=tar", sha, binary=True)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(dest, filter="data")
    return dest


def api_breaks(package: str, old_src: Path, new_src: Path) -> tuple[list[Break], list[str]]:
    import griffe

    loaded = []
    for where in (old_src, new_src):
        try:
            loaded.append(griffe.load(package, search_paths=[str(where)], try_relative_path=False,
                                      resolve_aliases=True, resolve_implicit=False, resolve_external=False))
        except Exception as exc:  # griffe raises ImportError, AliasResolutionError, syntax errors...
            raise CheckCouldNotRun(f"griffe could not load {package!r} from {where}: {type(exc).__name__}: {exc}") from exc
    old, new = loaded
    breaks, warnings = [], []
    for b in griffe.find_breaking_changes(old, new):
        kind = b.kind.name.lower()
        message = _ANSI.sub("", b.explain(style=griffe.ExplanationStyle.ONE_LINE))
        if kind in WARN_ONLY_API_KINDS:
            warnings.append(message)
        else:
            breaks.append(Break(f"api:{kind}", b.obj.path, message))
    return breaks, warnings


def cli_breaks(old: dict[str, Any], new: dict[str, Any]) -> list[Break]:
    breaks = []
    for label, old_entry in old.items():
        old_cmds = old_entry.get("commands")
        if old_cmds is None:
            continue  # the CLI did not exist at the ref
        new_cmds = (new.get(label) or {}).get("commands")
        if new_cmds is None:
            breaks.append(Break("cli:command_removed", label, f"CLI {label!r} no longer exists"))
            continue
        for path, spec in old_cmds.items():
            if path not in new_cmds:
                breaks.append(Break("cli:command_removed", path, f"command {path!r} removed"))
                continue
            now = new_cmds[path]
            if "unloadable" in now and "unloadable" not in spec:
                breaks.append(Break("cli:command_unloadable", path, f"command {path!r} fails to load: {now['unloadable']}"))
                continue
            if "unloadable" in spec or "unloadable" in now:
                continue
            breaks += _option_breaks(path, spec, now)
    return breaks


def _option_breaks(path: str, old: dict[str, Any], new: dict[str, Any]) -> list[Break]:
    found = []
    new_by_opt = {o: spec for spec in new["options"].values() for o in spec["opts"]}
    for spec in old["options"].values():
        for opt in spec["opts"]:
            if opt not in new_by_opt:
                found.append(Break("cli:option_removed", f"{path} {opt}", f"option {opt} removed from {path!r}"))
                continue
            now = new_by_opt[opt]
            if now["required"] and not spec["required"]:
                found.append(Break("cli:option_required", f"{path} {opt}", f"option {opt} of {path!r} became required"))
            if spec["is_flag"] != now["is_flag"] or spec["multiple"] != now["multiple"]:
                found.append(Break("cli:option_changed", f"{path} {opt}", f"option {opt} of {path!r} changed flag/multiple"))
            if spec.get("choices") and now.get("choices") is not None:
                removed = sorted(set(spec["choices"]) - set(now["choices"]))
                if removed:
                    found.append(Break("cli:choice_removed", f"{path} {opt}", f"{opt} of {path!r} lost choices {removed}"))
            if spec.get("choices") is None and spec["type"] != now["type"] and now["type"] != "text":
                found.append(Break("cli:option_changed", f"{path} {opt}", f"{opt} of {path!r}: type {spec['type']} -> {now['type']}"))
    old_args = old["arguments"]
    for i, arg in enumerate(new["arguments"]):
        if arg["required"] and (i >= len(old_args) or not old_args[i]["required"]):
            found.append(Break("cli:argument_added", f"{path} {arg['name']}", f"new required argument {arg['name']!r} in {path!r}"))
    return found


def schema_breaks(old_root: Path, new_root: Path, src: str) -> list[Break]:
    breaks = []
    base = old_root / src
    for old_file in sorted(base.rglob("*.schema.json")) if base.is_dir() else []:
        rel = old_file.relative_to(old_root).as_posix()
        new_file = new_root / rel
        if not new_file.is_file():
            breaks.append(Break("schema:file_removed", rel, f"schema file {rel} removed"))
            continue
        try:
            old_doc, new_doc = json.loads(old_file.read_text()), json.loads(new_file.read_text())
        except json.JSONDecodeError as exc:
            raise CheckCouldNotRun(f"schema {rel} is not valid JSON: {exc}") from exc
        breaks += [Break(kind, f"{rel}{path}", msg) for kind, path, msg in diff_schema(old_doc, new_doc)]
    return breaks


def load_allow_list(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckCouldNotRun(f"{path}: not valid JSON ({exc})") from exc
    entries = data.get("allow", []) if isinstance(data, dict) else data
    if not isinstance(entries, list):
        raise CheckCouldNotRun(f"{path}: expected a list of {{kind, path, reason}} entries")
    for e in entries:
        if not isinstance(e, dict) or not all(isinstance(e.get(k), str) and e.get(k) for k in ("kind", "path", "reason")):
            raise CheckCouldNotRun(f"{path}: every entry needs non-empty 'kind', 'path' and 'reason': {e!r}")
    return entries


def detect_breaking(
    repo: str | Path = ".",
    against: str | None = None,
    *,
    package: str = "bitnet",
    src: str = "src",
    cli_entries: dict[str, str] | None = None,
    allow_file: str | Path | None = None,
) -> dict[str, Any]:
    """Compare the working tree of `repo` with `against`; returns the report (see module docstring)."""
    root = Path(repo).resolve()
    if not (root / src).is_dir():
        raise CheckCouldNotRun(f"{root / src} is not a folder (pass --src)")
    ref, sha, notes = resolve_ref(root, against)
    entries = DEFAULT_CLI if cli_entries is None else cli_entries
    allow_path = Path(allow_file) if allow_file is not None else root / DEFAULT_ALLOW_FILE
    allow = load_allow_list(allow_path)
    with tempfile.TemporaryDirectory(prefix="bitnet-breaking-") as tmp:
        old_root = export_tree(root, sha, Path(tmp))
        if not (old_root / src / package).exists() and not (old_root / src / f"{package}.py").exists():
            raise CheckCouldNotRun(f"package {package!r} does not exist at {ref} ({sha[:12]})")
        breaks, warnings = api_breaks(package, old_root / src, root / src)
        if entries:
            breaks += cli_breaks(extract_cli_surface(old_root / src, entries), extract_cli_surface(root / src, entries))
        breaks += schema_breaks(old_root, root, src)
    used = set()
    for b in breaks:
        for i, e in enumerate(allow):
            if fnmatch.fnmatchcase(b.kind, e["kind"]) and fnmatch.fnmatchcase(b.path, e["path"]):
                b.allowed_reason = e["reason"]
                used.add(i)
                break
    blocking = [b for b in breaks if b.allowed_reason is None]
    return {
        "against": ref,
        "commit": sha,
        "ok": not blocking,
        "breaks": [asdict(b) for b in blocking],
        "allowed": [asdict(b) for b in breaks if b.allowed_reason is not None],
        "warnings": warnings,
        "unused_allow_entries": [e for i, e in enumerate(allow) if i not in used],
        "notes": notes,
    }
