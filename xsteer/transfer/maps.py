"""Move a parent's steering vectors into a child of another family, depth and width.

A :class:`TransferMap` is two explicit choices, both recorded in every file it touches:

* a **layer map** (:mod:`xsteer.transfer.layermap`): which parent layer feeds each child layer;
* a **width map** per mapped child layer (:mod:`xsteer.transfer.widthmap`): parent residual space -> child's.

Maps are fitted on *paired activations*: the last token of identical raw text run through both models
(tokenizer-agnostic, RepE's last-token convention). A held-out share of the texts measures each map
(R², cosine of mapped vs true child activations). Texts are plain, not chat-formatted: the two models'
templates differ, and the same characters are what makes the pairs comparable.

A mapped vector's length is arbitrary, so the λ grid only means something under a norm convention:
``unit`` (each child-layer vector has norm 1) or ``resid_mean`` (norm = the child's mean ‖h_l‖ at that
layer on the fit texts, so λ is a fraction of the typical residual norm).
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import einops
import torch
from jaxtyping import Float
from torch import Tensor

from xsteer.core.activations import last_token_resid, resid_norms
from xsteer.core.io import save_safetensors
from xsteer.core.models import model_id, runtime
from xsteer.core.types import HookedModel
from xsteer.core.vectors import NORMS, VERSIONED, SteeringVectors
from xsteer.errors import InputError, TransferError, VectorFileError
from xsteer.transfer.layermap import LAYER_MAPS, describe, make_layer_map
from xsteer.transfer.similarity import cka_matrix
from xsteer.transfer.widthmap import WIDTH_MAPS, WidthMap, fit_report, fit_width_map

#: ``TASK:SPLIT:N`` plain texts a map is fitted on (and two models are compared on by CKA) unless told
#: otherwise: one default for `xsteer transfer`, `xsteer similarity` and the grid's ``transfer.fit_text``,
#: so a map made by one front end is the map the others would make.
DEFAULT_FIT_TEXT = "gsm8k:train:512"


def fit_texts(examples: Sequence[Any], *, seed: int = 0) -> list[str]:
    """Plain texts for fitting maps: question + reference reasoning, cut at a seeded word boundary.

    Cutting at varied points puts the last token (where activations are read) in varied contexts, as
    RepE does with its truncated statements; otherwise every text would end on the same answer line.
    """
    rng = random.Random(seed)
    texts = []
    for ex in examples:
        body = ex.solution or " ".join(ex.choices or ())
        words = f"Question: {ex.question}\nAnswer: {body}".split(" ")
        cut = rng.randint(min(len(words), 4), len(words))
        texts.append(" ".join(words[:cut]))
    if not texts:
        raise InputError("no texts to fit the maps on")
    return texts


def paired_activations(
    parent: HookedModel,
    child: HookedModel,
    texts: Sequence[str],
    *,
    batch_size: int = 16,
    progress: bool = False,
) -> tuple[Float[Tensor, "parent_layer n d_parent"], Float[Tensor, "child_layer n d_child"]]:
    """Last-token ``resid_post`` of every layer of both models on the same texts (layer-major)."""
    return (
        layer_major_resid(parent, texts, batch_size=batch_size, progress=progress),
        layer_major_resid(child, texts, batch_size=batch_size, progress=progress),
    )


def layer_major_resid(
    model: HookedModel, texts: Sequence[str], *, batch_size: int = 16, progress: bool = False
) -> Float[Tensor, "layer n d_model"]:
    """One model's side of :func:`paired_activations`."""
    acts = last_token_resid(model, texts, batch_size=batch_size, progress=progress)
    return einops.rearrange(acts, "n l d -> l n d")


@dataclass(frozen=True)
class TransferMap:
    """A fitted parent -> child map: layer map, one width map per mapped child layer, fit reports."""

    parent_id: str
    child_id: str
    parent_shape: tuple[int, int]  # (n_layers, d_model)
    child_shape: tuple[int, int]
    layer_map_name: str
    width_map_name: str
    layer_map: dict[int, int]  # child layer -> parent layer
    width_maps: dict[int, WidthMap]  # child layer -> map from the parent layer feeding it
    child_resid_norm: Float[Tensor, " child_layer"]  # mean ‖h_l‖ of the child on the fit texts
    report: dict[int, dict[str, float]] = field(default_factory=dict)  # child layer -> held-out fit
    info: dict[str, Any] = field(default_factory=dict)  # fit text spec, sizes, seed, CKA matrix ...

    def check(self, vectors: SteeringVectors, *, allow_other_parent: bool = False) -> None:
        """Raise a clear error unless ``vectors`` live in this map's parent space and come from its parent.

        A same-shape vector of another model (another family's parent of equal size, or a fine-tune of this
        one) would map without complaint into a meaningless child direction, so it is refused by id unless
        ``allow_other_parent`` says the caller knows the two share a residual basis (fine-tunes of one base).
        """
        if (vectors.n_layers, vectors.d_model) != self.parent_shape:
            raise TransferError(
                f"this map was fitted for parent {self.parent_id!r} {list(self.parent_shape)} -> child "
                f"{self.child_id!r} {list(self.child_shape)}, but the vectors come from {vectors.model_id!r} "
                f"[{vectors.n_layers}, {vectors.d_model}]; fit a map for that parent with `xsteer transfer`"
            )
        if vectors.model_id != self.parent_id and not allow_other_parent:
            raise TransferError(
                f"this map was fitted for parent {self.parent_id!r}, but the vectors come from "
                f"{vectors.model_id!r}; fit a map for that parent with `xsteer transfer`, or pass "
                f"allow_other_parent=True if {vectors.model_id!r} shares {self.parent_id!r}'s residual basis "
                "(a fine-tune of the same base)"
            )

    def check_child(self, child_id: str, shape: tuple[int, int]) -> None:
        if tuple(shape) != self.child_shape:
            raise TransferError(
                f"this map targets child {self.child_id!r} {list(self.child_shape)}, not {child_id!r} {list(shape)}"
            )

    def apply(
        self, vectors: SteeringVectors, *, norm: str = "unit", allow_other_parent: bool = False
    ) -> SteeringVectors:
        """Map parent vectors to child space: ``v_c = W_c(v_{layer_map[c]})`` then the norm convention.

        ``allow_other_parent`` accepts vectors of another model of the parent's shape (see :meth:`check`).
        """
        self.check(vectors, allow_other_parent=allow_other_parent)
        if norm not in NORMS:
            raise TransferError(f"unknown norm convention {norm!r}; options: {', '.join(NORMS)}")
        n_c, d_c = self.child_shape
        out = torch.zeros(n_c, d_c)
        layers: list[int] = []
        stats: list[dict[str, float]] = [{} for _ in range(n_c)]
        for c, p in sorted(self.layer_map.items()):
            if p not in vectors.layers:
                continue  # the parent carries no vector there; the child layer stays unsteered
            v = self.width_maps[c].map_directions(vectors.vectors[p].double()).float()
            length = float(v.norm())
            if length < 1e-8:
                continue  # e.g. truncation dropped every coordinate the direction lived in
            out[c] = v / length
            layers.append(c)
            stats[c] = {"parent_layer": p, "mapped_norm": length, **self.report.get(c, {})}
        if not layers:
            raise TransferError(
                "no child layer received a vector: the layer map and the vectors' layers do not overlap"
            )
        child_rt = self.info.get("child_runtime", {})
        mapped = SteeringVectors(
            vectors=out,
            model_id=self.child_id,
            method=f"transfer:{self.layer_map_name}/{self.width_map_name}",
            layers=tuple(layers),
            hook=vectors.hook,
            position=vectors.position,
            centring=vectors.centring,
            pairs_hash=vectors.pairs_hash,
            layer_stats=tuple(stats),
            extra={
                "parent": vectors.model_id,
                "parent_method": vectors.method,
                "layer_map": self.layer_map_name,
                "width_map": self.width_map_name,
                "fit": self.info.get("fit_text"),
                "fit_texts_hash": self.info.get("texts_hash"),
                # The weights the map was fitted on: the child's are the space these vectors now live in.
                "weights": child_rt.get("weights"),
                "revision": child_rt.get("revision"),
                "parent_weights": vectors.extra.get("weights"),
                "source": vectors.extra.get("source"),  # where the parent's pairs came from
                **{k: child_rt[k] for k in VERSIONED if k in child_rt},
                # Only under allow_other_parent: the map's own parent, since "parent" names the vectors'.
                **({"map_parent": self.parent_id} if vectors.model_id != self.parent_id else {}),
            },
        )
        return mapped if norm == "unit" else mapped.scaled_to(self.child_resid_norm, "resid_mean")

    def map_stack(
        self, stack: Float[Tensor, "k parent_layer d_parent"]
    ) -> Float[Tensor, "k child_layer d_child"]:
        """Many parent directions through the map at once (placebos, bootstrap replicates): each child layer's
        vector has unit norm; a child layer the map feeds nothing to, or where the direction vanished (e.g.
        truncation dropped every coordinate it lived in), stays zero."""
        if tuple(stack.shape[1:]) != tuple(self.parent_shape):
            raise TransferError(
                f"this map takes parent directions {list(self.parent_shape)}, got {list(stack.shape[1:])}"
            )
        out = torch.zeros(stack.shape[0], *self.child_shape)
        for c, p in sorted(self.layer_map.items()):
            v = self.width_maps[c].map_directions(stack[:, p].double()).float()
            out[:, c] = (
                v / v.norm(dim=-1, keepdim=True).clamp_min(1e-30) * (v.norm(dim=-1, keepdim=True) > 1e-8)
            )
        return out

    # ------------------------------------------------------------------ files
    def save(self, path: str | Path) -> Path:
        """safetensors (one weight/bias pair per child layer) + JSON header; atomic, no pickle."""
        tensors = {"child_resid_norm": self.child_resid_norm.float().contiguous()}
        for c, wm in self.width_maps.items():
            for k, t in wm.state_dict().items():
                tensors[f"layer{c}.{k}"] = t.float().contiguous()
        meta = {
            "parent_id": self.parent_id,
            "child_id": self.child_id,
            "parent_shape": list(self.parent_shape),
            "child_shape": list(self.child_shape),
            "layer_map_name": self.layer_map_name,
            "width_map_name": self.width_map_name,
            "layer_map": {str(c): p for c, p in self.layer_map.items()},
            "width_params": {str(c): wm.params for c, wm in self.width_maps.items()},
            "report": {str(c): r for c, r in self.report.items()},
            "info": self.info,
        }
        return save_safetensors(tensors, path, {"xsteer_transfer": json.dumps(meta, default=float)})

    @classmethod
    def load(cls, path: str | Path) -> TransferMap:
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise TransferError(f"no transfer map at {path}")
        try:
            with safe_open(str(path), framework="pt") as f:
                header = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as e:  # a truncated or junk file fails inside the safetensors reader
            raise TransferError(f"{path} is not a readable transfer map ({type(e).__name__}: {e})") from None
        if "xsteer_transfer" not in header:
            raise TransferError(f"{path} is not an xsteer transfer map")
        try:
            meta = json.loads(header["xsteer_transfer"])
            layer_map = {int(c): int(p) for c, p in meta["layer_map"].items()}
            width_maps = {
                c: WidthMap.from_state_dict(
                    meta["width_map_name"],
                    {
                        "weight": tensors[f"layer{c}.weight"].double(),
                        "bias": tensors[f"layer{c}.bias"].double(),
                    },
                    meta["width_params"][str(c)],
                )
                for c in layer_map
            }
            return cls(
                parent_id=meta["parent_id"],
                child_id=meta["child_id"],
                parent_shape=tuple(meta["parent_shape"]),
                child_shape=tuple(meta["child_shape"]),
                layer_map_name=meta["layer_map_name"],
                width_map_name=meta["width_map_name"],
                layer_map=layer_map,
                width_maps=width_maps,
                child_resid_norm=tensors["child_resid_norm"],
                report={int(c): r for c, r in meta["report"].items()},
                info=meta["info"],
            )
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as e:
            raise TransferError(
                f"{path} is a damaged transfer map ({type(e).__name__}: {e}); fit it again"
            ) from None


def fit_transfer_from_activations(
    xp: Float[Tensor, "parent_layer n d_parent"],
    yc: Float[Tensor, "child_layer n d_child"],
    *,
    parent_id: str,
    child_id: str,
    layer_map: str = "proportional",
    width_map: str = "ridge",
    mapping: Mapping[Any, Any] | str | None = None,
    diffs: tuple[Float[Tensor, "parent_layer pair d_parent"], Float[Tensor, "child_layer pair d_child"]]
    | None = None,
    heldout: float = 0.2,
    seed: int = 0,
    info: dict[str, Any] | None = None,
    width_cache: dict[tuple[str, int, int], Any] | None = None,
    child_layers: Sequence[int] | None = None,
    layer_options: Mapping[int, Mapping[str, Any]] | None = None,
    **width_options: Any,
) -> TransferMap:
    """Fit a :class:`TransferMap` on paired activations (pure: no models involved).

    ``diffs`` are both models' per-pair difference vectors (pos - neg) of a concept's contrastive pairs,
    layer-major; the ``cka_diff`` layer map needs them. ``width_cache`` (a dict the caller keeps) reuses a
    width map fitted for the same (method, parent layer, child layer) on the SAME activations, so a grid of
    layer maps fits each layer pair once.
    """
    if layer_map not in LAYER_MAPS:
        raise TransferError(f"unknown layer map {layer_map!r}; options: {', '.join(LAYER_MAPS)}")
    if width_map not in WIDTH_MAPS:
        raise TransferError(f"unknown width map {width_map!r}; options: {', '.join(WIDTH_MAPS)}")
    (n_p, n, d_p), (n_c, n2, d_c) = xp.shape, yc.shape
    if n != n2:
        raise TransferError(f"paired activations disagree on the number of texts: {n} vs {n2}")
    if width_map == "identity" and d_p != d_c:
        raise TransferError(
            f"width map 'identity' needs equal widths, but the parent has d_model {d_p} and the child {d_c}; "
            f"options for unequal widths: ridge, procrustes (truncate_pad and random_orthogonal are controls)"
        )
    if width_map == "procrustes":
        # Residual norms differ 10-100x across families; an unscaled orthogonal map would predict child
        # activations at the parent's scale and wreck the fit report. Directions are renormalised anyway.
        width_options.setdefault("scale", True)
    n_test = max(1, int(round(heldout * n))) if heldout > 0 else 0
    if n - n_test < 2:
        raise TransferError(f"{n} texts leave too few to fit on after holding out {n_test}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    tr, te = perm[: n - n_test], perm[n - n_test :]
    cka = None
    if LAYER_MAPS[layer_map].needs == "cka":
        cka = cka_matrix(yc[:, tr], xp[:, tr])
    elif LAYER_MAPS[layer_map].needs == "cka_diff":
        if diffs is None:
            raise TransferError(
                f"layer map {layer_map!r} needs both models' pair differences (diffs=(parent, child))"
            )
        dp, dc = diffs
        if dp.shape[0] != n_p or dc.shape[0] != n_c or dp.shape[1] != dc.shape[1]:
            raise TransferError(
                f"pair differences of shapes {tuple(dp.shape)} and {tuple(dc.shape)} do not fit "
                f"a parent of {n_p} and a child of {n_c} layers over the same pairs"
            )
        cka = cka_matrix(dc, dp)
    lmap = make_layer_map(layer_map, n_p, n_c, cka=cka, mapping=mapping)
    if child_layers is not None:
        lmap = {c: p for c, p in lmap.items() if c in set(child_layers)}
    width_maps, report = {}, {}
    for c, p in sorted(lmap.items()):
        key = (width_map, p, c)
        if width_cache is not None and key in width_cache:
            width_maps[c], rep = width_cache[key]
            if rep:
                report[c] = rep
            continue
        x, y = xp[p].double(), yc[c].double()
        options = {**width_options, **(layer_options or {}).get(c, {})}
        wm = fit_width_map(width_map, x[tr], y[tr], d_parent=d_p, d_child=d_c, seed=seed, **options)
        width_maps[c] = wm
        if n_test:
            report[c] = {k: float(v) for k, v in fit_report(wm, x[te], y[te]).items()}
        if width_cache is not None:
            width_cache[key] = (wm, report.get(c))
    info = dict(info or {})
    info.update(n_fit=int(len(tr)), n_heldout=int(n_test), seed=seed, layer_map=describe(lmap))
    if cka is not None:
        info["cka"] = cka.tolist()
    return TransferMap(
        parent_id=parent_id,
        child_id=child_id,
        parent_shape=(n_p, d_p),
        child_shape=(n_c, d_c),
        layer_map_name=layer_map,
        width_map_name=width_map,
        layer_map=lmap,
        width_maps=width_maps,
        child_resid_norm=resid_norms(einops.rearrange(yc, "l n d -> n l d")),
        report=report,
        info=info,
    )


def fit_transfer(
    parent: HookedModel,
    child: HookedModel,
    texts: Sequence[str],
    *,
    pairs: Sequence[tuple[str, str]] | None = None,
    batch_size: int = 16,
    progress: bool = False,
    info: dict[str, Any] | None = None,
    activations: tuple[Float[Tensor, "parent_layer n d_parent"], Float[Tensor, "child_layer n d_child"]]
    | None = None,
    **kwargs: Any,
) -> TransferMap:
    """Fit a :class:`TransferMap` between two loaded models on shared texts (see the module docstring).

    ``pairs`` are (positive, negative) texts of a concept, run through both models for the ``cka_diff``
    layer map. ``activations``: both models' activations of ``texts`` (as :func:`paired_activations` returns
    them), already read for another map fitted on the same texts.
    """
    if activations is None:
        activations = paired_activations(parent, child, texts, batch_size=batch_size, progress=progress)
    xp, yc = activations
    diffs = None
    if pairs:
        pos, neg = [p for p, _ in pairs], [n for _, n in pairs]
        dp = paired_activations(parent, child, pos, batch_size=batch_size)
        dn = paired_activations(parent, child, neg, batch_size=batch_size)
        diffs = (dp[0] - dn[0], dp[1] - dn[1])
    info = {
        **(info or {}),
        "parent_runtime": runtime(parent),
        "child_runtime": runtime(child),
        "texts_hash": texts_hash(texts),
    }
    return fit_transfer_from_activations(
        xp, yc, parent_id=model_id(parent), child_id=model_id(child), diffs=diffs, info=info, **kwargs
    )


def texts_hash(texts: Sequence[str]) -> str:
    """sha256 of a map's fit texts, in order: two maps fitted on the same texts record the same hash."""
    import hashlib

    return hashlib.sha256(json.dumps(list(texts), ensure_ascii=False).encode()).hexdigest()


def report_table(tmap: TransferMap) -> str:
    """Held-out fit per mapped child layer, as a text table."""
    lines = [f"{'child':>5} <- {'parent':<6}  {'R2':>7}  {'cos':>6}  {'cos(centred)':>12}"]
    for c, p in sorted(tmap.layer_map.items()):
        r = tmap.report.get(c)
        if r:
            lines.append(
                f"{c:>5} <- {p:<6}  {r['r2']:>7.3f}  {r['cosine']:>6.3f}  {r['cosine_centred']:>12.3f}"
            )
    return "\n".join(lines)


__all__ = [
    "TransferMap",
    "TransferError",
    "VectorFileError",
    "fit_texts",
    "fit_transfer",
    "fit_transfer_from_activations",
    "layer_major_resid",
    "paired_activations",
    "report_table",
]
