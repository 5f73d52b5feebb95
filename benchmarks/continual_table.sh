#!/usr/bin/env bash
# The README's continual-learning table: every method in both modes on the default spoken-digits run,
# 3 seeds each, then one comparison table (markdown) and the comparison plots.
#   bash benchmarks/continual_table.sh [RUN_DIR] [OUT_DIR]       (about 20 minutes on 2 cores)
set -euo pipefail
RUN=${1:-runs/kws}
OUT=${2:-$RUN-sim}  # beside the run folder: outputs never go inside an input
ZO=${ZO_EDGE:-.venv/bin/zo-edge}
[ -f "$RUN/run.json" ] || $ZO build --out "$RUN"
for mode in int8 float; do
  for method in zo-fc fo zo head frozen; do
    $ZO simulate "$RUN" --method "$method" --mode "$mode" --seeds 3 --epochs 10 --out "$OUT/$method-$mode" --force --quiet
    echo "done: $method $mode" >&2
  done
done
$ZO compare "$OUT"/*-int8 "$OUT"/*-float --markdown --plots "$OUT-plots" --force
