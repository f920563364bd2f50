"""Layer maps: which parent layer's steering vector each child layer receives.

A layer map is a ``dict[int, int]`` from child layer to parent layer, both 0-based.
Child layers absent from the dict are left unsteered. Several children may share
one parent layer; a parent layer may go unused.

The Tandon paper's "greedy n->n" rule is ambiguous (field survey, section 2): with
positive indices it aligns the models from the input end (:func:`greedy`), with
RepE's negative indices from the output end (:func:`greedy_from_end`). Both are
provided, alongside relative depth (:func:`proportional`) and CKA matching
(:func:`from_cka`): ``cka`` on the two models' activations of shared texts, ``cka_diff`` on
their per-pair difference vectors (pos - neg) of a concept's contrastive pairs, which
compares how the layers encode the concept rather than the text (Gao 2026).

The maps form a registry (:data:`LAYER_MAPS`); :func:`register_layer_map` adds a user's
function ``(n_parent, n_child) -> {child: parent}`` under a name.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from xsteer.errors import InputError

LayerMap = dict[int, int]


def _check_counts(n_parent: int, n_child: int) -> None:
    for label, n in (("n_parent", n_parent), ("n_child", n_child)):
        # bool is an int subclass; True layers is always a caller bug.
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise InputError(f"{label} must be a positive int, got {n!r}")


def _check_layer(role: str, layer: object, n: int) -> None:
    if isinstance(layer, bool) or not isinstance(layer, int):
        raise InputError(f"{role} layer {layer!r} is not an int")
    if not 0 <= layer < n:
        raise InputError(f"{role} layer {layer} is out of range: valid {role} layers are 0..{n - 1}")


def validate_layer_map(layer_map: Mapping[int, int], n_parent: int, n_child: int) -> None:
    """Raise ``ValueError`` unless every child key and parent value is an in-range int."""
    _check_counts(n_parent, n_child)
    for child, parent in layer_map.items():
        _check_layer("child", child, n_child)
        _check_layer("parent", parent, n_parent)


def greedy(n_parent: int, n_child: int) -> LayerMap:
    """Child layer i <- parent layer i for i < min(n_parent, n_child); deeper child layers unsteered."""
    _check_counts(n_parent, n_child)
    return {i: i for i in range(min(n_parent, n_child))}


def greedy_from_end(n_parent: int, n_child: int) -> LayerMap:
    """Align from the output end (RepE negative indexing): child -1-k <- parent -1-k.

    Only the last ``min(n_parent, n_child)`` child layers are steered.
    """
    _check_counts(n_parent, n_child)
    return {n_child - 1 - k: n_parent - 1 - k for k in range(min(n_parent, n_child))}


def proportional(n_parent: int, n_child: int) -> LayerMap:
    """Match relative depth: child i <- round(i * (n_parent - 1) / (n_child - 1)).

    Every child layer is steered; the first and last layers map onto each other.
    Rounding is half-up (2.5 -> 3), not Python's banker's rounding, so the map does
    not depend on whether a tie lands on an even number. It is computed in integer
    arithmetic so that exact ties are detected without float error.
    A one-layer child has no relative depth; it gets the parent's last layer, the
    layer nearest the output and so the closest analogue of "the whole model".
    """
    _check_counts(n_parent, n_child)
    if n_child == 1:
        return {0: n_parent - 1}
    num, den = n_parent - 1, n_child - 1
    # floor(i*num/den + 1/2) == (2*i*num + den) // (2*den), exactly.
    return {i: (2 * i * num + den) // (2 * den) for i in range(n_child)}


def from_cka(cka: Float[Tensor, "child_layer parent_layer"]) -> LayerMap:
    """Each child layer <- the parent layer with the highest CKA (ties: the shallowest).

    Rows are child layers, columns parent layers, as returned by
    ``similarity.cka_matrix(child_acts, parent_acts)``.
    """
    if cka.ndim != 2 or cka.shape[0] < 1 or cka.shape[1] < 1:
        raise InputError(
            f"cka must be a non-empty [child_layer, parent_layer] matrix, got shape {tuple(cka.shape)}"
        )
    if not torch.isfinite(cka).all():
        bad = sorted({int(i) for i in (~torch.isfinite(cka)).nonzero()[:, 0]})
        raise InputError(f"cka matrix has non-finite entries in child layers {bad}")
    # argmax on ties is not documented to pick the first index; do it explicitly.
    is_max = cka == cka.max(dim=1, keepdim=True).values
    first_max = is_max.to(torch.int8).argmax(dim=1)
    return {i: int(p) for i, p in enumerate(first_max)}


def _parse_mapping(spec: str) -> list[tuple[int, int]]:
    pairs = []
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        child, sep, parent = item.partition(":")
        try:
            if not sep:
                raise ValueError
            pairs.append((int(child), int(parent)))
        except ValueError:
            raise InputError(
                f"bad layer-map entry {item!r}: expected 'child:parent' ints, e.g. '0:0,1:2,5:-1'"
            ) from None
    return pairs


def _resolve(role: str, layer: Any, n: int) -> int:  # Any: it is what checks user input
    try:
        # operator.index admits numpy/torch integer scalars but not floats like 2.0.
        if isinstance(layer, bool):
            raise TypeError
        layer = operator.index(layer)
    except TypeError:
        raise InputError(f"{role} layer {layer!r} is not an int") from None
    if not -n <= layer < n:
        raise InputError(
            f"{role} layer {layer} is out of range: valid {role} layers are 0..{n - 1} (or -{n}..-1)"
        )
    return layer % n


def explicit(mapping: Mapping[Any, Any] | str, n_parent: int, n_child: int) -> LayerMap:
    """A user-given map, as a ``Mapping`` or a string like ``"0:0,1:2,5:-1"``.

    Negative indices (either side) count from the end, as in Python. A child layer
    given twice (e.g. ``"-1:3,29:4"`` on a 30-layer child) is an error.
    """
    _check_counts(n_parent, n_child)
    pairs = _parse_mapping(mapping) if isinstance(mapping, str) else list(mapping.items())
    out: LayerMap = {}
    for child, parent in pairs:
        c, p = _resolve("child", child, n_child), _resolve("parent", parent, n_parent)
        if c in out:
            raise InputError(f"child layer {child} (= {c}) is mapped twice")
        out[c] = p
    return dict(sorted(out.items()))


@dataclass(frozen=True)
class LayerMapKind:
    """A layer-map rule; ``needs`` says what else it is built from (a CKA matrix, a user mapping)."""

    name: str
    build: Callable[..., LayerMap]
    needs: str | None = None  # None, "cka" (activations), "cka_diff" (pair differences) or "mapping"
    description: str = ""


LAYER_MAPS: dict[str, LayerMapKind] = {
    k.name: k
    for k in (
        LayerMapKind(
            "greedy", greedy, description="child i <- parent i (the paper's n->n, from the input end)"
        ),
        LayerMapKind(
            "greedy_from_end",
            greedy_from_end,
            description="child -1-k <- parent -1-k (RepE's negative indices)",
        ),
        LayerMapKind("proportional", proportional, description="same relative depth"),
        LayerMapKind("cka", lambda n_p, n_c, cka: from_cka(cka), "cka", "highest linear CKA on shared texts"),
        LayerMapKind(
            "cka_diff",
            lambda n_p, n_c, cka: from_cka(cka),
            "cka_diff",
            "highest linear CKA of per-pair difference vectors (Gao 2026)",
        ),
        LayerMapKind(
            "explicit",
            lambda n_p, n_c, mapping: explicit(mapping, n_p, n_c),
            "mapping",
            "a user's child:parent list",
        ),
    )
}


def register_layer_map(
    name: str, build: Callable[[int, int], Mapping[int, int]], *, description: str = ""
) -> LayerMapKind:
    """Add a layer-map rule ``build(n_parent, n_child) -> {child layer: parent layer}``."""
    if not callable(build):
        raise InputError(f"a layer map must be callable, got {type(build).__name__}")
    LAYER_MAPS[name] = LayerMapKind(name, lambda n_p, n_c: dict(build(n_p, n_c)), None, description)
    return LAYER_MAPS[name]


def make_layer_map(
    name: str,
    n_parent: int,
    n_child: int,
    *,
    cka: Float[Tensor, "child_layer parent_layer"] | None = None,
    mapping: Mapping[Any, Any] | str | None = None,
) -> LayerMap:
    """Build the layer map called ``name`` (a key of :data:`LAYER_MAPS`) and validate it.

    ``cka`` is the ``[n_child, n_parent]`` matrix the CKA rules pick from (of activations for ``cka``, of
    pair differences for ``cka_diff``); ``mapping`` is the user's list for ``explicit``.
    """
    if name not in LAYER_MAPS:
        raise InputError(f"unknown layer map {name!r}; options: {', '.join(LAYER_MAPS)}")
    _check_counts(n_parent, n_child)
    kind = LAYER_MAPS[name]
    if kind.needs in ("cka", "cka_diff"):
        if cka is None:
            what = "[n_child, n_parent] CKA matrix" + (
                " of pair differences" if kind.needs == "cka_diff" else ""
            )
            raise InputError(f"layer map {name!r} needs cka=<{what}> (similarity.cka_matrix)")
        if tuple(cka.shape) != (n_child, n_parent):
            raise InputError(
                f"cka matrix has shape {tuple(cka.shape)} but needs [n_child={n_child}, n_parent={n_parent}]: "
                + _shape_blame(tuple(cka.shape), n_parent, n_child)
            )
        layer_map = kind.build(n_parent, n_child, cka=cka)
    elif kind.needs == "mapping":
        if mapping is None:
            raise InputError(f"layer map {name!r} needs mapping=<dict or 'child:parent,...' string>")
        layer_map = kind.build(n_parent, n_child, mapping=mapping)
    else:
        layer_map = kind.build(n_parent, n_child)
    validate_layer_map(layer_map, n_parent, n_child)
    return layer_map


def _shape_blame(shape: tuple[int, ...], n_parent: int, n_child: int) -> str:
    if len(shape) != 2:
        return "it is not 2-D"
    rows, cols = shape
    if rows > n_child:
        return f"child layer {n_child} is out of range: valid child layers are 0..{n_child - 1}"
    if cols > n_parent:
        return f"parent layer {n_parent} is out of range: valid parent layers are 0..{n_parent - 1}"
    return "it covers too few layers (rows are child layers, columns parent layers; transposed?)"


def describe(layer_map: Mapping[int, int]) -> str:
    """Compact form, sorted by child layer: ``"c0<-p0, c1<-p2"``; ``"(none)"`` when empty."""
    if not layer_map:
        return "(none)"
    return ", ".join(f"c{c}<-p{p}" for c, p in sorted(layer_map.items()))
