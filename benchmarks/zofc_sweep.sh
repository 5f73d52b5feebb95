#!/usr/bin/env bash
# Settings tried for the seed paper's claim (a) "zo-fc forgets less than fo": one option changed at a
# time from the README table's settings, 3 seeds each, int8 mode, on the default spoken-digits run.
#   bash benchmarks/zofc_sweep.sh [RUN_DIR] [OUT_DIR]        (about 5 minutes on 2 cores)
set -euo pipefail
RUN=${1:-runs/kws}
OUT=${2:-$RUN-sweep}  # beside the run folder: outputs never go inside an input
ZO=${ZO_EDGE:-.venv/bin/zo-edge}
[ -f "$RUN/run.json" ] || $ZO build --out "$RUN"
run() {  # name, then simulate options
  local name=$1; shift
  $ZO simulate "$RUN" --mode int8 --seeds 3 --epochs 10 --out "$OUT/$name" --force --quiet "$@" > /dev/null
  echo "done: $name ($*)" >&2
}
run zofc-q1 --method zo-fc --q 1
run zofc-q16 --method zo-fc --q 16
run zofc-eps2x --method zo-fc --epsilon 0.0068
run zofc-lr0.03 --method zo-fc --lr 0.03
run zofc-fc2 --method zo-fc --fc-epochs 2
run zofc-fc10 --method zo-fc --fc-epochs 10
run fo-lr0.003 --method fo --lr 0.003 --fc-lr 0.01
run fo-lr0.03 --method fo --lr 0.03
$ZO compare "$OUT"/* --markdown
