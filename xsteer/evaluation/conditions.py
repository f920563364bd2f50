"""The conditions of one evaluation, built by one rule.

An evaluation compares the unsteered ``baseline`` with vector conditions on one λ grid. λ only means the same
thing for every condition if their vectors share a norm convention, so :func:`build_conditions` either
brings them to one (``unit``, or ``resid_mean`` with the child's residual norms) or refuses a mix. The random
control copies the FIRST vector condition (the parent's, by convention): a random direction of equal norm
per layer.
"""

from __future__ import annotations

from collections.abc import Mapping

from jaxtyping import Float
from torch import Tensor

from xsteer.core.vectors import SteeringVectors
from xsteer.errors import InputError
from xsteer.evaluation.evaluate import RESERVED, check_norms
from xsteer.evaluation.summary import BASELINE

#: Conditions of one evaluation: name -> child-space vectors, or None for the unsteered baseline.
Conditions = dict[str, SteeringVectors | None]


def random_controls(v: SteeringVectors, n: int = 1, seed: int = 0) -> dict[str, SteeringVectors]:
    """``n`` random-direction controls copying ``v``: a seeded random direction of ``v``'s norm per steered layer.

    Draw ``i`` uses seed ``seed + i``, and the first is named ``random`` (a reserved condition name), so one
    control is exactly the one every stored record was made with; further draws are ``random#1``, ...
    """
    if n < 1:
        raise InputError(f"the number of random controls must be at least 1, got {n}")
    return {("random" if i == 0 else f"random#{i}"): v.random_like(seed + i) for i in range(n)}


def build_conditions(
    vectors: Mapping[str, SteeringVectors],
    *,
    random: bool = True,
    seed: int = 0,
    norm: str | None = None,
    norms: Float[Tensor, " layer"] | None = None,
) -> Conditions:
    """The conditions of one evaluation: the unsteered baseline, the given vectors and, with ``random``, a
    random direction of equal norm per layer copying the FIRST vector condition (the parent's, by convention).

    ``norm`` brings every vector to one convention first (``unit``, or ``resid_mean`` with the child's
    per-layer ``norms``); without it, vectors under different conventions are refused, since λ would mean
    different things on one grid.
    """
    taken = sorted(set(vectors) & set(RESERVED))
    if taken:
        raise InputError(
            f"condition name(s) {taken} are reserved for xsteer's controls ({', '.join(RESERVED)}); "
            "name your vectors otherwise"
        )
    out: Conditions = {BASELINE: None}
    for name, v in vectors.items():
        if norm == "unit":
            v = v.unit()
        elif norm == "resid_mean":
            if norms is None:
                raise InputError("norm 'resid_mean' needs the child's per-layer residual norms")
            v = v.scaled_to(norms, "resid_mean")
        elif norm is not None:
            raise InputError(f"unknown norm convention {norm!r}; options: unit, resid_mean")
        out[name] = v
    check_norms(out)
    if random and vectors:
        first = out[next(iter(vectors))]
        assert first is not None
        out.update(random_controls(first, 1, seed))
    return out
