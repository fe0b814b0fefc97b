#!/usr/bin/env bash
# Deterministic multi-scenario cross-validation with traces (see docs/crossval.md).
#
#   scripts/run_crossval_sweep.sh MODEL.gguf [TOKENIZER.json|-] [OUTDIR=./crossval-results]
#
# Runs `xtask crossval-sweep` (scenarios of 1, 2, 4, 16 and 32 tokens); writes per-scenario traces and reports,
# OUTDIR/summary.md and OUTDIR/report.html. Extra xtask options can follow after the three arguments.
# Exit code: xtask's (0 all agree, 1 divergence, 19 no C++ reference; build it with `xtask fetch-cpp`).
set -euo pipefail
if [ $# -lt 1 ]; then
  sed -n '2,8p' "$0" >&2
  exit 2
fi
MODEL=$1
TOKENIZER=${2:--}
OUT=${3:-./crossval-results}
shift $(( $# < 3 ? $# : 3 ))
export BITNET_DETERMINISTIC=1 BITNET_SEED=42
export CROSSVAL_TIMEOUT_SECS=${CROSSVAL_TIMEOUT_SECS:-180}
exec xtask crossval-sweep "$MODEL" "$TOKENIZER" "$OUT" "$@"
