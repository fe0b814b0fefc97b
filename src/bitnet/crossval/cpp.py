"""Where the C++ reference lives and what its manifest says.

The reference is built once by `xtask fetch-cpp` into `<reference_dir()>/<flavor>/` and described by
`manifest.json` in that folder. Everything else (the FFI, the test fixture, `setup-crossval`) finds the libraries
through the manifest instead of guessing paths, so a half-finished build is never mistaken for a usable one.
"""

from __future__ import annotations

import ctypes
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bitnet.errors import ReferenceUnavailable
from bitnet.fsutil import atomic_write_json, sha256_file

#: bump when the manifest's fields change meaning
MANIFEST_SCHEMA_VERSION = "1"
FLAVORS = ("bitnet", "llama.cpp")
#: the flavor the tests and `full-crossval --offline` use (buildable offline from the llama-cpp-python sdist)
DEFAULT_TEST_FLAVOR = "llama.cpp"


def reference_dir() -> Path:
    """`$BITNET_CPP_DIR` or `~/.cache/bitnet_cpp` (one subfolder per flavor below it)."""
    env = os.environ.get("BITNET_CPP_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "bitnet_cpp"


def flavor_dir(flavor: str, root: Path | None = None) -> Path:
    if flavor not in FLAVORS:
        raise ValueError(f"unknown flavor {flavor!r}; expected one of {FLAVORS}")
    return (root or reference_dir()) / flavor


@dataclass
class Artifact:
    """One built file: a role ("lib:llama", "bin:llama-bench"), its path and sha256."""

    role: str
    path: str
    sha256: str


@dataclass
class Manifest:
    """What was built, from what, how. `inputs_fingerprint` decides whether a rebuild is needed."""

    flavor: str
    revision: str
    source: dict[str, Any]
    source_sha256: str
    cmake_flags: list[str]
    compiler: dict[str, str]
    backend: str
    artifacts: list[Artifact]
    include_dirs: list[str]
    lib_dir: str
    bin_dir: str
    build_seconds: float
    built_at: str
    inputs_fingerprint: str
    api_generation: str
    build_log: str
    schema_version: str = MANIFEST_SCHEMA_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    def artifact(self, role: str) -> Path | None:
        for art in self.artifacts:
            if art.role == role:
                return Path(art.path)
        return None

    def libraries(self) -> dict[str, Path]:
        """Library role suffix → path, e.g. {"llama": .../libllama.so, "ggml-base": ...}."""
        return {a.role.split(":", 1)[1]: Path(a.path) for a in self.artifacts if a.role.startswith("lib:")}

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        data = dict(data)
        data["artifacts"] = [Artifact(**a) for a in data.get("artifacts", [])]
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


def manifest_path(flavor: str, root: Path | None = None) -> Path:
    return flavor_dir(flavor, root) / "manifest.json"


def read_manifest(flavor: str, root: Path | None = None) -> Manifest | None:
    """The manifest of a finished build, or None when there is none (a corrupt one counts as none)."""
    path = manifest_path(flavor, root)
    if not path.is_file():
        return None
    try:
        return Manifest.from_dict(json.loads(path.read_text()))
    except (ValueError, TypeError, KeyError):
        return None


def write_manifest(manifest: Manifest, root: Path | None = None) -> Path:
    path = manifest_path(manifest.flavor, root)
    atomic_write_json(path, manifest.to_dict(), sort_keys=False)
    return path


def verify_artifacts(manifest: Manifest, *, check_hashes: bool = True) -> list[str]:
    """Problems with the built files (missing, changed, not loadable); empty when all is well."""
    problems: list[str] = []
    for art in manifest.artifacts:
        p = Path(art.path)
        if not p.is_file():
            problems.append(f"{art.role}: missing {p}")
        elif check_hashes and sha256_file(p) != art.sha256:
            problems.append(f"{art.role}: sha256 changed for {p}")
    if not problems:
        problems.extend(load_libraries(manifest.libraries(), probe_only=True))
    return problems


#: order in which the shared libraries must be loaded (dependencies first)
LOAD_ORDER = ("ggml-base", "ggml-cpu", "ggml", "llama")


def _ordered(libs: dict[str, Path]) -> list[Path]:
    names = sorted(libs, key=lambda n: LOAD_ORDER.index(n) if n in LOAD_ORDER else len(LOAD_ORDER))
    return [libs[n] for n in names if libs[n].suffix in (".so", ".dylib", ".dll") or ".so." in libs[n].name]


def load_libraries(libs: dict[str, Path], *, probe_only: bool = False) -> list[str]:
    """dlopen every shared library (dependencies first, RTLD_LOCAL: nothing enters the global symbol scope, so two
    references never interpose each other's ggml). Returns the error messages (empty on success).

    `probe_only` does it in a child process, so that a build tool (`fetch-cpp`) never maps the libraries into its
    own process: two different libggml builds in one process can bind to each other by soname.
    """
    paths = _ordered(libs)
    if probe_only:
        import subprocess
        import sys

        code = ("import ctypes, sys\nfor p in sys.argv[1:]:\n    try:\n        ctypes.CDLL(p, mode=ctypes.RTLD_LOCAL)\n"
                "    except OSError as e:\n        print(f'cannot load {p}: {e}')\n")  # fmt: skip
        proc = subprocess.run([sys.executable, "-c", code, *map(str, paths)], capture_output=True, text=True)
        errors = proc.stdout.strip().splitlines()
        if proc.returncode != 0:
            errors.append(f"library probe crashed (exit {proc.returncode}): {proc.stderr.strip()[-300:]}")
        return errors
    errors: list[str] = []
    for path in paths:
        try:
            ctypes.CDLL(str(path), mode=ctypes.RTLD_LOCAL)
        except OSError as exc:
            errors.append(f"cannot load {path}: {exc}")
    return errors


def find_reference(flavor: str = DEFAULT_TEST_FLAVOR, cpp_dir: Path | None = None) -> Manifest:
    """The manifest of a usable build of `flavor`, or ReferenceUnavailable saying how to make one."""
    root = cpp_dir if cpp_dir is not None else reference_dir()
    manifest = read_manifest(flavor, root)
    if manifest is None:
        cmd = "xtask fetch-cpp --flavor llama.cpp --sdist" if flavor == "llama.cpp" else "xtask fetch-cpp"
        raise ReferenceUnavailable(
            f"no C++ reference build of flavor {flavor!r} under {root / flavor}",
            hint=f"build it with `{cmd}` (set BITNET_CPP_DIR to use another cache)",
        )
    if manifest.libraries().get("llama") is None or not manifest.libraries()["llama"].is_file():
        raise ReferenceUnavailable(
            f"the {flavor} reference under {root / flavor} has no shared libllama; rebuild with `xtask fetch-cpp "
            f"--flavor {flavor} --force`"
        )
    return manifest
