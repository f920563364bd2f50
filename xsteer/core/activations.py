"""Read the residual stream at the last real token of each text, layer by layer, without full caches.

Texts are tokenized with left padding, so position -1 is every row's last real token. Only that position is
copied out of each hook, and the forward pass is cut short after the deepest layer read (so the unembedding,
2 GB of logits for Gemma's vocabulary, never runs). Extraction (pairs), transfer maps (shared texts) and
similarity (CKA) all read activations this way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from xsteer.core.models import encode, native_attention


class _StopForward(Exception):
    """Raised by the last capture hook: nothing after that layer is needed."""


def last_token_resid(
    model: Any,
    texts: Sequence[str],
    *,
    layers: Sequence[int] | None = None,
    batch_size: int = 16,
    hook: str = "hook_resid_post",
    progress: bool = False,
) -> Float[Tensor, "n layer d_model"]:
    """The residual stream at the last real token of each text, for each requested layer.

    Texts are tokenized with left padding, so position -1 is every row's last real token. Only that
    position is copied out of each hook; the forward pass is cut short after the deepest layer read.
    """
    if not texts:
        raise ValueError("no texts to read activations from")
    n_layers, d_model = model.cfg.n_layers, model.cfg.d_model
    layers = list(range(n_layers)) if layers is None else sorted(set(layers))
    if not layers or layers[0] < 0 or layers[-1] >= n_layers:
        raise ValueError(f"layers must lie in 0..{n_layers - 1}, got {layers}")
    tok = model.tokenizer
    if tok.padding_side != "left":
        raise ValueError("last_token_resid needs a left-padding tokenizer (xsteer.core.models.prepare_tokenizer)")
    device = next(model.parameters()).device
    out = torch.empty(len(texts), len(layers), d_model, dtype=torch.float32)
    last = layers[-1]
    for start in tqdm(range(0, len(texts), batch_size), desc="activations", disable=not progress, leave=False):
        chunk = list(texts[start : start + batch_size])
        enc = encode(tok, chunk)
        rows = slice(start, start + len(chunk))

        def capture(resid: Tensor, hook: Any, j: int, layer: int, rows: slice = rows) -> Tensor:
            out[rows, j] = resid[:, -1, :].float().cpu()
            if layer == last:
                raise _StopForward
            return resid

        hooks = [
            (f"blocks.{layer}.{hook}", lambda r, hook, j=j, layer=layer, c=capture: c(r, hook, j, layer))
            for j, layer in enumerate(layers)
        ]
        try:
            # Only residual hooks are read, so the model's own SDPA attention serves (faster, same values).
            with torch.inference_mode(), native_attention(model), model.hooks(fwd_hooks=hooks):
                model(enc.input_ids.to(device), attention_mask=enc.attention_mask.to(device))
        except _StopForward:
            pass
    return out
