"""setup-crossval: the exported environment comes from the manifests of the built references."""

from __future__ import annotations

import json

from bitnet.cli.app import run_cli
from bitnet.cli.xtask import cli
from bitnet.crossval.cpp import Artifact, Manifest, write_manifest


def _manifest(flavor: str, root) -> Manifest:
    lib = root / flavor / "build" / "bin"
    return Manifest(flavor=flavor, revision="r1", source={"kind": "dir"}, source_sha256="0" * 64, cmake_flags=[],
                    compiler={}, backend="cpu", artifacts=[Artifact("lib:llama", str(lib / "libllama.so"), "0")],
                    include_dirs=[], lib_dir=str(lib), bin_dir=str(lib), build_seconds=1.0, built_at="now",
                    inputs_fingerprint="f", api_generation="upstream-2026", build_log="log")


def test_setup_crossval_exports_library_paths_and_determinism(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("LD_LIBRARY_PATH", raising=False)
    write_manifest(_manifest("llama.cpp", tmp_path), tmp_path)
    model = tmp_path / "m.gguf"
    model.write_bytes(b"x")
    assert run_cli(cli, ["setup-crossval", "--cpp-dir", str(tmp_path), "--model", str(model), "--format", "json"]) == 0
    res = json.loads(capsys.readouterr().out)
    env = res["env"]
    assert env["BITNET_CPP_DIR"] == str(tmp_path) and env["BITNET_DETERMINISTIC"] == "1"
    assert env["BITNET_SEED"] == "42" and env["CROSSVAL_GGUF"] == str(model.resolve())
    assert env["LD_LIBRARY_PATH"] == str(tmp_path / "llama.cpp" / "build" / "bin")
    assert set(res["references"]) == {"llama.cpp"}
    out = tmp_path / "env.sh"
    assert run_cli(cli, ["setup-crossval", "--cpp-dir", str(tmp_path), "--write", str(out)]) == 0
    text = out.read_text()
    assert "export BITNET_CPP_DIR=" in text and 'export PATH="' in text and "${PATH}" in text


def test_setup_crossval_without_a_build_exits_19(tmp_path, capsys):
    assert run_cli(cli, ["setup-crossval", "--cpp-dir", str(tmp_path / "none")]) == 19
    assert "fetch-cpp" in capsys.readouterr().err
