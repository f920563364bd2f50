"""Which weights a file was made with: a fingerprint of a loaded model, recorded in every vector and map file.

A vector is only meaningful in the residual space of the weights it was read from; a model id says which
checkpoint a user *asked* for, not which one loaded (a hub id moves with its revision, a local folder is
overwritten by a fine-tune). Hashing every weight costs seconds to a minute on a CPU (6 GB for a 1.5B model), so
the fingerprint hashes each parameter's name and shape and 4,096 of its values at evenly spaced positions: any
fine-tune, quantization or other checkpoint changes it, while one edited weight could go unseen. The values are
rounded to bfloat16 first, so a model loaded in float32 on a CPU and in bfloat16 on a GPU from the same checkpoint
share a fingerprint.
"""

from __future__ import annotations

import hashlib
import weakref
from typing import Any

import torch

from xsteer.core.models.backend import hf_model_or_none

#: Values hashed per parameter.
SAMPLES = 4096

_CACHE: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


def weights_fingerprint(model: Any) -> str:
    """``wfp1:<32 hex>`` for a loaded model (anything with ``named_parameters``); computed once per model object."""
    try:
        return _CACHE[model]
    except (KeyError, TypeError):
        pass
    params = sorted(model.named_parameters(), key=lambda kv: kv[0])
    if any(p.is_meta for _, p in params):
        return "unavailable: weights on the meta device"  # a model not materialized holds no values to hash
    digest = hashlib.sha256()
    for name, p in params:
        flat = p.detach().reshape(-1)
        n = flat.numel()
        k = min(SAMPLES, n)
        # Integer arithmetic: a float linspace over a 28M-element tensor rounds past its last index.
        idx = torch.arange(k, device=flat.device) * max(n - 1, 0) // max(k - 1, 1)
        values = flat[idx].to(torch.bfloat16).view(torch.int16).cpu().numpy().tobytes()
        digest.update(f"{name}:{tuple(p.shape)}:".encode())
        digest.update(values)
    fp = f"wfp1:{digest.hexdigest()[:32]}"
    try:
        _CACHE[model] = fp
    except TypeError:  # an object that cannot be weakly referenced is fingerprinted on every call
        pass
    return fp


def hub_revision(model: Any) -> str | None:
    """The commit of a hub checkpoint when transformers recorded it (``config._commit_hash``); None otherwise."""
    rev = getattr(getattr(hf_model_or_none(model), "config", None), "_commit_hash", None)
    return rev if isinstance(rev, str) and rev else None
