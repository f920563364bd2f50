"""Batched, left-padded, KV-cached generation with optional per-row steering.

One call can cover a whole λ grid: give the same prompt once per λ and a per-row λ tensor.

* Rows leave the batch as soon as they finish (EOS or a stop string), so they stop costing compute.
* ``positions="generated"`` steers only the positions that produce new tokens: the last prompt token and
  every generated token. The rest of the prompt is then unsteered and identical across λ, so it is
  prefilled once per *distinct* prompt and its KV cache is shared by all rows of that prompt (the same
  holds for unsteered rows, e.g. several samples of one prompt).
  (``"all"``, the RepE/repeng convention, also steers the prompt, so every row pays its own prefill.)
* Greedy by default; ``temperature > 0`` samples with one seeded generator per row, so a row's sample
  does not depend on which other rows share its batch (resumed runs reproduce the same samples).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor
from tqdm.auto import tqdm

from xsteer.core.inject import Lambda, steer
from xsteer.core.models import encode, eos_ids, has_sliding_window, native_attention
from xsteer.core.vectors import SteeringVectors

Positions = Literal["all", "generated"]


@dataclass(frozen=True)
class Steering:
    """What to add while generating: vectors, λ (scalar or one per prompt), layers, and where."""

    vectors: SteeringVectors
    lam: Lambda = 1.0
    layers: Sequence[int] | None = None
    positions: Positions = "all"


@dataclass(frozen=True)
class Generation:
    text: str  # the completion, cut before the first stop string
    n_tokens: int
    finish: Literal["eos", "stop", "length"]


def _cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    cut = min((i for s in stop if (i := text.find(s)) >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def lambda_rows(lam: Lambda, n: int) -> Tensor:
    """λ as one value per row: a scalar is broadcast; a sequence must have exactly ``n`` values."""
    t = torch.as_tensor(lam, dtype=torch.float32)
    if t.ndim == 0:
        return t.expand(n).clone()
    if t.shape != (n,):
        raise ValueError(f"per-row λ must have one value per prompt ({n}), got shape {tuple(t.shape)}")
    return t


def generate(
    model: Any,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 256,
    stop: Sequence[str] = (),
    steering: Steering | None = None,
    temperature: float = 0.0,
    seeds: Sequence[int] | None = None,
    batch_size: int = 32,
    progress: bool = False,
    attention: Literal["native", "bridge"] = "native",
) -> list[Generation]:
    """Generate a completion for each prompt (already rendered through the chat template).

    Prompts are processed in batches of ``batch_size`` rows, longest first, and returned in input order.
    ``attention="native"`` runs the model's own SDPA attention (2x faster on a CPU; residual hooks still
    fire, attention-internal hooks do not); ``"bridge"`` keeps TransformerLens's hookable attention.
    """
    n = len(prompts)
    if n == 0:
        return []
    if max_new_tokens < 1:
        raise ValueError("max_new_tokens must be at least 1")
    lam = lambda_rows(steering.lam, n) if steering is not None else None
    seeds = list(seeds) if seeds is not None else list(range(n))
    tok = model.tokenizer
    lengths = [len(tok(p).input_ids) for p in prompts]
    order = sorted(range(n), key=lambda i: -lengths[i])
    results: list[Generation | None] = [None] * n
    bar = tqdm(total=n, desc="generate", disable=not progress, leave=False)
    with native_attention(model) if attention == "native" else nullcontext():
        _run_batches(model, prompts, order, results, bar, batch_size=batch_size, max_new_tokens=max_new_tokens,
                     stop=stop, steering=steering, lam=lam, temperature=temperature, seeds=seeds)
    bar.close()
    return results  # type: ignore[return-value]


def _run_batches(model: Any, prompts: Sequence[str], order: list[int], results: list, bar: Any, *, batch_size: int,
                 lam: Tensor | None, seeds: list[int], **kw: Any) -> None:
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        outs = _generate_batch(model, [prompts[i] for i in idx], lam=lam[idx] if lam is not None else None,
                               seeds=[seeds[i] for i in idx], **kw)
        for i, out in zip(idx, outs, strict=True):
            results[i] = out
        bar.update(len(idx))


MIN_SHARED_PREFIX = 16  # tokens; below this a separate prefix pass costs more than it saves


def shared_prefix_len(seqs: Sequence[Tensor]) -> int:
    """Length of the token prefix every sequence starts with, leaving each at least one token of its own."""
    if len(seqs) < 2:
        return 0
    n = min(len(s) for s in seqs) - 1
    if n <= 0:
        return 0
    first = seqs[0][:n]
    same = torch.stack([s[:n] == first for s in seqs[1:]]).all(dim=0)
    differ = (~same).nonzero()
    return int(differ[0]) if len(differ) else n


def _prefill(model: Any, seqs: list[Tensor], device: Any, *, lam: Tensor | None = None, handle: Any = None) -> tuple:
    """Run ``seqs`` (unpadded token ids) through the model, filling a KV cache; returns (cache, mask, last
    position per row, last logits), or Nones when every sequence is empty.

    Few-shot prompts share a long prefix (system prompt and exemplars: ~650 of ~750 tokens on GSM8K).
    It is computed once per distinct λ (once in all when the prompt is unsteered) and its cache copied to
    the rows; only each row's own suffix is then prefilled. The suffixes are left-padded *after* the
    prefix, so positions are passed explicitly (pads take no position) and the result equals an
    unpadded forward per row. Sliding-window models (Gemma 3) skip it: their window counts cache slots, and
    pads between prefix and suffix would shift it.
    """
    n = len(seqs)
    if all(len(s) == 0 for s in seqs):
        return None, None, None, None
    p = shared_prefix_len(seqs)
    if p < MIN_SHARED_PREFIX or has_sliding_window(model):
        p = 0
    past = None
    if p:
        steered = handle is not None and handle.active and lam is not None
        keys = lam.tolist() if steered else [0.0] * n
        groups = list(dict.fromkeys(keys))
        if steered:
            handle.set_lambda(torch.tensor(groups))
        prefix = seqs[0][:p].to(device).expand(len(groups), p)
        _, past = model(prefix, use_cache=True, return_type="logits_and_cache", logits_to_keep=1)
        past.batch_select_indices(torch.tensor([groups.index(k) for k in keys], device=device))
        if steered:
            handle.set_lambda(lam)
    suffix = [s[p:] for s in seqs]
    width = max(len(s) for s in suffix)
    ids = torch.full((n, width), 0, dtype=torch.long)
    own = torch.zeros(n, width, dtype=torch.long)
    for i, s in enumerate(suffix):
        if len(s):
            ids[i, width - len(s):] = s
            own[i, width - len(s):] = 1
    ids, own = ids.to(device), own.to(device)
    mask = torch.cat([own.new_ones(n, p), own], dim=1)
    positions = (p + own.cumsum(dim=1) - 1).clamp_min(0)
    logits, past = model(ids, attention_mask=mask, past_key_values=past, position_ids=positions, use_cache=True,
                         return_type="logits_and_cache", logits_to_keep=1)
    return past, mask, positions[:, -1], logits


@torch.inference_mode()
def _generate_batch(
    model: Any,
    prompts: list[str],
    *,
    max_new_tokens: int,
    stop: Sequence[str],
    steering: Steering | None,
    lam: Tensor | None,
    temperature: float,
    seeds: list[int],
) -> list[Generation]:
    tok = model.tokenizer
    device = next(model.parameters()).device
    eos = eos_ids(model)
    b = len(prompts)
    # Unsteered prompts, and prompts steered only from their last token on, are identical across the
    # rows that repeat them (λ grid, samples), so their prefill is computed once and shared.
    share_prefill = steering is None or steering.positions == "generated"
    units = list(dict.fromkeys(prompts)) if share_prefill else prompts  # what the prompt prefill runs over
    enc = encode(tok, units)
    seqs = [row[m.bool()] for row, m in zip(enc.input_ids, enc.attention_mask, strict=True)]
    slot = {p: i for i, p in enumerate(units)}
    row_of = torch.tensor([slot[p] for p in prompts], device=device)

    ctx = steer(model, steering.vectors, lam=lam, layers=steering.layers) if steering is not None else nullcontext()
    with ctx as handle:
        if share_prefill:
            if handle is not None:
                handle.active = False
            past, mask, _, _ = _prefill(model, [s[:-1] for s in seqs], device)
            if handle is not None:
                handle.active = True
            if past is not None:
                past.batch_select_indices(row_of)
                mask = mask[row_of]
            last = torch.stack([s[-1] for s in seqs]).to(device)[row_of]
            pos = torch.tensor([len(s) - 1 for s in seqs], device=device)[row_of]
            mask = torch.cat([mask, mask.new_ones(b, 1)], dim=1) if mask is not None else torch.ones(b, 1, dtype=torch.long, device=device)
            logits, past = model(last[:, None], attention_mask=mask, past_key_values=past, position_ids=pos[:, None],
                                 use_cache=True, return_type="logits_and_cache")
        else:
            past, mask, pos, logits = _prefill(model, seqs, device, lam=lam, handle=handle)
        gens = [torch.Generator(device="cpu").manual_seed(int(s)) for s in seeds] if temperature > 0 else None
        alive = list(range(b))  # original row index of each batch row still generating
        tokens: list[list[int]] = [[] for _ in range(b)]
        finish: list[str] = ["length"] * b
        texts: list[str] = [""] * b
        for step in range(max_new_tokens):
            last = logits[:, -1, :].float()
            if temperature > 0:
                # Gumbel-max with each row's own generator: the draw is independent of the batch.
                noise = torch.stack([torch.rand(last.shape[-1], generator=gens[r]) for r in alive]).to(last.device)
                nxt = (last / temperature - torch.log(-torch.log(noise.clamp_min(1e-20)))).argmax(-1)
            else:
                nxt = last.argmax(-1)
            keep = []
            for j, (r, t) in enumerate(zip(alive, nxt.tolist(), strict=True)):  # one device sync per step
                if t in eos:
                    finish[r] = "eos"
                    continue
                tokens[r].append(t)
                if stop:
                    texts[r], hit = _cut_at_stop(tok.decode(tokens[r], skip_special_tokens=True), stop)
                    if hit:
                        finish[r] = "stop"
                        continue
                keep.append(j)
            if not keep or step == max_new_tokens - 1:
                break
            if len(keep) < len(alive):
                sel = torch.tensor(keep, device=device)
                past.batch_select_indices(sel)
                mask, nxt, pos = mask[sel], nxt[sel], pos[sel]
                if handle is not None:
                    handle.select_rows(sel)
                alive = [alive[j] for j in keep]
            mask = torch.cat([mask, mask.new_ones(len(alive), 1)], dim=1)
            pos = pos + 1
            logits, past = model(nxt[:, None], attention_mask=mask, past_key_values=past, position_ids=pos[:, None],
                                 return_type="logits_and_cache")
    out = []
    for r in range(b):
        text = texts[r] if stop and finish[r] == "stop" else tok.decode(tokens[r], skip_special_tokens=True)
        out.append(Generation(text=text, n_tokens=len(tokens[r]), finish=finish[r]))  # type: ignore[arg-type]
    return out
