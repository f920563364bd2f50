"""Algorithm 1: read a concept direction per layer from contrastive pairs (RepE, Zou et al. 2023).

The activations come from :func:`xsteer.core.activations.last_token_resid` (last token, no full caches);
:func:`fit_directions` is a pure function from positive/negative activations to unit directions and
per-layer statistics, with the direction method of :mod:`xsteer.extraction.methods`.

Every direction is returned at unit norm with its sign chosen so that positives project higher than
negatives on average.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import einops
import torch
from jaxtyping import Float
from torch import Tensor

from xsteer.core.activations import last_token_resid
from xsteer.core.models import model_id, runtime
from xsteer.core.types import HookedModel
from xsteer.core.vectors import SteeringVectors
from xsteer.errors import InputError
from xsteer.extraction.methods import MethodFn, get_method
from xsteer.extraction.pairs import ContrastivePair, check_pairs, pairs_hash


def fit_directions(
    pos: Float[Tensor, "n layer d_model"],
    neg: Float[Tensor, "n layer d_model"],
    *,
    method: str | MethodFn = "pca",
    seed: int = 0,
) -> tuple[Float[Tensor, "layer d_model"], list[dict[str, float]]]:
    """Unit concept directions per layer, and statistics of how well each one fits the pairs.

    Statistics per layer: ``explained_variance`` (the method's own share: PC1's share of variance for
    ``pca``, σ₁² / Σσ² for ``pca_uncentred``, the share of the differences' energy along the direction for
    ``mean_diff``), ``separation`` (fraction of pairs whose positive projects above its negative),
    ``effect_size`` (mean / std of the projected differences; NaN, undefined, when the spread is nil next
    to the mean, as with one pair or identical differences) and ``mean_diff_norm`` (‖mean Δ‖).
    """
    if pos.shape != neg.shape or pos.ndim != 3:
        raise InputError(
            f"pos and neg must both be [n, layer, d_model], got {tuple(pos.shape)} and {tuple(neg.shape)}"
        )
    n = pos.shape[0]
    if n == 0:
        raise InputError("the pair set is empty")
    m = get_method(method)
    if n < m.min_pairs:
        raise InputError(f"method {m.name!r} needs at least {m.min_pairs} pairs, got {n}")
    diffs = einops.rearrange((pos - neg).double(), "n layer d -> layer n d")
    zero = (diffs.flatten(1).norm(dim=-1) == 0).nonzero().flatten().tolist()
    if zero:
        raise InputError(
            f"every pair has identical activations at layers {zero}: the pairs carry no contrast there"
        )
    directions, explained = m.fn(diffs, seed)
    directions = directions / directions.norm(dim=-1, keepdim=True).clamp_min(1e-30)
    proj = einops.einsum(diffs, directions, "layer n d, layer d -> layer n")
    flip = torch.where(proj.mean(dim=-1) < 0, -1.0, 1.0).to(directions)
    directions = directions * flip[:, None]
    proj = proj * flip[:, None]
    return directions.float(), [
        _layer_stats(proj[i], diffs[i], float(explained[i])) for i in range(directions.shape[0])
    ]


def _layer_stats(
    proj: Float[Tensor, " n"], diffs: Float[Tensor, "n d_model"], explained: float
) -> dict[str, float]:
    mean, std = float(proj.mean()), float(proj.std()) if len(proj) > 1 else 0.0
    # A spread that is float noise next to the mean makes mean/std a meaningless 1e14: report it undefined.
    spread_ok = std > 1e-6 * max(abs(mean), float(diffs.norm(dim=-1).mean()), 1e-30)
    return {
        "explained_variance": explained,
        "separation": float((proj > 0).double().mean()),
        "effect_size": mean / std if spread_ok else float("nan"),
        "mean_diff_norm": float(diffs.mean(dim=0).norm()),
    }


def vectors_from_activations(
    pos: Float[Tensor, "n layer d_model"],
    neg: Float[Tensor, "n layer d_model"],
    *,
    model_id: str,
    method: str | MethodFn = "pca",
    seed: int = 0,
    pairs: Sequence[ContrastivePair],
    layers: Sequence[int] | None = None,
    n_layers: int | None = None,
    extra: dict[str, Any] | None = None,
) -> SteeringVectors:
    """Algorithm 1 without a model: :class:`SteeringVectors` from the pairs' activations already read.

    ``pos``/``neg`` hold the (sorted) ``layers`` of a model of ``n_layers`` layers (default: every layer, in
    order); the others stay zero and unsteered. The file records the pairs' hash and count and the seed, as
    :func:`extract` writes it, so vectors from stored activations and vectors from a model are one kind.
    """
    m = get_method(method)
    n, n_read, d_model = pos.shape
    layers = list(range(n_read)) if layers is None else list(layers)
    n_layers = n_read if n_layers is None else n_layers
    if len(layers) != n_read or layers != sorted(set(layers)) or (layers and layers[-1] >= n_layers):
        raise InputError(
            f"activations of {n_read} layers do not fit layers {layers} of a {n_layers}-layer model"
        )
    if len(pairs) != n:
        raise InputError(f"{n} activation rows for {len(pairs)} pairs")
    directions, stats = fit_directions(pos, neg, method=method, seed=seed)
    full = torch.zeros(n_layers, d_model)
    full[layers] = directions
    all_stats: list[dict[str, float]] = [{} for _ in range(n_layers)]
    for layer, st in zip(layers, stats, strict=True):
        all_stats[layer] = st
    return SteeringVectors(
        vectors=full,
        model_id=model_id,
        method=m.name,
        layers=tuple(layers),
        centring=m.centring,
        pairs_hash=pairs_hash(pairs),
        layer_stats=tuple(all_stats),
        extra={"n_pairs": len(pairs), "seed": seed, **(extra or {})},
    )


def identical_token_pairs(tokenizer: Any, pairs: Sequence[ContrastivePair]) -> list[str]:
    """Pairs whose two texts tokenize to the same ids (e.g. they differ only in trailing whitespace)."""
    ids = tokenizer([t for p in pairs for t in (p.positive, p.negative)]).input_ids
    return [p.source_id or str(i) for i, p in enumerate(pairs) if ids[2 * i] == ids[2 * i + 1]]


def extract(
    model: HookedModel,
    pairs: Sequence[ContrastivePair],
    *,
    method: str | MethodFn = "pca",
    layers: Sequence[int] | None = None,
    batch_size: int = 16,
    seed: int = 0,
    progress: bool = True,
    extra: dict[str, Any] | None = None,
) -> SteeringVectors:
    """Algorithm 1: steering vectors for every (or the given) layer of ``model`` from contrastive pairs.

    ``method`` is a registered name (:data:`~xsteer.extraction.methods.METHODS`) or a callable (see
    :mod:`xsteer.extraction.methods`). Pairs without contrast — identical texts, or texts the model's
    tokenizer cannot tell apart — are refused by name before any forward pass.
    """
    if not pairs:
        raise InputError("the pair set is empty: extraction needs at least one contrastive pair")
    if batch_size < 1:
        raise InputError(f"batch_size must be at least 1, got {batch_size}")
    get_method(method)  # an unknown method fails before any forward pass
    check_pairs(pairs)
    same = identical_token_pairs(model.tokenizer, pairs)
    if same:
        raise InputError(
            f"{len(same)} pair(s) tokenize to identical texts for {model_id(model)} "
            f"({', '.join(same[:5])}): a pair must differ in the concept"
        )
    layers = list(range(model.cfg.n_layers)) if layers is None else sorted(set(layers))
    # Positives and negatives go through in one stream so batches stay full.
    texts = [p.positive for p in pairs] + [p.negative for p in pairs]
    acts = last_token_resid(model, texts, layers=layers, batch_size=batch_size, progress=progress)
    pos, neg = acts[: len(pairs)], acts[len(pairs) :]
    return vectors_from_activations(
        pos,
        neg,
        model_id=model_id(model),
        method=method,
        seed=seed,
        pairs=pairs,
        layers=layers,
        n_layers=model.cfg.n_layers,
        extra={**runtime(model), **(extra or {})},
    )
