"""What a model is, read without loading its weights: the target a vector file is checked against.

:func:`model_shape` answers "how deep, how wide, which architecture" for a spec, an id or a loaded model
(zoo table, ``config.json``, GGUF metadata), so vector files from other tools can be checked against their
target before anything slow happens; :func:`infer_model_hint` names a model's llama.cpp architecture. The GGUF
and lm-eval readers both check through here, which is why it is a module of its own rather than part of either.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xsteer.errors import InputError, ModelSpecError, VectorFileError

# Model family (as it appears in a model id or an HF architecture name) -> llama.cpp architecture name.
# Looked up in order on the id lower-cased with separators removed ("Qwen2.5-Coder" -> "qwen25coder"), so
# more specific families come before the ones they contain (gemma3n before gemma3, llama4 before llama).
LLAMACPP_ARCH: dict[str, str] = {
    "gemma3n": "gemma3n",
    "gemma3": "gemma3",
    "gemma2": "gemma2",
    "qwen3moe": "qwen3moe",
    "qwen3": "qwen3",
    "qwen2moe": "qwen2moe",
    "qwen2": "qwen2",
    "phi3": "phi3",
    "smollm": "llama",  # SmolLM is LlamaForCausalLM
    "mistral": "llama",  # llama.cpp converts MistralForCausalLM to the llama architecture
    "llama4": "llama4",
    "llama": "llama",
}


def infer_model_hint(model: str) -> str:
    """The llama.cpp architecture name for a model id or HF architecture name; InputError (a ValueError) if unknown."""
    key = re.sub(r"[^a-z0-9]", "", model.lower())
    for family, hint in LLAMACPP_ARCH.items():
        if family in key:
            return hint
    raise InputError(
        f"cannot tell the llama.cpp architecture of model {model!r} (known families: {', '.join(LLAMACPP_ARCH)}); "
        "pass model_hint= (the model GGUF's general.architecture, e.g. 'llama', 'gemma3', 'qwen2')"
    )


def field_value(field: Any) -> Any:
    """A scalar GGUF key's value (str, int or float); None for arrays, which control vectors do not use."""
    from gguf import GGUFValueType

    if not field.types or field.types[0] == GGUFValueType.ARRAY:
        return None
    part = field.parts[field.data[0]]
    if field.types[0] == GGUFValueType.STRING:
        return bytes(part).decode("utf-8")
    return part.tolist()[0]


@dataclass(frozen=True)
class ModelShape:
    """What a vector file is checked against: a model's name, depth, width and architecture (None = unknown)."""

    model_id: str
    n_layers: int | None = None
    d_model: int | None = None
    architecture: str | None = None  # HF architecture, GGUF general.architecture or model_type

    @property
    def family(self) -> str | None:
        """The llama.cpp architecture name of the target, when it can be told (see ``infer_model_hint``)."""
        return _family(self.architecture) or _family(self.model_id)


def model_shape(model: Any) -> ModelShape:
    """The shape of a loaded model, or of a spec/id read without loading weights.

    A zoo name reads the zoo table, a ``.gguf`` path its metadata, a local HF directory its ``config.json``;
    any other string (a hub id, a bare name) is only a name: nothing is downloaded.
    """
    if not isinstance(model, (str, os.PathLike)):
        return _loaded_shape(model)
    from xsteer.core.models import ZOO

    spec = str(model)
    if spec in ZOO:
        e = ZOO[spec]
        return ModelShape(spec, e.n_layers, e.d_model, e.architecture)
    path = Path(spec).expanduser()
    if path.is_file():
        return _gguf_shape(path)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelSpecError(f"{spec!r} is a directory without config.json")
        return _config_shape(json.loads((path / "config.json").read_text(encoding="utf-8")), path.name)
    if spec.endswith(".gguf"):
        raise ModelSpecError(f"no GGUF file at {spec!r}")
    return ModelShape(spec)


def resolve_target(
    model: Any = None, *, model_id: str | None = None, n_layers: int | None = None, d_model: int | None = None
) -> ModelShape | None:
    """One target from a model (spec, id or loaded) and/or explicit numbers; None when nothing was given."""
    if model is None and model_id is None and n_layers is None and d_model is None:
        return None
    base = model_shape(model) if model is not None else ModelShape(model_id or "")
    for name, given, known in (("n_layers", n_layers, base.n_layers), ("d_model", d_model, base.d_model)):
        if given is not None and (isinstance(given, bool) or not isinstance(given, int) or given < 1):
            raise InputError(f"{name} must be a positive integer, got {given!r}")
        if given is not None and known is not None and given != known:
            raise InputError(f"{name}={given} was given, but model {base.model_id!r} has {name} {known}")
    return ModelShape(
        model_id or base.model_id,
        n_layers if n_layers is not None else base.n_layers,
        d_model if d_model is not None else base.d_model,
        base.architecture,
    )


def check_fits(
    source: str | Path,
    target: ModelShape | None,
    *,
    layers: tuple[int, ...],
    width: int,
    n_layers: int | None = None,
    model_hint: str | None = None,
    what: str = "vectors",
) -> list[str]:
    """Raise a VectorFileError naming both sides if a file's vectors cannot live in ``target``.

    ``n_layers`` is the depth the file says it was made for (if it says), ``model_hint`` its architecture.
    Returns notes on what could not be checked (an architecture neither side's name reveals).
    """
    if target is None:
        return []
    hint = f" (model hint {model_hint!r})" if model_hint else ""
    name = repr(target.model_id) if target.model_id else "the target model"
    if target.d_model is not None and width != target.d_model:
        raise VectorFileError(
            f"{source} holds {what} of width {width}{hint}, but {name} has d_model "
            f"{target.d_model}: the file is for another model"
        )
    if target.n_layers is not None:
        if n_layers is not None and n_layers != target.n_layers:
            raise VectorFileError(
                f"{source} was made for a model of {n_layers} layers{hint}, but {name} has "
                f"{target.n_layers} layers: the file is for another model"
            )
        if layers and layers[-1] >= target.n_layers:
            raise VectorFileError(
                f"{source} steers layer {layers[-1]}{hint}, beyond {name}, which has "
                f"{target.n_layers} layers (0..{target.n_layers - 1})"
            )
    notes = []
    if model_hint:
        theirs, ours = _family(model_hint), target.family
        if theirs and ours and theirs != ours:
            raise VectorFileError(
                f"{source} is for a {model_hint!r} model (llama.cpp architecture {theirs!r}), "
                f"but {name} is a {ours!r} model (architecture {target.architecture!r})"
            )
        if not (theirs and ours):
            notes.append(
                f"model hint {model_hint!r} not checked against {name} (architecture not recognised)"
            )
    return notes


def _family(name: str | None) -> str | None:
    if not name:
        return None
    try:
        return infer_model_hint(name)
    except ValueError:
        return None


def _loaded_shape(model: Any) -> ModelShape:
    from xsteer.core.models import model_id
    from xsteer.core.models.backend import hf_config

    cfg = getattr(model, "cfg", None)
    if cfg is None or not hasattr(cfg, "n_layers") or not hasattr(cfg, "d_model"):
        raise InputError(
            f"expected a model spec, an id or a loaded TransformerLens model, got {type(model).__name__}"
        )
    hf_cfg = hf_config(model)
    arch = None
    if hf_cfg is not None:
        arch = (getattr(hf_cfg, "architectures", None) or [None])[0] or getattr(hf_cfg, "model_type", None)
    return ModelShape(model_id(model), int(cfg.n_layers), int(cfg.d_model), arch)


def _config_shape(cfg: dict[str, Any], name: str) -> ModelShape:
    text = cfg.get("text_config") or cfg  # multimodal configs nest the language model's
    arch = (cfg.get("architectures") or [None])[0] or text.get("model_type")
    n = text.get("num_hidden_layers", text.get("n_layer"))
    d = text.get("hidden_size", text.get("n_embd"))
    return ModelShape(name, int(n) if n is not None else None, int(d) if d is not None else None, arch)


def _gguf_shape(path: Path) -> ModelShape:
    from gguf import GGUFReader

    try:
        reader = GGUFReader(str(path))
    except Exception as e:  # a truncated or foreign file fails deep inside numpy memmaps
        raise ModelSpecError(f"{path} is not a readable GGUF file: {e}") from e

    def field(key: str) -> Any:
        f = reader.fields.get(key)
        return field_value(f) if f is not None else None

    arch = field("general.architecture")
    if not arch or arch == "controlvector":
        raise ModelSpecError(f"{path} is a GGUF {arch!r} file, not a language model")
    n, d = field(f"{arch}.block_count"), field(f"{arch}.embedding_length")
    return ModelShape(
        path.stem, int(n) if n is not None else None, int(d) if d is not None else None, str(arch)
    )


__all__ = [
    "LLAMACPP_ARCH",
    "ModelShape",
    "check_fits",
    "field_value",
    "infer_model_hint",
    "model_shape",
    "resolve_target",
]
