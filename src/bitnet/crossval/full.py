"""`xtask full-crossval`: get a model, build the C++ reference, run the crossval suite: one command, one verdict.

`--offline` generates the embedded default instead of downloading: the tiny TQ2_0 model of arch `bitnet` (the arch
upstream llama.cpp runs), with its reference built from the llama-cpp-python sdist. Online, the model comes from
`xtask download-model` and the reference from `fetch-cpp` for the chosen flavor.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bitnet.crossval.build import FetchRequest, fetch_cpp
from bitnet.crossval.suite import DEFAULT_REPORT, SuiteOptions, run_suite
from bitnet.errors import NetworkError

OFFLINE_FIXTURE = {"size": "tiny", "fmt": "tq2_0", "arch": "bitnet", "seed": 0}


@dataclass
class FullOptions:
    offline: bool = False
    model: Path | None = None
    flavor: str | None = None
    cpp_dir: Path | None = None
    fixtures_dir: Path = Path("target") / "crossval-fixtures"
    report: Path = DEFAULT_REPORT
    max_tokens: int = 32
    force: bool = False


def _log(msg: str) -> None:
    print(f"[full-crossval] {msg}", file=sys.stderr, flush=True)


def _offline_model(opts: FullOptions) -> Path:
    from bitnet.formats.fixtures import fixture_filename, generate_fixture

    f = OFFLINE_FIXTURE
    path = opts.fixtures_dir / fixture_filename(f["size"], f["fmt"], f["arch"], False)
    if path.is_file() and not opts.force:
        _log(f"using the generated default model {path}")
        return path
    _log(f"generating the default model ({f['size']} {f['fmt']} arch {f['arch']}) into {opts.fixtures_dir}")
    return generate_fixture(f["size"], f["fmt"], f["arch"], opts.fixtures_dir, f["seed"])


def _download_default() -> Path:
    """The default model via `xtask download-model` (the hub owner's command), as JSON."""
    _log("downloading the default model (xtask download-model)")
    proc = subprocess.run([sys.executable, "-m", "bitnet.cli.xtask", "download-model", "--format", "json"],
                          capture_output=True, text=True)  # fmt: skip
    try:
        data = json.loads(proc.stdout)
    except json.JSONDecodeError:
        data = {}
    if proc.returncode != 0 or not data.get("ok", False):
        msg = (data.get("error") or {}).get("message") or proc.stderr.strip()[-400:]
        raise NetworkError(f"download-model failed: {msg}", hint="use `xtask full-crossval --offline`")
    return Path(data["model"]["path"])


def run_full(opts: FullOptions) -> dict[str, Any]:
    t0 = time.perf_counter()
    steps: dict[str, Any] = {}
    flavor = opts.flavor or ("llama.cpp" if opts.offline else "bitnet")
    t = time.perf_counter()
    if opts.model is not None:
        model = opts.model
    elif opts.offline:
        model = _offline_model(opts)
    else:
        model = _download_default()
    steps["model"] = {"path": str(model), "seconds": round(time.perf_counter() - t, 2)}
    t = time.perf_counter()
    req = FetchRequest(flavor=flavor, sdist=flavor == "llama.cpp", cpp_dir=opts.cpp_dir)
    fetched = fetch_cpp(req)
    steps["fetch_cpp"] = {"rebuilt": fetched.rebuilt, "revision": fetched.manifest.revision,
                          "seconds": round(time.perf_counter() - t, 2)}  # fmt: skip
    report = run_suite(SuiteOptions(model=model, flavor=flavor, cpp_dir=opts.cpp_dir, report=opts.report,
                                    max_tokens=opts.max_tokens))  # fmt: skip
    steps["crossval"] = {"ok": report["ok"], "seconds": report["timings"].get("total_s")}
    return {"ok": bool(report["ok"]), "flavor": flavor, "model": str(model), "steps": steps, "report": report,
            "report_path": str(opts.report), "seconds": round(time.perf_counter() - t0, 2)}  # fmt: skip
