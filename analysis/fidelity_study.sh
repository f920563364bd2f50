#!/usr/bin/env bash
# The transfer-fidelity study with the instrument (xsteer.evaluation.instrument: placebo null, whole-pipeline
# interval, specificity, known nulls) on the offline zoo (XSTEER_ZOO=full): 7 pairs x 5 concepts, one
# measurement at a time, resumable across runs and machines.
#   bash analysis/fidelity_study.sh [OUT] [DATA]        # then: python -m analysis.regenerate
# OUT (default analysis/results/fidelity_study) is committed except its acts/ cache: every finished measurement
# (results/*.json: the readouts of every vector, λ and probe, and the verdicts) and every measurement under way
# (results/*.partial.json, saved after each chunk of 16 vectors) lands there as it is made, so a kill, a reset
# or the end of a session loses at most one chunk. Rerun the same command to go on: finished measurements are
# skipped, a partial one resumes at its last chunk.
# The judge readout (a model that is neither parent nor child reads the steered continuations) is added to a
# measurement made before it was asked for, without reading the rest again.
# dtype: a child whose bf16 check agrees with fp32 (analysis/results/dtype_check.md: every verdict kept, every
# log-odds number within 0.02) is measured in bf16, about twice as fast on this CPU (benchmarks/dtype.py); the
# others in fp32. BF16_CHILDREN lists the checked ones. A finished measurement runs again in the dtype it
# was made in, so what the instrument added since (the placebos' pipeline replicates) is read in that dtype and
# nothing else is read again. XSTEER_DTYPE, when set, overrides the choice for every measurement. A partial file
# made in the other dtype is read again from the start, as for any other change of settings (its git copy keeps
# the old readouts), so that no measurement mixes two dtypes.
# Order: the cells the instrument is judged on first (Gemma-3 -> SmolLM2 and Qwen 1.5B -> SmolLM2 on sentiment
# and certainty, Qwen 1.5B -> 0.5B formality), then two more on the Qwen 0.5B child (its formality reference is
# undefined, and each child needs measurements with a valid one for its calibration on known nulls), then every
# pair's lexicon concepts and then its corrupted_answer, the children measured in bf16 (SmolLM2, Gemma-3) before
# the one in fp32 (Qwen 0.5B), so that the paper's own concept is measured on four pairs before the last ~30 h
# (the answer readout prefills a ~160-token solution per vector and λ: about 10x a lexicon measurement). A
# measurement whose reference is undefined reads only the child's own and the mapped vectors (minutes, not hours).
set -euo pipefail
OUT=${1:-analysis/results/fidelity_study}
DATA=${2:-../shared/data}
XS=${XSTEER:-.venv/bin/xsteer}
PY=$(dirname "$XS")/python
MAPS=(--layer-map proportional --width-map ridge --width-map truncate_pad)
G=gemma3-270m S=smollm2-135m Q1=qwen2.5-coder-1.5b Q0=qwen2.5-coder-0.5b
BF16_CHILDREN=" $S $G "
judge() {  # the judge of a pair: a zoo model that is neither its parent nor its child
  for j in $Q0 $S $G; do [ "$j" != "$1" ] && [ "$j" != "$2" ] && { echo "$j"; return; }; done
}
run() {  # parent child concept
  local parent=$1 child=$2 concept=$3 dtype=float32
  local made="$OUT/results/${parent}__${child}__${concept}.json"
  [[ $BF16_CHILDREN == *" $child "* ]] && dtype=bfloat16
  [ -f "$made" ] && dtype=$("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["spec"].get("dtype", "float32"))' "$made")
  dtype=${XSTEER_DTYPE:-$dtype}
  echo "== $parent -> $child: $concept, $dtype ($(date +%H:%M:%S))"
  XSTEER_DTYPE=$dtype "$XS" fidelity --parent "$parent" --child "$child" --concept "$concept" "${MAPS[@]}" --data-dir "$DATA" \
    --judge "$(judge "$parent" "$child")" --out "$OUT"
}
run $G $S sentiment
run $G $S certainty
run $Q1 $Q0 formality
run $Q1 $S sentiment
run $Q1 $S certainty
run $Q1 $Q0 sentiment
run $Q1 $Q0 certainty
pairs() {  # every pair given, its lexicon concepts first, then the paper's concept
  for pair in "$@"; do
    for c in sentiment certainty formality topic; do run $pair $c; done
  done
  for pair in "$@"; do run $pair corrupted_answer; done
}
pairs "$G $S" "$S $G" "$Q1 $S" "$Q1 $G"
pairs "$Q1 $Q0" "$G $Q0" "$S $Q0"
