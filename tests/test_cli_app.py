"""The CLI plumbing: exit codes come from exception types, JSON goes to stdout."""

from __future__ import annotations

import json

import click
import pytest

from bitnet.cli.app import LazyGroup, run_cli
from bitnet.cli.output import with_output
from bitnet.errors import ExitCode, FormatError, HashMismatchError


def _group(exc: BaseException | None) -> click.Group:
    @click.group(cls=LazyGroup)
    def grp() -> None:
        pass

    @grp.command()
    @with_output
    def run(out) -> None:
        if exc is not None:
            raise exc
        out.result({"answer": 42}, text="the answer is 42")

    return grp


def test_json_result_carries_schema_version(capsys):
    assert run_cli(_group(None), ["run", "--format", "json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload == {"schema_version": "1.0", "answer": 42}


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (FormatError("bad magic"), ExitCode.INVALID_INPUT),
        (HashMismatchError("sha256 mismatch"), ExitCode.HASH_MISMATCH),
        (KeyboardInterrupt(), ExitCode.INTERRUPTED),
        # the message mentions 'sha' and 'mismatch' but the type is what counts
        (RuntimeError("sha mismatch"), None),
    ],
)
def test_exit_code_by_type(exc, code, capsys):
    if code is None:
        with pytest.raises(RuntimeError):
            run_cli(_group(exc), ["run"])
        return
    assert run_cli(_group(exc), ["run", "--format", "json"]) == code
    captured = capsys.readouterr()
    assert json.loads(captured.out)["error"]["exit_code"] == int(code)
    assert "error:" in captured.err


def test_usage_error_is_2():
    assert run_cli(_group(None), ["run", "--no-such-flag"]) == ExitCode.USAGE
