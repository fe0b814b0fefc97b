"""`xtask setup-crossval`: the environment a shell (or CI step) needs to run cross-validation by hand."""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Any

from bitnet.crossval.cpp import FLAVORS, read_manifest, reference_dir
from bitnet.crossval.parity import DETERMINISTIC_ENV


def crossval_environment(cpp_dir: Path | None = None, model: Path | None = None) -> dict[str, Any]:
    """Variables to export (library paths of every built flavor first), plus what was found."""
    root = cpp_dir or reference_dir()
    found: dict[str, Any] = {}
    lib_dirs: list[str] = []
    bin_dirs: list[str] = []
    for flavor in FLAVORS:
        m = read_manifest(flavor, root)
        if m is None:
            continue
        found[flavor] = {"revision": m.revision, "lib_dir": m.lib_dir, "bin_dir": m.bin_dir,
                         "api_generation": m.api_generation, "built_at": m.built_at}  # fmt: skip
        for d in (m.lib_dir, m.bin_dir):
            if d not in lib_dirs:
                lib_dirs.append(d)
        if m.bin_dir not in bin_dirs:
            bin_dirs.append(m.bin_dir)
    env: dict[str, str] = {"BITNET_CPP_DIR": str(root), **DETERMINISTIC_ENV}
    var = "DYLD_LIBRARY_PATH" if os.uname().sysname == "Darwin" else "LD_LIBRARY_PATH"
    if lib_dirs:
        env[var] = os.pathsep.join([*lib_dirs, "${" + var + "}"]) if os.environ.get(var) else os.pathsep.join(lib_dirs)
    if bin_dirs:
        env["PATH"] = os.pathsep.join([*bin_dirs, "${PATH}"])
    if model is not None:
        env["CROSSVAL_GGUF"] = str(Path(model).resolve())
    return {"env": env, "references": found, "cpp_dir": str(root), "ok": bool(found)}


def shell_exports(env: dict[str, str]) -> str:
    """`export K=V` lines; `${VAR}` references are left for the shell to expand."""
    lines = []
    for k, v in env.items():
        if "${" in v:
            lines.append(f'export {k}="{v}"')
        else:
            lines.append(f"export {k}={shlex.quote(v)}")
    return "\n".join(lines)
