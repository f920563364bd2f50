"""Similarity measures for layer matching (CKA) and for analysing transferred vectors, and
:func:`compare_all`, the comparison ``xsteer similarity`` reports (:mod:`xsteer.app.report` only renders it).

Everything is computed in float64 and returned as Python floats or float64 tensors.
Undefined similarities (a zero vector, a representation with no variance) come back
as NaN rather than as a silent 0, so that a dead layer cannot pass for "dissimilar".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from einops import rearrange
from jaxtyping import Float
from torch import Tensor

from xsteer.errors import InputError

if TYPE_CHECKING:
    from xsteer.core.vectors import SteeringVectors
    from xsteer.transfer.maps import TransferMap


def _centred_unit(x: Tensor, dim: int) -> Tensor:
    """Centre over the sample axis ``dim`` and scale each representation to unit Frobenius norm."""
    x = x.to(torch.float64)
    x = x - x.mean(dim=dim, keepdim=True)
    # CKA is scale invariant; normalising first keeps the fourth powers in the
    # HSIC terms far from overflow/underflow whatever the activation scale.
    norm = torch.linalg.vector_norm(x, dim=(-2, -1), keepdim=True)
    return x / norm


def _use_gram(n: int, d1: int, d2: int) -> bool:
    # Gram route costs ~ n^2 (d1 + d2); feature route ~ n (d1 d2 + d1^2 + d2^2).
    return n * (d1 + d2) < d1 * d2 + d1 * d1 + d2 * d2


def _check_pair(x: Tensor, y: Tensor, sample_dim: int) -> None:
    if x.shape[sample_dim] != y.shape[sample_dim]:
        raise InputError(
            f"CKA needs the same examples on both sides: got n={x.shape[sample_dim]} and n={y.shape[sample_dim]}"
        )
    if x.shape[sample_dim] < 2:
        raise InputError("CKA needs at least 2 examples (centring leaves nothing of one)")


def linear_cka(X: Float[Tensor, "n d1"], Y: Float[Tensor, "n d2"]) -> float:
    """Linear CKA (Kornblith et al. 2019) between two representations of the same n examples.

    ``||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)`` on column-centred X, Y. The same
    number is computed through n x n Gram matrices when n is small relative to the
    widths. NaN if either side has no variance.
    """
    if X.ndim != 2 or Y.ndim != 2:
        raise InputError(f"linear_cka takes [n, d] matrices, got {tuple(X.shape)} and {tuple(Y.shape)}")
    return float(cka_matrix(X[None], Y[None])[0, 0])


def cka_matrix(
    A: Float[Tensor, "layer_a n d1"], B: Float[Tensor, "layer_b n d2"]
) -> Float[Tensor, "layer_a layer_b"]:
    """Linear CKA between every layer of A and every layer of B (same n examples).

    Each layer is centred once. When n is small relative to the widths, each layer
    becomes a normalised n x n Gram matrix and the whole matrix is one product
    (memory ~ (layer_a + layer_b) n^2 float64s); otherwise the feature-space formula
    is used. Agrees with :func:`linear_cka` entry by entry.
    """
    if A.ndim != 3 or B.ndim != 3:
        raise InputError(f"cka_matrix takes [layer, n, d] tensors, got {tuple(A.shape)} and {tuple(B.shape)}")
    _check_pair(A, B, 1)
    a, b = _centred_unit(A, 1), _centred_unit(B, 1)
    n, d1, d2 = a.shape[1], a.shape[2], b.shape[2]
    if _use_gram(n, d1, d2):
        k = torch.einsum("lnd,lmd->lnm", a, a)
        g = torch.einsum("lnd,lmd->lnm", b, b)
        k = k / torch.linalg.matrix_norm(k)[:, None, None]
        g = g / torch.linalg.matrix_norm(g)[:, None, None]
        return rearrange(k, "l n m -> l (n m)") @ rearrange(g, "l n m -> l (n m)").T
    self_a = torch.linalg.matrix_norm(torch.einsum("lnd,lne->lde", a, a))
    self_b = torch.linalg.matrix_norm(torch.einsum("lnd,lne->lde", b, b))
    # Loop over A's layers so the cross-covariances held at once are layer_b x d1 x d2.
    cross = torch.stack([torch.einsum("nd,lne->lde", ai, b).pow(2).sum(dim=(1, 2)) for ai in a])
    return cross / (self_a[:, None] * self_b[None, :])


def _unit_rows(x: Tensor) -> Tensor:
    x = x.to(torch.float64)
    # A zero row divides 0/0 and becomes NaN on purpose: its cosine is undefined.
    return x / torch.linalg.vector_norm(x, dim=-1, keepdim=True)


def _check_width(a: Tensor, b: Tensor, what: str) -> None:
    if a.ndim != 2 or b.ndim != 2:
        raise InputError(f"{what} takes [layer, d] tensors, got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.shape[1] != b.shape[1]:
        raise InputError(
            f"{what} needs vectors of one width, got d={a.shape[1]} and d={b.shape[1]} (map them first: widthmap)"
        )


def cosine_per_layer(a: Float[Tensor, "layer d"], b: Float[Tensor, "layer d"]) -> Float[Tensor, " layer"]:
    """Cosine between a[i] and b[i] for each layer i (NaN where either vector is zero)."""
    _check_width(a, b, "cosine_per_layer")
    if a.shape[0] != b.shape[0]:
        raise InputError(f"cosine_per_layer needs equal layer counts, got {a.shape[0]} and {b.shape[0]}")
    return (_unit_rows(a) * _unit_rows(b)).sum(dim=-1)


def cosine_matrix(a: Float[Tensor, "la d"], b: Float[Tensor, "lb d"]) -> Float[Tensor, "la lb"]:
    """Cosine between every a[i] and every b[j] (NaN where either vector is zero)."""
    _check_width(a, b, "cosine_matrix")
    return _unit_rows(a) @ _unit_rows(b).T


def correlation_matrix(a: Float[Tensor, "la d"], b: Float[Tensor, "lb d"]) -> Float[Tensor, "la lb"]:
    """Pearson correlation between every a[i] and every b[j], over their d coordinates.

    The cross-parent heatmap of the paper (Fig. 2); only meaningful when both sides
    live in the same coordinates (equal widths, shared basis). Constant vectors give NaN.
    """
    _check_width(a, b, "correlation_matrix")
    a = a.to(torch.float64)
    b = b.to(torch.float64)
    return cosine_matrix(a - a.mean(dim=-1, keepdim=True), b - b.mean(dim=-1, keepdim=True))


def random_cosine_null(d: int, n_samples: int = 10000, seed: int = 0) -> Float[Tensor, " n_samples"]:
    """Cosines between pairs of independent uniformly random unit vectors in ``d`` dims.

    The chance level for comparing directions: E|cos| ~ sqrt(2 / (pi d)), std ~ 1/sqrt(d).
    Sampled exactly but without drawing the vectors: by rotational invariance the
    cosine is the first coordinate of one random unit vector, and (1 + cos) / 2 is
    Beta((d-1)/2, (d-1)/2). That keeps the cost O(n_samples) even at d = 5120.
    Deterministic in ``seed``.
    """
    if isinstance(d, bool) or not isinstance(d, int) or d < 1:
        raise InputError(f"d must be a positive int, got {d!r}")
    if n_samples < 1:
        raise InputError(f"n_samples must be positive, got {n_samples}")
    rng = np.random.default_rng(seed)
    if d == 1:
        # Unit "vectors" in 1-D are +-1, so the cosine is a fair sign.
        cos = rng.choice([-1.0, 1.0], size=n_samples)
    else:
        cos = 2.0 * rng.beta((d - 1) / 2, (d - 1) / 2, size=n_samples) - 1.0
    return torch.from_numpy(cos).to(torch.float64)


def null_quantile(d: int, q: float = 0.95, n_samples: int = 10000, seed: int = 0) -> float:
    """The q-quantile of |cos| between random unit vectors in ``d`` dims.

    A |cosine| above ``null_quantile(d, 0.95)`` is beyond what 95% of random
    direction pairs reach.
    """
    if not 0.0 <= q <= 1.0:
        raise InputError(f"q must lie in [0, 1], got {q}")
    return float(torch.quantile(random_cosine_null(d, n_samples, seed).abs(), q))


def mapped_random_null(
    tmap: Any,
    reference: Float[Tensor, "layer d"],
    layers: Sequence[int] | None = None,
    *,
    n: int = 500,
    q: float = 0.95,
    seed: int = 0,
) -> list[float]:
    """Per child layer, the q-quantile of |cos| between ``reference[l]`` and random parent directions
    sent through the width map of a :class:`~xsteer.transfer.maps.TransferMap` (NaN where unmapped).

    The fair null for a mapped vector: a fitted map concentrates every input on the child's
    high-variance subspace, so a plain random child direction understates chance agreement.
    """
    if not 0.0 <= q <= 1.0:
        raise InputError(f"q must lie in [0, 1], got {q}")
    if reference.ndim != 2 or tuple(reference.shape) != tuple(tmap.child_shape):
        raise InputError(
            f"the reference vectors are {list(reference.shape)} but the map targets a child of "
            f"{list(tmap.child_shape)} (layers x d_model)"
        )
    keep = set(range(reference.shape[0]) if layers is None else layers)
    g = torch.Generator().manual_seed(seed)
    out = []
    for layer in range(reference.shape[0]):
        if layer not in tmap.width_maps or layer not in keep:
            out.append(float("nan"))
            continue
        r = torch.randn(n, tmap.parent_shape[1], generator=g, dtype=torch.float64)
        m = tmap.width_maps[layer].map_directions(r).float()
        c = torch.nn.functional.cosine_similarity(m, reference[layer][None].float(), dim=-1).abs()
        out.append(float(c.quantile(q)))
    return out


def compare_vectors(
    vectors: Any, reference: Any, *, tmap: Any = None, q: float = 0.95, seed: int = 0
) -> dict[str, Any]:
    """Two vector sets in one space (e.g. a parent's mapped vectors and the child-native ones).

    Returns the per-layer cosine (NaN where either side steers nothing), the random-direction null
    (the q-quantile of |cos| of random unit vectors in d dims), how many layers both steer and how many
    of those beat the null, the layer x layer cosine and correlation matrices and, given the
    :class:`~xsteer.transfer.maps.TransferMap` that produced ``vectors``, the mapped-random null per layer.
    """
    if vectors.vectors.shape != reference.vectors.shape:
        raise InputError(
            f"the vectors are [{vectors.n_layers} x {vectors.d_model}] ({vectors.model_id!r}) but the reference is "
            f"[{reference.n_layers} x {reference.d_model}] ({reference.model_id!r}); compare vectors in one "
            "space (map parent vectors into the child first: xsteer transfer)"
        )
    both = [layer for layer in vectors.layers if layer in set(reference.layers)]
    if not both:
        raise InputError(
            f"no layer carries a vector on both sides (vectors: {list(vectors.layers)}, "
            f"reference: {list(reference.layers)})"
        )
    cos = cosine_per_layer(vectors.vectors, reference.vectors)
    per_layer = [float(c) if layer in both else float("nan") for layer, c in enumerate(cos.tolist())]
    null = null_quantile(vectors.d_model, q, seed=seed)
    out: dict[str, Any] = {
        "layers": both,
        "cosine": per_layer,
        "null_q": q,
        "null": null,
        "above_null": sum(abs(per_layer[layer]) > null for layer in both),
        "max_abs_cosine": max(abs(per_layer[layer]) for layer in both),
        "cosine_matrix": cosine_matrix(vectors.vectors, reference.vectors),
        "correlation_matrix": correlation_matrix(vectors.vectors, reference.vectors),
    }
    if tmap is not None:
        mnull = mapped_random_null(tmap, reference.vectors, both, q=q, seed=seed)
        out["mapped_null"] = mnull
        out["above_mapped_null"] = sum(abs(per_layer[layer]) > mnull[layer] for layer in both)
    return out


def best_matches(matrix: Float[Tensor, "la lb"]) -> list[tuple[int, int, float]]:
    """Per row layer, the column layer of highest similarity: (row, column, value); NaN entries never win."""
    m = torch.as_tensor(matrix, dtype=torch.float64)
    filled = torch.nan_to_num(m, nan=-torch.inf)
    out = []
    for i, row in enumerate(filled):
        j = int(row.argmax())
        out.append((i, j, float(m[i, j])))
    return out


# ---------------------------------------------------------------------------------------------- saved artifacts
@dataclass(frozen=True)
class VectorComparison:
    """One vector set against the reference, in one space: :func:`compare_vectors`' numbers."""

    name: str
    reference: str
    d_model: int
    numbers: dict[str, Any]

    @property
    def mapped(self) -> bool:
        """Whether the map that made the vectors was given, so the mapped-random null was measured."""
        return "mapped_null" in self.numbers

    def mapped_null_median(self) -> float:
        """The median over layers of the mapped-random null (the layers it is defined on)."""
        finite = sorted(x for x in self.numbers["mapped_null"] if x == x)
        return finite[len(finite) // 2]

    def rows(self) -> list[dict[str, Any]]:
        """One row per layer: the cosine and the null(s) it is read against (None where NaN)."""
        res, null = self.numbers, self.numbers["null"]
        out = []
        for layer, c in enumerate(res["cosine"]):
            row = {
                "comparison": self.name,
                "reference": self.reference,
                "layer": layer,
                "cosine": c,
                "null": null,
                "above_null": abs(c) > null if c == c else None,
            }
            if self.mapped:
                mn = res["mapped_null"][layer]
                row.update(mapped_null=mn, above_mapped_null=abs(c) > mn if c == c and mn == mn else None)
            out.append(row)
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            **{k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in self.numbers.items()},
        }


@dataclass(frozen=True)
class CkaComparison:
    """Two models' layers on the same texts: linear CKA (child layer x parent layer) and each child layer's
    best parent layer."""

    pair: str
    n_texts: int
    matrix: Float[Tensor, "child_layer parent_layer"]
    best: list[tuple[int, int, float]]

    def rows(self) -> list[dict[str, Any]]:
        return [
            {"pair": self.pair, "child_layer": c, "best_parent_layer": p, "cka": v} for c, p, v in self.best
        ]

    def to_json(self) -> dict[str, Any]:
        return {
            "pair": self.pair,
            "n_texts": self.n_texts,
            "shape": list(self.matrix.shape),
            "matrix": self.matrix.tolist(),
            "best": [{"child_layer": c, "parent_layer": p, "cka": v} for c, p, v in self.best],
        }


@dataclass(frozen=True)
class SimilarityResult:
    """What :func:`compare_all` found; ``to_json`` is the document ``similarity.json`` holds."""

    reference: str | None
    q: float
    vectors: list[VectorComparison]
    cka: list[CkaComparison]

    def to_json(self) -> dict[str, Any]:
        return {
            "reference": self.reference,
            "null_q": self.q,
            "comparisons": [v.to_json() for v in self.vectors],
            "cka": [k.to_json() for k in self.cka],
        }


def compare_all(
    *,
    reference: tuple[str, SteeringVectors] | None = None,
    vectors: Sequence[tuple[str, SteeringVectors, TransferMap | None]] = (),
    activations: Sequence[tuple[str, Tensor, Tensor]] = (),
    q: float = 0.95,
) -> SimilarityResult:
    """Similarity of concepts across models, from saved artifacts:

    * each ``(name, vectors, transfer map or None)`` against ``reference = (name, vectors)`` (one space):
      :func:`compare_vectors`, with the mapped-random null when the map is given;
    * each ``(tag, parent_acts, child_acts)`` (``[layer, n, d]`` each, the same n texts): the linear CKA
      matrix (child layer x parent layer) and each child layer's best parent layer.
    """
    if vectors and reference is None:
        raise InputError("comparing vectors needs a reference vector set (e.g. the child-native vectors)")
    if not vectors and not activations:
        raise InputError("nothing to compare: give vectors with a reference, or paired activations")
    compared = []
    for name, sv, tmap in vectors:
        assert reference is not None  # checked above
        ref_name, ref = reference
        compared.append(
            VectorComparison(name, ref_name, sv.d_model, compare_vectors(sv, ref, tmap=tmap, q=q))
        )
    cka = []
    for tag, xp, yc in activations:
        matrix = cka_matrix(yc, xp)
        cka.append(CkaComparison(tag, int(xp.shape[1]), matrix, best_matches(matrix)))
    return SimilarityResult(reference[0] if reference else None, q, compared, cka)
