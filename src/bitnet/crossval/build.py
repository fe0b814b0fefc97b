"""`xtask fetch-cpp`: build the C++ reference (upstream llama.cpp or microsoft/BitNet) into the cache, once.

The build is described by an *inputs fingerprint* (flavor, source hash, cmake flags, compiler, targets). A second
run with the same fingerprint and intact artifacts does nothing. Progress goes to stderr, the full compiler output
to `<cache>/<flavor>/build.log`; a failed build raises BuildError with the log's last error lines and its path.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from filelock import FileLock

from bitnet.crossval import sources
from bitnet.crossval.cpp import (
    Artifact,
    Manifest,
    flavor_dir,
    load_libraries,
    read_manifest,
    reference_dir,
    sha256_file,
    verify_artifacts,
    write_manifest,
)
from bitnet.errors import BuildError, ReferenceUnavailable, UsageError

#: flags every reference build gets (portable AVX2 baseline; no network features; shared libs for the FFI)
BASE_CMAKE_FLAGS = [
    "-DCMAKE_BUILD_TYPE=Release",
    "-DGGML_NATIVE=OFF",
    "-DGGML_AVX2=ON",
    "-DGGML_FMA=ON",
    "-DGGML_F16C=ON",
    "-DLLAMA_CURL=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DBUILD_SHARED_LIBS=ON",
]
#: upstream-only flags: no server (needs no OpenSSL then), no HTTPS
UPSTREAM_EXTRA_FLAGS = ["-DLLAMA_BUILD_SERVER=OFF", "-DLLAMA_OPENSSL=OFF"]
#: microsoft/BitNet: the I2_S kernels (x86 TL2 off, as setup_env.py does for i2_s)
BITNET_EXTRA_FLAGS = ["-DBITNET_X86_TL2=OFF", "-DLLAMA_BUILD_SERVER=OFF"]

#: cmake targets by flavor; optional ones are dropped when the source does not define them
UPSTREAM_TARGETS = ["llama", "ggml", "llama-bench", "llama-eval-callback"]
BITNET_TARGETS = ["llama", "ggml", "llama-cli", "llama-bench", "llama-quantize"]
OPTIONAL_TARGETS = {"llama-eval-callback": "examples/eval-callback", "llama-cli": None, "llama-quantize": None}

#: the microsoft/BitNet commit known to build the bitnet-b1.58 FFN with ReLU² (microsoft-bitnet.md §3.7)
BITNET_KNOWN_GOOD_REV = "01eb415"
BITNET_REPO = "https://github.com/microsoft/BitNet.git"


@dataclass
class FetchRequest:
    flavor: str = "bitnet"
    rev: str | None = None
    repo: str | None = None
    source: Path | None = None
    sdist: bool = False
    sdist_version: str = sources.SDIST_VERSION
    backend: str = "cpu"
    cmake_flags: list[str] = field(default_factory=list)
    force: bool = False
    clean: bool = False
    jobs: int = 2
    cpp_dir: Path | None = None


@dataclass
class FetchResult:
    manifest: Manifest
    manifest_path: Path
    rebuilt: bool
    seconds: float
    message: str


def _log(msg: str) -> None:
    print(f"[fetch-cpp] {msg}", file=sys.stderr, flush=True)


def _compiler_env(flavor: str) -> dict[str, str]:
    """C/C++ compilers: `CC`/`CXX` if set; clang (newest on PATH) for the bitnet flavor when present; else cc/c++."""
    if os.environ.get("CC") and os.environ.get("CXX"):
        return {"CC": os.environ["CC"], "CXX": os.environ["CXX"]}
    if flavor == "bitnet":
        for ver in ("", "-19", "-18", "-17", "-16"):
            cc, cxx = shutil.which(f"clang{ver}"), shutil.which(f"clang++{ver}")
            if cc and cxx:
                return {"CC": cc, "CXX": cxx}
    cc = shutil.which("cc") or shutil.which("gcc")
    cxx = shutil.which("c++") or shutil.which("g++")
    if not cc or not cxx:
        raise BuildError("no C/C++ compiler found (install gcc/g++ or clang)")
    return {"CC": cc, "CXX": cxx}


def _compiler_version(path: str) -> str:
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True).stdout
    except OSError:
        return "unknown"
    return out.splitlines()[0].strip() if out else "unknown"


def _prepare_source(req: FetchRequest, root: Path) -> sources.PreparedSource:
    src_dir = root / "src"
    root.mkdir(parents=True, exist_ok=True)
    if req.flavor == "llama.cpp":
        if req.sdist:
            tarball = sources.download_sdist(root / "downloads", req.sdist_version)
            return sources.extract_sdist(tarball, src_dir, req.sdist_version)
        if req.source:
            return sources.copy_source_dir(req.source, src_dir)
        if req.repo:
            return sources.git_clone(req.repo, req.rev, src_dir, recursive=False)
        raise UsageError("--flavor llama.cpp needs one of --sdist, --source DIR or --repo URL")
    # bitnet
    if req.sdist:
        raise UsageError("--sdist is only for --flavor llama.cpp (the sdist vendors upstream llama.cpp)")
    if req.source:
        prepared = sources.copy_source_dir(req.source, src_dir)
    else:
        prepared = sources.git_clone(req.repo or BITNET_REPO, req.rev or BITNET_KNOWN_GOOD_REV, src_dir, recursive=True)
    if not (prepared.tree / "3rdparty" / "llama.cpp" / "CMakeLists.txt").is_file():
        raise ReferenceUnavailable(
            f"{prepared.tree} has no 3rdparty/llama.cpp (the BitNet llama.cpp fork submodule)",
            hint="clone with --recursive or pass a tree that vendors the fork (e.g. a BitNet-linux checkout)",
        )
    prepared.description["patches"] = apply_bitnet_fixes(prepared.tree)
    return prepared


_BUILD_INFO_GEN = """# written by bitnet-py `xtask fetch-cpp`: this source tree lacked llama.cpp's build-info generator
# (run with the llama.cpp root as working directory, like the original)
set(CMAKE_CURRENT_SOURCE_DIR "${CMAKE_CURRENT_LIST_DIR}/../..")
include("${CMAKE_CURRENT_SOURCE_DIR}/cmake/build-info.cmake")
configure_file("${CMAKE_CURRENT_SOURCE_DIR}/common/build-info.cpp.in" "${CMAKE_CURRENT_SOURCE_DIR}/common/build-info.cpp")
"""


def apply_bitnet_fixes(tree: Path) -> list[str]:
    """The known compile fixes for microsoft/BitNet trees (idempotent).

    1. `src/ggml-bitnet-mad.cpp`: `int8_t * y_col = y + ...` from a const pointer (issues #407/#463/#509/#578).
    2. `#include <chrono>` missing where llama.cpp's common code uses std::chrono (FAQ Q1, #305/#578).
    3. `common/cmake/build-info-gen-cpp.cmake` missing from some vendored copies (e.g. BitNet-linux).
    """
    applied: list[str] = []
    mad = tree / "src" / "ggml-bitnet-mad.cpp"
    if mad.is_file():
        text = mad.read_text()
        fixed = re.sub(r"(?<!const )\bint8_t\s*\*\s*y_col\b", "const int8_t * y_col", text)
        if fixed != text:
            mad.write_text(fixed)
            applied.append("src/ggml-bitnet-mad.cpp: const int8_t * y_col")
    gen = tree / "3rdparty" / "llama.cpp" / "common" / "cmake" / "build-info-gen-cpp.cmake"
    if (gen.parent.parent / "build-info.cpp.in").is_file() and not gen.is_file():
        # vendored copies made from a checkout whose ignore rules dropped `cmake/` folders lack this script, which
        # the `build_info` target runs; ours fills the same template from llama.cpp's own cmake/build-info.cmake
        gen.parent.mkdir(parents=True, exist_ok=True)
        gen.write_text(_BUILD_INFO_GEN)
        applied.append("3rdparty/llama.cpp/common/cmake/build-info-gen-cpp.cmake: supplied (missing in the tree)")
    for rel in ("3rdparty/llama.cpp/common/common.cpp", "3rdparty/llama.cpp/common/log.cpp"):
        p = tree / rel
        if p.is_file():
            text = p.read_text()
            if "std::chrono" in text and "#include <chrono>" not in text:
                p.write_text("#include <chrono>\n" + text)
                applied.append(f"{rel}: #include <chrono>")
    return applied


def _available_targets(flavor: str, llama_root: Path) -> list[str]:
    targets = list(UPSTREAM_TARGETS if flavor == "llama.cpp" else BITNET_TARGETS)
    keep = []
    for t in targets:
        sub = OPTIONAL_TARGETS.get(t)
        if sub and not (llama_root / sub).is_dir():
            _log(f"target {t} not in this source tree; skipping it")
            continue
        keep.append(t)
    return keep


def _llama_root(prepared: sources.PreparedSource, flavor: str) -> Path:
    return prepared.tree / "3rdparty" / "llama.cpp" if flavor == "bitnet" else prepared.tree


def _fingerprint(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


_PROGRESS = re.compile(r"^\[\s*(\d+)/(\d+)\]|^\[\s*(\d+)%\]")
_ERROR_LINE = re.compile(r"error|Error|undefined reference|fatal", re.I)


def _run_logged(cmd: list[str], log_path: Path, env: dict[str, str], label: str) -> None:
    """Run a build step, append its output to the log, show progress on stderr; BuildError on failure."""
    tail: deque[str] = deque(maxlen=400)
    last_shown = 0.0
    with open(log_path, "a") as log:
        log.write(f"\n$ {' '.join(cmd)}\n")
        log.flush()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            tail.append(line.rstrip("\n"))
            m = _PROGRESS.match(line)
            now = time.monotonic()
            if m and now - last_shown > 5:
                done = f"{m.group(1)}/{m.group(2)}" if m.group(1) else f"{m.group(3)}%"
                _log(f"{label}: {done} {line.split(']', 1)[-1].strip()[:90]}")
                last_shown = now
        rc = proc.wait()
    if rc != 0:
        errors = [ln for ln in tail if _ERROR_LINE.search(ln)][-12:] or list(tail)[-12:]
        raise BuildError(
            f"{label} failed (exit {rc}). Last error lines:\n" + "\n".join(errors) + f"\nfull log: {log_path}",
            hint=f"see {log_path}; rebuild from scratch with --clean",
        )


def _collect_artifacts(build_dir: Path, targets: list[str]) -> tuple[list[Artifact], Path, Path]:
    """Find the shared libraries and executables a build produced (cmake puts them in build/bin for shared builds)."""
    bin_dir = build_dir / "bin"
    arts: list[Artifact] = []
    lib_dir = bin_dir
    for lib in ("llama", "ggml", "ggml-base", "ggml-cpu"):
        candidates = [p for p in build_dir.rglob(f"lib{lib}.so") if p.is_file()] or [
            p for p in build_dir.rglob(f"lib{lib}.a") if p.is_file()
        ]
        if candidates:
            path = sorted(candidates, key=lambda p: len(p.parts))[0]
            lib_dir = path.parent if lib == "llama" else lib_dir
            arts.append(Artifact(role=f"lib:{lib}", path=str(path), sha256=sha256_file(path)))
    for t in targets:
        if t in ("llama", "ggml"):
            continue
        exe = bin_dir / t
        if not exe.is_file():
            raise BuildError(f"target {t} built but {exe} is missing")
        arts.append(Artifact(role=f"bin:{t}", path=str(exe), sha256=sha256_file(exe)))
    if not any(a.role == "lib:llama" for a in arts):
        raise BuildError(f"the build produced no libllama under {build_dir}")
    return arts, lib_dir, bin_dir


def _api_generation(llama_root: Path) -> str:
    """Which llama.h generation the source has; the FFI picks its struct layouts by this (see crossval.ffi)."""
    header = (llama_root / "include" / "llama.h").read_text(errors="replace")
    if "llama_model_load_from_file" in header and "enum llama_flash_attn_type" in header:
        return "upstream-2026"
    return "fork-2024"


def fetch_cpp(req: FetchRequest) -> FetchResult:
    """Build (or confirm) the C++ reference for `req.flavor`; the manifest records what and how."""
    if req.flavor not in ("bitnet", "llama.cpp"):
        raise UsageError(f"unknown flavor {req.flavor!r} (bitnet | llama.cpp)")
    if req.backend not in ("cpu", "cuda"):
        raise UsageError(f"unknown backend {req.backend!r} (cpu | cuda)")
    if sum(bool(x) for x in (req.sdist, req.source, req.repo)) > 1:
        raise UsageError("--sdist, --source and --repo are alternatives; give one")
    if shutil.which("cmake") is None:
        raise BuildError("cmake is not installed (apt-get install cmake)")
    base = req.cpp_dir or reference_dir()
    root = flavor_dir(req.flavor, base)
    root.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    with FileLock(str(root.parent / f".{req.flavor}.lock")):
        if req.clean and root.exists():
            _log(f"--clean: removing {root}")
            shutil.rmtree(root)
        prepared = _prepare_source(req, root)
        llama_root = _llama_root(prepared, req.flavor)
        targets = _available_targets(req.flavor, llama_root)
        compilers = _compiler_env(req.flavor)
        flags = [
            *BASE_CMAKE_FLAGS,
            *(UPSTREAM_EXTRA_FLAGS if req.flavor == "llama.cpp" else BITNET_EXTRA_FLAGS),
            *(["-DGGML_CUDA=ON"] if req.backend == "cuda" else []),
            *req.cmake_flags,
        ]
        compiler = {k: f"{v} ({_compiler_version(v)})" for k, v in compilers.items()}
        fingerprint = _fingerprint(
            {"flavor": req.flavor, "source": prepared.sha256, "flags": flags, "compiler": compiler,
             "targets": targets, "backend": req.backend}
        )  # fmt: skip
        old = read_manifest(req.flavor, base)
        damaged = False
        if old is not None and old.inputs_fingerprint == fingerprint and not req.force:
            problems = verify_artifacts(old)
            if not problems:
                msg = f"up to date: {req.flavor} reference ({old.revision}) already built with the same inputs"
                _log(msg)
                return FetchResult(old, root / "manifest.json", False, time.monotonic() - t0, msg)
            _log("existing build is damaged, rebuilding from scratch: " + "; ".join(problems))
            damaged = True
        # from here on the old build is being replaced: without a manifest, a failed rebuild reads as "no reference"
        (root / "manifest.json").unlink(missing_ok=True)
        build_dir = root / "build"
        log_path = root / "build.log"
        log_path.write_text(f"# fetch-cpp {req.flavor} {prepared.revision} {_dt.datetime.now(_dt.UTC).isoformat()}\n")
        env = {**os.environ, **compilers}
        generator = ["-G", "Ninja"] if shutil.which("ninja") else []
        # an interrupted build with the same inputs resumes incrementally; anything else starts clean
        stamp = build_dir / ".bitnet-fingerprint"
        stale = req.force or damaged or not stamp.is_file() or stamp.read_text().strip() != fingerprint
        if build_dir.exists() and stale:
            shutil.rmtree(build_dir)
        build_dir.mkdir(parents=True, exist_ok=True)
        stamp.write_text(fingerprint + "\n")
        _log(f"configuring {req.flavor} ({prepared.revision}) with {compilers['CXX']}; log: {log_path}")
        tb = time.monotonic()
        _run_logged(["cmake", "-S", str(prepared.tree), "-B", str(build_dir), *generator, *flags], log_path, env,
                    "configure")  # fmt: skip
        _log(f"building targets {', '.join(targets)} with -j{req.jobs} (this takes a few minutes)")
        _run_logged(
            ["cmake", "--build", str(build_dir), "--config", "Release", "--parallel", str(req.jobs),
             "--target", *targets],
            log_path, env, "build",
        )  # fmt: skip
        build_seconds = time.monotonic() - tb
        artifacts, lib_dir, bin_dir = _collect_artifacts(build_dir, targets)
        libs = {a.role.split(":", 1)[1]: Path(a.path) for a in artifacts if a.role.startswith("lib:")}
        load_errors = load_libraries(libs, probe_only=True)
        if load_errors:
            raise BuildError("built libraries do not load:\n" + "\n".join(load_errors), hint=f"see {log_path}")
        include_dirs = [str(llama_root / "include"), str(llama_root / "ggml" / "include")]
        manifest = Manifest(
            flavor=req.flavor,
            revision=prepared.revision,
            source=prepared.description,
            source_sha256=prepared.sha256,
            cmake_flags=flags,
            compiler=compiler,
            backend=req.backend,
            artifacts=artifacts,
            include_dirs=include_dirs,
            lib_dir=str(lib_dir),
            bin_dir=str(bin_dir),
            build_seconds=round(build_seconds, 1),
            built_at=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            inputs_fingerprint=fingerprint,
            api_generation=_api_generation(llama_root),
            build_log=str(log_path),
            extra={"targets": targets, "jobs": req.jobs},
        )
        path = write_manifest(manifest, base)
        msg = f"built {req.flavor} reference ({prepared.revision}) in {build_seconds:.0f} s; manifest: {path}"
        _log(msg)
        return FetchResult(manifest, path, True, time.monotonic() - t0, msg)
