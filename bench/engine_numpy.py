"""Prefill and decode speed of the numpy reference engine on generated fixtures.

    python bench/engine_numpy.py [--sizes tiny,small] [--formats i2_s,tq2_0] [--prompt 64] [--decode 32]
                                 [--repeats 3] [--numerics default] [--json PATH]

Forces `BITNET_KERNELS=ref` (the numpy kernels; this is the baseline native/GPU kernels are measured against) and
prints a table on stdout; `--json PATH` also writes the rows (with the engine description) atomically. Each cell is
the median over `--repeats` runs: prefill = one batched evaluation of the prompt, decode = single-token steps after it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ["BITNET_KERNELS"] = "ref"


def measure(path: Path, prompt_len: int, n_decode: int, repeats: int, numerics: str, threads: int | None) -> dict:
    import numpy as np

    from bitnet.model import load_model

    engine = load_model(path, numerics=numerics, threads=threads)
    rng = np.random.default_rng(0)
    prompt = rng.integers(0, engine.config.vocab_size, size=prompt_len).tolist()
    pre, dec = [], []
    engine.prefill(prompt[:4])  # warm-up: decode caches, BLAS initialisation
    for _ in range(repeats):
        engine.reset()
        t0 = time.perf_counter()
        logits = engine.prefill(prompt)
        t1 = time.perf_counter()
        tok = int(np.argmax(logits))
        for _ in range(n_decode):
            tok = int(np.argmax(engine.decode_step(tok)))
        t2 = time.perf_counter()
        pre.append(prompt_len / (t1 - t0))
        dec.append(n_decode / (t2 - t1))
    d = engine.describe()
    return {
        "model": path.name,
        "prompt_tokens": prompt_len,
        "decode_tokens": n_decode,
        "prefill_tok_s": round(statistics.median(pre), 2),
        "decode_tok_s": round(statistics.median(dec), 2),
        "profile": d["profile"],
        "numerics": d["numerics"],
        "kv_dtype": d["kv_dtype"],
        "threads": d["threads"],
        "kernels": d["kernels"],
        "shape": d["shape"],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="tiny,small")
    ap.add_argument("--formats", default="i2_s,tq2_0")
    ap.add_argument("--prompt", type=int, default=64)
    ap.add_argument("--decode", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--numerics", default="default", choices=["default", "bitnet-cpp"])
    ap.add_argument("--threads", type=int, default=1, help="BLAS threads (default 1: gemv is memory-bound)")
    ap.add_argument("--fixtures-dir", type=Path, default=None, help="reuse/generate fixtures here (default: temp)")
    ap.add_argument("--json", type=Path, default=None, help="also write the results as JSON to this path")
    args = ap.parse_args(argv)

    from bitnet.formats.fixtures import fixture_filename, generate_fixture

    tmp = None
    root = args.fixtures_dir
    if root is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench-engine-")
        root = Path(tmp.name)
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for size in args.sizes.split(","):
        for fmt in args.formats.split(","):
            arch = "bitnet" if fmt.startswith("tq") else "bitnet-b1.58"
            path = root / fixture_filename(size, fmt, arch)
            if not path.is_file():
                print(f"generating {path.name} ...", file=sys.stderr)
                path = generate_fixture(size, fmt, arch, root, seed=0)
            print(f"measuring {path.name} ...", file=sys.stderr)
            rows.append(measure(path, args.prompt, args.decode, args.repeats, args.numerics, args.threads))
    header = f"{'model':34} {'profile':10} {'prefill tok/s':>14} {'decode tok/s':>13}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['model']:34} {r['profile']:10} {r['prefill_tok_s']:>14.1f} {r['decode_tok_s']:>13.1f}")
    if args.json is not None:
        doc = {"bench": "engine_numpy", "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()},
               "prompt_tokens": args.prompt, "decode_tokens": args.decode, "repeats": args.repeats, "rows": rows}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_path = tempfile.mkstemp(dir=args.json.parent, prefix=".tmp-", suffix=".json")
        with os.fdopen(fd, "w") as fh:
            json.dump(doc, fh, indent=2)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_path, args.json)
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
