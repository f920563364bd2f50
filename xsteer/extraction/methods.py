"""Direction methods: from per-pair activation differences to one concept direction per layer.

A method is a callable ``(diffs, seed) -> (directions, explained)`` over ``diffs = pos - neg`` of shape
``[layer, pair, d_model]`` (float64); it returns a direction per layer (any norm, any sign: the caller
normalises and orients them) and each direction's share of the differences' variance or energy. Register
one with :func:`register_method` to use it by name, or pass the callable to
:func:`xsteer.extraction.extract.extract` (steering-vectors' ``Aggregator`` idea).

The built-ins and their centring rule (the survey's PCA pitfall: PCA centres its input, so PCA of raw
``pos - neg`` differences with a consistent sign discards the mean difference, i.e. the concept):

``pca`` (RepE)
    unit-normalised differences, a seeded random sign flip per pair (so the differences appear as ±δ),
    then centred PCA; PC1 per layer.
``pca_uncentred`` (steering-vectors)
    uncentred SVD of the symmetrised raw differences ``[Δ; -Δ]``; first right singular vector.
``mean_diff`` (CAA)
    the mean raw difference.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import einops
import torch
from jaxtyping import Float
from torch import Tensor

from xsteer.errors import InputError

Diffs = Float[Tensor, "layer n d_model"]
MethodFn = Callable[[Diffs, int], tuple[Float[Tensor, "layer d_model"], Float[Tensor, " layer"]]]


@dataclass(frozen=True)
class Method:
    name: str
    fn: MethodFn
    centring: str  # recorded in every vector file: which centring rule produced the directions
    min_pairs: int = 1


def _pca(diffs: Diffs, seed: int) -> tuple[Tensor, Tensor]:
    n = diffs.shape[1]
    unit = diffs / diffs.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    g = torch.Generator().manual_seed(seed)
    signs = torch.randint(0, 2, (n,), generator=g, dtype=torch.float64) * 2 - 1
    x = unit * signs.reshape(1, n, 1)
    x = x - x.mean(dim=1, keepdim=True)
    _, s, vh = torch.linalg.svd(x, full_matrices=False)
    return vh[:, 0, :], s[:, 0] ** 2 / (s**2).sum(dim=-1).clamp_min(1e-30)


def _pca_uncentred(diffs: Diffs, seed: int) -> tuple[Tensor, Tensor]:
    _, s, vh = torch.linalg.svd(torch.cat([diffs, -diffs], dim=1), full_matrices=False)
    return vh[:, 0, :], s[:, 0] ** 2 / (s**2).sum(dim=-1).clamp_min(1e-30)


def _mean_diff(diffs: Diffs, seed: int) -> tuple[Tensor, Tensor]:
    mean = diffs.mean(dim=1)
    direction = mean / mean.norm(dim=-1, keepdim=True).clamp_min(1e-30)
    proj = einops.einsum(diffs, direction, "layer n d, layer d -> layer n")
    return direction, (proj**2).sum(-1) / (diffs**2).sum(dim=(-1, -2)).clamp_min(1e-30)


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method(
            "pca",
            _pca,
            "unit-normalised differences, random sign flip per pair, centred PCA (RepE)",
            min_pairs=2,
        ),
        Method(
            "pca_uncentred",
            _pca_uncentred,
            "uncentred SVD of the symmetrised raw differences [Δ; -Δ] (steering-vectors)",
        ),
        Method("mean_diff", _mean_diff, "mean of the raw differences, no centring (CAA)"),
    )
}


def register_method(name: str, fn: MethodFn, *, centring: str, min_pairs: int = 1) -> Method:
    """Make a direction method usable by name (CLI ``--method``, config ``pairs.method``)."""
    if not callable(fn):
        raise InputError(f"a direction method must be callable, got {type(fn).__name__}")
    METHODS[name] = Method(name, fn, centring, min_pairs)
    return METHODS[name]


def get_method(method: str | MethodFn) -> Method:
    """A registered method by name, or a user's callable wrapped as one."""
    if callable(method):
        name = getattr(method, "__name__", type(method).__name__)
        return Method(name, method, (method.__doc__ or "user method").strip().splitlines()[0])
    if method not in METHODS:
        raise InputError(f"unknown method {method!r}; options: {', '.join(METHODS)}")
    return METHODS[method]
