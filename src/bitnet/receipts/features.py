"""check-features: the optional extras in pyproject.toml and the code's imports agree.

Rules (each violation is an error; the report lists them all):
- every module-level import of a package that only an extra provides is guarded: inside a function (imported
  when used), under `try/except ImportError`, or under `if TYPE_CHECKING:`; otherwise `import bitnet.x` fails for
  anyone who did not install that extra;
- every third-party import is declared, in the core dependencies or in an extra;
- no package is both a core dependency and in an extra (the extra would be meaningless: the seed's "crossval must
  not be a default feature" rule);
- torch appears only pinned with `==` (an unpinned torch pulls a multi-GB CUDA build);
- every package of every extra that is installed can actually be imported.
"""

from __future__ import annotations

import ast
import importlib
import importlib.metadata as md
import re
import sys
import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bitnet.errors import CheckCouldNotRun

#: distributions whose import name is not the distribution name with '-' → '_'
IMPORT_NAMES = {"huggingface-hub": "huggingface_hub", "pytest-httpserver": "pytest_httpserver", "pyyaml": "yaml",
                "pillow": "PIL", "scikit-learn": "sklearn", "opencv-python": "cv2", "beautifulsoup4": "bs4"}
_NAME_RE = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


@dataclass
class ImportSite:
    module: str
    file: str
    line: int
    guarded: bool
    provider: str  # "core", "extra:<names>", "undeclared"


def dist_name(requirement: str) -> str:
    m = _NAME_RE.match(requirement)
    if not m:
        raise CheckCouldNotRun(f"cannot parse requirement {requirement!r}")
    return re.sub(r"[-_.]+", "-", m.group(1)).lower()


def import_names(dist: str) -> list[str]:
    """Top-level modules a distribution provides (installed metadata when present; else the usual spelling)."""
    names = [IMPORT_NAMES.get(dist, dist.replace("-", "_"))]
    try:
        top = (md.distribution(dist).read_text("top_level.txt") or "").split()
    except md.PackageNotFoundError:
        top = []
    return names + [t for t in top if t not in names and not t.startswith("_")]


def _is_import_error_handler(handler: ast.ExceptHandler) -> bool:
    names = []
    if handler.type is None:
        return True
    for node in ast.walk(handler.type):
        if isinstance(node, ast.Name):
            names.append(node.id)
    return bool({"ImportError", "ModuleNotFoundError", "Exception", "BaseException"} & set(names))


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def scan_imports(path: Path, module: str = "") -> list[tuple[str, int, bool]]:
    """(dotted module, line, guarded) for every import in a file; relative imports are resolved against `module`
    (the file's own dotted name), and `from a import b` also yields `a.b` (b may be a submodule)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[tuple[str, int, bool]] = []

    def record(node: ast.AST, guarded: bool) -> None:
        if isinstance(node, ast.Import):
            found.extend((a.name, node.lineno, guarded) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(p for p in [*parts, base] if p)
            if base:
                found.append((base, node.lineno, guarded))
                found.extend((f"{base}.{a.name}", node.lineno, guarded) for a in node.names if a.name != "*")

    def visit(node: ast.AST, guarded: bool) -> None:
        for child in ast.iter_child_nodes(node):
            record(child, guarded)
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                visit(child, True)
            elif isinstance(child, ast.If) and _is_type_checking(child.test):
                for stmt in child.body:
                    record(stmt, True)
                    visit(stmt, True)
                for stmt in child.orelse:
                    record(stmt, guarded)
                    visit(stmt, guarded)
            elif isinstance(child, ast.Try) and any(_is_import_error_handler(h) for h in child.handlers):
                for stmt in child.body:
                    record(stmt, True)
                    visit(stmt, True)
                for part in (*child.handlers, *child.orelse, *child.finalbody):
                    record(part, guarded)
                    visit(part, guarded)
            else:
                visit(child, guarded)

    visit(tree, False)
    return found


def _package_report(requirement: str) -> dict[str, Any]:
    dist = dist_name(requirement)
    name = import_names(dist)[0]
    entry: dict[str, Any] = {"requirement": requirement, "dist": dist, "import_name": name, "installed": False,
                             "version": None, "importable": None, "error": None}
    try:
        entry["version"] = md.version(dist)
        entry["installed"] = True
    except md.PackageNotFoundError:
        return entry
    try:
        importlib.import_module(name)
        entry["importable"] = True
    except Exception as exc:  # a broken install raises anything from ImportError to OSError (missing .so)
        entry["importable"] = False
        entry["error"] = f"{type(exc).__name__}: {exc}"
    return entry


def check_features(project_root: str | Path, package: str = "bitnet", src: str = "src",
                   import_check: bool = True) -> dict[str, Any]:
    root = Path(project_root)
    pyproject = root / "pyproject.toml"
    if not pyproject.is_file():
        raise CheckCouldNotRun(f"no pyproject.toml in {root}")
    try:
        project = tomllib.loads(pyproject.read_text())["project"]
    except (tomllib.TOMLDecodeError, KeyError) as exc:
        raise CheckCouldNotRun(f"{pyproject}: cannot read [project] ({exc})") from exc
    core_reqs = list(project.get("dependencies", []))
    extras: dict[str, list[str]] = dict(project.get("optional-dependencies", {}))
    core = {name: dist_name(r) for r in core_reqs for name in import_names(dist_name(r))}
    optional: dict[str, list[str]] = {}
    for extra, reqs in extras.items():
        for r in reqs:
            for name in import_names(dist_name(r)):
                optional.setdefault(name, []).append(extra)
    errors: list[str] = []

    for mod, in_extras in sorted(optional.items()):
        if mod in core:
            errors.append(f"{core[mod]} is a core dependency and also in extras {in_extras}: the extras are meaningless")
    for r in [*core_reqs, *(r for reqs in extras.values() for r in reqs)]:
        if dist_name(r) == "torch" and "==" not in r:
            errors.append(f"torch must be pinned with == wherever it appears: {r!r}")

    sites: list[ImportSite] = []
    pkg_dir = root / src / package
    if not pkg_dir.is_dir():
        raise CheckCouldNotRun(f"package folder {pkg_dir} not found")
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    unguarded_optional: dict[str, list[str]] = {}  # first-party module -> its unguarded optional imports
    first_party: list[tuple[str, str, int, bool]] = []  # (imported module, importing file, line, guarded)
    for file in sorted(pkg_dir.rglob("*.py")):
        rel = file.relative_to(root).as_posix()
        dotted = ".".join(file.relative_to(root / src).with_suffix("").parts).removesuffix(".__init__")
        try:
            imports = scan_imports(file, dotted)
        except SyntaxError as exc:
            errors.append(f"{rel}: cannot parse ({exc})")
            continue
        seen: set[tuple[str, int]] = set()
        for full, line, guarded in imports:
            mod = full.split(".")[0]
            if mod == package:
                first_party.append((full, rel, line, guarded))
                continue
            if mod in stdlib or (mod, line) in seen:
                continue
            seen.add((mod, line))
            if mod in core:
                provider = "core"
            elif mod in optional:
                provider = "extra:" + ",".join(sorted(optional[mod]))
                if not guarded:
                    unguarded_optional.setdefault(dotted, []).append(f"{mod} (line {line})")
            else:
                provider = "undeclared"
                errors.append(f"{rel}:{line}: imports {mod!r}, which no dependency or extra declares")
            sites.append(ImportSite(mod, rel, line, guarded, provider))
    # A module that imports an optional package at module level is fine only if it is itself optional: every
    # import of it elsewhere in the package must be guarded.
    for mod, deps in sorted(unguarded_optional.items()):
        # importing any submodule of a package runs the package's __init__ too
        is_package = (root / src / Path(*mod.split(".")) / "__init__.py").is_file()
        inside = (Path(src) / Path(*mod.split("."))).as_posix() + "/"
        for full, f, ln, guarded in first_party:
            hit = full == mod or (is_package and full.startswith(mod + ".") and not f.startswith(inside))
            if hit and not guarded:
                errors.append(f"{f}:{ln}: imports {full} without a guard, and {mod} imports {', '.join(deps)} at module level")

    extras_report = {}
    for extra, reqs in extras.items():
        packages = [_package_report(r) if import_check else {"requirement": r, "dist": dist_name(r)} for r in reqs]
        installed = all(p.get("installed") for p in packages)
        for p in packages:
            if p.get("installed") and p.get("importable") is False:
                errors.append(f"extra {extra!r}: {p['dist']} {p['version']} is installed but fails to import: {p['error']}")
        extras_report[extra] = {"packages": packages, "installed": installed}
    return {
        "project": str(pyproject),
        "ok": not errors,
        "errors": errors,
        "core": sorted(core.values()),
        "extras": extras_report,
        "optional_imports": [asdict(s) for s in sites if s.provider.startswith("extra:")],
        "undeclared_imports": [asdict(s) for s in sites if s.provider == "undeclared"],
    }
