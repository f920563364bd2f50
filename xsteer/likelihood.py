"""Log-likelihood of continuations given contexts, optionally steered with one λ per row.

Used for ARC-Challenge in lm-eval's multiple-choice mode (``acc``/``acc_norm``) and as the cheap,
low-variance signal of ablations (mean log-probability of the gold answer).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any

import torch

from xsteer.generate import Steering
from xsteer.inject import steer
from xsteer.models import encode


def continuation_logprobs(
    model: Any,
    contexts: Sequence[str],
    continuations: Sequence[str],
    *,
    steering: Steering | None = None,
    batch_size: int = 32,
) -> list[float]:
    """Sum of log p(continuation tokens | context) for each (context, continuation) row.

    The context and continuation are tokenized separately (as lm-eval does), so the continuation's
    token boundary is exact. Steering, if any, applies at every position (``positions`` is ignored).
    """
    if len(contexts) != len(continuations):
        raise ValueError(f"{len(contexts)} contexts but {len(continuations)} continuations")
    tok = model.tokenizer
    device = next(model.parameters()).device
    lam = None
    if steering is not None:
        lam = torch.as_tensor(steering.lam, dtype=torch.float32)
        lam = lam.expand(len(contexts)).clone() if lam.ndim == 0 else lam
        if lam.shape != (len(contexts),):
            raise ValueError(f"per-row λ must have one value per row ({len(contexts)}), got {tuple(lam.shape)}")
    out: list[float] = []
    for start in range(0, len(contexts), batch_size):
        ctx, cont = contexts[start : start + batch_size], continuations[start : start + batch_size]
        enc = encode(tok, list(ctx))
        rows, n_cont = [], []
        for c_ids, c_mask, text in zip(enc.input_ids, enc.attention_mask, cont, strict=True):
            c_ids = c_ids[c_mask.bool()].tolist()  # drop the left padding
            k_ids = tok(text, add_special_tokens=False).input_ids
            if not k_ids:
                raise ValueError(f"continuation {text!r} has no tokens")
            rows.append(c_ids + k_ids)
            n_cont.append(len(k_ids))
        width = max(map(len, rows))
        ids = torch.full((len(rows), width), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, r in enumerate(rows):
            ids[i, width - len(r) :] = torch.tensor(r)
            mask[i, width - len(r) :] = 1
        keep = max(n_cont) + 1
        ctx_mgr = (
            steer(model, steering.vectors, lam=lam[start : start + len(rows)], layers=steering.layers)
            if steering is not None
            else nullcontext()
        )
        with torch.inference_mode(), ctx_mgr:
            logits = model(ids.to(device), attention_mask=mask.to(device), logits_to_keep=keep)
        logp = torch.log_softmax(logits[:, -keep:-1].float(), dim=-1)  # predictions for the last keep-1 tokens
        targets = ids[:, -(keep - 1) :].to(logp.device)
        tok_lp = logp.gather(-1, targets[..., None])[..., 0]
        for i, k in enumerate(n_cont):
            out.append(float(tok_lp[i, -k:].sum()))
    return out

