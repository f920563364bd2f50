"""Add ``λ · v_l`` to a model's residual stream at ``blocks.{l}.hook_resid_post``.

:func:`steer` is a context manager: hooks go on at entry and always come off at exit, exception or not.
λ is a scalar or one value per batch row, so one batched forward (or generation) covers a whole λ grid:
row ``b`` of the batch is steered by ``λ[b]``. :func:`steer_rows` goes one step further: each row carries its
own vector too, so many conditions (placebos, bootstrap replicates, every concept of a specificity matrix)
× λ × probes are read in a few large batched forwards instead of one small pass per vector.

The per-layer displacements ``λ[:, None, None] * v_l`` are computed once per λ setting and kept on the
model's device, so a hook call does no host work, no host-to-device copy and no sync: it is one add.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from xsteer.core.models import model_id, weights_fingerprint
from xsteer.core.types import HookedModel
from xsteer.core.vectors import SteeringVectors, VectorFileError
from xsteer.errors import InputError

Lambda = float | Sequence[float] | Float[Tensor, "batch"]


class SteeringHandle:
    """Live state of one :func:`steer` context: which rows get which λ, and whether steering is on.

    Generation loops use it to switch steering off for shared prefill (``active``) and to drop rows
    that finished (:meth:`select_rows`).
    """

    def __init__(
        self,
        vectors: Float[Tensor, "layer d_model"] | Float[Tensor, "row layer d_model"],
        layers: Sequence[int],
        lam: Lambda,
        device: Any,
        dtype: torch.dtype,
    ):
        self.layers = tuple(layers)
        # Shared vectors are [1, d] per layer; per-row vectors [rows, d], so one broadcast covers both.
        rows = vectors if vectors.ndim == 3 else vectors[None]
        self._v = {layer: rows[:, layer].to(device=device, dtype=dtype) for layer in self.layers}
        self.per_row = vectors.ndim == 3
        self.device, self.dtype = device, dtype
        self.active = True
        self.set_lambda(lam)

    def set_lambda(self, lam: Lambda) -> None:
        """Set λ: a scalar for all rows, or one value per batch row."""
        lam_t = torch.as_tensor(lam, dtype=torch.float32)
        if lam_t.ndim > 1:
            raise InputError(f"λ must be a scalar or one value per batch row, got shape {tuple(lam_t.shape)}")
        if not torch.isfinite(lam_t).all():
            raise InputError(f"λ must be finite, got {lam_t.tolist()}")
        n_vec = next(iter(self._v.values())).shape[0]
        if self.per_row and lam_t.ndim == 1 and lam_t.shape[0] != n_vec:
            raise InputError(f"{n_vec} per-row vectors but {lam_t.shape[0]} λ values")
        self.lam = lam_t
        coef = lam_t.to(device=self.device, dtype=self.dtype).reshape(-1, 1)
        self._delta = {layer: (coef * v)[:, None, :] for layer, v in self._v.items()}  # [rows or 1, 1, d]

    @property
    def n_rows(self) -> int | None:
        if self.per_row:
            return int(next(iter(self._v.values())).shape[0])
        return None if self.lam.ndim == 0 else int(self.lam.shape[0])

    def select_rows(self, index: Tensor) -> None:
        """Keep only these batch rows (a generation loop dropped the others)."""
        if self.per_row:
            self._v = {layer: v[index.to(v.device)] for layer, v in self._v.items()}
        if self.lam.ndim == 1:
            self.set_lambda(self.lam[index.cpu()])
        elif self.per_row:
            self.set_lambda(self.lam)

    def hook(self, layer: int) -> Callable[..., Tensor]:
        """The hook function for one layer; `layer` is bound now, not looked up late (lm-eval's bug)."""

        def add(resid: Tensor, hook: Any = None) -> Tensor:
            if not self.active:
                return resid
            delta = self._delta[layer]
            if delta.shape[0] not in (1, resid.shape[0]):
                raise InputError(
                    f"per-row λ has {delta.shape[0]} values but the batch has {resid.shape[0]} rows"
                )
            # Out of place: a cache hook registered earlier on this point may hold a view of `resid`.
            return resid + delta

        return add


def resolve_layers(vectors: SteeringVectors, layers: Sequence[int] | None) -> list[int]:
    """The layers to steer: the vectors' own by default; a chosen subset must be among them."""
    if layers is None:
        return list(vectors.layers)
    layers = [int(x) + vectors.n_layers if int(x) < 0 else int(x) for x in layers]
    bad = [x for x in layers if x not in vectors.layers]
    if bad:
        raise InputError(f"layers {bad} carry no vector; steerable layers: {list(vectors.layers)}")
    return sorted(set(layers))


@contextmanager
def steer(
    model: HookedModel,
    vectors: SteeringVectors,
    *,
    lam: Lambda = 1.0,
    layers: Sequence[int] | None = None,
    hook: str | None = None,
) -> Iterator[SteeringHandle]:
    """Steer ``model`` with ``vectors`` inside the block: ``h_l ← h_l + λ · v_l`` for each steered layer.

    Args:
        model: a TransformerLens model (TransformerBridge or anything with ``hooks()`` and ``cfg``).
        vectors: vectors in this model's residual space (same depth and width; see ``xsteer transfer``).
        lam: a scalar, or one value per batch row.
        layers: steer only these layers (default: every layer the vectors carry).
        hook: hook point name within each block (default: the one the vectors were read from).

    Raises:
        VectorFileError: the vectors live in a model of another depth or width.
    """
    if not isinstance(vectors, SteeringVectors):
        raise InputError(f"vectors must be a SteeringVectors, got {type(vectors).__name__}")
    vectors.check_compatible(model.cfg.n_layers, model.cfg.d_model, model_id(model))
    if vectors.model_id != model_id(model):
        # Same shape, different model (e.g. two fine-tunes of one base): allowed, but worth knowing.
        import warnings

        warnings.warn(
            f"vectors were made for {vectors.model_id!r} and are applied to {model_id(model)!r}", stacklevel=3
        )
    made_on = vectors.extra.get("weights")
    here = weights_fingerprint(model) if made_on else None
    if made_on and here and not here.startswith("unavailable") and made_on != here:
        # Same name and shape, other weights: another revision, a fine-tune, a quantization.
        import warnings

        warnings.warn(
            f"vectors were made on weights {made_on} and are applied to {model_id(model)!r} with weights {here} "
            "(another revision, fine-tune or quantization); their effect may differ",
            stacklevel=3,
        )
    chosen = resolve_layers(vectors, layers)
    param = next(model.parameters())
    handle = SteeringHandle(vectors.vectors, chosen, lam, param.device, param.dtype)
    hook_name = hook or vectors.hook
    fwd_hooks = [(f"blocks.{layer}.{hook_name}", handle.hook(layer)) for layer in chosen]
    with model.hooks(fwd_hooks=fwd_hooks):
        yield handle


@contextmanager
def steer_rows(
    model: HookedModel,
    vectors: Float[Tensor, "row layer d_model"],
    *,
    lam: Lambda,
    layers: Sequence[int],
    hook: str = "hook_resid_post",
) -> Iterator[SteeringHandle]:
    """Steer row ``b`` of every batch inside the block by ``λ[b] · vectors[b, l]`` at each of ``layers``.

    The vectors are a plain stack in this model's residual space: the caller has checked where they come from
    (:meth:`SteeringVectors.check_compatible`) and given them one norm convention. ``lam`` is a scalar or one
    value per row; the batch run inside the block must have exactly ``rows`` rows.
    """
    n_layers, d_model = model.cfg.n_layers, model.cfg.d_model
    if vectors.ndim != 3 or tuple(vectors.shape[1:]) != (n_layers, d_model):
        raise InputError(
            f"per-row vectors must be [rows, {n_layers}, {d_model}] for this model, got {tuple(vectors.shape)}"
        )
    if not torch.isfinite(vectors).all():
        raise InputError("per-row vectors hold NaN or infinite values")
    bad = [x for x in layers if not 0 <= int(x) < n_layers]
    if bad or not layers:
        raise InputError(f"layers {list(layers)} must be a non-empty subset of 0..{n_layers - 1}")
    chosen = sorted({int(x) for x in layers})
    param = next(model.parameters())
    handle = SteeringHandle(vectors, chosen, lam, param.device, param.dtype)
    with model.hooks(fwd_hooks=[(f"blocks.{layer}.{hook}", handle.hook(layer)) for layer in chosen]):
        yield handle


__all__ = ["steer", "steer_rows", "SteeringHandle", "resolve_layers", "VectorFileError"]
