#!/usr/bin/env bash
# The offline-zoo analysis study (issue #5): Gemma-3-270M and Qwen2.5-Coder-1.5B as parents, SmolLM2-135M
# as child. Every step writes one artifact and is skipped when it exists, so a rerun resumes.
#   bash analysis/zoo_study.sh [RUNS_DIR]        (CPU, 2 cores: about an hour with a warm model cache)
# Expects the Gemma study files of analysis/results/README.md in $R (g2s, smol_native, the ARC and GSM8K runs)
# and the activation caches of analysis/transfer_fit.py in runs/transfer_fit.
set -euo pipefail
R=${1:-runs/study}
D=${XSTEER_DATA_DIR:-../shared/data}
X=${XSTEER:-.venv/bin/xsteer}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
step() { if [ -e "$1" ]; then echo "have $1"; else echo "== $1"; shift; "$@"; fi; }

# Algorithm 1 on the second parent (32 pairs: a 1.5B forward pass is ~11x SmolLM2's on this CPU)
step $R/qwen.safetensors $X extract --parent qwen2.5-coder-1.5b --dataset gsm8k --data-dir $D --n-pairs 32 \
    --batch-size 8 --out $R/qwen.safetensors
# into SmolLM2's space, the same map family and norm as the Gemma vectors
step $R/q2s.safetensors $X transfer --vectors $R/qwen.safetensors --child smollm2-135m --layer-map proportional \
    --width-map ridge --fit-text gsm8k:train:192 --data-dir $D --norm resid_mean --batch-size 8 --out $R/q2s.safetensors

# similarity: each mapped parent vs the child-native vectors (with the mapped-random null), parent vs parent
# in the child's space (Fig. 2), and linear CKA of the models' layers on shared text (mapping-free)
step $R/similarity/report.html $X similarity --vectors $R/g2s.safetensors --map $R/g2s.map.safetensors \
    --vectors $R/q2s.safetensors --map $R/q2s.map.safetensors --reference $R/smol_native.safetensors \
    --acts runs/transfer_fit/gemma3-270m_to_smollm2-135m.acts.pt \
    --acts runs/transfer_fit/qwen2.5-coder-1.5b_to_gemma3-270m.acts.pt --out $R/similarity
step $R/similarity_parents/report.html $X similarity --vectors $R/q2s.safetensors --reference $R/g2s.safetensors \
    --out $R/similarity_parents

# per-layer λ ablations on ARC-Challenge validation (log-likelihood: one forward per item and profile)
for v in g2s q2s; do
  step $R/ablate_$v/ablate_single.json $X ablate --child smollm2-135m --vectors $R/$v.safetensors \
      --dataset arc_challenge --mode loglik --data-dir $D --study single --lambdas 0.1 --items 64 \
      --accuracy --out $R/ablate_$v
done

# λ robustness and ITS for the second parent on ARC-Challenge (log-likelihood, the first 500 test items)
step $R/arc_qwen/summary.json $X evaluate --child smollm2-135m --vectors parent=$R/q2s.safetensors \
    --no-random-control --dataset arc_challenge --mode loglik --data-dir $D --val-items 64 --test-items 500 \
    --lambdas 0.003,0.01,0.03 --out $R/arc_qwen

.venv/bin/python analysis/zoo_report.py --study $R --out $R/zoo_report
