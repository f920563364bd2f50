"""Steering-vector files: ``[n_layers, d_model]`` vectors plus the metadata needed to use them right.

A file is one safetensors file: the tensor ``vectors`` and, in the safetensors header, a JSON document
under the key ``xsteer`` (model id, widths, hook point, method, centring rule, token position, norm
convention, pairs hash, per-layer statistics, provenance). No pickle is involved in saving or loading.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float
from torch import Tensor

from xsteer.core.types import HookedModel
from xsteer.errors import VectorFileError

if TYPE_CHECKING:  # inject imports this module: the names are for the checker only
    from xsteer.core.inject import Lambda, SteeringHandle

FORMAT_VERSION = 1
#: The libraries whose versions a file records (:func:`xsteer.core.models.runtime`).
VERSIONED = ("xsteer", "torch", "transformers", "transformer-lens")
#: The ``extra`` keys :meth:`SteeringVectors.provenance` reads.
PROVENANCE_EXTRA = frozenset(
    {
        "weights",
        "revision",
        "source",
        "parent",
        "parent_weights",
        "layer_map",
        "width_map",
        "fit",
        "fit_texts_hash",
    }
    | set(VERSIONED)
)

# How the length of each layer's vector is defined; λ only means something relative to it.
NORMS = {
    "unit": "each steered layer's vector has L2 norm 1 (λ is an absolute residual-stream displacement)",
    "resid_mean": "each steered layer's vector has the norm of the model's mean ‖h_l‖ at that layer "
    "(λ = 0.1 moves the residual by 10% of its typical length)",
}


@dataclass(frozen=True)
class SteeringVectors:
    """One steering direction per layer of one model.

    Attributes:
        vectors: one row per layer of the model the vectors live in; rows of unsteered layers are zero.
        model_id: the model whose residual space the vectors live in (``cfg.model_name`` of a loaded model).
        method: how the directions were obtained (``pca``, ``pca_uncentred``, ``mean_diff``, or
            ``transfer:<layer map>/<width map>`` for mapped vectors).
        layers: the layers that carry a vector; all others are left alone by :func:`xsteer.core.inject.steer`.
        hook: the TransformerLens hook point the vectors were read from and are added at.
        position: which token position the activations were read at.
        norm: the norm convention (a key of :data:`NORMS`).
        centring: the centring rule of the method (the survey's PCA pitfall: say which one was used).
        pairs_hash: sha256 of the contrastive pairs, so two files can be told to come from the same data.
        layer_stats: per-layer statistics of the fit (explained variance, separation, ...), one dict a layer.
        extra: free-form provenance (parent model, maps, fit report, command line ...).
    """

    vectors: Float[Tensor, "layer d_model"]
    model_id: str
    method: str
    layers: tuple[int, ...]
    hook: str = "hook_resid_post"
    position: str = "last_token"
    norm: str = "unit"
    centring: str = ""
    pairs_hash: str = ""
    layer_stats: tuple[dict[str, Any], ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        v = self.vectors
        if v.ndim != 2:
            raise VectorFileError(f"vectors must be [n_layers, d_model], got shape {tuple(v.shape)}")
        object.__setattr__(self, "vectors", v.detach().to("cpu", torch.float32).contiguous())
        object.__setattr__(self, "layers", tuple(int(i) for i in self.layers))
        if not self.layers:
            raise VectorFileError("a vector set must steer at least one layer")
        bad = [i for i in self.layers if not 0 <= i < self.n_layers]
        if bad:
            raise VectorFileError(f"layers {bad} are outside 0..{self.n_layers - 1}")
        if not torch.isfinite(self.vectors).all():
            rows = sorted({int(i) for i in (~torch.isfinite(self.vectors)).nonzero()[:, 0]})
            raise VectorFileError(f"vectors hold NaN or infinite values at layers {rows}")
        norms = self.vectors[list(self.layers)].norm(dim=-1)
        zero = [layer for layer, n in zip(self.layers, norms.tolist(), strict=True) if n < 1e-12]
        if zero:
            raise VectorFileError(f"steered layers {zero} have zero vectors; drop them from `layers`")
        if self.norm not in NORMS:
            raise VectorFileError(f"unknown norm convention {self.norm!r}; options: {', '.join(NORMS)}")

    @property
    def n_layers(self) -> int:
        return self.vectors.shape[0]

    @property
    def d_model(self) -> int:
        return self.vectors.shape[1]

    def replace(self, **changes: Any) -> SteeringVectors:
        return replace(self, **changes)

    def metadata(self) -> dict[str, Any]:
        meta = asdict(self)
        del meta["vectors"]
        meta.update(format_version=FORMAT_VERSION, n_layers=self.n_layers, d_model=self.d_model)
        meta["layers"] = list(self.layers)
        meta["layer_stats"] = list(self.layer_stats)
        return meta

    def provenance(self) -> dict[str, Any]:
        """What a colleague needs to reuse this file, by name; None where it was not recorded (files written
        before xsteer recorded it, or imported from another format)."""
        x = self.extra
        r2 = [s["r2"] for s in self.layer_stats if s and "r2" in s]
        return {
            "model_id": self.model_id,
            "weights": x.get("weights"),  # xsteer.core.models.fingerprint
            "revision": x.get("revision"),
            "hook": self.hook,
            "position": self.position,
            "method": self.method,
            "centring": self.centring or None,
            "norm": self.norm,
            "pairs_hash": self.pairs_hash or None,
            # An imported file's "source" is the file it came from; its pairs' source is in the file's own record.
            "pairs_source": x.get("file_meta", {}).get("pairs_source")
            if "imported_from" in x
            else x.get("source"),
            "parent": x.get("parent"),
            "parent_weights": x.get("parent_weights"),
            "map": f"{x['layer_map']} x {x['width_map']}" if "layer_map" in x else None,
            "fit_texts": x.get("fit"),
            "fit_texts_hash": x.get("fit_texts_hash"),
            "heldout_r2": round(sum(r2) / len(r2), 4) if r2 else None,
            **{pkg: x.get(pkg) for pkg in VERSIONED},
        }

    def provenance_rest(self) -> dict[str, Any]:
        """The ``extra`` items :meth:`provenance` does not show (an imported file's source path among them)."""
        read = PROVENANCE_EXTRA - ({"source"} if "imported_from" in self.extra else set())
        return {k: v for k, v in self.extra.items() if k not in read}

    def check_compatible(self, n_layers: int, d_model: int, model_id: str | None = None) -> None:
        """Raise a clear error when these vectors do not live in a model of this depth and width."""
        if (n_layers, d_model) != (self.n_layers, self.d_model):
            raise VectorFileError(
                f"vectors for {self.model_id!r} are [{self.n_layers} layers x d_model {self.d_model}] but the "
                f"model{f' {model_id!r}' if model_id else ''} has [{n_layers} layers x d_model {d_model}]; "
                "map them into the child's space first with `xsteer transfer` (xsteer.transfer.maps)"
            )

    def save(self, path: str | Path) -> Path:
        """Write atomically: a crash mid-write leaves either the old file or none, never half a file."""
        from xsteer.core.io import save_safetensors

        header = {"xsteer": json.dumps(self.metadata(), default=_json_default)}
        return save_safetensors({"vectors": self.vectors}, path, header)

    @classmethod
    def load(cls, path: str | Path) -> SteeringVectors:
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise VectorFileError(f"no vector file at {path}")
        try:
            with safe_open(str(path), framework="pt") as f:
                header = f.metadata() or {}
                if "vectors" not in f.keys():
                    raise VectorFileError(f"{path} holds no 'vectors' tensor (keys: {list(f.keys())})")
                vectors = f.get_tensor("vectors")
        except VectorFileError:
            raise
        except Exception as e:
            raise VectorFileError(f"{path} is not a readable safetensors file: {e}") from e
        if "xsteer" not in header:
            raise VectorFileError(f"{path} is a safetensors file without xsteer metadata")
        try:
            meta = json.loads(header["xsteer"])
        except json.JSONDecodeError as e:
            raise VectorFileError(
                f"{path}: its xsteer metadata is not valid JSON ({e.msg} at character {e.pos})"
            ) from None
        if not isinstance(meta, dict):
            raise VectorFileError(f"{path}: its xsteer metadata is not a JSON object")
        if meta.get("format_version", 0) > FORMAT_VERSION:
            raise VectorFileError(f"{path} was written by a newer xsteer (format {meta['format_version']})")
        for k in ("format_version", "n_layers", "d_model"):
            meta.pop(k, None)
        known = {f.name for f in fields(cls)} - {"vectors"}
        missing = sorted({"model_id", "method", "layers"} - set(meta))
        unknown = sorted(set(meta) - known)
        if missing or unknown:
            raise VectorFileError(
                f"{path}: its xsteer metadata "
                + "; ".join(
                    ([f"lacks {', '.join(missing)}"] if missing else [])
                    + ([f"has unknown key(s) {', '.join(unknown)}"] if unknown else [])
                )
                + "; re-export it with xsteer"
            )
        try:
            meta["layers"] = tuple(int(x) for x in meta["layers"])
            meta["layer_stats"] = tuple(meta.get("layer_stats", ()))
        except (TypeError, ValueError):
            raise VectorFileError(
                f"{path}: 'layers' must be a list of layer numbers, got {meta['layers']!r}"
            ) from None
        if vectors.ndim != 2:
            raise VectorFileError(
                f"{path}: 'vectors' must be [n_layers, d_model], got shape {tuple(vectors.shape)}"
            )
        return cls(vectors=vectors, **meta)

    def unit(self) -> SteeringVectors:
        """The same directions at unit norm."""
        v = self.vectors.clone()
        idx = list(self.layers)
        v[idx] = v[idx] / v[idx].norm(dim=-1, keepdim=True)
        return self.replace(vectors=v, norm="unit")

    def scaled_to(self, norms: Float[Tensor, " layer"], convention: str) -> SteeringVectors:
        """Rescale each steered layer to the given norm (e.g. the model's mean ‖h_l‖) and record the rule."""
        v = self.unit().vectors
        v = v * norms.to(v).reshape(-1, 1)
        return self.replace(vectors=v, norm=convention)

    def random_like(self, seed: int = 0) -> SteeringVectors:
        """The random-direction control: a seeded random direction per steered layer, same norms."""
        g = torch.Generator().manual_seed(seed)
        r = torch.randn(self.vectors.shape, generator=g)
        idx = list(self.layers)
        v = torch.zeros_like(self.vectors)
        v[idx] = r[idx] / r[idx].norm(dim=-1, keepdim=True) * self.vectors[idx].norm(dim=-1, keepdim=True)
        # No pairs made it: the same draw from two parents' vectors of equal norms is the same control.
        return self.replace(
            vectors=v, method=f"random({self.method}, seed={seed})", layer_stats=(), pairs_hash=""
        )

    # ------------------------------------------------------------------ use and arithmetic
    def apply(
        self, model: HookedModel, *, lam: Lambda = 1.0, layers: Sequence[int] | None = None
    ) -> AbstractContextManager[SteeringHandle]:
        """Steer ``model`` inside a ``with`` block (:func:`xsteer.core.inject.steer`): ``h_l += λ · v_l``."""
        from xsteer.core.inject import steer

        return steer(model, self, lam=lam, layers=layers)

    def _check_same_space(self, other: SteeringVectors, op: str) -> None:
        if not isinstance(other, SteeringVectors):
            raise VectorFileError(f"cannot {op} SteeringVectors and {type(other).__name__}")
        if (self.model_id, self.vectors.shape) != (other.model_id, other.vectors.shape):
            raise VectorFileError(
                f"cannot {op} vectors of {self.model_id!r} {list(self.vectors.shape)} and "
                f"{other.model_id!r} {list(other.vectors.shape)}: they live in different models"
            )
        if self.norm != other.norm:
            raise VectorFileError(
                f"cannot {op} vectors under norm conventions {self.norm!r} and {other.norm!r}; "
                "bring both to one first (.unit() or .scaled_to())"
            )
        if self.hook != other.hook:
            raise VectorFileError(f"cannot {op} vectors read at {self.hook!r} and {other.hook!r}")

    def _combined(self, v: Tensor, layers: Any, method: str) -> SteeringVectors:
        # A layer whose vectors cancel (a - a) carries nothing any more: it stops being steered.
        kept = tuple(layer for layer in sorted(set(layers)) if float(v[layer].norm()) > 1e-12)
        if not kept:
            raise VectorFileError(f"{method} cancels at every layer: no steering vector is left")
        return self.replace(vectors=v, layers=kept, method=method, layer_stats=(), pairs_hash="")

    def steered(self) -> Float[Tensor, "layer d_model"]:
        """The vectors with every unsteered layer's row zeroed: what :func:`~xsteer.core.inject.steer` adds."""
        keep = torch.zeros(self.n_layers, 1)
        keep[list(self.layers)] = 1.0
        return self.vectors * keep

    def __add__(self, other: SteeringVectors) -> SteeringVectors:
        self._check_same_space(other, "add")
        return self._combined(
            self.steered() + other.steered(), self.layers + other.layers, f"({self.method} + {other.method})"
        )

    def __sub__(self, other: SteeringVectors) -> SteeringVectors:
        self._check_same_space(other, "subtract")
        return self._combined(
            self.steered() - other.steered(), self.layers + other.layers, f"({self.method} - {other.method})"
        )

    def __mul__(self, k: float) -> SteeringVectors:
        if isinstance(k, bool) or not isinstance(k, (int, float)) or not math.isfinite(k):
            raise VectorFileError(f"vectors scale by a finite number, got {k!r}")
        return self._combined(self.vectors * float(k), self.layers, f"{k:g} * {self.method}")

    __rmul__ = __mul__

    def __truediv__(self, k: float) -> SteeringVectors:
        if isinstance(k, bool) or not isinstance(k, (int, float)) or k == 0 or not math.isfinite(k):
            raise VectorFileError(f"vectors divide by a finite non-zero number, got {k!r}")
        return self * (1.0 / float(k))

    def __neg__(self) -> SteeringVectors:
        return self._combined(-self.vectors, self.layers, f"-{self.method}")


def _json_default(o: Any) -> Any:
    if isinstance(o, Tensor):
        return o.tolist()
    if isinstance(o, float) and not math.isfinite(o):
        return str(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"cannot store {type(o).__name__} in vector metadata")
