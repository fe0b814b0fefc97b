"""Check the ctypes struct layouts against the real `llama.h` / `ggml.h` of a build, with a C compiler.

A wrong layout is silent memory corruption in a by-value call, so this is verified rather than trusted: we write a
small C program that prints `sizeof` and every `offsetof` of the structs we declare, compile it against the
manifest's include dirs and compare with what ctypes computes.
"""

from __future__ import annotations

import ctypes as C
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from bitnet.crossval.cpp import Manifest
from bitnet.crossval.llama_api import LAYOUT_STRUCTS, TENSOR_NB_OFFSET, TENSOR_NE_OFFSET, TENSOR_TYPE_OFFSET
from bitnet.errors import CheckCouldNotRun


def _c_program(structs: tuple[tuple[str, type[C.Structure]], ...]) -> str:
    lines = ["#include <stdio.h>", "#include <stddef.h>", '#include "llama.h"', '#include "ggml.h"', "int main(void) {"]
    for cname, ctype in structs:
        sname = cname if cname == "llama_batch" else f"struct {cname}"
        lines.append(f'  printf("{cname} sizeof %zu\\n", sizeof({sname}));')
        for field, *_ in ctype._fields_:
            lines.append(f'  printf("{cname} {field} %zu\\n", offsetof({sname}, {field}));')
    for field in ("type", "ne", "nb"):
        lines.append(f'  printf("ggml_tensor {field} %zu\\n", offsetof(struct ggml_tensor, {field}));')
    lines += ["  return 0;", "}"]
    return "\n".join(lines) + "\n"


def check_layouts(manifest: Manifest, generation: str | None = None) -> dict[str, Any]:
    """{"ok", "mismatches": [...], "checked": n} for the manifest's API generation (or `generation`)."""
    gen = generation or manifest.api_generation
    structs = LAYOUT_STRUCTS[gen]
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        raise CheckCouldNotRun("no C compiler to check the struct layouts with")
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "layout.c"
        exe = Path(tmp) / "layout"
        src.write_text(_c_program(structs))
        cmd = [cc, "-std=c11", *[f"-I{d}" for d in manifest.include_dirs], str(src), "-o", str(exe)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise CheckCouldNotRun(f"layout probe did not compile: {proc.stderr.strip()[-800:]}")
        printed = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout
    c_values: dict[tuple[str, str], int] = {}
    for line in printed.splitlines():
        struct, field, value = line.split()
        c_values[(struct, field)] = int(value)
    expected: dict[tuple[str, str], int] = {}
    for cname, ctype in structs:
        expected[(cname, "sizeof")] = C.sizeof(ctype)
        for field, *_ in ctype._fields_:
            expected[(cname, field)] = getattr(ctype, field).offset
    expected[("ggml_tensor", "type")] = TENSOR_TYPE_OFFSET
    expected[("ggml_tensor", "ne")] = TENSOR_NE_OFFSET
    expected[("ggml_tensor", "nb")] = TENSOR_NB_OFFSET
    mismatches = [
        {"struct": s, "field": f, "ctypes": v, "c": c_values.get((s, f))}
        for (s, f), v in expected.items()
        if c_values.get((s, f)) != v
    ]
    return {"ok": not mismatches, "generation": gen, "checked": len(expected), "mismatches": mismatches}
