"""Extract a click CLI's surface (commands, options, arguments) as JSON, in a subprocess.

The extraction runs `python -c` with PYTHONPATH pointing at one source tree, so the old tree's code is imported
without touching this process (and without installing it). LazyGroup subcommands are loaded one by one; a command
whose module fails to import is recorded as unloadable rather than aborting the walk.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from bitnet.errors import CheckCouldNotRun

_SCRIPT = r'''
import json, sys
import click

def describe(cmd):
    params = {}
    args = []
    for p in cmd.params:
        if isinstance(p, click.Option):
            choices = list(p.type.choices) if isinstance(p.type, click.Choice) else None
            params[p.name] = {"opts": sorted(p.opts + p.secondary_opts), "required": bool(p.required),
                              "is_flag": bool(p.is_flag), "multiple": bool(p.multiple),
                              "type": p.type.name, "choices": choices}
        elif isinstance(p, click.Argument):
            args.append({"name": p.name, "required": bool(p.required), "nargs": p.nargs})
    return {"options": params, "arguments": args}

def walk(group, prefix, out):
    ctx = click.Context(group)
    out[prefix] = describe(group)
    if not isinstance(group, click.Group):
        return
    for name in group.list_commands(ctx):
        path = prefix + " " + name
        try:
            sub = group.get_command(ctx, name)
        except Exception as exc:
            out[path] = {"unloadable": f"{type(exc).__name__}: {exc}"}
            continue
        if sub is None:
            out[path] = {"unloadable": "get_command returned None"}
            continue
        walk(sub, path, out)

entries, root = json.loads(sys.argv[1]), sys.argv[2]
result = {}
import importlib, os
for label, spec in entries.items():
    module_name, attr = spec.split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        result[label] = {"missing": str(exc)}
        continue
    origin = os.path.realpath(getattr(module, "__file__", "") or "")
    if not origin.startswith(os.path.realpath(root)):
        raise SystemExit(f"{module_name} was imported from {origin}, not from {root}")
    commands = {}
    walk(getattr(module, attr), label, commands)
    result[label] = {"commands": commands}
print(json.dumps(result))
'''


def extract_cli_surface(source_root: Path, entries: dict[str, str], timeout: float = 120.0) -> dict[str, Any]:
    """{label: {"commands": {"xtask benchmark": {...}}} | {"missing": why}} for each "module:attr" entry."""
    source_root = Path(source_root).resolve()
    env = {**os.environ, "PYTHONPATH": str(source_root)}
    env.pop("PYTHONHOME", None)
    proc = subprocess.run(
        [sys.executable, "-c", _SCRIPT, json.dumps(entries), str(source_root)],
        capture_output=True, text=True, env=env, cwd=source_root, timeout=timeout,
    )
    if proc.returncode != 0:
        raise CheckCouldNotRun(f"could not extract the CLI surface from {source_root}: {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout)
