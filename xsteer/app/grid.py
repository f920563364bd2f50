"""The paper's grid as one command: every (parent, child, dataset) job of an experiment config.

Three phases, each a set of independent tasks that write one file each (atomically) and are skipped when
their file exists, so a killed grid resumes without redoing finished work:

1. vectors: Algorithm 1 for every parent (and every child, for the child-native control) × dataset;
2. maps: one fitted transfer map per (parent, child);
3. jobs: Algorithms 2 + 3 per (parent, child, dataset), into the evaluator's record format, then a report.

Sequential in one process by default; with Ray, each task is a Ray task (one GPU each where present).
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from xsteer.app import steps
from xsteer.app.config import ExperimentConfig
from xsteer.core.io import spec_slug, write_text_atomic

DONE = "done.json"


def vectors_path(out: Path, model: str, dataset: str) -> Path:
    return out / "vectors" / f"{spec_slug(model)}__{dataset}.safetensors"


def map_path(out: Path, parent: str, child: str, cfg: ExperimentConfig) -> Path:
    t = cfg.transfer
    return (
        out / "maps" / f"{spec_slug(parent)}__{spec_slug(child)}__{t.layer_map}-{t.width_map}.map.safetensors"
    )


def job_dir(out: Path, parent: str, child: str, dataset: str) -> Path:
    return out / "jobs" / f"{spec_slug(parent)}__{spec_slug(child)}__{dataset}"


def make_vectors(cfg: ExperimentConfig, model_spec: str, dataset: str, out: str) -> str:
    """Algorithm 1 for one model and task, into ``vectors/``; skipped if the file exists."""
    path = vectors_path(Path(out), model_spec, dataset)
    if path.exists():
        return str(path)
    from xsteer.core.models import load_model

    model = load_model(model_spec, device=cfg.device)
    pairs = steps.make_pairs(
        model, dataset, cfg.pairs, data_dir=cfg.data_dir, seed=cfg.seed, shots=cfg.eval.shots
    )
    steps.make_vectors(
        model,
        pairs,
        method=cfg.pairs.method,
        seed=cfg.seed,
        progress=False,
        source={"source": f"{dataset}:{cfg.pairs.split}", "builder": cfg.pairs.builder},
    ).save(path)
    return str(path)


def make_map(cfg: ExperimentConfig, parent: str, child: str, out: str) -> str:
    """One fitted transfer map per (parent, child), into ``maps/``; skipped if the file exists."""
    path = map_path(Path(out), parent, child, cfg)
    if path.exists():
        return str(path)
    from xsteer.core.models import load_model

    p, c = load_model(parent, device=cfg.device), load_model(child, device=cfg.device)
    steps.make_map(p, c, cfg.transfer, data_dir=cfg.data_dir, seed=cfg.seed).save(path)
    return str(path)


def run_job(cfg: ExperimentConfig, parent: str, child: str, dataset: str, out: str) -> str:
    """Algorithms 2 + 3 for one (parent, child, task); skipped if its done-marker exists."""
    folder = job_dir(Path(out), parent, child, dataset)
    if (folder / DONE).exists():
        return str(folder)
    from xsteer.app.report import write_report
    from xsteer.core.models import load_model
    from xsteer.core.vectors import SteeringVectors
    from xsteer.transfer.maps import TransferMap, report_table

    plan = cfg.eval_plan(dataset)
    tmap = TransferMap.load(map_path(Path(out), parent, child, cfg))
    native = SteeringVectors.load(vectors_path(Path(out), child, dataset)) if cfg.controls.native else None
    conditions = steps.job_conditions(
        cfg, tmap, SteeringVectors.load(vectors_path(Path(out), parent, dataset)), native
    )
    val, test = steps.load_splits(dataset, plan, data_dir=cfg.data_dir)
    model = load_model(child, device=cfg.device)
    print(
        f"job {parent} -> {child} on {dataset}: {len(val)} validation, {len(test)} test items, "
        f"conditions {', '.join(conditions)}",
        flush=True,
    )
    summary = steps.run_evaluation(
        model,
        conditions,
        plan,
        task=dataset,
        data_dir=cfg.data_dir,
        out=folder,
        splits=(val, test),
        extra={"parent": parent, "child": child, "dataset": dataset},
    )
    write_report(
        folder,
        title=f"{parent} → {child} on {dataset}",
        sections=[
            (
                f"Transfer map {tmap.layer_map_name} × {tmap.width_map_name}: held-out fit per child layer",
                f"<pre>{html.escape(report_table(tmap))}</pre>",
            )
        ],
    )
    write_text_atomic(folder / DONE, json.dumps({"config_hash": summary.config_hash}))
    return str(folder)


def plan(cfg: ExperimentConfig) -> list[list[tuple[Callable[..., str], tuple]]]:
    """The tasks of each phase, as (function, args) pairs without the output folder."""
    ds = [d.name for d in cfg.datasets]
    models = list(dict.fromkeys(cfg.parents + (cfg.children if cfg.controls.native else ())))
    return [
        [(make_vectors, (m, d)) for m in models for d in ds],
        [(make_map, (p, c)) for p in cfg.parents for c in cfg.children],
        [(run_job, (p, c, d)) for p in cfg.parents for c in cfg.children for d in ds],
    ]


def run_grid(
    cfg: ExperimentConfig,
    out: str | Path,
    *,
    ray_address: str | None = None,
    use_ray: bool = False,
    on_done: Callable[[str], None] = print,
) -> list[str]:
    """Run every phase; returns the job folders. Finished tasks are skipped (resume)."""
    out = str(Path(out).resolve())
    Path(out).mkdir(parents=True, exist_ok=True)
    write_text_atomic(Path(out) / "config.json", json.dumps(asdict(cfg), indent=2, default=str))
    results: list[str] = []
    for phase in plan(cfg):
        results = (
            _run_ray(cfg, phase, out, ray_address, on_done)
            if use_ray
            else _run_local(cfg, phase, out, on_done)
        )
    return results


def _run_local(
    cfg: ExperimentConfig, tasks: Sequence[tuple[Callable, tuple]], out: str, on_done: Callable
) -> list[str]:
    res = []
    for fn, args in tasks:
        res.append(fn(cfg, *args, out))
        on_done(res[-1])
    return res


def _run_ray(
    cfg: ExperimentConfig,
    tasks: Sequence[tuple[Callable, tuple]],
    out: str,
    address: str | None,
    on_done: Callable,
) -> list[str]:
    import ray
    import torch

    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    gpus = 1 if torch.cuda.is_available() else 0
    remote = {fn: ray.remote(num_gpus=gpus)(fn) for fn in {fn for fn, _ in tasks}}
    refs = [remote[fn].remote(cfg, *args, out) for fn, args in tasks]
    res = []
    for r in ray.get(refs):
        on_done(r)
        res.append(r)
    return res


def load_plan_status(cfg: ExperimentConfig, out: str | Path) -> dict[str, Any]:
    out = Path(out)
    jobs = [job_dir(out, p, c, d.name) for p in cfg.parents for c in cfg.children for d in cfg.datasets]
    return {"jobs": len(jobs), "done": sum((j / DONE).exists() for j in jobs)}
