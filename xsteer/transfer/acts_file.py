"""The paired-activation file, ``NAME.acts.pt``: a parent's and a child's residual activations on the same
texts, ``[layer, text, d_model]`` each, as :func:`~xsteer.transfer.maps.paired_activations` returns them.

``xsteer similarity --models`` writes one and ``--acts`` reads it back (CKA without running the models
again); analysis/transfer_fit.py caches its activations in one. The file is a torch archive of the tuple
``(parent, child)``, read with ``weights_only=True`` only: an activation file from elsewhere cannot run code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jaxtyping import Float
from torch import Tensor

from xsteer.core.io import load_torch, save_torch, slug
from xsteer.errors import InputError

SUFFIX = ".acts.pt"


def is_paired(obj: Any) -> bool:
    """Whether a loaded object is a (parent, child) pair of ``[layer, text, d]`` tensors."""
    return isinstance(obj, (tuple, list)) and len(obj) == 2 and all(getattr(t, "ndim", 0) == 3 for t in obj)


def paired_file(folder: str | Path, parent_id: str, child_id: str) -> Path:
    """Where the activations of ``parent_id`` and ``child_id`` go in ``folder``."""
    return Path(folder) / f"{slug(f'{parent_id}_to_{child_id}')}{SUFFIX}"


def paired_name(path: str | Path) -> str:
    """The name a file's pair goes by in tables and figures: its file name without ``.acts.pt``."""
    return Path(path).name.removesuffix(SUFFIX)


def save_paired(
    parent: Float[Tensor, "parent_layer text d_parent"],
    child: Float[Tensor, "child_layer text d_child"],
    path: str | Path,
) -> Path:
    return save_torch((parent.cpu(), child.cpu()), path)


def load_paired(
    path: str | Path,
) -> tuple[Float[Tensor, "parent_layer text d_parent"], Float[Tensor, "child_layer text d_child"]]:
    """The (parent, child) activations in ``path``; anything else is one :class:`InputError` naming it."""
    try:
        pair = load_torch(path, what="a (parent, child) pair of activation tensors")
    except InputError as e:  # a pickle, a truncated file, ...: one line, not a traceback
        why = str(e).removeprefix(f"{path} is not a readable torch file")
        raise InputError(f"{path} is not a readable activation file{why}") from None
    if not is_paired(pair):
        raise InputError(f"{path} does not hold a (parent, child) pair of [layer, n, d] activation tensors")
    parent, child = pair
    return parent, child


__all__ = ["SUFFIX", "is_paired", "load_paired", "paired_file", "paired_name", "save_paired"]
