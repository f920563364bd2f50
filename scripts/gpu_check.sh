#!/usr/bin/env bash
# The GPU checks of issue #33 as one command (one H100, about 10 minutes; nothing here has run on a GPU yet):
#   bash scripts/gpu_check.sh [MODEL] [DATA] [OUT]        # defaults: smollm2-135m ../shared/data gpu_check/
# 1. correctness on CUDA: the model checks (resid_post = HF hidden states, logits, λ = 0 bit for bit, a planted
#    λ·v, KV cache against no cache) and per-row λ against one λ at a time within bf16 tolerance, parameters
#    on the GPU (benchmarks/per_row_check.py);
# 2. the 19-λ sweep benchmark at both positions, xsteer against the hook-per-λ alternative and the prefix-cached
#    one (benchmarks/lambda_sweep.py);
# 3. steered against unsteered tokens per second (benchmarks/generation.py);
# 4. the GSM8K ITS wall-time estimate: the sweep's measured seconds per (item, λ) row times the full test set
#    (1,319 items x 19 λ), printed last.
# Every step's output is kept in OUT/*.txt; the script stops at the first failing step.
set -euo pipefail
MODEL=${1:-smollm2-135m}
DATA=${2:-../shared/data}
OUT=${3:-gpu_check}
PY=${PYTHON:-.venv/bin/python}
XS=${XSTEER:-.venv/bin/xsteer}
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
step() {  # name, command...
  local name=$1; shift
  echo "== $name ($(date +%H:%M:%S))"
  "$@" 2>&1 | tee "$OUT/$name.txt"
}
step check_model "$XS" check-model "$MODEL" --device cuda
step per_row "$PY" benchmarks/per_row_check.py --model "$MODEL" --device cuda
for pos in generated all; do
  step "sweep_$pos" "$PY" benchmarks/lambda_sweep.py --model "$MODEL" --data-dir "$DATA" --device cuda \
    --positions "$pos" --items 32 --max-new-tokens 256 --repeats 3
done
step generation "$PY" benchmarks/generation.py --model "$MODEL" --data-dir "$DATA" --device cuda \
  --items 64 --batch-size 32 --max-new-tokens 256
# The sweep at positions=all is the paper's setting: its xsteer wall time per row, scaled to the test set.
"$PY" - "$OUT/sweep_all.txt" <<'PY' | tee "$OUT/its_estimate.txt"
import re, sys
text = open(sys.argv[1]).read()
rows = int(re.search(r"= (\d+) rows", text).group(1))
wall = float(re.search(r"^xsteer\s+([\d.]+)", text, re.M).group(1))
per_row = wall / rows
print(f"GSM8K ITS estimate (one H100, positions=all, 19 λ, 256 new tokens): {per_row:.3f} s per (item, λ) row "
      f"x 1319 x 19 = {per_row * 1319 * 19 / 60:.1f} min (an estimate from {rows} rows, not a measurement)")
PY
