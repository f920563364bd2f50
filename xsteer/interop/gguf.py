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
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from xsteer.core.io import atomic_path
from xsteer.core.vectors import SteeringVectors, VectorFileError

ARCH = "controlvector"
HOOK = "hook_resid_post"  # the only point llama.cpp adds at: the block output

# Model family (as it appears in a model id or an HF architecture name) -> llama.cpp architecture name.
# Looked up in order on the id lower-cased with separators removed ("Qwen2.5-Coder" -> "qwen25coder"), so
# more specific families come before the ones they contain (gemma3n before gemma3, llama4 before llama).
LLAMACPP_ARCH: dict[str, str] = {
    "gemma3n": "gemma3n",
    "gemma3": "gemma3",
    "gemma2": "gemma2",
    "qwen3": "qwen3",
    "qwen2": "qwen2",
    "phi3": "phi3",
    "smollm": "llama",  # SmolLM is LlamaForCausalLM
    "mistral": "llama",  # llama.cpp converts MistralForCausalLM to the llama architecture
    "llama4": "llama4",
    "llama": "llama",
}


class ControlVectorFile(NamedTuple):
    """A control-vector GGUF file in xsteer's terms."""

    model_hint: str | None  # controlvector.model_hint; None when the file has none (llama.cpp needs none)
    vectors: Float[Tensor, "layer d_model"]  # row L is direction.L (zero where the file has no direction)
    layers: tuple[int, ...]  # the layers the file steers, ascending
    meta: dict[str, Any]  # the xsteer.* provenance keys, without the prefix


def infer_model_hint(model: str) -> str:
    """The llama.cpp architecture name for a model id or HF architecture name; ValueError if unknown."""
    key = re.sub(r"[^a-z0-9]", "", model.lower())
    for family, hint in LLAMACPP_ARCH.items():
        if family in key:
            return hint
    raise ValueError(
        f"cannot tell the llama.cpp architecture of model {model!r} (known families: {', '.join(LLAMACPP_ARCH)}); "
        "pass model_hint= (the model GGUF's general.architecture, e.g. 'llama', 'gemma3', 'qwen2')"
    )


def export_gguf(vectors: SteeringVectors, path: str | Path, *, model_hint: str | None = None, scale: float = 1.0) -> Path:
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
    if not math.isfinite(scale) or scale == 0:
        raise ValueError(f"scale must be finite and non-zero, got {scale}")
    hint = model_hint if model_hint is not None else infer_model_hint(vectors.model_id)
    if not hint:
        raise ValueError("model_hint must be a non-empty llama.cpp architecture name")
    return _write(Path(path), _directions(vectors, scale), hint, _provenance(vectors, scale))


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
    fields = {name: _field_value(f) for name, f in reader.fields.items()}
    arch = fields.get("general.architecture")
    if arch != ARCH:
        raise VectorFileError(f"{path} is a GGUF {arch!r} file, not a {ARCH!r} file")

    directions: dict[int, np.ndarray] = {}
    for t in reader.tensors:
        layer = _direction_layer(t.name)
        if layer is None or layer == 0:
            raise VectorFileError(f"{path}: tensor {t.name!r} is not direction.N with N >= 1 (llama.cpp rejects it)")
        if t.tensor_type != GGMLQuantizationType.F32 or len(t.shape) != 1:
            raise VectorFileError(f"{path}: tensor {t.name!r} is not a 1-D float32 tensor (llama.cpp rejects it)")
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


def _directions(vectors: SteeringVectors, scale: float) -> dict[str, np.ndarray]:
    # Name = xsteer layer index: llama.cpp's direction.L lands on block L's output (module docstring).
    return {f"direction.{layer}": (vectors.vectors[layer] * scale).numpy().astype(np.float32) for layer in vectors.layers}


def _provenance(vectors: SteeringVectors, scale: float) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "model_id": vectors.model_id,
        "method": vectors.method,
        "norm": vectors.norm,
        "hook": vectors.hook,
        "position": vectors.position,
        "n_layers": vectors.n_layers,
        "scale": float(scale),
    }
    if vectors.pairs_hash:
        meta["pairs_hash"] = vectors.pairs_hash
    return meta


def _write(path: Path, directions: dict[str, np.ndarray], hint: str, meta: dict[str, Any]) -> Path:
    from gguf import GGUFWriter

    with atomic_path(path) as tmp:
        writer = GGUFWriter(tmp, ARCH)  # sets general.architecture
        try:
            writer.add_string(f"{ARCH}.model_hint", hint)
            writer.add_int32(f"{ARCH}.layer_count", len(directions))  # int32, a count of tensors, as llama.cpp writes it
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


def _field_value(field: Any) -> Any:
    """A scalar GGUF key's value (str, int or float); None for arrays, which control vectors do not use."""
    from gguf import GGUFValueType

    if not field.types or field.types[0] == GGUFValueType.ARRAY:
        return None
    part = field.parts[field.data[0]]
    if field.types[0] == GGUFValueType.STRING:
        return bytes(part).decode("utf-8")
    return part.tolist()[0]
