"""Algorithm 1: read a concept direction per layer from contrastive pairs (RepE, Zou et al. 2023).

Two halves:

* :func:`last_token_resid` runs batched, left-padded forward passes and keeps only the last token of each
  layer's ``hook_resid_post``; full-sequence caches are never built, and the forward stops after the last
  layer that is read (so the unembedding, 2 GB of logits for Gemma's vocabulary, never runs).
* :func:`fit_directions` is a pure function from positive/negative activations to unit directions and
  per-layer statistics.

Methods and their centring rule (the survey's PCA pitfall: PCA centres its input, so PCA of raw
``pos - neg`` differences with a consistent sign discards the mean difference, i.e. the concept):

``pca`` (RepE)
    unit-normalised differences, a seeded random sign flip per pair (so the differences appear as ±δ),
    then centred PCA; PC1 per layer.
``pca_uncentred`` (steering-vectors)
    uncentred SVD of the symmetrised raw differences ``[Δ; -Δ]``; first right singular vector.
``mean_diff`` (CAA)
    the mean raw difference.

Every direction is returned at unit norm with its sign chosen so that positives project higher than
negatives on average.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import einops
import torch
from jaxtyping import Float
from torch import Tensor

from xsteer.core.activations import last_token_resid
from xsteer.core.models import model_id
from xsteer.core.vectors import SteeringVectors
from xsteer.extraction.pairs import ContrastivePair, pairs_hash

Method = Literal["pca", "pca_uncentred", "mean_diff"]
METHODS: dict[str, str] = {
    "pca": "unit-normalised differences, random sign flip per pair, centred PCA (RepE)",
    "pca_uncentred": "uncentred SVD of the symmetrised raw differences [Δ; -Δ] (steering-vectors)",
    "mean_diff": "mean of the raw differences, no centring (CAA)",
}


def fit_directions(
    pos: Float[Tensor, "n layer d_model"],
    neg: Float[Tensor, "n layer d_model"],
    *,
    method: Method = "pca",
    seed: int = 0,
) -> tuple[Float[Tensor, "layer d_model"], list[dict[str, float]]]:
    """Unit concept directions per layer, and statistics of how well each one fits the pairs.

    Statistics per layer: ``explained_variance`` (the method's own share: PC1's share of variance for
    ``pca``, σ₁² / Σσ² for ``pca_uncentred``, the share of the differences' energy along the direction for
    ``mean_diff``), ``separation`` (fraction of pairs whose positive projects above its negative),
    ``effect_size`` (mean / std of the projected differences) and ``mean_diff_norm`` (‖mean Δ‖).
    """
    if pos.shape != neg.shape or pos.ndim != 3:
        raise ValueError(f"pos and neg must both be [n, layer, d_model], got {tuple(pos.shape)} and {tuple(neg.shape)}")
    n = pos.shape[0]
    if n == 0:
        raise ValueError("the pair set is empty")
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; options: {', '.join(METHODS)}")
    diffs = einops.rearrange((pos - neg).double(), "n layer d -> layer n d")
    if method == "pca":
        if n < 2:
            raise ValueError("method 'pca' needs at least 2 pairs")
        unit = diffs / diffs.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        g = torch.Generator().manual_seed(seed)
        signs = torch.randint(0, 2, (n,), generator=g, dtype=torch.float64) * 2 - 1
        x = unit * signs.reshape(1, n, 1)
        x = x - x.mean(dim=1, keepdim=True)
        _, s, vh = torch.linalg.svd(x, full_matrices=False)
        directions = vh[:, 0, :]
        explained = s[:, 0] ** 2 / (s**2).sum(dim=-1).clamp_min(1e-30)
    elif method == "pca_uncentred":
        x = torch.cat([diffs, -diffs], dim=1)
        _, s, vh = torch.linalg.svd(x, full_matrices=False)
        directions = vh[:, 0, :]
        explained = s[:, 0] ** 2 / (s**2).sum(dim=-1).clamp_min(1e-30)
    else:
        mean = diffs.mean(dim=1)
        directions = mean / mean.norm(dim=-1, keepdim=True).clamp_min(1e-30)
        proj = einops.einsum(diffs, directions, "layer n d, layer d -> layer n")
        explained = (proj**2).sum(-1) / (diffs**2).sum(dim=(-1, -2)).clamp_min(1e-30)

    proj = einops.einsum(diffs, directions, "layer n d, layer d -> layer n")
    flip = torch.where(proj.mean(dim=-1) < 0, -1.0, 1.0).to(directions)
    directions = directions * flip[:, None]
    proj = proj * flip[:, None]
    stats = [
        {
            "explained_variance": float(explained[i]),
            "separation": float((proj[i] > 0).double().mean()),
            "effect_size": float(proj[i].mean() / proj[i].std().clamp_min(1e-12)) if n > 1 else float("nan"),
            "mean_diff_norm": float(diffs[i].mean(dim=0).norm()),
        }
        for i in range(directions.shape[0])
    ]
    return directions.float(), stats


def extract(
    model: Any,
    pairs: Sequence[ContrastivePair],
    *,
    method: Method = "pca",
    layers: Sequence[int] | None = None,
    batch_size: int = 16,
    seed: int = 0,
    progress: bool = True,
    extra: dict[str, Any] | None = None,
) -> SteeringVectors:
    """Algorithm 1: steering vectors for every (or the given) layer of ``model`` from contrastive pairs."""
    if not pairs:
        raise ValueError("the pair set is empty: extraction needs at least one contrastive pair")
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; options: {', '.join(METHODS)}")
    layers = list(range(model.cfg.n_layers)) if layers is None else sorted(set(layers))
    # Positives and negatives go through in one stream so batches stay full.
    texts = [p.positive for p in pairs] + [p.negative for p in pairs]
    acts = last_token_resid(model, texts, layers=layers, batch_size=batch_size, progress=progress)
    pos, neg = acts[: len(pairs)], acts[len(pairs) :]
    directions, stats = fit_directions(pos, neg, method=method, seed=seed)
    full = torch.zeros(model.cfg.n_layers, model.cfg.d_model)
    full[layers] = directions
    all_stats: list[dict[str, float]] = [{} for _ in range(model.cfg.n_layers)]
    for layer, st in zip(layers, stats, strict=True):
        all_stats[layer] = st
    return SteeringVectors(
        vectors=full,
        model_id=model_id(model),
        method=method,
        layers=tuple(layers),
        centring=METHODS[method],
        pairs_hash=pairs_hash(pairs),
        layer_stats=tuple(all_stats),
        extra={"n_pairs": len(pairs), "seed": seed, **(extra or {})},
    )
