"""Export steering vectors as llama.cpp control vectors (GGUF), and read such files back.

Why: a vector set is only usable inside xsteer (TransformerLens, float32, Python). llama.cpp runs the same
models quantized, on a CPU, in a server; its ``--control-vector FILE`` / ``--control-vector-scaled FILE λ``
add a per-layer vector to the residual stream, which is the same intervention as :func:`xsteer.core.inject.steer`.
Exporting lets a vector found (or transferred) here be used there without re-extracting it.

The layout, as llama.cpp reads it (``common/common.cpp``, ``common_control_vector_load_one``;
``src/llama-adapter.cpp``, ``llama_adapter_cvec``; the model graphs in ``src/models/*.cpp``):

* ``general.architecture = "controlvector"``, ``controlvector.model_hint`` (the llama.cpp architecture
  name, e.g. ``llama``, ``gemma3``, ``qwen2``) and ``controlvector.layer_count`` (int32, the number of
  direction tensors), as llama.cpp's own ``cvector-generator`` writes them. The loader reads none of these
  keys and ignores unknown ones, so the provenance keys ``xsteer.*`` are safe to add.
* one F32, 1-D tensor ``direction.{il}`` of length ``n_embd`` per steered layer; layers without a tensor
  get nothing added. Every tensor must be named so, be F32 and 1-D, and have the same length, or llama.cpp
  skips the whole file; ``direction.0`` is such an error ("invalid (zero) direction tensor layer index").
* placement: ``direction.{il}`` is added (``build_cvec(cur, il)``, just before ``l_out``) to the output of
  block ``il`` counted from 0 -- the residual stream after the block, i.e. TransformerLens's
  ``blocks.{il}.hook_resid_post``, which is where xsteer adds its vectors. The loader stores direction
  ``il`` at row ``il - 1`` and ``llama_adapter_cvec::apply`` reads row ``il - 1`` back into the tensor of
  block ``il``: the two offsets cancel, so **xsteer layer L is ``direction.L``, with no shift**. Block 0
  has no tensor at all in llama.cpp (its output cannot be steered), so vectors steering layer 0 are refused.
  (llama.cpp's ``cvector-generator`` names the vector it reads from block ``il`` ``direction.{il+1}``, so
  its files act one block later than they were measured; repeng, where the format comes from, uses the same
  index as here.)
* strength: llama.cpp multiplies every direction by λ at load (``--control-vector-scaled FILE λ``; 1.0 for
  ``--control-vector``). The file therefore holds the vectors exactly as stored (times ``scale``, 1 by
  default), and λ means what it means in xsteer relative to the vectors' norm convention (``unit`` or
  ``resid_mean``), recorded as ``xsteer.norm``.

Reading other tools' files (:func:`load_gguf`): repeng's ``ControlVector.export_gguf`` writes the same layout
(``controlvector.model_hint`` = the HF ``model_type``, e.g. ``llama``, ``mistral``, ``qwen2``,
``gemma3_text``; ``controlvector.layer_count`` as uint32; ``direction.{i}`` for ``model.layers[i]``, whose
output it was read from and is added to), and llama.cpp's ``cvector-generator`` writes it with int32
``layer_count`` and llama.cpp architecture names. Either way ``direction.L`` is what gets added to block L's
output, so it becomes xsteer layer L.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from xsteer.core.io import WrittenWrongError, atomic_path
from xsteer.core.vectors import NORMS, SteeringVectors, VectorFileError
from xsteer.errors import InputError
from xsteer.interop.shapes import check_fits, field_value, infer_model_hint, resolve_target

ARCH = "controlvector"
HOOK = "hook_resid_post"  # the only point llama.cpp adds at: the block output


class ControlVectorFile(NamedTuple):
    """A control-vector GGUF file in xsteer's terms."""

    model_hint: str | None  # controlvector.model_hint; None when the file has none (llama.cpp needs none)
    vectors: Float[Tensor, "layer d_model"]  # row L is direction.L (zero where the file has no direction)
    layers: tuple[int, ...]  # the layers the file steers, ascending
    meta: dict[str, Any]  # the xsteer.* provenance keys, without the prefix


def export_gguf(
    vectors: SteeringVectors, path: str | Path, *, model_hint: str | None = None, scale: float = 1.0
) -> Path:
    """Write ``vectors`` as a llama.cpp control-vector GGUF at ``path`` (atomically) and return the path.

    Only the steered layers are written, as float32, each multiplied by ``scale``. λ is given to llama.cpp
    at run time (``--control-vector-scaled FILE λ``), so ``scale`` is for baking one in. ``model_hint`` is
    inferred from ``vectors.model_id`` unless given.
    """
    if vectors.hook != HOOK:
        raise VectorFileError(
            f"vectors for {vectors.model_id!r} are added at {vectors.hook!r}, but llama.cpp adds control vectors "
            f"only to the block output ({HOOK}); extract or transfer them at {HOOK} to export them"
        )
    if 0 in vectors.layers:
        kept = tuple(layer for layer in vectors.layers if layer != 0)
        raise VectorFileError(
            "the vectors steer layer 0, but llama.cpp cannot add a control vector to the output of the first "
            f"block (direction.0 makes it reject the file); export vectors.replace(layers={kept}) instead"
            + ("" if kept else " -- which leaves nothing, so pick other layers")
        )
    check_export_options(scale=scale, model_hint=model_hint)
    hint = model_hint if model_hint is not None else infer_model_hint(vectors.model_id)
    return _write(Path(path), _directions(vectors, scale), hint, _provenance(vectors, scale))


def check_export_options(*, scale: float, model_hint: str | None) -> None:
    """Refuse a ``scale`` or ``model_hint`` that would make a useless file (InputError, a ValueError)."""
    if (
        isinstance(scale, bool)
        or not isinstance(scale, (int, float))
        or not math.isfinite(scale)
        or scale == 0
    ):
        raise InputError(
            f"scale must be a finite, non-zero number, got {scale!r} (a zero scale steers nothing, a NaN or "
            "infinite one breaks the model); leave it at 1 and give λ to llama.cpp"
        )
    if model_hint is not None and not model_hint.strip():
        raise InputError(
            "model_hint must be a llama.cpp architecture name such as 'llama', 'qwen2' or 'gemma3', not empty "
            "(leave it out to infer it from the vectors' model id)"
        )


def read_gguf_control_vector(path: str | Path, n_layers: int | None = None) -> ControlVectorFile:
    """Read a control-vector GGUF, checking it the way llama.cpp's loader does.

    The dense tensor has ``n_layers`` rows, else ``xsteer.n_layers`` rows when the file was written here,
    else one row past the last direction.
    """
    from gguf import GGMLQuantizationType, GGUFReader

    path = Path(path)
    if not path.is_file():
        raise VectorFileError(f"no control-vector file at {path}")
    try:
        reader = GGUFReader(str(path))
    except Exception as e:  # a truncated or foreign file fails deep inside numpy memmaps
        raise VectorFileError(f"{path} is not a readable GGUF file: {e}") from e
    fields = {name: field_value(f) for name, f in reader.fields.items()}
    arch = fields.get("general.architecture")
    if arch != ARCH:
        raise VectorFileError(f"{path} is a GGUF {arch!r} file, not a {ARCH!r} file")

    directions: dict[int, np.ndarray] = {}
    for t in reader.tensors:
        layer = _direction_layer(t.name)
        if layer is None or layer == 0:
            raise VectorFileError(
                f"{path}: tensor {t.name!r} is not direction.N with N >= 1 (llama.cpp rejects it)"
            )
        if t.tensor_type != GGMLQuantizationType.F32 or len(t.shape) != 1:
            raise VectorFileError(
                f"{path}: tensor {t.name!r} is not a 1-D float32 tensor (llama.cpp rejects it)"
            )
        # Copy out of the memmap; llama.cpp sums repeated indices ("direction.01" and "direction.1").
        data = np.array(t.data, dtype=np.float32).reshape(-1)
        directions[layer] = directions[layer] + data if layer in directions else data
    if not directions:
        raise VectorFileError(f"{path} holds no direction tensors")
    widths = {v.shape[0] for v in directions.values()}
    if len(widths) != 1:
        raise VectorFileError(f"{path}: direction tensors of different lengths {sorted(widths)}")

    meta = {k.removeprefix("xsteer."): v for k, v in fields.items() if k.startswith("xsteer.")}
    layers = tuple(sorted(directions))
    rows = n_layers if n_layers is not None else int(meta.get("n_layers", layers[-1] + 1))
    if rows <= layers[-1]:
        raise VectorFileError(f"{path} steers layer {layers[-1]}, beyond a model of {rows} layers")
    dense = torch.zeros(rows, widths.pop())
    for layer, v in directions.items():
        dense[layer] = torch.from_numpy(v)
    return ControlVectorFile(fields.get(f"{ARCH}.model_hint"), dense, layers, meta)


def load_gguf(
    path: str | Path,
    *,
    model_id: str | None = None,
    model: Any = None,
    n_layers: int | None = None,
    d_model: int | None = None,
) -> SteeringVectors:
    """A control-vector GGUF (llama.cpp, repeng, or :func:`export_gguf`) as :class:`SteeringVectors`.

    ``direction.L`` becomes xsteer layer L (both add it to block L's output). The vectors are kept exactly
    as the file holds them, so steering with λ here equals llama.cpp's ``--control-vector-scaled FILE λ``;
    a file written by xsteer with ``scale`` holds the vectors times that scale (recorded in ``extra``).

    Args:
        model_id: the name recorded in the vectors (default: the target model's, else the file's own
            ``xsteer.model_id``, else the file name).
        model: the target model: a loaded model, a model spec (zoo name, ``.gguf``, HF directory; read
            without loading weights) or an id. Gives ``n_layers``/``d_model`` and the architecture that
            ``controlvector.model_hint`` must not contradict.
        n_layers, d_model: the target's depth and width, when no model is given. Without any depth the
            vectors get ``xsteer.n_layers`` rows (xsteer's files) or one row past the last direction.

    Raises:
        VectorFileError: a malformed file, or one whose width, depth or model hint does not fit the target
            (the message names both).
    """
    path = Path(path)
    cv = read_gguf_control_vector(path)
    target = resolve_target(model, model_id=model_id, n_layers=n_layers, d_model=d_model)
    file_n = int(cv.meta["n_layers"]) if isinstance(cv.meta.get("n_layers"), int) else None
    width = int(cv.vectors.shape[1])
    notes = check_fits(
        path,
        target,
        layers=cv.layers,
        width=width,
        n_layers=file_n,
        model_hint=cv.model_hint,
        what="control vectors",
    )
    rows = target.n_layers if target is not None and target.n_layers is not None else int(cv.vectors.shape[0])
    dense = torch.zeros(rows, width)
    dense[: cv.vectors.shape[0]] = cv.vectors
    norms = dense[list(cv.layers)].norm(dim=-1)
    layers = tuple(layer for layer, n in zip(cv.layers, norms.tolist(), strict=True) if n > 0)
    if not layers:
        raise VectorFileError(f"{path}: every direction is zero; the file steers nothing")
    if len(layers) < len(
        cv.layers
    ):  # llama.cpp adds nothing for a zero direction; neither does a dropped layer
        notes.append(f"zero directions dropped: layers {sorted(set(cv.layers) - set(layers))}")

    meta = cv.meta
    ours = "model_id" in meta  # written by export_gguf: its provenance is trusted
    norm = str(meta["norm"]) if meta.get("norm") in NORMS else "unit"
    if not ours or float(meta.get("scale", 1.0)) != 1.0:
        lengths = dense[list(layers)].norm(dim=-1)
        if not torch.allclose(lengths, torch.ones_like(lengths), atol=1e-4):
            notes.append(
                f"vectors kept at the file's lengths (L2 norm {float(lengths.min()):.4g}..{float(lengths.max()):.4g}), "
                f"so norm {norm!r} is a label, not a fact; .unit() makes it one"
            )
    name = (
        model_id
        or (target.model_id if target is not None and target.model_id else None)
        or (str(meta["model_id"]) if ours else path.stem)
    )
    extra: dict[str, Any] = {
        "imported_from": "gguf control vector (llama.cpp / repeng)",
        "source": str(path),
        "model_hint": cv.model_hint,
        "layer_convention": "direction.L is added to block L's output (llama.cpp, repeng) = xsteer layer L",
    }
    if meta:
        extra["file_meta"] = dict(meta)
    if ours and "weights" in meta:  # still warns when applied to other weights
        extra["weights"] = str(meta["weights"])
    if ours and str(meta["model_id"]) != name:
        extra["file_model_id"] = str(meta["model_id"])
    if notes:
        extra["notes"] = notes
    return SteeringVectors(
        vectors=dense,
        model_id=name,
        method=str(meta.get("method", "gguf")) if ours else "gguf",
        layers=layers,
        position=str(meta.get("position", "last_token")) if ours else "unknown",
        norm=norm,
        pairs_hash=str(meta.get("pairs_hash", "")),
        extra=extra,
    )


def _directions(vectors: SteeringVectors, scale: float) -> dict[str, np.ndarray]:
    # Name = xsteer layer index: llama.cpp's direction.L lands on block L's output (module docstring).
    return {
        f"direction.{layer}": (vectors.vectors[layer] * scale).numpy().astype(np.float32)
        for layer in vectors.layers
    }


def _provenance(vectors: SteeringVectors, scale: float) -> dict[str, Any]:
    # GGUF keys hold scalars: every recorded provenance item, none of the unrecorded ones.
    meta: dict[str, Any] = {k: v for k, v in vectors.provenance().items() if v is not None}
    meta.update(n_layers=vectors.n_layers, scale=float(scale))
    return meta


def _write(path: Path, directions: dict[str, np.ndarray], hint: str, meta: dict[str, Any]) -> Path:
    from gguf import GGUFWriter

    def same(tmp: Path) -> None:
        # numpy's tofile, which GGUFWriter uses, can lose a full disk's error: read the file back.
        try:
            back = read_gguf_control_vector(tmp)
            ok = back.model_hint == hint and {f"direction.{layer}" for layer in back.layers} == set(
                directions
            )
            ok = ok and all(
                np.array_equal(back.vectors[int(k.split(".")[1])].numpy(), v) for k, v in directions.items()
            )
        except VectorFileError as e:
            raise WrittenWrongError(tmp, str(e)) from e
        if not ok:
            raise WrittenWrongError(tmp, "its directions differ from those written")

    with atomic_path(path, verify=same) as tmp:
        writer = GGUFWriter(tmp, ARCH)  # sets general.architecture
        try:
            writer.add_string(f"{ARCH}.model_hint", hint)
            writer.add_int32(
                f"{ARCH}.layer_count", len(directions)
            )  # int32, a count of tensors, as llama.cpp writes it
            for key, value in meta.items():
                if isinstance(value, str):
                    writer.add_string(f"xsteer.{key}", value)
                elif isinstance(value, int):
                    writer.add_int32(f"xsteer.{key}", value)
                else:
                    writer.add_float32(f"xsteer.{key}", value)
            for name, v in directions.items():
                writer.add_tensor(name, v)
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_tensors_to_file()
        finally:
            writer.close()
    return path


def _direction_layer(name: str) -> int | None:
    prefix, _, index = name.partition(".")
    return int(index) if prefix == "direction" and index.isascii() and index.isdigit() else None
