"""`xtask crossval`: validate a model with our reader, preflight the C++ reference, run the deterministic suite.

Steps (each timed and recorded in `target/crossval_report.json`):
1. our GGUF reader opens the model (version, n_kv, n_tensors, data offset, file size);
2. C++ preflight: the reference loads the model through the FFI;
3. the suite, per prompt: tokenization parity, all-position logits (cosine / NMSE / KL / top-k), greedy streams.

Environment: BITNET_DETERMINISTIC=1, BITNET_SEED=42, one thread on both sides. `CROSSVAL_ALLOW_CPP_FAIL=1` turns a
C++ failure (the reference missing or unable to load the model) into an expected failure (`xfail`, exit 0);
`CROSSVAL_TIMEOUT_SECS` (default 180) bounds each scenario.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bitnet.crossval.cpp import DEFAULT_TEST_FLAVOR, Manifest, find_reference
from bitnet.crossval.parity import DETERMINISTIC_ENV, ParityOptions, load_engine, run_parity, scoped_env
from bitnet.errors import BitnetError, NotFoundError
from bitnet.fsutil import atomic_write_json

#: version of target/crossval_report.json
REPORT_SCHEMA_VERSION = "1.0"
DEFAULT_PROMPTS = ("Hello", "2+2=", "Count: 1,2,3,", "The quick brown fox jumps over the lazy dog.")
DEFAULT_REPORT = Path("target") / "crossval_report.json"
DEFAULT_TIMEOUT_S = 180.0


def allow_cpp_fail() -> bool:
    return os.environ.get("CROSSVAL_ALLOW_CPP_FAIL", "").lower() in ("1", "true", "yes")


def scenario_timeout() -> float:
    try:
        return float(os.environ.get("CROSSVAL_TIMEOUT_SECS", DEFAULT_TIMEOUT_S))
    except ValueError:
        return DEFAULT_TIMEOUT_S


class ScenarioTimeout(Exception):
    pass


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise ScenarioTimeout after `seconds` (SIGALRM; only in the main thread, else unbounded).

    A C call in progress finishes first; the alarm fires between Python bytecodes.
    """
    import threading

    if seconds <= 0 or threading.current_thread() is not threading.main_thread():
        yield
        return

    def _raise(_sig: int, _frame: Any) -> None:
        raise ScenarioTimeout(f"scenario exceeded CROSSVAL_TIMEOUT_SECS={seconds:g}")

    old = signal.signal(signal.SIGALRM, _raise)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def resolve_model(model: Path | None) -> Path:
    """--model, else $CROSSVAL_GGUF, else the first *.gguf under models/ (the seed's order)."""
    if model is not None:
        return model
    env = os.environ.get("CROSSVAL_GGUF")
    if env:
        return Path(env)
    found = sorted(Path("models").rglob("*.gguf")) if Path("models").is_dir() else []
    if not found:
        raise NotFoundError("no model given and none found (--model, $CROSSVAL_GGUF or models/**/*.gguf)",
                            hint="generate one with `xtask gen-fixtures` or run `xtask full-crossval --offline`")
    return found[0]


@dataclass
class SuiteOptions:
    model: Path | None = None
    flavor: str = DEFAULT_TEST_FLAVOR
    cpp_dir: Path | None = None
    prompts: tuple[str, ...] = DEFAULT_PROMPTS
    max_tokens: int = 32
    cos_tol: float = 0.999
    nmse_tol: float = 1e-6
    profile: str | None = None
    ffn_act: str | None = None
    report: Path = DEFAULT_REPORT
    extra: dict[str, Any] = field(default_factory=dict)


def _check(name: str, ok: bool, seconds: float, **details: Any) -> dict[str, Any]:
    return {"name": name, "ok": ok, "seconds": round(seconds, 4), **details}


def run_suite(opts: SuiteOptions) -> dict[str, Any]:
    """Run the crossval suite and write the report (always, on every outcome). Returns the report."""
    model = resolve_model(opts.model)
    report: dict[str, Any] = {
        "schema_version": REPORT_SCHEMA_VERSION,
        "model": str(model),
        "rust_ok": False,  # the seed's field name: "our side read the model"
        "engine_ok": False,
        "cpp_header_ok": False,
        "cpp_full_ok": False,
        "xfail": False,
        "notes": [],
        "timestamp": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "platform": f"{platform.system().lower()}-{platform.machine()}",
        "gguf_version_detected": None,
        "n_kv": None,
        "n_tensors": None,
        "data_offset": None,
        "file_size": None,
        "environment": {**DETERMINISTIC_ENV, "threads": 1, "flavor": opts.flavor},
        "thresholds": {"cos_tol": opts.cos_tol, "nmse_tol": opts.nmse_tol, "max_tokens": opts.max_tokens},
        "checks": [],
        "timings": {},
        "ok": False,
    }
    t_all = time.perf_counter()
    try:
        with scoped_env(dict(DETERMINISTIC_ENV)):
            _run(model, opts, report)
    finally:
        report["timings"]["total_s"] = round(time.perf_counter() - t_all, 3)
        atomic_write_json(opts.report, report, sort_keys=False)
    return report


def _run(model: Path, opts: SuiteOptions, report: dict[str, Any]) -> None:
    from bitnet.crossval.ffi import CppSession
    from bitnet.formats.gguf_reader import open_gguf

    checks = report["checks"]
    # 1. our reader
    t = time.perf_counter()
    try:
        gf = open_gguf(model)
    except BitnetError as exc:
        checks.append(_check("gguf_reader", False, time.perf_counter() - t, error=str(exc)))
        report["notes"].append(f"our reader rejected the model: {exc}")
        raise
    report.update(rust_ok=True, gguf_version_detected=gf.version, n_kv=gf.n_kv, n_tensors=gf.n_tensors,
                  data_offset=gf.data_offset, file_size=gf.file_size)  # fmt: skip
    checks.append(_check("gguf_reader", True, time.perf_counter() - t, version=gf.version, n_tensors=gf.n_tensors,
                         arch=gf.metadata.get("general.architecture")))  # fmt: skip
    # 2. C++ preflight (load through the FFI)
    t = time.perf_counter()
    manifest: Manifest | None = None
    try:
        manifest = find_reference(opts.flavor, opts.cpp_dir)
        report["reference"] = {"flavor": manifest.flavor, "revision": manifest.revision,
                               "api_generation": manifest.api_generation}  # fmt: skip
        CppSession(model, manifest=manifest, n_threads=1).close()
        report["cpp_header_ok"] = True
        checks.append(_check("cpp_preflight", True, time.perf_counter() - t))
    except BitnetError as exc:
        checks.append(_check("cpp_preflight", False, time.perf_counter() - t, error=str(exc)))
        if allow_cpp_fail():
            report.update(xfail=True, ok=True)
            report["notes"].append(f"C++ reference failed ({exc}); CROSSVAL_ALLOW_CPP_FAIL=1 → xfail")
            return
        raise
    # 3. the suite: one engine, one reference session, several prompts
    popts = ParityOptions(flavor=opts.flavor, cpp_dir=opts.cpp_dir, profile=opts.profile, ffn_act=opts.ffn_act,
                          cos_tol=opts.cos_tol, nmse_tol=opts.nmse_tol, threads=1)  # fmt: skip
    t = time.perf_counter()
    engine = load_engine(model, popts)
    report["engine_ok"] = True
    report["engine"] = engine.describe()
    report["timings"]["engine_load_s"] = round(time.perf_counter() - t, 3)
    timeout = scenario_timeout()
    all_ok = True
    with CppSession(model, manifest=manifest, n_threads=1) as session:
        for prompt in opts.prompts:
            t = time.perf_counter()
            try:
                with time_limit(timeout):
                    res = run_parity(model, prompt, max_tokens=opts.max_tokens, opts=popts, manifest=manifest,
                                     engine=engine, session=session)  # fmt: skip
            except ScenarioTimeout as exc:
                checks.append(_check(f"prompt:{prompt}", False, time.perf_counter() - t, error=str(exc)))
                all_ok = False
                continue
            lg = res.get("logits", {})
            checks.append(_check(
                f"prompt:{prompt}", bool(res["ok"]), time.perf_counter() - t,
                verdict=res["verdict"], tokens_match=res["tokenization"]["match"],
                n_tokens=len(res["tokenization"]["ours"]), nmse=lg.get("nmse"), min_cosine=lg.get("min_cosine"),
                max_kl=lg.get("max_kl"), top1_agreement=lg.get("top1_agreement"),
                first_divergent_position=lg.get("first_divergent_position"),
                greedy_match=res.get("greedy", {}).get("match"), greedy_ours=res.get("greedy", {}).get("ours"),
                greedy_ref=res.get("greedy", {}).get("ref"),
            ))  # fmt: skip
            all_ok = all_ok and bool(res["ok"])
    report["cpp_full_ok"] = all_ok
    report["ok"] = all_ok
    if not all_ok:
        failed = [c["name"] for c in checks if not c["ok"]]
        report["notes"].append("failed checks: " + ", ".join(failed))


def summarize(report: dict[str, Any]) -> str:
    lines = [f"model: {report['model']}"]
    if report.get("reference"):
        r = report["reference"]
        lines.append(f"reference: {r['flavor']} {r['revision']} ({r['api_generation']})")
    for c in report["checks"]:
        mark = "✓" if c["ok"] else "✗"
        extra = ""
        if "nmse" in c:
            extra = (f" tokens={'=' if c['tokens_match'] else '≠'} nmse={_fmt(c['nmse'])} "
                     f"min_cos={_fmt(c['min_cosine'])} greedy={'=' if c['greedy_match'] else '≠'} — {c['verdict']}")
        elif c.get("error"):
            extra = f" — {c['error']}"
        lines.append(f"{mark} {c['name']} ({c['seconds']:.2f} s){extra}")
    verdict = "XFAIL (C++ reference unavailable, allowed)" if report["xfail"] else ("PASS" if report["ok"] else "FAIL")
    lines.append(f"crossval: {verdict} in {report['timings'].get('total_s', 0):.1f} s")
    return "\n".join(lines)


def _fmt(x: Any) -> str:
    return f"{x:.3g}" if isinstance(x, float) else str(x)
