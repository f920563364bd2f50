#!/usr/bin/env bash
# The transfer-fidelity study on the offline zoo (XSTEER_ZOO=full), resumable: rerun the same command and
# finished (pair, concept) results are kept, activations are reused.
#   bash analysis/fidelity_study.sh runs/fidelity ../shared/data      # then: analysis/results/fidelity.md
# Two pairs get the full grid (4 layer maps x 4 width maps): the cheapest cross-family pair and (last,
# extending its reduced grid) the same-family pair. The other pairs get the maps that matter most for the reading (proportional and
# CKA-on-differences layer maps x ridge, anchor and the truncate_pad control): on 2 CPU cores the full grid
# for every pair is ~10x the compute of this study.
set -euo pipefail
OUT=${1:-runs/fidelity}
DATA=${2:-../shared/data}
XS=${XSTEER:-.venv/bin/xsteer}
FULL=(--layer-map proportional --layer-map greedy --layer-map cka --layer-map cka_diff
      --width-map ridge --width-map procrustes --width-map anchor --width-map truncate_pad)
SMALL=(--layer-map proportional --layer-map cka_diff --width-map ridge --width-map anchor --width-map truncate_pad)
CONCEPTS=(--concept sentiment --concept topic --concept formality --concept certainty --concept corrupted_answer)
run() {  # parent child grid...
  local parent=$1 child=$2; shift 2
  echo "== $parent -> $child ($(date +%H:%M:%S))"
  "$XS" fidelity --parent "$parent" --child "$child" "${CONCEPTS[@]}" "$@" --data-dir "$DATA" --out "$OUT"
}
# Cheapest first, so a partial run still answers the main question; rerun to extend.
run gemma3-270m smollm2-135m "${FULL[@]}"
run smollm2-135m gemma3-270m "${SMALL[@]}"
run qwen2.5-coder-1.5b qwen2.5-coder-0.5b "${SMALL[@]}"
run qwen2.5-coder-1.5b smollm2-135m "${SMALL[@]}"
run gemma3-270m qwen2.5-coder-0.5b "${SMALL[@]}"
run smollm2-135m qwen2.5-coder-0.5b "${SMALL[@]}"
run qwen2.5-coder-1.5b gemma3-270m "${SMALL[@]}"
run qwen2.5-coder-1.5b qwen2.5-coder-0.5b "${FULL[@]}"
