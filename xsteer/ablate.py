"""Per-layer λ ablations: which layers carry the concept's effect on the child.

The paper steers every mapped layer with one λ and names a per-layer λ as future work. Three studies:

* :func:`single_layer_profiles` — steer one layer at a time;
* :func:`leave_one_out_profiles` — steer all layers but one;
* :func:`coordinate_search` — a per-layer λ profile found by coordinate ascent on a validation signal.

A *profile* is a per-layer weight; :func:`reweight` turns vectors and a profile into ordinary
:class:`SteeringVectors` (unweighted layers dropped), so every tool that steers can run it. Each profile is
scored with a cheap, low-variance signal — the mean log-probability of the gold answer given the prompt
(:func:`gold_logprob_signal`) — and, where affordable, with task accuracy.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from xsteer.vectors import SteeringVectors

Profile = dict[int, float]  # layer -> weight on that layer's λ


def reweight(vectors: SteeringVectors, profile: Mapping[int, float]) -> SteeringVectors:
    """Vectors with layer l scaled by ``profile[l]``; layers absent from the profile or weighted 0 dropped."""
    bad = [layer for layer in profile if layer not in vectors.layers]
    if bad:
        raise ValueError(f"profile names layers {bad} that carry no vector; steerable: {list(vectors.layers)}")
    keep = [layer for layer in vectors.layers if profile.get(layer, 0.0) != 0.0]
    if not keep:
        raise ValueError("the profile steers no layer")
    v = torch.zeros_like(vectors.vectors)
    for layer in keep:
        v[layer] = vectors.vectors[layer] * float(profile[layer])
    return vectors.replace(vectors=v, layers=tuple(keep), layer_stats=())


def single_layer_profiles(vectors: SteeringVectors) -> dict[str, Profile]:
    return {f"only {layer}": {layer: 1.0} for layer in vectors.layers}


def leave_one_out_profiles(vectors: SteeringVectors) -> dict[str, Profile]:
    return {f"all but {layer}": {k: 1.0 for k in vectors.layers if k != layer} for layer in vectors.layers}


def gold_logprob_signal(model: Any, prompts: Sequence[str], golds: Sequence[str], *, batch_size: int = 16) -> Callable[[SteeringVectors | None, float], float]:
    """A signal function: mean per-token log p(gold answer | prompt) under steering (higher is better).

    Scoring the reference answer needs one forward pass per item (no decoding), so it is cheap enough to
    sweep every layer on a CPU and it varies smoothly with λ, unlike accuracy on a few items.
    """
    from xsteer.generate import Steering
    from xsteer.likelihood import continuation_logprobs

    n_tok = [max(1, len(model.tokenizer(g, add_special_tokens=False).input_ids)) for g in golds]

    def signal(vectors: SteeringVectors | None, lam: float) -> float:
        steering = Steering(vectors, lam) if vectors is not None else None
        lps = continuation_logprobs(model, prompts, golds, steering=steering, batch_size=batch_size)
        return float(sum(lp / n for lp, n in zip(lps, n_tok, strict=True)) / len(lps))

    return signal


def run_profiles(signal: Callable[[SteeringVectors | None, float], float], vectors: SteeringVectors,
                 profiles: Mapping[str, Profile], lambdas: Sequence[float], *, progress: bool = True) -> dict[str, dict[float, float]]:
    """signal(profile, λ) for every profile and λ; the unsteered value is under the key ``"baseline"``."""
    out: dict[str, dict[float, float]] = {"baseline": {0.0: signal(None, 0.0)}}
    for name, prof in tqdm(profiles.items(), desc="profiles", disable=not progress):
        v = reweight(vectors, prof)
        out[name] = {float(lam): signal(v, lam) for lam in lambdas}
    return out


def coordinate_search(signal: Callable[[SteeringVectors | None, float], float], vectors: SteeringVectors,
                      grid: Sequence[float], *, sweeps: int = 2, progress: bool = True) -> tuple[Profile, float, list[dict[str, Any]]]:
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
        for layer in tqdm(vectors.layers, desc=f"sweep {sweep}", disable=not progress):
            for value in grid:
                if value == lam[layer]:
                    continue
                trial = {**lam, layer: value}
                active = {k: w for k, w in trial.items() if w != 0.0}
                s = signal(reweight(vectors, active), 1.0) if active else signal(None, 0.0)
                if s > best + 1e-9:
                    best, lam, changed = s, trial, True
                    trace.append({"sweep": sweep, "layer": layer, "lam": value, "signal": s})
        if not changed:
            break
    return {k: w for k, w in lam.items() if w != 0.0}, best, trace
