#!/usr/bin/env python3
"""CPU speed of bitnet-py on the 2B-shaped fixture, side by side with llama.cpp's and bitnet.cpp's llama-bench.

What it measures, in one run so that the machine's load is shared fairly:

- the machine's memory read bandwidth (a parallel sum over a 1 GiB buffer, best pass; `bitnet.kernels.native`);
- our kernels at the 2B shapes, one call per weight of every layer plus the F16 lm_head, on the fixture's own
  memory-mapped weights: a *projected* per-token decode time (kernels only, no attention/norms/Python);
- our full engine (`bitnet.model.load_model`): load time and resident memory beyond the mapped file, pp128 (one
  batch of 128 tokens, llama-bench's `pp`) and tg64 (64 single-token steps from an empty cache, llama-bench's `tg`);
- `llama-bench -p 128 -n 64` of upstream llama.cpp on the TQ2_0 fixture (arch `bitnet`), from the manifest that
  `xtask fetch-cpp --flavor llama.cpp --sdist` writes, and of bitnet.cpp on the I2_S fixture when
  `$BITNET_CPP_DIR` holds a built fork;
- the decode roofline: bytes read per token (every matmul weight at its stored size, the F16 lm_head, the norms)
  divided by the bandwidth;
- where a decode step's time goes beyond the matmuls: the fused blocks' own clock (their time minus their matmuls:
  norms, RoPE, attention, residuals, per layer) and the time outside every kernel call (Python and numpy glue, per
  token). `--op-by-op` adds a row for the unfused forward;
- the hypervisor's steal time during each row (from /proc/stat): a row with steal was measured while another guest
  took part of the machine, and is flagged in the table.

Prints a table on stdout (progress on stderr); `--json PATH` also writes every figure. Fixtures are generated with
`bitnet.formats.fixtures.generate_fixture` (about 1 min and 1.2 GB each) into `--fixture-dir` if missing.

    .venv/bin/python bench/cpu.py --threads 1,2 --json bench-cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from bitnet.kernels import native

REPO = Path(__file__).resolve().parent.parent


def log(msg: str) -> None:
    print(f"[bench/cpu] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------------ fixtures
def fixture(fmt: str, arch: str, out_dir: Path) -> Path:
    from bitnet.formats.fixtures import fixture_filename, generate_fixture

    out_dir.mkdir(parents=True, exist_ok=True)
    existing = out_dir / fixture_filename("2b", fmt, arch)
    if existing.exists():
        return existing
    log(f"generating the 2b {fmt} fixture (arch {arch}) in {out_dir} (about a minute)")
    return Path(generate_fixture("2b", fmt, arch=arch, out_dir=out_dir, seed=0))


def weights_bytes_per_token(path: Path) -> dict[str, int]:
    """Bytes a decode step reads: all 2-D weights at their stored size (the tied lm_head counted once more is
    `token_embd`, read whole) plus the 1-D norms; the embedding row itself is negligible."""
    from bitnet.formats.gguf_reader import open_gguf

    g = open_gguf(path)
    ternary = sum(t.n_bytes for t in g.tensors.values() if t.type_name in ("i2_s", "tq2_0", "tq1_0"))
    norms = sum(t.n_bytes for t in g.tensors.values() if len(t.shape) == 1)
    head = g.tensors.get("output.weight") or g.tensors["token_embd.weight"]
    return {
        "ternary": ternary,
        "lm_head": head.n_bytes,
        "norms": norms,
        "total": ternary + head.n_bytes + norms,
    }


# ------------------------------------------------------------------------------------------------------ our side
def kernel_projection(engine: Any, threads: int, reps: int) -> dict[str, float]:
    """Per-token time of just the matmul kernels at the model's shapes: one GEMV per weight of every layer on
    activations quantized beforehand (no quantizer, norms, attention or glue), plus the F16 lm_head."""
    from bitnet.kernels.weights import QuantWeight

    native.set_threads(threads)
    layers = engine.weights.layers
    ws: list[QuantWeight] = []
    for lw in layers:
        ws.extend(v for v in vars(lw).values() if isinstance(v, QuantWeight) and v.is_ternary)
    profile = engine.profile
    xs = {w.n_in: np.random.default_rng(0).standard_normal(w.n_in).astype(np.float32) for w in ws}
    qs = {k: native.quantize(v[None, :], profile) for k, v in xs.items()}
    head = (
        engine.weights.output
        if getattr(engine.weights, "output", None) is not None
        else engine.weights.token_embd
    )
    h16 = np.asarray(head.data)
    x = xs[h16.shape[1]] if h16.shape[1] in xs else np.zeros(h16.shape[1], np.float32)
    body, lm = [], []
    for _ in range(reps):
        t0 = time.perf_counter()
        for w in ws:
            native.ternary_matmul_q(qs[w.n_in], w)
        t1 = time.perf_counter()
        if head.fmt == "f16":
            native.f16_matmul(x, h16)
        t2 = time.perf_counter()
        body.append(t1 - t0)
        lm.append(t2 - t1)
    b, h = min(body), min(lm)
    return {"body_ms": b * 1e3, "lm_head_ms": h * 1e3, "calls": len(ws), "projected_tok_s": 1.0 / (b + h)}


def engine_bench(
    path: Path, threads: int, pp: int, tg: int, reps: int, numerics: str, fused: bool = True
) -> dict[str, Any]:
    """pp/tg of our engine; `fused=False` runs the op-by-op forward (BITNET_FUSED_BLOCKS=0) for comparison."""
    from bitnet.model import load_model

    native.set_threads(threads)
    proc = psutil.Process()
    rss0 = proc.memory_info().rss
    t0 = time.perf_counter()
    engine = load_model(path, threads=threads, numerics=numerics)
    load_s = time.perf_counter() - t0
    if not fused:
        engine.model.blocks, engine.model.blocks_reason = None, "op-by-op requested (--op-by-op)"
    mem = proc.memory_full_info()
    # resident memory that is not the file mapping: anonymous memory (uss minus file-backed shared pages is not
    # portable, so count RSS growth minus the mapped file's resident pages)
    mapped = sum(m.rss for m in proc.memory_maps() if m.path == str(path.resolve()))
    res = {"load_s": load_s, "rss_beyond_map_mib": (mem.rss - rss0 - mapped) / 2**20}
    rng = np.random.default_rng(0)
    vocab = engine.config.vocab_size
    prompt = rng.integers(0, min(vocab, 32000), size=pp)
    pp_t, tg_t = [], []
    blocks, inside = engine.model.blocks, []
    res["kernels"] = kernel_projection(engine, threads, max(2, reps))
    for _ in range(reps):
        engine.reset()
        t0 = time.perf_counter()
        engine.prefill(prompt)
        pp_t.append(time.perf_counter() - t0)
        engine.reset()
        tok = int(prompt[0])
        if blocks is not None:
            blocks.reset_timing()
        t0 = time.perf_counter()
        for _ in range(tg):
            logits = engine.decode_step(tok)
            tok = int(np.argmax(logits))
        tg_t.append(time.perf_counter() - t0)
        if blocks is not None:
            inside.append((blocks.timing["total_ns"], blocks.timing["matmul_ns"]))
    res["pp_tok_s"] = [pp / t for t in pp_t]
    res["tg_tok_s"] = [tg / t for t in tg_t]
    # what a decode step costs beyond the matmul kernels (norms, RoPE, attention, numpy glue, Python), per layer
    step_ms = 1e3 * min(tg_t) / tg
    kern_ms = res["kernels"]["body_ms"] + res["kernels"]["lm_head_ms"]
    res["non_matmul_us_per_layer"] = 1e3 * (step_ms - kern_ms) / engine.config.n_layers
    res["n_layers"] = engine.config.n_layers
    if inside:  # measured inside the fused call: its time minus its matmuls (norms, RoPE, attention, glue in C)
        total, mm = min(inside, key=lambda p: p[0])
        res["blocks_other_us_per_layer"] = (total - mm) / 1e3 / tg / engine.config.n_layers
        res["blocks_matmul_ms_per_token"] = mm / 1e6 / tg
    res["outside_kernels_us_per_token"] = outside_kernels_us(engine, int(prompt[0]), tg)
    res["describe"] = {k: v for k, v in engine.describe().items() if isinstance(v, (str, int, float, bool))}
    del engine
    return res


def outside_kernels_us(engine: Any, token: int, steps: int) -> float:
    """Microseconds per decode step spent outside every kernel: the step's wall time minus the time inside the
    fused blocks call and each op the engine's kernel table dispatched (timed around each call), best of `steps`.
    What remains is the Python and numpy glue of the forward pass."""
    inside = [0.0]

    def timed(fn: Any) -> Any:
        def wrapper(*a: Any, **kw: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                inside[0] += time.perf_counter() - t0

        return wrapper

    model, ops = engine.model, engine.ops
    engine.reset()
    engine.decode_step(token)  # binds every op the step uses
    saved_blocks, saved_fns = model.blocks, dict(ops._fns)
    if model.blocks is not None:
        model.blocks = timed(model.blocks)
    ops._fns = {name: timed(fn) for name, fn in ops._fns.items()}
    best = float("inf")
    try:
        for _ in range(steps):
            inside[0] = 0.0
            t0 = time.perf_counter()
            engine.decode_step(token)
            best = min(best, time.perf_counter() - t0 - inside[0])
    finally:
        model.blocks, ops._fns = saved_blocks, saved_fns
    return best * 1e6


# ------------------------------------------------------------------------------------------------------ references
def flags_near(binary: Path) -> list[str]:
    """The cmake flags in the fetch-cpp manifest.json of the build tree holding `binary` (empty when none)."""
    for d in binary.resolve().parents:
        m = d / "manifest.json"
        if m.is_file():
            try:
                return list(json.loads(m.read_text()).get("cmake_flags", []))
            except (ValueError, OSError):
                return []
    return []


def build_kind(flags: list[str]) -> str | None:
    """'native' / 'portable' from the last GGML_NATIVE flag (cmake keeps the last -D of a name)."""
    last = [f for f in flags if f.startswith("-DGGML_NATIVE=")]
    if not last:
        return None
    return "native" if last[-1].split("=", 1)[1].upper() in ("ON", "1", "TRUE") else "portable"


def reference_binaries(flavor: str, extra: list[Path] | None) -> list[tuple[Path, list[str]]]:
    """The manifest's llama-bench (if built) plus every `extra` one, each with its build's cmake flags."""
    found = []
    p, flags = llama_bench_binary(flavor)
    if p is not None:
        found.append((p, flags))
    for b in extra or []:
        if b.exists():
            found.append((b, flags_near(b)))
        else:
            log(f"no llama-bench at {b}")
    return found


def llama_bench_binary(flavor: str) -> tuple[Path | None, list[str]]:
    """The llama-bench of a reference build and its cmake flags (to tell a native build from a portable one)."""
    from bitnet.crossval.cpp import read_manifest

    try:
        m = read_manifest(flavor)
    except Exception as exc:  # a broken manifest is reported, not fatal for our own figures
        log(f"cannot read the {flavor} manifest: {exc}")
        return None, []
    flags = list(getattr(m, "cmake_flags", []) or []) if m is not None else []
    p = m.artifact("bin:llama-bench") if m is not None else None
    if p is None and flavor == "bitnet" and os.environ.get("BITNET_CPP_DIR"):
        cand = Path(os.environ["BITNET_CPP_DIR"]) / "build" / "bin" / "llama-bench"
        p = cand if cand.exists() else None
    return (Path(p) if p is not None and Path(p).exists() else None), flags


def run_llama_bench(binary: Path, model: Path, threads: int, pp: int, tg: int, reps: int) -> dict[str, Any]:
    cmd = [
        str(binary),
        "-m",
        str(model),
        "-t",
        str(threads),
        "-p",
        str(pp),
        "-n",
        str(tg),
        "-r",
        str(reps),
        "-o",
        "json",
    ]
    log("running " + " ".join(cmd))
    out = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=1800,
        env=dict(
            os.environ, LD_LIBRARY_PATH=str(binary.parent) + ":" + os.environ.get("LD_LIBRARY_PATH", "")
        ),
    )
    if out.returncode != 0:
        return {"error": out.stderr.strip()[-500:], "cmd": cmd}
    rows = json.loads(out.stdout)
    res: dict[str, Any] = {"cmd": cmd}
    for r in rows:
        key = "pp_tok_s" if r.get("n_prompt", 0) > 0 and r.get("n_gen", 0) == 0 else "tg_tok_s"
        res[key] = r.get("samples_ts") or [r.get("avg_ts")]
        res["build"] = r.get("build_commit")
    return res


def steal_seconds() -> float:
    """CPU time the hypervisor gave to other guests (the `steal` column of /proc/stat, all CPUs), in seconds; 0
    where unavailable. A benchmark row with much steal was measured on a machine that was not all ours."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()
        return int(fields[8]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def add_row(rows: list[dict[str, Any]], row: dict[str, Any]) -> None:
    """Append `row`, or pool its samples into the row of the same engine/format/threads from an earlier round."""
    for old in rows:
        if (old["engine"], old["fmt"], old["threads"]) == (row["engine"], row["fmt"], row["threads"]):
            old.setdefault("rounds", [dict(old)])
            for key in ("pp_tok_s", "tg_tok_s"):
                if key in row:
                    old[key] = list(old.get(key, [])) + list(row[key])
            if "steal_s" in row:
                old["steal_s"] = old.get("steal_s", 0.0) + row["steal_s"]
            old["rounds"].append(row)
            return
    rows.append(row)


def finalize(results: dict[str, Any]) -> None:
    """Notes of our rows from the pooled rounds: the best decode step against the best kernels-only projection
    (both best-of, so load spikes in either do not make the difference negative), the least Python time, the
    roofline from the best bandwidth seen."""
    for r in results["rows"]:
        bw = results["bandwidth_gb_s"].get(r["threads"])
        if bw and r.get("roofline_tok_s"):
            r["roofline_tok_s"] = bw * 1e9 / results["bytes_per_token"][r["fmt"]]["total"]
        if not r["engine"].startswith("bitnet-py"):
            continue
        runs = r.get("rounds", [r])
        kerns = [x["kernels"] for x in runs]
        body = min(k["body_ms"] for k in kerns)
        head = min(k["lm_head_ms"] for k in kerns)
        if r["engine"] == "bitnet-py kernels only":
            r["tg_tok_s"] = [1e3 / (body + head)] if len(runs) > 1 else r["tg_tok_s"]
            r["note"] = f"projected: body {body:.1f} ms + lm_head {head:.1f} ms (best of {len(runs)})"
            continue
        py = min(x["outside_kernels_us_per_token"] for x in runs)
        r["note"] = (
            f"load {min(x['load_s'] for x in runs):.2f} s, +{max(x['rss_beyond_map_mib'] for x in runs):.0f} MiB "
            f"beyond the map, outside kernels {py:.0f} us/token"
        )
        other = [x["blocks_other_us_per_layer"] for x in runs if "blocks_other_us_per_layer" in x]
        if other:
            r["note"] += f", non-matmul work in the blocks {min(other):.0f} us/layer"


# ------------------------------------------------------------------------------------------------------ report
def med(v: Any) -> float | None:
    return float(statistics.median(v)) if isinstance(v, list) and v else None


def table(results: dict[str, Any]) -> str:
    bw = results["bandwidth_gb_s"]
    lines = [
        f"machine: {results['cpu']}, {results['cores']} cores, native ISA {results['isa']}, "
        f"load avg at start {results['loadavg_start']}",
        "read bandwidth GB/s: " + ", ".join(f"{t} t: {v:.1f}" for t, v in bw.items()),
        "",
        f"{'engine':<36}{'fmt':<7}{'thr':>4}{'pp tok/s':>10}{'tg tok/s':>10}{'roofline':>10}{'% roof':>8}",
    ]
    for row in results["rows"]:
        pp, tg = med(row.get("pp_tok_s")), med(row.get("tg_tok_s"))
        roof = row.get("roofline_tok_s")
        lines.append(
            f"{row['engine']:<36}{row['fmt']:<7}{row['threads']:>4}"
            f"{(f'{pp:.1f}' if pp else '-'):>10}{(f'{tg:.2f}' if tg else '-'):>10}"
            f"{(f'{roof:.1f}' if roof else '-'):>10}{(f'{100 * tg / roof:.0f}%' if tg and roof else '-'):>8}"
            + (f"   {row['note']}" if row.get("note") else "")
            + (f" [steal {row['steal_s']:.0f} s]" if row.get("steal_s", 0) >= 1 else "")
        )
    return "\n".join(lines)


def markdown(results: dict[str, Any]) -> str:
    """The table as Markdown, with every sample, for bench/results/."""
    bw = results["bandwidth_gb_s"]
    out = [
        f"Machine: {results['cpu']}, {results['cores']} cores, native ISA {results['isa']}; load avg "
        f"{results['loadavg_start']} at the start, {results.get('loadavg_end')} at the end. Best read bandwidth "
        "seen: " + ", ".join(f"{t} t {v:.1f} GB/s" for t, v in bw.items()) + ".",
        "",
        "| engine | fmt | thr | pp tok/s (median) | tg tok/s (median) | roofline tg | % roofline | samples pp / tg | note |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in results["rows"]:
        pp, tg, roof = med(row.get("pp_tok_s")), med(row.get("tg_tok_s")), row.get("roofline_tok_s")
        samples = " / ".join(
            ", ".join(f"{x:.1f}" for x in row.get(k, [])) or "-" for k in ("pp_tok_s", "tg_tok_s")
        )
        note = row.get("note", "") + (f" (steal {row['steal_s']:.0f} s)" if row.get("steal_s", 0) >= 1 else "")
        out.append(
            f"| {row['engine']} | {row['fmt']} | {row['threads']} | {f'{pp:.1f}' if pp else '-'} | "
            f"{f'{tg:.2f}' if tg else '-'} | {f'{roof:.1f}' if roof else '-'} | "
            f"{f'{100 * tg / roof:.0f}%' if tg and roof else '-'} | {samples} | {note} |"
        )
    return "\n".join(out) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    ap.add_argument("--pp", type=int, default=128)
    ap.add_argument("--tg", type=int, default=64)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="repeat the whole comparison this many times, interleaved, pooling the samples of each row (on a "
        "shared machine the load drifts: interleaving spreads it over every engine alike)",
    )
    ap.add_argument("--formats", default="i2_s,tq2_0")
    ap.add_argument("--numerics", default="default", choices=["default", "bitnet-cpp"])
    ap.add_argument(
        "--fixture-dir", type=Path, default=Path(os.environ.get("BITNET_BENCH_DIR", REPO / "models"))
    )
    ap.add_argument("--no-engine", action="store_true", help="only bandwidth, kernels and the references")
    ap.add_argument("--no-reference", action="store_true", help="skip llama-bench")
    ap.add_argument(
        "--op-by-op", action="store_true", help="also time our engine without the fused blocks (one row more)"
    )
    ap.add_argument(
        "--llama-bench",
        type=Path,
        action="append",
        help="another llama.cpp llama-bench to run besides the manifest's (repeatable), e.g. a GGML_NATIVE=ON build",
    )
    ap.add_argument(
        "--bitnet-bench", type=Path, action="append", help="another bitnet.cpp llama-bench (repeatable)"
    )
    ap.add_argument("--json", type=Path, help="also write all figures here")
    ap.add_argument("--markdown", type=Path, help="also write the table, with every sample, as Markdown")
    args = ap.parse_args()
    if not native.available():
        log(
            f"native kernels unavailable ({native.unavailable_reason()}): the figures are the numpy reference's"
        )
    threads = [int(t) for t in args.threads.split(",")]
    results: dict[str, Any] = {
        "cpu": _cpu_name(),
        "cores": os.cpu_count(),
        "isa": native.isa() if native.available() else "none",
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
        "config": vars(args) | {"fixture_dir": str(args.fixture_dir), "json": str(args.json)},
        "bandwidth_gb_s": {},
        "rows": [],
    }
    def probe_bandwidth() -> None:  # best seen over the run: the roofline is what the machine can do
        for t in threads:
            bw = native.read_bandwidth(1 << 30, 5, t) if native.available() else float("nan")
            results["bandwidth_gb_s"][t] = max(bw, results["bandwidth_gb_s"].get(t, 0.0))
            log(f"read bandwidth {t} thread(s): {bw:.1f} GB/s")

    probe_bandwidth()
    arch_of = {"i2_s": "bitnet-b1.58", "tq2_0": "bitnet", "tq1_0": "bitnet"}
    ref_of = {
        "i2_s": ("bitnet", "bitnet.cpp llama-bench"),
        "tq2_0": ("llama.cpp", "llama.cpp llama-bench"),
        "tq1_0": ("llama.cpp", "llama.cpp llama-bench"),
    }
    for rnd in range(args.rounds):
        if rnd:
            log(f"round {rnd + 1} of {args.rounds}")
            probe_bandwidth()
        for fmt in args.formats.split(","):
            path = fixture(fmt, arch_of[fmt], args.fixture_dir)
            bpt = weights_bytes_per_token(path)
            results.setdefault("bytes_per_token", {})[fmt] = bpt
            extra = args.bitnet_bench if fmt == "i2_s" else args.llama_bench
            refs = [] if args.no_reference else reference_binaries(ref_of[fmt][0], extra)
            for t in threads:
                roof = results["bandwidth_gb_s"][t] * 1e9 / bpt["total"]
                if not args.no_engine:
                    for fused in (True, False) if args.op_by_op else (True,):
                        log(f"our engine, {fmt}, {t} thread(s){'' if fused else ', op by op'}")
                        st0 = steal_seconds()
                        r = engine_bench(path, t, args.pp, args.tg, args.reps, args.numerics, fused)
                        r["steal_s"] = steal_seconds() - st0
                        r.update(engine="bitnet-py" + ("" if fused else " (op by op)"), fmt=fmt, threads=t,
                                 roofline_tok_s=roof)
                        add_row(results["rows"], r)
                    k = r["kernels"]
                    add_row(results["rows"],
                        {
                            "engine": "bitnet-py kernels only",
                            "fmt": fmt,
                            "threads": t,
                            "roofline_tok_s": roof,
                            "tg_tok_s": [k["projected_tok_s"]],
                            "kernels": k,
                        }
                    )
                for ref_bin, ref_flags in refs:
                    st0 = steal_seconds()
                    r = run_llama_bench(ref_bin, path, t, args.pp, args.tg, args.reps)
                    r["steal_s"] = steal_seconds() - st0
                    kind = build_kind(ref_flags)
                    r.update(
                        engine=ref_of[fmt][1] + (f" ({kind})" if kind else ""),
                        fmt=fmt,
                        threads=t,
                        roofline_tok_s=roof,
                        cmake_flags=ref_flags,
                        binary=str(ref_bin),
                    )
                    if kind == "portable":
                        r["note"] = "GGML_NATIVE=OFF: AVX2, no AVX-512"
                    elif kind == "native":
                        r["note"] = "GGML_NATIVE=ON: -march=native (AVX-512)"
                    if "error" in r:
                        r["note"] = "failed: " + r["error"].splitlines()[-1][:80] if r["error"] else "failed"
                    add_row(results["rows"], r)
                if not refs and not args.no_reference:
                    add_row(results["rows"],
                        {
                            "engine": ref_of[fmt][1],
                            "fmt": fmt,
                            "threads": t,
                            "note": "not built (xtask fetch-cpp / BITNET_CPP_DIR)",
                        }
                    )
    results["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    finalize(results)
    print(table(results))
    if args.json:
        _write_json(args.json, results)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(markdown(results))
    return 0


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2, default=str)
        f.flush()
        os.fsync(f.fileno())
    shutil.move(tmp, path)


if __name__ == "__main__":
    sys.exit(main())
