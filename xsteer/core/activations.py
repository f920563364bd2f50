"""Read the residual stream at the last real token of each text, layer by layer, without full caches.

Texts are tokenized with left padding, so position -1 is every row's last real token. Only that position is
copied out of each hook, and the forward pass is cut short after the deepest layer read (so the unembedding,
2 GB of logits for Gemma's vocabulary, never runs). Extraction (pairs), transfer maps (shared texts) and
similarity (CKA) all read activations this way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from xsteer.core.models import blocks_from, encode, native_attention
from xsteer.core.progress import Progress
from xsteer.core.types import HookedModel
from xsteer.errors import InputError


class _StopForward(Exception):
    """Raised by the last capture hook: nothing after that layer is needed."""


def last_token_resid(
    model: HookedModel,
    texts: Sequence[str],
    *,
    layers: Sequence[int] | None = None,
    batch_size: int = 16,
    max_tokens: int = 1024,
    hook: str = "hook_resid_post",
    progress: bool = False,
) -> Float[Tensor, "n layer d_model"]:
    """The residual stream at the last real token of each text, for each requested layer.

    Texts are tokenized with left padding, so position -1 is every row's last real token. Only that
    position is copied out of each hook; the forward pass is cut short after the deepest layer read.
    A pass holds at most ``batch_size`` texts and ``max_tokens`` padded tokens (a longer text goes alone).
    """
    if not texts:
        raise InputError("no texts to read activations from")
    n_layers, d_model = model.cfg.n_layers, model.cfg.d_model
    layers = list(range(n_layers)) if layers is None else sorted(set(layers))
    if not layers or layers[0] < 0 or layers[-1] >= n_layers:
        raise InputError(f"layers must lie in 0..{n_layers - 1}, got {layers}")
    tok = model.tokenizer
    if tok.padding_side != "left":
        raise InputError(
            "last_token_resid needs a left-padding tokenizer (xsteer.core.models.prepare_tokenizer)"
        )
    device = next(model.parameters()).device
    out = torch.empty(len(texts), len(layers), d_model, dtype=torch.float32)
    last = layers[-1]
    if batch_size < 1 or max_tokens < 1:
        raise InputError(f"batch_size and max_tokens must be at least 1, got {batch_size} and {max_tokens}")
    bar = Progress(len(texts), "activations", unit="texts", enabled=progress)
    # Batches of texts of like length, longest first: a batch is padded to its longest text, so mixed lengths
    # waste most of a pass on padding (half of it on the generic fit texts); the rows go back in input order.
    lengths = encode(tok, list(texts)).attention_mask.sum(dim=1)
    order = sorted(range(len(texts)), key=lambda i: (-int(lengths[i]), i))
    for rows in _token_batches([int(lengths[i]) for i in order], order, batch_size, max_tokens):
        chunk = [texts[i] for i in rows.tolist()]
        enc = encode(tok, chunk)
        n_ctx = getattr(model.cfg, "n_ctx", None)
        if n_ctx and enc.input_ids.shape[1] > n_ctx:
            longest = int(enc.attention_mask.sum(dim=1).argmax())
            raise InputError(
                f"text {int(rows[longest])} is {enc.input_ids.shape[1]} tokens, longer than the model's "
                f"context of {n_ctx}: {chunk[longest][:60]!r}..."
            )

        def capture(resid: Tensor, hook: Any, j: int, layer: int, rows: Tensor = rows) -> Tensor:
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
        bar.update(len(chunk))
    bar.close()
    return out


def _token_batches(
    lengths: Sequence[int], order: Sequence[int], batch_size: int, max_tokens: int
) -> Iterator[Tensor]:
    """Rows of ``order`` (longest first, ``lengths`` in that order) in passes of at most ``batch_size`` rows
    and ``max_tokens`` padded tokens (one row at least). Past ~1k tokens a pass's activations outgrow the CPU's
    caches and each token costs more: SmolLM2-135M reads the 128 generic fit texts (~65 tokens) in 20 s at
    1,024 tokens a pass and 37 s at 64 rows (2 cores; analysis/results/bench_padding_smollm2.txt)."""
    start = 0
    while start < len(order):
        size = max(1, min(batch_size, max_tokens // max(lengths[start], 1)))
        yield torch.tensor(list(order[start : start + size]))
        start += size


def resid_norms(acts: Float[Tensor, "n layer d_model"]) -> Float[Tensor, " layer"]:
    """Mean ‖h_l‖ over texts per layer (text-major, as :func:`last_token_resid` returns them).

    The one definition of what λ means under the ``resid_mean`` convention: a transfer map stores this for its
    child, and an evaluation's norm source is this on the child's texts, so both must compute it alike.
    """
    return acts.norm(dim=-1).mean(dim=0).float()


@torch.inference_mode()
def next_token_logprobs(
    model: HookedModel,
    texts: Sequence[str],
    token_ids: Sequence[int],
    *,
    vectors: Any = None,
    lam: Sequence[float] | None = None,
    layers: Sequence[int] | None = None,
    batch_size: int = 32,
    which: Sequence[int] | None = None,
) -> Float[Tensor, "n token"]:
    """log p(token | text) for each text and each of ``token_ids``, at the position after the text's last token.

    With ``vectors`` (a :class:`SteeringVectors`), row ``i`` is steered by ``lam[i]`` at every position
    (prompt included), so a whole dose-response — texts × λ — is one batched pass. With ``vectors`` a stack
    ``[m, layer, d_model]`` and ``which`` one index into it per text, row ``i`` is steered by
    ``lam[i] · vectors[which[i]]`` at ``layers``: many vectors × λ × texts in one pass. Only the requested
    columns of the vocabulary leave the forward pass (Gemma's vocabulary is 262k wide). The blocks below the
    first steered layer run once per distinct text of a batch (:func:`shared_lower_blocks`); the values agree
    with running every row through them to float rounding.
    """
    from xsteer.core.inject import resolve_layers, steer, steer_rows

    stack = isinstance(vectors, Tensor)
    if stack and (which is None or len(which) != len(texts) or layers is None):
        raise InputError("a stack of per-row vectors needs `which` (one index per text) and `layers`")

    if not texts:
        raise InputError("no texts to read next-token log-probabilities from")
    if vectors is not None and (lam is None or len(lam) != len(texts)):
        raise InputError("steered readouts need one λ per text")
    if batch_size < 1:
        raise InputError(f"batch_size must be at least 1, got {batch_size}")
    ids = torch.tensor(list(token_ids), dtype=torch.long)
    device = next(model.parameters()).device
    out = torch.empty(len(texts), len(ids), dtype=torch.float32)
    # Blocks below the first steered layer see no steering: rows of one text share them (a dose-response or a
    # fidelity cell reads each probe under hundreds of vectors × λ), so they run once per distinct text.
    first = 0
    if vectors is not None:
        first = min(layers) if stack else min(resolve_layers(vectors, layers))  # type: ignore[arg-type]
    with native_attention(model):
        for start in range(0, len(texts), batch_size):
            chunk = list(texts[start : start + batch_size])
            enc = encode(model.tokenizer, chunk)
            input_ids, mask = enc.input_ids.to(device), enc.attention_mask.to(device)
            rows_lam = None if lam is None else list(lam[start : start + len(chunk)])
            if vectors is None:
                manager: Any = nullcontext()
            elif stack:
                index = torch.as_tensor(list(which[start : start + len(chunk)]))  # type: ignore[index]
                manager = steer_rows(model, vectors[index], lam=rows_lam, layers=layers)  # type: ignore[arg-type]
            else:
                manager = steer(model, vectors, lam=rows_lam, layers=layers)  # type: ignore[arg-type]
            with shared_lower_blocks(model, input_ids, mask, first), manager:
                logits = model(input_ids, attention_mask=mask, logits_to_keep=1)
            lp = torch.log_softmax(logits[:, -1, :].float(), dim=-1)
            out[start : start + len(chunk)] = lp[:, ids.to(lp.device)].cpu()
    return out


def shared_lower_blocks(model: HookedModel, input_ids: Tensor, mask: Tensor, first: int) -> Any:
    """A context in which a forward of these rows runs blocks ``0 .. first-1`` once per distinct row only
    (:func:`xsteer.core.models.blocks_from`): where every steered layer is ``first`` or above, rows that share
    a text share those blocks (equal to float rounding). Nothing changes when ``first`` is 0 or no row repeats."""
    shared = _entering(model, input_ids, mask, first) if first > 0 else None
    return nullcontext() if shared is None else blocks_from(model, first, shared)


def _entering(
    model: HookedModel, input_ids: Tensor, mask: Tensor, first: int
) -> Float[Tensor, "batch pos d_model"] | None:
    """The residual entering block ``first`` for every row, computed once per distinct (tokens, mask) row;
    None when no row repeats (nothing to share)."""
    key = torch.cat([input_ids, mask.to(input_ids.dtype)], dim=1)
    distinct, inverse = torch.unique(key, dim=0, return_inverse=True)
    if distinct.shape[0] == key.shape[0]:
        return None
    n = input_ids.shape[1]
    resid = residual_entering(
        model, first, lambda: model(distinct[:, :n], attention_mask=distinct[:, n:].to(mask.dtype))
    )
    return resid[inverse]


def residual_entering(
    model: HookedModel, first: int, forward: Callable[[], Any]
) -> Float[Tensor, "batch pos d_model"]:
    """The residual entering block ``first`` in the forward that ``forward()`` runs, which stops there (the
    blocks from ``first`` on never run)."""
    got: dict[str, Tensor] = {}

    def grab(resid: Tensor, hook: Any) -> Tensor:
        got["resid"] = resid
        raise _StopForward

    try:
        with model.hooks(fwd_hooks=[(f"blocks.{first - 1}.hook_resid_post", grab)]):
            forward()
    except _StopForward:
        pass
    return got["resid"]
