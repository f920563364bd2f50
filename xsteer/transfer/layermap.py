"""Layer maps: which parent layer's steering vector each child layer receives.

A layer map is a ``dict[int, int]`` from child layer to parent layer, both 0-based.
Child layers absent from the dict are left unsteered. Several children may share
one parent layer; a parent layer may go unused.

The Tandon paper's "greedy n->n" rule is ambiguous (field survey, section 2): with
positive indices it aligns the models from the input end (:func:`greedy`), with
RepE's negative indices from the output end (:func:`greedy_from_end`). Both are
provided, alongside relative depth (:func:`proportional`) and CKA matching
(:func:`from_cka`).
"""

from __future__ import annotations

import operator
from collections.abc import Mapping

import torch
from jaxtyping import Float
from torch import Tensor

LAYER_MAPS = ("greedy", "greedy_from_end", "proportional", "cka", "explicit")

LayerMap = dict[int, int]


def _check_counts(n_parent: int, n_child: int) -> None:
    for label, n in (("n_parent", n_parent), ("n_child", n_child)):
        # bool is an int subclass; True layers is always a caller bug.
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"{label} must be a positive int, got {n!r}")


def _check_layer(role: str, layer: object, n: int) -> None:
    if isinstance(layer, bool) or not isinstance(layer, int):
        raise ValueError(f"{role} layer {layer!r} is not an int")
    if not 0 <= layer < n:
        raise ValueError(f"{role} layer {layer} is out of range: valid {role} layers are 0..{n - 1}")


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
        raise ValueError(
            f"cka must be a non-empty [child_layer, parent_layer] matrix, got shape {tuple(cka.shape)}"
        )
    if not torch.isfinite(cka).all():
        bad = sorted({int(i) for i in (~torch.isfinite(cka)).nonzero()[:, 0]})
        raise ValueError(f"cka matrix has non-finite entries in child layers {bad}")
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
            raise ValueError(
                f"bad layer-map entry {item!r}: expected 'child:parent' ints, e.g. '0:0,1:2,5:-1'"
            ) from None
    return pairs


def _resolve(role: str, layer: int, n: int) -> int:
    try:
        # operator.index admits numpy/torch integer scalars but not floats like 2.0.
        if isinstance(layer, bool):
            raise TypeError
        layer = operator.index(layer)
    except TypeError:
        raise ValueError(f"{role} layer {layer!r} is not an int") from None
    if not -n <= layer < n:
        raise ValueError(
            f"{role} layer {layer} is out of range: valid {role} layers are 0..{n - 1} (or -{n}..-1)"
        )
    return layer % n


def explicit(mapping: Mapping[int, int] | str, n_parent: int, n_child: int) -> LayerMap:
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
            raise ValueError(f"child layer {child} (= {c}) is mapped twice")
        out[c] = p
    return dict(sorted(out.items()))


def make_layer_map(
    name: str,
    n_parent: int,
    n_child: int,
    *,
    cka: Float[Tensor, "child_layer parent_layer"] | None = None,
    mapping: Mapping[int, int] | str | None = None,
) -> LayerMap:
    """Build the layer map called ``name`` (one of ``LAYER_MAPS``) and validate it."""
    if name not in LAYER_MAPS:
        raise ValueError(f"unknown layer map {name!r}; options: {', '.join(LAYER_MAPS)}")
    _check_counts(n_parent, n_child)
    if name == "cka":
        if cka is None:
            raise ValueError(
                "layer map 'cka' needs cka=<[n_child, n_parent] CKA matrix> (similarity.cka_matrix)"
            )
        if tuple(cka.shape) != (n_child, n_parent):
            raise ValueError(
                f"cka matrix has shape {tuple(cka.shape)} but needs [n_child={n_child}, n_parent={n_parent}]: "
                + _shape_blame(tuple(cka.shape), n_parent, n_child)
            )
        layer_map = from_cka(cka)
    elif name == "explicit":
        if mapping is None:
            raise ValueError("layer map 'explicit' needs mapping=<dict or 'child:parent,...' string>")
        layer_map = explicit(mapping, n_parent, n_child)
    else:
        layer_map = {"greedy": greedy, "greedy_from_end": greedy_from_end, "proportional": proportional}[
            name
        ](n_parent, n_child)
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
