"""Log-likelihood of continuations given contexts, optionally steered with one λ per row.

Used for ARC-Challenge in lm-eval's multiple-choice mode (``acc``/``acc_norm``) and as the cheap,
low-variance signal of ablations (mean log-probability of the gold answer).

Consecutive rows with the same context and λ (the choices of one item) share one prefill of the context:
its KV cache is copied to each continuation, which then costs only its own tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any

import torch
from torch import Tensor

from xsteer.core.generate import Steering, lambda_rows
from xsteer.core.inject import steer
from xsteer.core.models import encode, native_attention
from xsteer.core.progress import Progress
from xsteer.core.types import HookedModel


def _groups(contexts: Sequence[str], lam: Tensor | None) -> list[tuple[int, int]]:
    """[start, end) runs of consecutive rows that share context and λ."""
    out, start = [], 0
    for i in range(1, len(contexts) + 1):
        if i == len(contexts) or contexts[i] != contexts[start] or (lam is not None and lam[i] != lam[start]):
            out.append((start, i))
            start = i
    return out


def continuation_logprobs(
    model: HookedModel,
    contexts: Sequence[str],
    continuations: Sequence[str],
    *,
    steering: Steering | None = None,
    batch_size: int = 32,
    progress: str | None = None,
) -> list[float]:
    """Sum of log p(continuation tokens | context) for each (context, continuation) row.

    The context and continuation are tokenized separately (as lm-eval does), so the continuation's
    token boundary is exact. Steering, if any, applies at every position (``positions`` is ignored).
    ``batch_size`` bounds the continuation rows of one forward pass. ``progress`` names the phase for a
    progress line every 30 s (off when None).
    """
    if len(contexts) != len(continuations):
        raise ValueError(f"{len(contexts)} contexts but {len(continuations)} continuations")
    if not contexts:
        return []
    tok = model.tokenizer
    device = next(model.parameters()).device
    lam = lambda_rows(steering.lam, len(contexts)) if steering is not None else None
    cont_ids = [tok(text, add_special_tokens=False).input_ids for text in continuations]
    for text, ids in zip(continuations, cont_ids, strict=True):
        if not ids:
            raise ValueError(f"continuation {text!r} has no tokens")

    out = [0.0] * len(contexts)
    groups = _groups(contexts, lam)
    batch: list[tuple[int, int]] = []
    bar = Progress(len(contexts), progress or "", unit="rows", enabled=progress is not None)
    # Residual hooks only: the model's own SDPA is exact and faster.
    with native_attention(model), bar:
        for g in [*groups, None]:
            if g is not None and (not batch or sum(e - s for s, e in batch) + (g[1] - g[0]) <= batch_size):
                batch.append(g)
                continue
            _score_groups(model, tok, device, contexts, cont_ids, lam, steering, batch, out)
            bar.update(sum(e - s for s, e in batch))
            batch = [g] if g is not None else []
    return out


@torch.inference_mode()
def _score_groups(
    model: HookedModel,
    tok: Any,
    device: Any,
    contexts: Sequence[str],
    cont_ids: list[list[int]],
    lam: Tensor | None,
    steering: Steering | None,
    groups: list[tuple[int, int]],
    out: list[float],
) -> None:
    enc = encode(tok, [contexts[s] for s, _ in groups])
    ctx_ids, ctx_mask = enc.input_ids.to(device), enc.attention_mask.to(device)
    rows = [r for s, e in groups for r in range(s, e)]
    row_of = torch.tensor([g for g, (s, e) in enumerate(groups) for _ in range(s, e)], device=device)
    width = max(len(cont_ids[r]) for r in rows)
    # Continuations are right-padded after the (left-padded) context; the mask hides the padding.
    ids = torch.full((len(rows), width), tok.pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, : len(cont_ids[r])] = torch.tensor(cont_ids[r])
        mask[i, : len(cont_ids[r])] = 1
    ids, mask = ids.to(device), mask.to(device)

    ctx_lam = lam[[s for s, _ in groups]] if lam is not None else None
    manager = (
        steer(model, steering.vectors, lam=ctx_lam, layers=steering.layers)
        if steering is not None and ctx_lam is not None
        else nullcontext()
    )
    with manager as handle:
        first, past = model(
            ctx_ids, attention_mask=ctx_mask, use_cache=True, return_type="logits_and_cache", logits_to_keep=1
        )
        past.batch_select_indices(row_of)
        if handle is not None and lam is not None:
            handle.set_lambda(lam[rows])
        logits = model(ids, attention_mask=torch.cat([ctx_mask[row_of], mask], dim=1), past_key_values=past)
    # Token j of a continuation is predicted at position j-1; token 0 by the context's last position.
    pred = torch.cat([first[row_of, -1:, :], logits[:, :-1, :]], dim=1).float()
    tok_lp = torch.log_softmax(pred, dim=-1).gather(-1, ids[..., None])[..., 0] * mask
    for i, r in enumerate(rows):
        out[r] = float(tok_lp[i].sum())
