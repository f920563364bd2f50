"""Steering vectors in and out of lm-evaluation-harness's ``steered`` model.

Why: lm-eval is where steering results are usually scored. Its ``steered`` model
(``lm_eval/models/hf_steered.py``, lm-eval >= 0.4.8) runs a Hugging Face model with forward hooks that add
vectors; a vector set exported here lets lm-eval score exactly the intervention xsteer scores::

    lm_eval --model steered --tasks arc_challenge \\
        --model_args pretrained=DIR,steer_path=FILE.pt,dtype=float32,add_bos_token=True

(``DIR`` from :func:`xsteer.interop.hf.export_model`; ``add_bos_token=True`` makes lm-eval prepend the BOS
that xsteer's TransformerLens models prepend.)

The file, as lm-eval reads it: ``torch.save`` of a dict ``{hookpoint: {"steering_vector": Tensor,
"steering_coefficient": float, "action": "add", "bias": None, "head_index": None}}``. For ``add`` lm-eval
adds ``steering_coefficient * steering_vector`` to the hooked module's output (the first element when it is
a tuple) at every position. Hook points are names in ``model.base_model.named_modules()``; for the causal LMs
xsteer runs (``model.model`` is the base model) ``layers.N`` is decoder layer N, whose output is block N's
output, i.e. TransformerLens's ``blocks.N.hook_resid_post``, where xsteer adds. So xsteer layer L is
``layers.L``, with no shift, and λ is the coefficient. ``bias`` and ``head_index`` are written as None: lm-eval
0.4.8/0.4.9 index ``steer_info["bias"]`` unconditionally.

Known lm-eval bug: in 0.4.8 and 0.4.9 the ``add`` hook was ``lambda acts: acts + steering_coefficient *
steering_vector`` built in the loop over hook points; Python binds those names late, so every hook point
added the LAST entry's vector and coefficient. A multi-layer file therefore steers differently there. 0.4.10
fixed it (``functools.partial``); use lm-eval >= 0.4.10 (xsteer's ``lmeval`` extra asks for >= 0.4.12) or
export one layer per file.

Reading (:func:`load_lmeval`): every entry must be ``add`` at a ``layers.N`` hook point, with one vector
width. When all entries share one coefficient (what :func:`export_lmeval` writes) the vectors are kept as
they are and the coefficient is recorded as ``extra["lam"]``: steer with that λ to reproduce the file. When
coefficients differ by layer they are folded into the vectors (``c_l * v_l``) and ``extra["lam"]`` is 1.0;
``extra["folded"]`` says which, and ``extra["coefficients"]`` keeps the file's values either way.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from xsteer.core.io import load_torch, save_torch
from xsteer.core.vectors import SteeringVectors, VectorFileError
from xsteer.interop.shapes import check_fits, resolve_target

HOOK = "hook_resid_post"  # the only xsteer hook point whose lm-eval counterpart is a module output
SUFFIXES = (".pt", ".pth")  # lm-eval refuses any other steer_path ("Unknown steer file type")
_HOOKPOINT = re.compile(r"layers\.(\d+)")


def hookpoint(layer: int) -> str:
    """lm-eval's hook point for the output of block ``layer`` (xsteer's ``blocks.{layer}.hook_resid_post``)."""
    return f"layers.{int(layer)}"


def export_lmeval(
    vectors: SteeringVectors, path: str | Path, *, lam: float, layers: Sequence[int] | None = None
) -> Path:
    """Write ``vectors`` as an lm-eval ``steered`` file (``.pt``) at ``path``, atomically, and return the path.

    One entry per steered layer (or per layer of ``layers``, which must carry a vector), each with
    ``steering_coefficient = lam``, so lm-eval adds ``lam * v_l`` to block l's output as xsteer's
    ``Steering(vectors, lam)`` does.
    """
    from xsteer.core.inject import resolve_layers

    path = Path(path)
    if path.suffix not in SUFFIXES:
        raise VectorFileError(f"{path}: lm-eval reads steer files ending in {' or '.join(SUFFIXES)} only")
    if vectors.hook != HOOK:
        raise VectorFileError(
            f"vectors for {vectors.model_id!r} are added at {vectors.hook!r}, but lm-eval's layers.N hook points "
            f"are block outputs ({HOOK}); extract or transfer them at {HOOK} to export them"
        )
    check_lam(lam)
    chosen = resolve_layers(vectors, layers)
    config = {hookpoint(layer): _entry(vectors.vectors[layer], float(lam)) for layer in chosen}
    return save_torch(config, path)


def check_lam(lam: float) -> None:
    """λ as lm-eval's steering_coefficient: finite and non-zero (a zero one writes a file that steers nothing)."""
    if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not math.isfinite(lam):
        raise VectorFileError(f"lam must be a finite number, got {lam!r}")
    if lam == 0:
        raise VectorFileError(
            "lam must not be 0: lm-eval would add 0 x the vectors, i.e. steer nothing; "
            "for the unsteered model run lm-eval without a steer_path"
        )


def load_lmeval(
    path: str | Path,
    *,
    model_id: str | None = None,
    model: Any = None,
    n_layers: int | None = None,
    d_model: int | None = None,
) -> SteeringVectors:
    """An lm-eval ``steered`` ``.pt`` file as :class:`SteeringVectors` (see the module docstring for λ).

    Args:
        model_id: the name recorded in the vectors (default: the target model's, else the file name).
        model: the target: a loaded model, a model spec (zoo name, ``.gguf``, HF directory; read without
            loading weights) or an id; it gives ``n_layers``/``d_model``.
        n_layers, d_model: the target's depth and width, when no model is given. Without a depth the
            vectors get one row past the last steered layer (the file does not say the model's depth).

    Raises:
        VectorFileError: not a dict of ``add`` entries at ``layers.N`` with one width, or vectors that do
            not fit the target (the message names both).
    """
    path = Path(path)
    config = _read(path)
    layers, vecs, coefs = _parse(path, config)
    widths = {int(v.shape[0]) for v in vecs.values()}
    if len(widths) != 1:
        by_width = {w: [layer for layer in layers if vecs[layer].shape[0] == w] for w in sorted(widths)}
        raise VectorFileError(f"{path}: steering vectors of different widths {by_width} (width: layers)")
    width = widths.pop()
    target = resolve_target(model, model_id=model_id, n_layers=n_layers, d_model=d_model)
    notes = check_fits(path, target, layers=layers, width=width, what="steering vectors")

    uniform = len(set(coefs.values())) == 1
    lam = next(iter(coefs.values())) if uniform else 1.0
    rows = target.n_layers if target is not None and target.n_layers is not None else layers[-1] + 1
    dense = torch.zeros(rows, width)
    for layer in layers:
        dense[layer] = vecs[layer] if uniform else vecs[layer] * coefs[layer]
    kept = tuple(layer for layer in layers if bool(dense[layer].any()))
    if not kept:
        raise VectorFileError(
            f"{path}: every steering vector (times its coefficient) is zero; the file steers nothing"
        )
    if len(kept) < len(layers):
        notes.append(
            f"layers {sorted(set(layers) - set(kept))} add nothing (zero vector or coefficient) and were dropped"
        )
    lengths = dense[list(kept)].norm(dim=-1)
    if not torch.allclose(lengths, torch.ones_like(lengths), atol=1e-4):
        notes.append(
            f"vectors kept at the file's lengths (L2 norm {float(lengths.min()):.4g}..{float(lengths.max()):.4g}), "
            "so norm 'unit' is a label, not a fact; .unit() makes it one"
        )
    extra: dict[str, Any] = {
        "imported_from": "lm-eval steered (.pt)",
        "source": str(path),
        "lam": lam,
        "folded": not uniform,
        "coefficients": {str(layer): coefs[layer] for layer in layers},
        "layer_convention": "lm-eval hook point layers.L (output of model.layers[L]) = xsteer layer L",
    }
    if notes:
        extra["notes"] = notes
    name = model_id or (target.model_id if target is not None and target.model_id else None) or path.stem
    return SteeringVectors(
        vectors=dense, model_id=name, method="lm-eval", layers=kept, position="unknown", extra=extra
    )


def _entry(vector: Float[Tensor, " d_model"], lam: float) -> dict[str, Any]:
    # [1, d] as lm-eval's README writes it; a fresh contiguous copy so torch.save stores d floats, not a view
    # of the whole [n_layers, d_model] tensor.
    return {
        "steering_vector": vector.detach().to(torch.float32).reshape(1, -1).clone(),
        "steering_coefficient": lam,
        "action": "add",
        "bias": None,
        "head_index": None,
    }


def _read(path: Path) -> Any:
    if not path.is_file():
        raise VectorFileError(f"no lm-eval steering file at {path}")
    # A steering file is tensors, numbers and strings; nothing in it may run code.
    return load_torch(path, what="an lm-eval steering file", error=VectorFileError)


def _parse(path: Path, config: Any) -> tuple[tuple[int, ...], dict[int, Tensor], dict[int, float]]:
    if not isinstance(config, dict):
        raise VectorFileError(
            f"{path} holds a {type(config).__name__}, not lm-eval's dict of hook point -> entry"
        )
    if not config:
        raise VectorFileError(f"{path} holds no steering entries")
    vecs: dict[int, Tensor] = {}
    coefs: dict[int, float] = {}
    for key, entry in config.items():
        where = f"{path}: entry {key!r}"
        m = _HOOKPOINT.fullmatch(key) if isinstance(key, str) else None
        if m is None:
            raise VectorFileError(
                f"{where} is not a block output: xsteer reads only lm-eval hook points 'layers.N' (the output of "
                "model.layers[N], = blocks.N.hook_resid_post); sub-modules, attention heads and other names have "
                "no xsteer counterpart"
            )
        if not isinstance(entry, dict):
            raise VectorFileError(
                f"{where} is a {type(entry).__name__}, not a dict with 'steering_vector' and 'action'"
            )
        action = entry.get("action")
        if action != "add":
            raise VectorFileError(
                f"{where} has action {action!r}; xsteer can only read 'add' entries (it adds vectors; "
                "lm-eval's 'clamp' sets a projection, which is another intervention)"
            )
        for field in ("bias", "head_index"):
            if entry.get(field) is not None:
                raise VectorFileError(
                    f"{where} sets {field!r}, which an 'add' entry at a block output cannot use"
                )
        layer = int(m.group(1))
        if layer in vecs:
            raise VectorFileError(f"{where} repeats layer {layer}")
        vecs[layer] = _vector(where, entry.get("steering_vector"))
        coef = entry.get("steering_coefficient", 1.0)  # lm-eval's default
        if isinstance(coef, Tensor) and coef.numel() == 1:
            coef = coef.item()
        if isinstance(coef, bool) or not isinstance(coef, (int, float)) or not math.isfinite(coef):
            raise VectorFileError(f"{where} has steering_coefficient {coef!r}, not a finite number")
        coefs[layer] = float(coef)
    return tuple(sorted(vecs)), vecs, coefs


def _vector(where: str, v: Any) -> Float[Tensor, " d_model"]:
    if not isinstance(v, Tensor):
        raise VectorFileError(f"{where} has no 'steering_vector' tensor (got {type(v).__name__})")
    if not v.is_floating_point():
        raise VectorFileError(f"{where}: steering_vector has dtype {v.dtype}, not a float type")
    if not (v.ndim == 1 or (v.ndim == 2 and v.shape[0] == 1)) or v.numel() == 0:
        raise VectorFileError(
            f"{where}: steering_vector has shape {tuple(v.shape)}; expected [d_model] or [1, d_model]"
        )
    v = v.reshape(-1).to(torch.float32)
    if not torch.isfinite(v).all():
        raise VectorFileError(f"{where}: steering_vector holds NaN or infinite values")
    return v


__all__ = ["SUFFIXES", "export_lmeval", "hookpoint", "load_lmeval"]
