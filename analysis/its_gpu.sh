#!/usr/bin/env bash
# The ITS study's GPU protocol (issue #30), one command: GSM8K's whole test split (1,319 items), 5-shot, the
# paper-literal arm and the five arms at K = 19 generations per item, both parents, on one H100.
#
#   analysis/its_gpu.sh                 # from the repository root, in the environment scripts/setup.sh makes
#   NAME=other analysis/its_gpu.sh --test-items 300     # extra arguments go to analysis/its_study.py
#
# Resumable: rerun the same command after a kill; finished (item, arm) lines are kept and not redone. Results:
# analysis/results/its_study/$NAME (commit them), then analysis/results/its_vs_sc.md is regenerated from every
# committed study. Wall time: an ESTIMATE, not a measurement (no GPU has run it): see "GPU protocol" in
# analysis/results/its_study/README.md for how it is derived from the CPU throughput measured here.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
NAME=${NAME:-gsm8k-qwen2.5-coder-0.5b-h100}
DATA=${XSTEER_DATA_DIR:-../shared/data}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || echo "no nvidia-smi: is this the GPU machine?"
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name())"
start=$(date +%s)
"$PY" analysis/its_study.py --name "$NAME" --child qwen2.5-coder-0.5b \
    --parents qwen2.5-coder-1.5b gemma3-270m --task gsm8k --data-dir "$DATA" \
    --shots 5 --max-new-tokens 512 --n-lambdas 19 --random-draws 5 --positions all \
    --val-items 200 --n-pairs 512 --fit-text gsm8k:train:512 \
    --chunk 64 --batch-size 256 --device cuda "$@"
echo "wall time of this run: $(( ($(date +%s) - start) / 60 )) min"
"$PY" analysis/its_report.py
