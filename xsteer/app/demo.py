"""The whole pipeline on the embedded default: offline zoo + built-in synthetic data, on a CPU.

Gemma-3-270M (parent) → SmolLM2-135M-Instruct (child) on templated multi-step arithmetic word problems,
run as a one-job grid (:mod:`xsteer.app.grid`): Algorithm 1 on the parent and on the child (the child-native
control), a proportional × ridge transfer map with its held-out fit, Algorithms 2 and 3 with ITS and every
control (λ relative to the child's residual norm), and an HTML report. A rerun reuses what is done.
"""

from __future__ import annotations

import time
from pathlib import Path

import click

from xsteer.app.config import parse_config

DEMO = {
    "name": "demo",
    "parents": ["gemma3-270m"],
    "children": ["smollm2-135m"],
    "datasets": [{"name": "synthetic", "val_items": 8, "test_items": 16}],
    "pairs": {"builder": "corrupted_answer", "n": 32, "split": "train", "method": "pca"},
    "transfer": {"layer_map": "proportional", "width_map": "ridge", "fit_text": "synthetic:train:128", "norm": "resid_mean"},
    # λ relative to the child's residual norm at every layer: 0.003 is subtle, 0.03 already derails SmolLM2.
    "eval": {"lambdas": [0.003, 0.01, 0.03], "positions": "generated", "shots": 2, "max_new_tokens": 64, "batch_size": 36},
    "controls": {"native": True, "random": True, "self_consistency": True},
}


def run_demo(out: str | Path, *, device: str | None = None) -> Path:
    from xsteer.app.grid import run_grid

    cfg = parse_config({**DEMO, "device": device}, where="demo")
    t0 = time.time()
    [job] = run_grid(cfg, out, on_done=lambda p: click.echo(f"[{time.time() - t0:5.0f} s] {p}"))
    click.echo((Path(job) / "summary.md").read_text())
    report = Path(job) / "report.html"
    click.echo(f"[{time.time() - t0:5.0f} s] report: {report}")
    return report
