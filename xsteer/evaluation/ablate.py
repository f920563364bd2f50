"""Per-layer λ ablations: which layers carry the concept's effect on the child.

The paper steers every mapped layer with one λ and names a per-layer λ as future work. Three studies:

* :func:`single_layer_profiles` — steer one layer at a time;
* :func:`leave_one_out_profiles` — steer all layers but one;
* :func:`coordinate_search` — a per-layer λ profile found by coordinate ascent on a validation signal.

:func:`ablation_study` runs one of them on benchmark items (``xsteer ablate``); :func:`study_matrix` and
:func:`ablation_table` turn its result into a [λ, layer] matrix and a text table.

A *profile* is a per-layer weight; :func:`reweight` turns vectors and a profile into ordinary
:class:`SteeringVectors` (unweighted layers dropped), so every tool that steers can run it. Each profile is
scored with a cheap, low-variance signal — the mean log-probability of the gold answer given the prompt
(:func:`gold_logprob_signal`) — and, where affordable, with task accuracy.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from xsteer.core.progress import Progress
from xsteer.core.types import HookedModel
from xsteer.core.vectors import SteeringVectors
from xsteer.errors import InputError
from xsteer.evaluation.evaluate import Evaluator
from xsteer.evaluation.plan import EvalConfig
from xsteer.evaluation.records import RecordStore
from xsteer.evaluation.summary import BASELINE, accuracy_by_lambda
from xsteer.tasks import Example
from xsteer.tasks.prompts import render

Profile = dict[int, float]  # layer -> weight on that layer's λ
STUDIES = ("single", "leave_one_out", "coordinate")


def reweight(vectors: SteeringVectors, profile: Mapping[int, float]) -> SteeringVectors:
    """Vectors with layer l scaled by ``profile[l]``; layers absent from the profile or weighted 0 dropped."""
    bad = [layer for layer in profile if layer not in vectors.layers]
    if bad:
        raise InputError(
            f"profile names layers {bad} that carry no vector; steerable: {list(vectors.layers)}"
        )
    keep = [layer for layer in vectors.layers if profile.get(layer, 0.0) != 0.0]
    if not keep:
        raise InputError("the profile steers no layer")
    v = torch.zeros_like(vectors.vectors)
    for layer in keep:
        v[layer] = vectors.vectors[layer] * float(profile[layer])
    return vectors.replace(vectors=v, layers=tuple(keep), layer_stats=())


def single_layer_profiles(vectors: SteeringVectors) -> dict[str, Profile]:
    return {f"only {layer}": {layer: 1.0} for layer in vectors.layers}


def leave_one_out_profiles(vectors: SteeringVectors) -> dict[str, Profile]:
    return {f"all but {layer}": {k: 1.0 for k in vectors.layers if k != layer} for layer in vectors.layers}


def gold_logprob_signal(
    model: HookedModel, prompts: Sequence[str], golds: Sequence[str], *, batch_size: int = 16
) -> Callable[[SteeringVectors | None, float], float]:
    """A signal function: mean per-token log p(gold answer | prompt) under steering (higher is better).

    Scoring the reference answer needs one forward pass per item (no decoding), so it is cheap enough to
    sweep every layer on a CPU and it varies smoothly with λ, unlike accuracy on a few items.
    """
    from xsteer.core.generate import Steering
    from xsteer.core.likelihood import continuation_logprobs

    n_tok = [max(1, len(model.tokenizer(g, add_special_tokens=False).input_ids)) for g in golds]

    def signal(vectors: SteeringVectors | None, lam: float) -> float:
        steering = Steering(vectors, lam) if vectors is not None else None
        lps = continuation_logprobs(model, prompts, golds, steering=steering, batch_size=batch_size)
        return float(sum(lp / n for lp, n in zip(lps, n_tok, strict=True)) / len(lps))

    return signal


def run_profiles(
    signal: Callable[[SteeringVectors | None, float], float],
    vectors: SteeringVectors,
    profiles: Mapping[str, Profile],
    lambdas: Sequence[float],
    *,
    progress: bool = True,
) -> dict[str, dict[float, float]]:
    """signal(profile, λ) for every profile and λ; the unsteered value is under the key ``"baseline"``."""
    out: dict[str, dict[float, float]] = {"baseline": {0.0: signal(None, 0.0)}}
    with Progress(len(profiles), "ablation profiles", unit="profiles", enabled=progress) as bar:
        for name, prof in profiles.items():
            v = reweight(vectors, prof)
            out[name] = {float(lam): signal(v, lam) for lam in lambdas}
            bar.update()
    return out


def coordinate_search(
    signal: Callable[[SteeringVectors | None, float], float],
    vectors: SteeringVectors,
    grid: Sequence[float],
    *,
    sweeps: int = 2,
    progress: bool = True,
) -> tuple[Profile, float, list[dict[str, Any]]]:
    """A per-layer λ profile maximising ``signal`` by coordinate ascent.

    Starts from no steering; each sweep visits the layers in order and sets each one's λ to the grid value
    (0 included) that maximises the signal with the others held fixed. Returns the profile (layer -> λ,
    zeros dropped), its signal, and the trace of accepted moves.
    """
    grid = sorted({0.0, *map(float, grid)})
    lam: dict[int, float] = {layer: 0.0 for layer in vectors.layers}
    best = signal(None, 0.0)
    trace: list[dict[str, Any]] = [{"sweep": 0, "layer": None, "lam": 0.0, "signal": best}]
    for sweep in range(1, sweeps + 1):
        changed = False
        with Progress(
            len(vectors.layers), f"coordinate sweep {sweep}", unit="layers", enabled=progress
        ) as bar:
            for layer in vectors.layers:
                for value in grid:
                    if value == lam[layer]:
                        continue
                    trial = {**lam, layer: value}
                    active = {k: w for k, w in trial.items() if w != 0.0}
                    s = signal(reweight(vectors, active), 1.0) if active else signal(None, 0.0)
                    if s > best + 1e-9:
                        best, lam, changed = s, trial, True
                        trace.append({"sweep": sweep, "layer": layer, "lam": value, "signal": s})
                bar.update()
        if not changed:
            break
    return {k: w for k, w in lam.items() if w != 0.0}, best, trace


# ---------------------------------------------------------------------------------------------- studies
def gold_requests(
    tokenizer: Any, cfg: EvalConfig, examples: Sequence[Example], *, data_dir: str | Path | None = None
) -> tuple[list[str], list[str]]:
    """(prompt, gold continuation) per item, as the evaluator would prompt under ``cfg`` (an EvalConfig).

    ``generate`` mode: the few-shot chat prompt and the reference response (reasoning + final-answer
    marker); ``loglik`` mode: lm-eval's ``Question: …\nAnswer:`` context and the gold choice.
    """
    if not examples:
        raise InputError("no items to score the ablation on")
    task = cfg.task
    prompts, golds = [], []
    if cfg.mode == "loglik":
        for ex in examples:
            ctx, choices = task.loglik_request(ex)
            if ex.answer_index is None:
                raise InputError(f"{ex.id}: gold answer {ex.answer!r} is not among the labels {ex.labels}")
            prompts.append(ctx)
            golds.append(choices[ex.answer_index])
        return prompts, golds
    shots = task.shots(cfg.shots, seed=cfg.seed, data_dir=data_dir) if cfg.shots else []
    for ex in examples:
        prompts.append(render(tokenizer, task.messages(ex, shots, system=cfg.system_prompt)))
        golds.append(task.format_answer(ex))
    return prompts, golds


def study_profiles(vectors: SteeringVectors, study: str) -> dict[int, tuple[str, Profile]]:
    """The profiles of a ``single`` or ``leave_one_out`` study, keyed by the layer each one is about."""
    if study == "single":
        profiles = single_layer_profiles(vectors)
    elif study == "leave_one_out":
        if len(vectors.layers) < 2:
            raise InputError(
                f"a leave-one-out study needs at least 2 steered layers, the vectors steer {list(vectors.layers)}"
            )
        profiles = leave_one_out_profiles(vectors)
    else:
        raise InputError(f"unknown study {study!r}; options: {', '.join(STUDIES)}")
    return dict(zip(vectors.layers, profiles.items(), strict=True))


def profile_accuracy(
    model: HookedModel,
    cfg: EvalConfig,
    records: str | Path,
    vectors: SteeringVectors,
    profiles: Mapping[str, Profile],
    examples: Sequence[Example],
    lambdas: Sequence[float],
    *,
    split: str = "validation",
    batch_size: int = 16,
    progress: bool = True,
    data_dir: str | Path | None = None,
) -> dict[str, dict[float, float]]:
    """Task accuracy of each profile at each λ (and of the unsteered ``"baseline"`` at λ = 0), through the
    evaluator: records go to the JSON Lines file ``records`` (resumable), scoring follows ``cfg.mode``."""
    conditions: dict[str, SteeringVectors | None] = {
        BASELINE: None,
        **{n: reweight(vectors, p) for n, p in profiles.items()},
    }
    ev = Evaluator(
        model,
        cfg,
        RecordStore(records),
        conditions,
        batch_size=batch_size,
        progress=progress,
        data_dir=data_dir,
    )
    ev.run(split, examples, BASELINE)
    for name in profiles:
        ev.run(split, examples, name, lambdas)
    recs = ev.records_for({split: examples})
    return {name: accuracy_by_lambda(recs, split, name) for name in conditions}


def ablation_study(
    model: HookedModel,
    vectors: SteeringVectors,
    examples: Sequence[Example],
    cfg: EvalConfig,
    study: str,
    *,
    sweeps: int = 2,
    batch_size: int = 16,
    records: str | Path | None = None,
    split: str = "validation",
    progress: bool = True,
    data_dir: str | Path | None = None,
) -> dict[str, Any]:
    """One per-layer study on benchmark items, scored with :func:`gold_logprob_signal` (and with task
    accuracy, through the evaluator, when a ``records`` file is given).

    ``cfg`` is an :class:`~xsteer.evaluation.plan.EvalConfig`; its λ grid is the λ each profile is scored at
    (``single``, ``leave_one_out``) or the per-layer grid of the coordinate search (0 is always added).
    Returns a JSON-ready document: the baseline signal, one row per (profile, λ) with the signal and its
    difference from the baseline, and for ``coordinate`` the profile found and the trace of accepted moves.
    """
    if study not in STUDIES:
        raise InputError(f"unknown study {study!r}; options: {', '.join(STUDIES)}")
    vectors.check_compatible(model.cfg.n_layers, model.cfg.d_model, model.cfg.model_name)
    lambdas = [float(x) for x in cfg.lambdas]
    prompts, golds = gold_requests(model.tokenizer, cfg, examples, data_dir=data_dir)
    signal = gold_logprob_signal(model, prompts, golds, batch_size=batch_size)
    doc: dict[str, Any] = {
        "study": study,
        "split": split,
        "n_items": len(examples),
        "lambdas": lambdas,
        "n_layers": vectors.n_layers,
        "steered_layers": list(vectors.layers),
        "vectors": vectors.model_id,
        "norm": vectors.norm,
        "signal": "mean per-token log p(gold | prompt)",
    }
    if study == "coordinate":
        profile, best, trace = coordinate_search(signal, vectors, lambdas, sweeps=sweeps, progress=progress)
        base = trace[0]["signal"]
        doc.update(
            baseline=base,
            profile={str(k): v for k, v in sorted(profile.items())},
            best_signal=best,
            best_delta=best - base,
            trace=trace,
        )
        doc["rows"] = [
            {"profile": "coordinate", "layer": layer, "lam": profile.get(layer, 0.0)}
            for layer in vectors.layers
        ]
        if records is not None and profile:
            found = profile_accuracy(
                model,
                cfg,
                records,
                vectors,
                {"coordinate": profile},
                examples,
                [1.0],
                split=split,
                batch_size=batch_size,
                progress=progress,
                data_dir=data_dir,
            )
            doc["accuracy"] = {
                "baseline": found["baseline"].get(0.0),
                "coordinate": found["coordinate"].get(1.0),
            }
        return doc
    by_layer = study_profiles(vectors, study)
    values = run_profiles(signal, vectors, dict(by_layer.values()), lambdas, progress=progress)
    base = values["baseline"][0.0]
    acc: dict[str, dict[float, float]] | None = None
    if records is not None:
        acc = profile_accuracy(
            model,
            cfg,
            records,
            vectors,
            dict(by_layer.values()),
            examples,
            lambdas,
            split=split,
            batch_size=batch_size,
            progress=progress,
            data_dir=data_dir,
        )
        doc["accuracy_baseline"] = acc["baseline"].get(0.0)
    rows = []
    for layer, (name, _) in by_layer.items():
        for lam in lambdas:
            row = {
                "profile": name,
                "layer": layer,
                "lam": lam,
                "signal": values[name][lam],
                "delta": values[name][lam] - base,
            }
            if acc is not None:
                row["accuracy"] = acc[name].get(lam)
            rows.append(row)
    doc.update(baseline=base, rows=rows)
    return doc


def study_matrix(doc: Mapping[str, Any], key: str = "delta") -> tuple[list[float], Any]:
    """A ``single``/``leave_one_out`` study as a [λ, layer] float64 matrix of ``key`` (NaN where unscored)."""
    lambdas = list(doc["lambdas"])
    m = torch.full((len(lambdas), doc["n_layers"]), float("nan"), dtype=torch.float64)
    for r in doc["rows"]:
        if r.get(key) is not None:
            m[lambdas.index(r["lam"]), r["layer"]] = r[key]
    return lambdas, m


def ablation_table(doc: Mapping[str, Any]) -> str:
    """The study as text: per layer the signal change at each λ (or the coordinate-search profile)."""
    head = (
        f"{doc['study']} study, {doc['n_items']} {doc['split']} items; baseline signal {doc['baseline']:.4f}"
    )
    if doc["study"] == "coordinate":
        lines = [
            head,
            f"best signal {doc['best_signal']:.4f} (Δ {doc['best_delta']:+.4f})",
            f"{'layer':>5}  {'λ':>8}",
        ]
        lines += [f"{r['layer']:>5}  {r['lam']:>8g}" for r in doc["rows"]]
        if "accuracy" in doc:
            a = doc["accuracy"]
            lines.append(
                f"accuracy: baseline {100 * a['baseline']:.1f}%, profile {100 * a['coordinate']:.1f}%"
            )
        return "\n".join(lines)
    lambdas, delta = study_matrix(doc)
    _, acc = study_matrix(doc, "accuracy")
    what = "only this layer steered" if doc["study"] == "single" else "this layer left out"
    lines = [
        head,
        f"Δ signal vs baseline ({what})" + (", accuracy %" if "accuracy_baseline" in doc else ""),
        f"{'layer':>5}  " + "  ".join(f"{'λ=' + format(lam, 'g'):>14}" for lam in lambdas),
    ]
    for layer in doc["steered_layers"]:
        cells = []
        for i in range(len(lambdas)):
            cell = f"{float(delta[i, layer]):+.4f}"
            if "accuracy_baseline" in doc:
                cell += f" {100 * float(acc[i, layer]):5.1f}"
            cells.append(f"{cell:>14}")
        lines.append(f"{layer:>5}  " + "  ".join(cells))
    if "accuracy_baseline" in doc:
        lines.append(f"baseline accuracy {100 * doc['accuracy_baseline']:.1f}%")
    return "\n".join(lines)
