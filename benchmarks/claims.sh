#!/usr/bin/env bash
# The study behind the README's "Where the zeroth-order adapter pays" (issue 12): every method on five
# scenarios, int8 mode (the device's arithmetic), reference-like budgets, >= 5 seeds, with the flatness,
# drift and update-norm measurements, then an FO run whose adapter steps are as long as ZO's.
#
#   bash benchmarks/claims.sh [OUT_DIR]        (OUT_DIR default study/; a few hours on 2 shared cores)
#
# Results go to OUT_DIR/sim/<scenario>/<run>/results.json; a finished run is kept (the script resumes), so
# delete a folder to run it again. The report: OUT_DIR/claims.md (table with 95 % CIs, the claims) and
# OUT_DIR/plots/*.png (python benchmarks/claims.py report OUT_DIR --plots OUT_DIR/plots).
# Environment: SEEDS (5), EPOCHS (20, classifier epochs half of them), ZO_EDGE (the zo-edge command),
# SCENARIOS (a subset of the names below), METHODS (likewise).
set -euo pipefail
OUT=${1:-study}
SEEDS=${SEEDS:-5}
EPOCHS=${EPOCHS:-20}
ZO=${ZO_EDGE:-.venv/bin/zo-edge}
PY=${PYTHON:-.venv/bin/python}
HERE=$(cd "$(dirname "$0")" && pwd)
SCENARIOS=${SCENARIOS:-"default cosine adapters3 domain-strong pretrained-other"}
METHODS=${METHODS:-"zo-fc fo zo head frozen"}

# scenario -> build options ("zo-edge build --out RUN ...")
build_options() {
  case $1 in
    default) echo "" ;;                                          # DS-CNN, spoken digits class-il, one adapter
    cosine) echo "--head cosine" ;;                              # the reference's cosine classifier
    adapters3) echo "--adapter-position 0,2,3" ;;                # adapters beside blocks 0, 2 and 3
    domain-strong) echo "--scenario domain-il --shifts strong" ;; # noise, telephone band, reverberation, vocal tract
    pretrained-other) echo "--dataset japanese-vowels --pretrain-dataset spoken-digits --base-classes 3 --task-classes 2" ;;
    *) echo "unknown scenario $1" >&2; exit 2 ;;
  esac
}
# scenario -> simulate options beyond the common ones
sim_options() {
  case $1 in
    pretrained-other) echo "--batch-size 16" ;;  # 9 speakers x 57 utterances: small tasks need small batches
    *) echo "" ;;
  esac
}
COMMON="--mode int8 --seeds $SEEDS --epochs $EPOCHS --fc-epochs $((EPOCHS / 2)) --lr-schedule cosine --flatness --quiet"

simulate() {  # scenario, run name, options...
  local scenario=$1 name=$2; shift 2
  local out="$OUT/sim/$scenario/$name"
  if [ -f "$out/results.json" ]; then return; fi
  # shellcheck disable=SC2086
  $ZO simulate "$OUT/runs/$scenario" $COMMON $(sim_options "$scenario") --out "$out" --force "$@" > /dev/null
  echo "$(date +%H:%M:%S) done: $scenario $name ($*)" >&2
}

for scenario in $SCENARIOS; do
  run="$OUT/runs/$scenario"
  if [ ! -f "$run/run.json" ]; then
    # shellcheck disable=SC2046
    $ZO build --out "$run" $(build_options "$scenario") > /dev/null
    echo "$(date +%H:%M:%S) built: $scenario" >&2
  fi
  for method in $METHODS; do
    simulate "$scenario" "$method" --method "$method"
  done
  # FO with its adapter learning rate scaled so that its mean adapter step is as long as zo-fc's
  if [ -f "$OUT/sim/$scenario/zo-fc/results.json" ] && [ -f "$OUT/sim/$scenario/fo/results.json" ]; then
    lr=$($PY "$HERE/claims.py" matched-lr "$OUT/sim/$scenario/zo-fc" "$OUT/sim/$scenario/fo")
    simulate "$scenario" fo-matched --method fo --lr "$lr"
  fi
done
$PY "$HERE/claims.py" report "$OUT" --plots "$OUT/plots" > "$OUT/claims.md"
echo "wrote $OUT/claims.md and $OUT/plots" >&2
