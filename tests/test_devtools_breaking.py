"""detect-breaking on a tiny throwaway git repo: removed function, removed CLI option, schema changes, allow list."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bitnet.errors import CheckCouldNotRun
from bitnet.receipts.breaking import detect_breaking

CLI = {"tool": "mypkg.cli:cli"}


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", "-C", str(repo), *args],
                   check=True, capture_output=True)


def _write(repo: Path, rel: str, text: str) -> None:
    p = repo / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(textwrap.dedent(text))


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    r = tmp_path / "proj"
    r.mkdir()
    _git(r, "init", "-q")
    _write(r, "src/mypkg/__init__.py", '''
        """A tiny package."""
        __version__ = "1.0"

        def public(a, b=1):
            return a + b

        def other():
            return 2
        ''')
    _write(r, "src/mypkg/cli.py", '''
        import click

        @click.group()
        def cli():
            pass

        @cli.command()
        @click.option("--fast", is_flag=True)
        @click.option("--count", type=int, default=1)
        def run(fast, count):
            pass
        ''')
    schema = {"type": "object", "required": ["a"],
              "properties": {"a": {"type": "string"}, "b": {"type": "integer"}, "mode": {"enum": ["x", "y"]}}}
    _write(r, "src/mypkg/out.schema.json", json.dumps(schema))
    _git(r, "add", "-A")
    _git(r, "commit", "-q", "-m", "v1")
    _git(r, "tag", "v1")
    return r


def test_no_change_no_break(repo: Path) -> None:
    report = detect_breaking(repo, "v1", package="mypkg", cli_entries=CLI)
    assert report["ok"] and report["breaks"] == []


def test_removed_function_option_and_schema_property(repo: Path) -> None:
    init = repo / "src/mypkg/__init__.py"
    init.write_text(init.read_text().replace("def other():\n    return 2\n", "").replace('"1.0"', '"1.1"'))
    cli = repo / "src/mypkg/cli.py"
    cli.write_text(cli.read_text().replace('@click.option("--fast", is_flag=True)\n', "").replace("fast, count", "count"))
    schema = json.loads((repo / "src/mypkg/out.schema.json").read_text())
    del schema["properties"]["b"]
    schema["required"].append("mode")
    schema["properties"]["mode"]["enum"] = ["x"]
    (repo / "src/mypkg/out.schema.json").write_text(json.dumps(schema))

    report = detect_breaking(repo, "v1", package="mypkg", cli_entries=CLI)
    found = {(b["kind"], b["path"]) for b in report["breaks"]}
    assert ("api:object_removed", "mypkg.other") in found
    assert ("cli:option_removed", "tool run --fast") in found
    assert ("schema:property_removed", "src/mypkg/out.schema.json#/properties/b") in found
    assert ("schema:required_added", "src/mypkg/out.schema.json#/properties/mode") in found
    assert ("schema:enum_removed", "src/mypkg/out.schema.json#/properties/mode") in found
    assert not report["ok"]
    assert not any("__version__" in b["path"] for b in report["breaks"])  # a version bump is not a break


def test_allow_list_accepts_intended_breaks(repo: Path) -> None:
    init = repo / "src/mypkg/__init__.py"
    init.write_text(init.read_text().replace("def other():\n    return 2\n", ""))
    (repo / ".breaking-allow.json").write_text(json.dumps(
        {"allow": [{"kind": "api:object_removed", "path": "mypkg.other", "reason": "deprecated in 0.9"},
                   {"kind": "cli:*", "path": "tool gone*", "reason": "unused entry"}]}))
    report = detect_breaking(repo, "v1", package="mypkg", cli_entries=CLI)
    assert report["ok"] and report["allowed"][0]["allowed_reason"] == "deprecated in 0.9"
    assert report["unused_allow_entries"][0]["path"] == "tool gone*"
    (repo / ".breaking-allow.json").write_text(json.dumps([{"kind": "api:*", "path": "x"}]))
    with pytest.raises(CheckCouldNotRun, match="reason"):
        detect_breaking(repo, "v1", package="mypkg", cli_entries=CLI)


def test_bad_ref_could_not_run(repo: Path) -> None:
    with pytest.raises(CheckCouldNotRun):
        detect_breaking(repo, "no-such-ref", package="mypkg", cli_entries=CLI)


def test_cli_exit_codes(repo: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "bitnet.cli.xtask", "detect-breaking", "--repo", str(repo),
                               "--package", "mypkg", "--cli", "tool=mypkg.cli:cli", *args],
                              capture_output=True, text=True, timeout=180)

    assert run("--against", "v1").returncode == 0
    cli = repo / "src/mypkg/cli.py"
    cli.write_text(cli.read_text().replace('@click.option("--count", type=int, default=1)\n', "").replace("fast, count", "fast"))
    broken = run("--against", "v1", "--format", "json")
    assert broken.returncode == 1, broken.stderr
    breaks = json.loads(broken.stdout)["breaks"]
    assert [b["path"] for b in breaks if b["kind"].startswith("cli:")] == ["tool run --count"]
    assert ("api:parameter_removed", "mypkg.cli.run") in {(b["kind"], b["path"]) for b in breaks}
    assert run("--against", "nope").returncode == 22


def test_schema_diff_kinds() -> None:
    from bitnet.receipts.schema_diff import diff_schema

    old = {"type": "object", "properties": {"n": {"type": "integer"}, "items": {"type": "array", "items": {
        "type": "object", "properties": {"id": {"type": "string"}}}}}, "$defs": {"s": {"type": "number"}}}
    new = {"type": "object", "required": ["n"], "properties": {"n": {"type": ["integer", "null"]}, "items": {
        "type": "array", "items": {"type": "object", "properties": {}}}}, "$defs": {}}
    kinds = {(k, p) for k, p, _ in diff_schema(old, new)}
    assert kinds == {
        ("schema:type_changed", "#/properties/n"),
        ("schema:required_added", "#/properties/n"),
        ("schema:property_removed", "#/properties/items/items/properties/id"),
        ("schema:property_removed", "#/$defs/s"),
    }
    assert diff_schema(old, old) == []
