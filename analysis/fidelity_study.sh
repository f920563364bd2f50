#!/usr/bin/env bash
# The transfer-fidelity study on the offline zoo (XSTEER_ZOO=full), resumable: rerun the same command and
# finished (pair, concept) results are kept; one that lacks a map or random draw a command asks for gets only
# those measured and added; an interrupted one resumes at the condition it stopped at (results/*.partial).
# Activations are reused. Each finished result is also copied to KEEP (committed, ~170 KB a measurement), so the
# write-up can be regenerated, and the study resumed, after OUT is lost (copy a *.partial there by hand to keep it),
# with OUT/readouts: the readouts of the child's own vector and the random child directions, which every parent of
# that child reuses (9 of a reduced-grid measurement's 21 conditions).
#   bash analysis/fidelity_study.sh runs/fidelity ../shared/data      # then: analysis/results/fidelity.md
# Ordered so that a partial run answers the main questions first: one cross-family pair (Gemma-3-270M ->
# SmolLM2-135M, the cheapest) with the full grid on sentiment, then the reduced grid (proportional and
# CKA-on-differences layer maps x ridge, anchor and the truncate_pad control) for the same-family pair
# (Qwen2.5-Coder-1.5B -> 0.5B) and the paper's own concept, then the cheap cross-family cells, then the rest.
# Each model reads each concept's texts once (cached in OUT/acts per text set, whatever the pair or the other
# concepts): ~4 min for SmolLM2 or Gemma, ~12-17 min for the two Qwen models together. After that, on 2 CPU cores, a
# (pair, concept) on the reduced grid takes ~4-9 min (SmolLM2 or Gemma child) or ~9-14 min (Qwen 0.5B child), and
# corrupted_answer (GSM8K prompts) several times longer: 21 conditions at ~1.5 min each into SmolLM2, ~2 min into
# Gemma, several minutes into Qwen 0.5B (the second and third parent of a child skip its 9 child-side conditions).
set -euo pipefail
OUT=${1:-runs/fidelity}
DATA=${2:-../shared/data}
XS=${XSTEER:-.venv/bin/xsteer}
KEEP=${KEEP:-analysis/results/fidelity_runs}
mkdir -p "$OUT/results" "$OUT/readouts" "$KEEP/results" "$KEEP/readouts"
cp -n "$KEEP"/results/* "$OUT/results/" 2>/dev/null || true  # resume from what was kept
cp -n "$KEEP"/readouts/* "$OUT/readouts/" 2>/dev/null || true
FULL=(--layer-map proportional --layer-map greedy --layer-map cka --layer-map cka_diff
      --width-map ridge --width-map procrustes --width-map anchor --width-map truncate_pad)
SMALL=(--layer-map proportional --layer-map cka_diff --width-map ridge --width-map anchor --width-map truncate_pad)
run() {  # parent child concept grid...
  local parent=$1 child=$2 concept=$3; shift 3
  echo "== $parent -> $child: $concept ($(date +%H:%M:%S))"
  "$XS" fidelity --parent "$parent" --child "$child" --concept "$concept" "$@" --data-dir "$DATA" --out "$OUT"
  cp -p "$OUT/results/"*.json "$KEEP/results/"
  cp -p "$OUT/readouts/"*.json "$KEEP/readouts/" 2>/dev/null || true  # the child-side readouts every parent shares
  for f in "$KEEP"/results/*.partial; do [ -e "${f%.partial}.json" ] && rm -f "$f"; done  # finished since
}
G=gemma3-270m S=smollm2-135m Q1=qwen2.5-coder-1.5b Q0=qwen2.5-coder-0.5b
run $G $S sentiment "${FULL[@]}"
run $Q1 $Q0 sentiment "${SMALL[@]}"
run $G $S corrupted_answer "${SMALL[@]}"
run $Q1 $Q0 certainty "${SMALL[@]}"
run $G $S certainty "${SMALL[@]}"
# The cheap cross-family cells (~5-10 min each) before the same-family ones that load Qwen 1.5B (~35 min each).
for c in topic formality; do run $G $S $c "${SMALL[@]}"; done
for c in sentiment topic formality; do run $S $G $c "${SMALL[@]}"; done
# Sentiment, the concept that transfers best, on every remaining pair before the other concepts on them.
for pair in "$Q1 $S" "$G $Q0" "$Q1 $G" "$S $Q0"; do run $pair sentiment "${SMALL[@]}"; done
for c in topic formality corrupted_answer; do run $Q1 $Q0 $c "${SMALL[@]}"; done
for pair in "$Q1 $S" "$S $G" "$G $Q0" "$S $Q0" "$Q1 $G"; do
  for c in sentiment certainty topic formality corrupted_answer; do run $pair $c "${SMALL[@]}"; done
done
# The full grid (4 layer maps x 4 width maps) on one more cell per child, the same-family one included: only
# the maps the reduced grid lacks are measured (~ one cell's cost each).
run $Q1 $Q0 sentiment "${FULL[@]}"
run $S $G sentiment "${FULL[@]}"
run $G $S certainty "${FULL[@]}"
