"""The pipeline on the embedded default (offline zoo, built-in data), on a CPU, with a report.

``xsteer demo`` leads with a concept that crosses: Gemma-3-270M's sentiment vector, mapped into
SmolLM2-135M-Instruct through a ridge map fitted on texts that never mention sentiment, measured against the
child's own vector and the nulls on held-out probes (:mod:`xsteer.app.fidelity`): the fidelity table, the
dose-response figure and example generations per condition.

``xsteer demo --benchmark`` runs the paper's benchmark pipeline instead, as a one-job grid: Algorithm 1 on
both models, the map, Algorithms 2 and 3 with ITS and every control on built-in arithmetic problems, and a
report. A rerun reuses what is done.
"""

from __future__ import annotations

import time
from pathlib import Path

import click

from xsteer.app.config import parse_config
from xsteer.app.fidelity import FidelitySpec

FIDELITY = FidelitySpec(
    parents=("gemma3-270m",),
    children=("smollm2-135m",),
    concepts=("sentiment",),
    layer_maps=("proportional",),
    width_maps=("ridge", "truncate_pad"),
    generation_probes=3,
)

BENCHMARK = {
    "name": "demo",
    "parents": ["gemma3-270m"],
    "children": ["smollm2-135m"],
    "datasets": [{"name": "synthetic", "val_items": 8, "test_items": 16}],
    "pairs": {"builder": "corrupted_answer", "n": 32, "split": "train", "method": "pca"},
    "transfer": {
        "layer_map": "proportional",
        "width_map": "ridge",
        "fit_text": "synthetic:train:128",
        "norm": "resid_mean",
    },
    # λ relative to the child's residual norm at every layer: 0.003 is subtle, 0.03 already derails SmolLM2.
    "eval": {
        "lambdas": [0.003, 0.01, 0.03],
        "positions": "generated",
        "shots": 2,
        "max_new_tokens": 64,
        "batch_size": 36,
    },
    "controls": {"native": True, "random": True, "self_consistency": True},
}


def run_demo(out: str | Path, *, device: str | None = None, benchmark: bool = False) -> Path:
    t0 = time.time()

    def log(msg: str) -> None:
        click.echo(f"[{time.time() - t0:5.0f} s] {msg}")

    if benchmark:
        from xsteer.app.grid import run_grid

        cfg = parse_config({**BENCHMARK, "device": device}, where="demo")
        [job] = run_grid(cfg, out, on_done=lambda p: log(p))
        click.echo((Path(job) / "summary.md").read_text())
        report = Path(job) / "report.html"
    else:
        from dataclasses import replace

        from xsteer.app.fidelity import load_results, run_study
        from xsteer.app.fidelity_report import study_table, write_fidelity_report

        run_study(replace(FIDELITY, device=device), out, log=log)
        results = load_results(out)
        click.echo(study_table(results))
        report = write_fidelity_report(
            results, out, title="xsteer demo: does Gemma-3-270M's sentiment cross into SmolLM2-135M?"
        )
    log(f"report: {report}")
    return report
