"""The vectors a transferred concept must beat, built the way the concept's own vector is built.

A mapped concept vector moving a readout shows little by itself: any push of that norm through a fitted map
may move it (a fitted map pulls every direction into the child's high-variance subspace). The null that
matches that geometry is a **placebo concept**: a mean difference over pairs that carry no concept, extracted
from the same parent and pushed through the *same* fitted map (Zou et al.'s RepE and Rimsky et al.'s CAA
vectors are mean differences too, so the placebo is a vector of the very same kind). Two kinds, half each:

* **neutral pairings**: random pairs of texts that never carry the concept (the map's own fit texts), each
  pair of matched length, in random order: a difference of two unrelated texts;
* **balanced label flips**: the concept's own pairs with exactly half of them reversed, so the concept's
  component cancels and what remains is the pairs' idiosyncratic variation (a random flip of each label is
  *not* balanced and keeps part of the concept: in a pilot on Gemma-3 -> SmolLM2 sentiment, such placebos
  ranged -0.90 ... +0.91 against the mapped vector's 0.91).

On the child side, random directions are drawn from the child's activation covariance at each layer
(:func:`covariance_directions`), not isotropically: an isotropic draw of the residual's norm is a huge push in
the ordinary coordinates of a child with a few massive-activation coordinates.

Verdicts (pure functions over fidelity values): a map beats its placebo null when the lower bound of its
fidelity interval clears the placebo distribution's 95th percentile (:func:`placebo_threshold`); a
(pair, concept) verdict over several maps uses the placebos' maximum over those maps (:func:`max_threshold`),
so trying more maps does not raise the chance of a false "crosses".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import einops
import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from xsteer.errors import InputError


def _unit(v: Float[Tensor, "k layer d"]) -> Float[Tensor, "k layer d"]:
    return v / v.norm(dim=-1, keepdim=True).clamp_min(1e-30)


def flip_placebos(
    pos: Float[Tensor, "n layer d"],
    neg: Float[Tensor, "n layer d"],
    k: int,
    *,
    seed: int = 0,
    resample: int | None = None,
) -> Float[Tensor, "k layer d"]:
    """``k`` unit mean differences of the concept's pairs with exactly half of them (⌊n/2⌋) reversed.

    ``resample`` (a seed) rebuilds the same placebos on a bootstrap of their own signed pairs, as a concept's
    pairs are resampled in a pipeline replicate: drawn with replacement within the reversed half and within the
    rest, so a replicate stays balanced (a plain resample would let the concept back in, with a random sign)."""
    n = pos.shape[0]
    if n < 2:
        raise InputError(f"balanced label flips need at least 2 pairs, got {n}")
    g = torch.Generator().manual_seed(seed)
    diffs = (pos - neg).double()
    signs = torch.ones(k, n, dtype=torch.float64)
    for i in range(k):
        signs[i, torch.randperm(n, generator=g)[: n // 2]] = -1.0
    weights = signs  # each pair's sign, times how often a resample draws it
    if resample is not None:
        r = torch.Generator().manual_seed(resample)
        weights = torch.zeros(k, n, dtype=torch.float64)
        for i in range(k):
            for side in (-1.0, 1.0):
                group = torch.nonzero(signs[i] == side)[:, 0]
                drawn = group[torch.randint(0, len(group), (len(group),), generator=r)]
                weights[i].index_add_(0, drawn, torch.full((len(group),), side, dtype=torch.float64))
    return _unit(einops.einsum(weights, diffs, "k n, n l d -> k l d") / n).float()


def neutral_placebos(
    acts: Float[Tensor, "n layer d"],
    lengths: Sequence[int],
    k: int,
    n_pairs: int,
    *,
    seed: int = 0,
    resample: int | None = None,
) -> Float[Tensor, "k layer d"]:
    """``k`` unit mean differences over ``n_pairs`` random pairings of neutral texts of matched length.

    Texts are sorted by length and each pair is two neighbours in that order (so the two sides of a pair
    differ in content, not in length, as a concept's pairs do), drawn without replacement within a placebo
    and put in a random order. ``resample`` (a seed) rebuilds the same placebos on a bootstrap of their own
    pairs, as a concept's pairs are resampled in a pipeline replicate (the same draw of pair slots for each).
    """
    n = acts.shape[0]
    if len(lengths) != n:
        raise InputError(f"{len(lengths)} lengths for {n} texts")
    if n < 2 * n_pairs + 1:  # one spare: a placebo may start its pairing at the second text
        raise InputError(f"{n_pairs} neutral pairs need {2 * n_pairs + 1} texts, got {n}")
    g = torch.Generator().manual_seed(seed)
    order = torch.tensor(np.argsort(np.asarray(lengths), kind="stable"))
    x = acts.double()
    idx = (
        torch.arange(n_pairs)
        if resample is None
        else torch.randint(0, n_pairs, (n_pairs,), generator=torch.Generator().manual_seed(resample))
    )
    out = torch.empty(k, acts.shape[1], acts.shape[2], dtype=torch.float64)
    for i in range(k):
        # A random offset and a random choice of neighbouring slots make each placebo a fresh pairing.
        shift = int(torch.randint(0, 2, (1,), generator=g))
        slots = torch.randperm((n - shift) // 2, generator=g)[:n_pairs]
        a, b = order[shift + 2 * slots], order[shift + 2 * slots + 1]
        sign = torch.randint(0, 2, (n_pairs,), generator=g, dtype=torch.float64) * 2 - 1
        out[i] = einops.einsum(sign[idx], x[a[idx]] - x[b[idx]], "n, n l d -> l d") / n_pairs
    return _unit(out).float()


def covariance_directions(
    acts: Float[Tensor, "n layer d"], k: int, *, seed: int = 0
) -> Float[Tensor, "k layer d"]:
    """``k`` unit random directions per layer drawn from N(0, Σ_l), the child's activation covariance at that
    layer over ``acts`` (sampled as random combinations of the centred activations, so Σ_l is never formed)."""
    n = acts.shape[0]
    if n < 2:
        raise InputError(f"a covariance needs at least 2 texts, got {n}")
    g = torch.Generator().manual_seed(seed)
    centred = (acts - acts.mean(dim=0, keepdim=True)).double()
    z = torch.randn(k, acts.shape[1], n, generator=g, dtype=torch.float64) / (n - 1) ** 0.5
    return _unit(einops.einsum(z, centred, "k l n, n l d -> k l d")).float()


def isotropic_directions(k: int, n_layers: int, d_model: int, *, seed: int = 0) -> Float[Tensor, "k layer d"]:
    """``k`` unit directions per layer, uniform on the sphere (a random *parent* direction, pushed through a
    map, is one of the known nulls the instrument is calibrated on)."""
    g = torch.Generator().manual_seed(seed)
    return _unit(torch.randn(k, n_layers, d_model, generator=g))


# ---------------------------------------------------------------------------------------------- verdicts
def placebo_threshold(placebo_fidelity: Sequence[float], level: float = 0.95) -> float:
    """The placebo distribution's ``level`` quantile (linear interpolation), the bar a map's CI must clear."""
    vals = np.asarray([x for x in placebo_fidelity if np.isfinite(x)], dtype=float)
    if len(vals) < 10:
        raise InputError(f"a placebo null needs at least 10 placebos, got {len(vals)}")
    return float(np.quantile(vals, level))


def max_threshold(per_map: Mapping[str, Sequence[float]], level: float = 0.95) -> float:
    """The ``level`` quantile of each placebo's largest fidelity over the maps (the same placebo parent vector
    through each map): the family-wise bar for "this concept crosses through any of these maps"."""
    rows = [list(v) for v in per_map.values()]
    if not rows or len({len(r) for r in rows}) != 1:
        raise InputError("every map needs the same placebos for a family-wise threshold")
    return placebo_threshold(np.max(np.asarray(rows, dtype=float), axis=0).tolist(), level)


def exceed_rate(values: Sequence[float], threshold: float) -> tuple[int, int]:
    """How many of ``values`` exceed ``threshold``, out of how many (a false-pass count for known nulls)."""
    vals = [x for x in values if np.isfinite(x)]
    return sum(x > threshold for x in vals), len(vals)


__all__ = [
    "covariance_directions",
    "exceed_rate",
    "flip_placebos",
    "isotropic_directions",
    "max_threshold",
    "neutral_placebos",
    "placebo_threshold",
]
