"""fetch-cpp (bitnet.crossval.build) on a tiny stand-in CMake project: manifest, idempotency, rebuild triggers,
failed builds, sdist extraction, and the bitnet flavor's source checks and compile fixes.

The real llama.cpp build takes minutes and is exercised once by `./dev test` (and test_crossval_ffi.py uses it);
here a small C project with the same target names proves the orchestration.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile
from pathlib import Path

import pytest

from bitnet.cli.app import run_cli
from bitnet.cli.xtask import cli
from bitnet.crossval.build import FetchRequest, apply_bitnet_fixes, fetch_cpp
from bitnet.crossval.cpp import find_reference, read_manifest
from bitnet.errors import BuildError, ReferenceUnavailable, UsageError
from bitnet.fsutil import sha256_file

CMAKE = """cmake_minimum_required(VERSION 3.14)
project(fake_llama C)
set(CMAKE_RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/bin)
set(CMAKE_LIBRARY_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/bin)
add_library(ggml-base src/ggml-base.c)
add_library(ggml src/ggml.c)
target_link_libraries(ggml PUBLIC ggml-base)
add_library(llama src/llama.c)
target_link_libraries(llama PUBLIC ggml)
add_executable(llama-bench src/bench.c)
target_link_libraries(llama-bench llama)
add_subdirectory(examples/eval-callback)
"""
HEADER = "struct llama_model_params { int x; };\nenum llama_flash_attn_type { A };\nvoid llama_model_load_from_file(void);\n"


def make_project(root: Path, *, broken: bool = False) -> Path:
    (root / "src").mkdir(parents=True, exist_ok=True)
    (root / "include").mkdir(exist_ok=True)
    (root / "ggml" / "include").mkdir(parents=True, exist_ok=True)
    (root / "examples" / "eval-callback").mkdir(parents=True, exist_ok=True)
    (root / "CMakeLists.txt").write_text(CMAKE)
    (root / "include" / "llama.h").write_text(HEADER)
    (root / "src" / "ggml-base.c").write_text("int ggml_base_answer(void) { return 41; }\n")
    (root / "src" / "ggml.c").write_text("int ggml_base_answer(void);\nint ggml_answer(void) { return ggml_base_answer() + 1; }\n")
    body = "int ggml_answer(void);\nint llama_answer(void) { return ggml_answer(); }\n"
    (root / "src" / "llama.c").write_text(body + ("this is not C;\n" if broken else ""))
    (root / "src" / "bench.c").write_text("int llama_answer(void);\nint main(void) { return llama_answer() == 42 ? 0 : 1; }\n")
    (root / "examples" / "eval-callback" / "CMakeLists.txt").write_text(
        "add_executable(llama-eval-callback cb.c)\ntarget_link_libraries(llama-eval-callback llama)\n")
    (root / "examples" / "eval-callback" / "cb.c").write_text("int main(void) { return 0; }\n")
    return root


def test_build_writes_a_complete_manifest_and_is_idempotent(tmp_path, capsys):
    src = make_project(tmp_path / "proj")
    cache = tmp_path / "cache"
    req = FetchRequest(flavor="llama.cpp", source=src, cpp_dir=cache)
    first = fetch_cpp(req)
    assert first.rebuilt
    m = read_manifest("llama.cpp", cache)
    assert m is not None and m.flavor == "llama.cpp" and m.api_generation == "upstream-2026"
    roles = {a.role for a in m.artifacts}
    assert {"lib:llama", "lib:ggml", "lib:ggml-base", "bin:llama-bench", "bin:llama-eval-callback"} <= roles
    for art in m.artifacts:
        assert sha256_file(Path(art.path)) == art.sha256
    assert "-DGGML_NATIVE=OFF" in m.cmake_flags and "-DBUILD_SHARED_LIBS=ON" in m.cmake_flags
    assert m.compiler["CXX"] and m.source["kind"] == "dir" and len(m.source_sha256) == 64
    assert Path(m.build_log).is_file() and "cmake" in Path(m.build_log).read_text()
    assert find_reference("llama.cpp", cache).inputs_fingerprint == m.inputs_fingerprint
    # second run, same inputs: nothing happens
    second = fetch_cpp(req)
    assert not second.rebuilt and "up to date" in second.message
    assert read_manifest("llama.cpp", cache).built_at == m.built_at
    # through the CLI, JSON
    assert run_cli(cli, ["fetch-cpp", "--flavor", "llama.cpp", "--source", str(src), "--cpp-dir", str(cache),
                         "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["schema_version"] and out["rebuilt"] is False and out["flavor"] == "llama.cpp"


def test_changed_inputs_damaged_artifacts_force_and_clean_rebuild(tmp_path):
    src = make_project(tmp_path / "proj")
    cache = tmp_path / "cache"
    fetch_cpp(FetchRequest(flavor="llama.cpp", source=src, cpp_dir=cache))
    fp0 = read_manifest("llama.cpp", cache).inputs_fingerprint
    # a changed source file → new source hash → rebuild
    (src / "src" / "bench.c").write_text("int llama_answer(void);\nint main(void) { return 0; }\n")
    assert fetch_cpp(FetchRequest(flavor="llama.cpp", source=src, cpp_dir=cache)).rebuilt
    assert read_manifest("llama.cpp", cache).inputs_fingerprint != fp0
    # extra cmake flags are inputs too
    assert fetch_cpp(FetchRequest(flavor="llama.cpp", source=src, cpp_dir=cache, cmake_flags=["-DFOO=1"])).rebuilt
    # a damaged artifact is noticed
    lib = read_manifest("llama.cpp", cache).artifact("lib:llama")
    lib.write_bytes(b"garbage")
    assert fetch_cpp(FetchRequest(flavor="llama.cpp", source=src, cpp_dir=cache, cmake_flags=["-DFOO=1"])).rebuilt
    assert fetch_cpp(FetchRequest(flavor="llama.cpp", source=src, cpp_dir=cache, cmake_flags=["-DFOO=1"],
                                  force=True)).rebuilt
    marker = cache / "llama.cpp" / "stray-file"
    marker.write_text("x")
    assert fetch_cpp(FetchRequest(flavor="llama.cpp", source=src, cpp_dir=cache, clean=True)).rebuilt
    assert not marker.exists()


def test_failed_build_shows_error_lines_and_log_path(tmp_path, capsys):
    src = make_project(tmp_path / "proj", broken=True)
    cache = tmp_path / "cache"
    with pytest.raises(BuildError) as ei:
        fetch_cpp(FetchRequest(flavor="llama.cpp", source=src, cpp_dir=cache))
    msg = str(ei.value)
    assert "llama.c" in msg and "error" in msg.lower()
    assert str(cache / "llama.cpp" / "build.log") in msg
    assert read_manifest("llama.cpp", cache) is None
    assert run_cli(cli, ["fetch-cpp", "--flavor", "llama.cpp", "--source", str(src), "--cpp-dir", str(cache)]) == 21
    assert "build.log" in capsys.readouterr().err


def _fake_sdist(path: Path, project: Path, version: str) -> Path:
    top = f"llama_cpp_python-{version}"
    with tarfile.open(path, "w:gz") as tf:
        tf.add(project, arcname=f"{top}/vendor/llama.cpp")
        log = f"# Changelog\n\n## [{version}]\n\n- feat: update llama.cpp to ggml-org/llama.cpp@abcdef123\n\n## [0.0.1]\n- x\n"
        info = tarfile.TarInfo(f"{top}/CHANGELOG.md")
        info.size = len(log)
        tf.addfile(info, io.BytesIO(log.encode()))
        tf.add(project / "CMakeLists.txt", arcname=f"{top}/CMakeLists.txt")  # not under vendor/: not extracted
    return path


def test_sdist_is_extracted_offline_and_identified(tmp_path):
    cache = tmp_path / "cache"
    downloads = cache / "llama.cpp" / "downloads"
    downloads.mkdir(parents=True)
    tarball = _fake_sdist(downloads / "llama_cpp_python-9.9.9.tar.gz", make_project(tmp_path / "proj"), "9.9.9")
    res = fetch_cpp(FetchRequest(flavor="llama.cpp", sdist=True, sdist_version="9.9.9", cpp_dir=cache))
    m = res.manifest
    assert res.rebuilt and m.source["kind"] == "sdist" and m.source["upstream_commit"] == "abcdef123"
    assert m.revision == "llama-cpp-python==9.9.9 (ggml-org/llama.cpp@abcdef123)"
    assert m.source_sha256 == hashlib.sha256(tarball.read_bytes()).hexdigest()
    assert (cache / "llama.cpp" / "src" / "CMakeLists.txt").is_file()
    assert not fetch_cpp(FetchRequest(flavor="llama.cpp", sdist=True, sdist_version="9.9.9", cpp_dir=cache)).rebuilt


def test_bitnet_flavor_needs_the_fork_and_fails_clearly_offline(tmp_path):
    with pytest.raises(UsageError):
        fetch_cpp(FetchRequest(flavor="bitnet", sdist=True, cpp_dir=tmp_path))
    with pytest.raises(UsageError):
        fetch_cpp(FetchRequest(flavor="llama.cpp", cpp_dir=tmp_path))  # no source given
    src = make_project(tmp_path / "notbitnet")
    with pytest.raises(ReferenceUnavailable, match=r"3rdparty/llama\.cpp"):
        fetch_cpp(FetchRequest(flavor="bitnet", source=src, cpp_dir=tmp_path / "c"))
    with pytest.raises(ReferenceUnavailable, match="git clone"):
        fetch_cpp(FetchRequest(flavor="bitnet", repo=f"file://{tmp_path}/no-such-repo", cpp_dir=tmp_path / "c2"))


def test_bitnet_compile_fixes_are_applied_once(tmp_path):
    (tmp_path / "src").mkdir()
    common = tmp_path / "3rdparty" / "llama.cpp" / "common"
    common.mkdir(parents=True)
    mad = tmp_path / "src" / "ggml-bitnet-mad.cpp"
    mad.write_text("void f(const int8_t * y) {\n    int8_t * y_col = y + 1;\n}\n")
    (common / "common.cpp").write_text("#include <string>\nauto t = std::chrono::steady_clock::now();\n")
    (common / "log.cpp").write_text("#include <chrono>\nauto t = std::chrono::steady_clock::now();\n")
    llama = tmp_path / "3rdparty" / "llama.cpp"
    (llama / "cmake").mkdir()
    (llama / "cmake" / "build-info.cmake").write_text('set(BUILD_NUMBER 7)\nset(BUILD_COMMIT "abc")\n'
                                                      'set(BUILD_COMPILER "cc")\nset(BUILD_TARGET "x86")\n')
    (common / "build-info.cpp.in").write_text('int N = @BUILD_NUMBER@; const char *C = "@BUILD_COMMIT@";\n')
    applied = apply_bitnet_fixes(tmp_path)
    assert len(applied) == 3
    # the supplied generator works the way the build_info target runs it (cwd = the llama.cpp root)
    subprocess.run(["cmake", "-P", str(common / "cmake" / "build-info-gen-cpp.cmake")], cwd=llama, check=True,
                   capture_output=True)
    assert (common / "build-info.cpp").read_text() == 'int N = 7; const char *C = "abc";\n'
    assert "const int8_t * y_col = y + 1;" in mad.read_text()
    assert (common / "common.cpp").read_text().startswith("#include <chrono>\n")
    assert (common / "log.cpp").read_text().count("#include <chrono>") == 1
    assert apply_bitnet_fixes(tmp_path) == []  # idempotent
