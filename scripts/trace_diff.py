#!/usr/bin/env python3
"""Compare two trace directories (ours vs the C++ reference); the same library call as `xtask trace-diff`.

Usage: scripts/trace_diff.py OURS_DIR CPP_DIR [--rel-tol 1e-3] [--json]
Exit codes: 0 all tracepoints match, 1 divergence, 2 usage error, 20 a directory or its traces are missing.
"""

from __future__ import annotations

import argparse
import json
import sys

from bitnet.crossval.trace_diff import diff_traces, format_diff
from bitnet.errors import BitnetError


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("ours_dir")
    ap.add_argument("cpp_dir")
    ap.add_argument("--rel-tol", type=float, default=1e-3)
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    args = ap.parse_args(argv)
    try:
        res = diff_traces(args.ours_dir, args.cpp_dir, rel_tol=args.rel_tol)
    except BitnetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return int(exc.exit_code)
    print(json.dumps(res, indent=2, default=str) if args.json else format_diff(res))
    return 0 if res["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
