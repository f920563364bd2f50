"""Atomic file writes: a crash mid-write leaves the old file or none, never half a file."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from torch import Tensor


def save_safetensors(tensors: dict[str, Tensor], path: str | Path, metadata: dict[str, str]) -> Path:
    """``safetensors.torch.save_file`` through a temp file in the same folder and an atomic rename."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
