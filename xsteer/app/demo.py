"""The pipeline on the embedded default (offline zoo, built-in data), on a CPU, with a report.

``xsteer demo`` asks whether Gemma-3-270M's sentiment crosses into SmolLM2-135M-Instruct, with the fidelity
instrument (:mod:`xsteer.evaluation.instrument`) at a reduced size that fits a few minutes of CPU: a ridge map
fitted on texts that never mention sentiment (and the ``truncate_pad`` control), placebo vectors through the
same map, whole-pipeline bootstrap replicates, and the mapped vector read on the other concepts' readouts.
``--judge MODEL`` adds the second readout and the fluency cost: a third model (neither Gemma-3 nor SmolLM2)
reads the steered continuations. It is off by default, because the default set-up installs two models and the
judge is the slowest phase on a CPU (:data:`JUDGE_COST`).

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

# The study runs FidelitySpec's defaults; the demo fits a few CPU minutes with fewer placebos and replicates,
# and says so in its output.
FIDELITY = FidelitySpec(
    parents=("gemma3-270m",),
    children=("smollm2-135m",),
    concepts=("sentiment",),
    layer_maps=("proportional",),
    width_maps=("ridge", "truncate_pad"),
    lambdas=(-0.04, -0.02, 0.02, 0.04),
    placebos=10,
    replicates=4,
    random_draws=2,
    pipeline_placebos=0,  # they calibrate the instrument over a study; the demo makes no such claim
)

#: What ``--judge qwen2.5-coder-0.5b`` adds to the demo, measured on this 2-core CPU with nothing else running
#: (2026-12-06; analysis/results/bench_demo_judge.txt): 936 steered continuations of 24 tokens in 2 min 16 s, the judge's pole scores in 6 min 17 s,
#: its fluency scores at 3.6 rows/s (~4.5 min for 972 rows): about 13 minutes on top of the demo's ~4.
JUDGE_COST = "~13 min more on 2 CPU cores"

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


def run_demo(
    out: str | Path, *, device: str | None = None, benchmark: bool = False, judge: str | None = None
) -> Path:
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
        from xsteer.app.fidelity_tables import study_markdown
        from xsteer.core.io import write_text_atomic

        spec = replace(FIDELITY, device=device, judge=judge)
        click.echo(
            f"reduced instrument: K = {spec.placebos} placebos, R = {spec.replicates} pipeline replicates, "
            f"{len(spec.lambdas)} λ (the study: {FidelitySpec.placebos}, {FidelitySpec.replicates}, "
            f"{len(FidelitySpec.lambdas)})"
        )
        click.echo(
            f"judge readout and fluency cost: {judge}, {spec.judge_placebos} placebos a map ({JUDGE_COST})"
            if judge
            else "judge readout and fluency cost: not run (they need a third model: `XSTEER_ZOO=full bash "
            f"scripts/setup.sh`, then `xsteer demo --judge qwen2.5-coder-0.5b`, {JUDGE_COST})"
        )
        run_study(spec, out, log=log)
        text = study_markdown(load_results(out))
        click.echo(text)
        report = write_text_atomic(Path(out) / "fidelity.md", text + "\n")
    log(f"wrote {report}")
    return report
