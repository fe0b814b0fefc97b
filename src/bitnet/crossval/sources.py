"""Getting the C++ reference's source tree: the llama-cpp-python sdist (offline-friendly), a git clone, or a local dir.

Each provider returns a `PreparedSource`: the tree to configure, a revision string, and a sha256 that identifies the
exact input (the sdist tarball's hash, the git commit, or a hash over a local tree's files). That hash is part of
the build fingerprint, so a changed source triggers a rebuild and an unchanged one does not.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bitnet.errors import BuildError, NetworkError, NotFoundError, ReferenceUnavailable
from bitnet.fsutil import sha256_file

#: the llama-cpp-python release whose vendored llama.cpp is the offline upstream reference
SDIST_PACKAGE = "llama-cpp-python"
SDIST_VERSION = "0.3.36"


@dataclass
class PreparedSource:
    """A source tree ready to configure, plus what identifies it."""

    tree: Path
    revision: str
    sha256: str
    description: dict[str, Any]


def _log(msg: str) -> None:
    print(f"[fetch-cpp] {msg}", file=sys.stderr, flush=True)


def sdist_filename(version: str = SDIST_VERSION) -> str:
    return f"llama_cpp_python-{version}.tar.gz"


def download_sdist(dest: Path, version: str = SDIST_VERSION) -> Path:
    """The sdist tarball in `dest`, downloaded with pip (source only, no deps) unless it is already there."""
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / sdist_filename(version)
    if target.is_file() and tarfile.is_tarfile(target):
        _log(f"sdist already downloaded: {target}")
        return target
    _log(f"downloading {SDIST_PACKAGE}=={version} (sdist) from the package index into {dest}")
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
        f"{SDIST_PACKAGE}=={version}", "-d", str(dest),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not target.is_file():
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-8:])
        raise NetworkError(
            f"pip could not download the {SDIST_PACKAGE}=={version} sdist:\n{tail}",
            hint="check access to the package index (PIP_INDEX_URL), or build from a local tree with --source DIR",
        )
    return target


def _changelog_revision(text: str, version: str) -> str | None:
    """The llama.cpp commit named in the CHANGELOG section of `version` ("update llama.cpp to ...@<sha>")."""
    m = re.search(rf"^## \[{re.escape(version)}\](.*?)(?=^## \[|\Z)", text, flags=re.S | re.M)
    if not m:
        return None
    sha = re.search(r"llama\.cpp@([0-9a-f]{7,40})", m.group(1))
    return sha.group(1) if sha else None


def extract_sdist(tarball: Path, dest: Path, version: str) -> PreparedSource:
    """Extract `vendor/llama.cpp` of the sdist into `dest` (atomically: temp dir, then rename)."""
    digest = sha256_file(tarball)
    stamp = dest / ".source-sha256"
    if dest.is_dir() and stamp.is_file() and stamp.read_text().strip() == digest:
        _log(f"sources already extracted: {dest}")
    else:
        _log(f"extracting vendor/llama.cpp from {tarball.name}")
        if dest.exists():
            shutil.rmtree(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=dest.parent))
        try:
            with tarfile.open(tarball) as tf:
                members = [m for m in tf.getmembers() if _wanted_member(m.name)]
                if not any(m.name.endswith("vendor/llama.cpp/CMakeLists.txt") for m in members):
                    raise BuildError(f"{tarball} has no vendor/llama.cpp/CMakeLists.txt; not a llama-cpp-python sdist")
                tf.extractall(tmp, members=members, filter="data")
            (vendor,) = list(tmp.glob("*/vendor/llama.cpp"))
            changelog = next(iter(tmp.glob("*/CHANGELOG.md")), None)
            if changelog is not None:
                shutil.copy(changelog, vendor / ".sdist-CHANGELOG.md")
            (vendor / ".source-sha256").write_text(digest + "\n")
            os.replace(vendor, dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    changelog_path = dest / ".sdist-CHANGELOG.md"
    upstream = _changelog_revision(changelog_path.read_text(), version) if changelog_path.is_file() else None
    revision = f"{SDIST_PACKAGE}=={version}" + (f" (ggml-org/llama.cpp@{upstream})" if upstream else "")
    return PreparedSource(
        tree=dest,
        revision=revision,
        sha256=digest,
        description={"kind": "sdist", "package": SDIST_PACKAGE, "version": version, "tarball": str(tarball),
                     "upstream_commit": upstream},
    )  # fmt: skip


def _wanted_member(name: str) -> bool:
    """vendor/llama.cpp and the top-level CHANGELOG.md (which names the upstream commit)."""
    parts = name.split("/")
    return parts[1:3] == ["vendor", "llama.cpp"] or parts[1:] == ["CHANGELOG.md"]


def tree_sha256(root: Path) -> str:
    """A hash over a source tree's files (relative path + content), skipping VCS and build folders."""
    h = hashlib.sha256()
    skip = {".git", "build", "__pycache__", ".github"}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in skip)
        for name in sorted(filenames):
            p = Path(dirpath) / name
            if p.is_symlink() or not p.is_file():
                continue
            h.update(str(p.relative_to(root)).encode() + b"\0")
            h.update(sha256_file(p).encode())
    return h.hexdigest()


def copy_source_dir(src: Path, dest: Path) -> PreparedSource:
    """Copy a local tree (without .git and build folders) into `dest`; the hash is over the copied files."""
    src = src.expanduser().resolve()
    if not (src / "CMakeLists.txt").is_file():
        raise NotFoundError(f"--source {src} has no CMakeLists.txt; expected a BitNet or llama.cpp source tree")
    digest = tree_sha256(src)
    stamp = dest / ".source-sha256"
    if not (dest.is_dir() and stamp.is_file() and stamp.read_text().strip() == digest):
        _log(f"copying sources from {src}")
        if dest.exists():
            shutil.rmtree(dest)
        tmp = Path(tempfile.mkdtemp(prefix=".copy-", dir=dest.parent))
        try:
            shutil.copytree(src, tmp / "tree", symlinks=True, ignore=shutil.ignore_patterns(".git", "build"))
            os.replace(tmp / "tree", dest)
            stamp.write_text(digest + "\n")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    else:
        _log(f"sources unchanged: {dest}")
    rev = _git_head(src) or f"dir:{digest[:12]}"
    return PreparedSource(tree=dest, revision=rev, sha256=digest, description={"kind": "dir", "path": str(src)})


def _git_head(path: Path) -> str | None:
    try:
        proc = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True)
    except FileNotFoundError:
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def git_clone(repo: str, rev: str | None, dest: Path, *, recursive: bool) -> PreparedSource:
    """Clone `repo` (with submodules when asked) and check out `rev`; network failures are ReferenceUnavailable."""
    if shutil.which("git") is None:
        raise ReferenceUnavailable("git is not installed; cannot clone the C++ reference")
    if not (dest / ".git").exists():
        if dest.exists():
            shutil.rmtree(dest)
        _log(f"cloning {repo}")
        cmd = ["git", "clone", *(["--recursive"] if recursive else []), repo, str(dest)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "GIT_TERMINAL_PROMPT": "0"})
        if proc.returncode != 0:
            shutil.rmtree(dest, ignore_errors=True)
            raise ReferenceUnavailable(
                f"git clone {repo} failed: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ''}",
                hint="without network access use --source DIR (a local checkout) or, for upstream, --sdist",
            )
    if rev:
        for cmd in (["git", "-C", str(dest), "fetch", "--all", "--tags"], ["git", "-C", str(dest), "checkout", rev]):
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0 and cmd[3] == "checkout":
                raise ReferenceUnavailable(f"cannot check out {rev} in {repo}: {proc.stderr.strip()}")
        if recursive:
            subprocess.run(["git", "-C", str(dest), "submodule", "update", "--init", "--recursive"], check=False)
    head = _git_head(dest) or (rev or "unknown")
    return PreparedSource(tree=dest, revision=head, sha256=head, description={"kind": "git", "repo": repo, "rev": rev})
