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

KV cache (``cache=``):

* ``"static"`` (the default): :class:`xsteer.core.kvcache.SharedKVCache`, preallocated
  for the batch's longest row and written in place. The few-shot prefix every prompt shares is prefilled
  once per distinct λ (once in all when the prompt is unsteered; at ``positions="all"`` its blocks below the
  first steered layer once in all, since λ acts only from there), and at ``positions="generated"`` the
  rest of each distinct prompt once; these blocks are stored once and read once per decode step by all
  the rows that share them, never copied to rows. Rows leave through a live-row index (compacted rarely).
* ``"dynamic"``: transformers' ``DynamicCache`` (concatenated every step, the prefix copied to every row):
  the reference implementation.

Attention always runs the model's own kernels (residual hooks fire, attention-internal hooks do not):
TransformerLens 4.3's hookable bridge attention ignores a passed KV cache, so greedy decoding through it
degenerates ("------" on SmolLM2), and xsteer steers the residual stream only.

Both give the same text, token for token, up to float rounding: decode attention over the static cache is
computed per part (prefix blocks, each row's own tokens) and merged by log-sum-exp, which rounds
differently from one softmax over the concatenation.

GPU path (CPU-tested; no speed has been measured on a GPU):

* bf16 by default on CUDA (``xsteer.core.models.default_dtype``); the cache keeps the model's dtype, scores,
  softmax statistics and the merge are fp32.
* ``batch_size="auto"`` sizes batches from free memory (``torch.cuda.mem_get_info`` on CUDA, available RAM
  on a CPU) and the KV and activation bytes a row needs (:func:`auto_batch_size`).
* ``sync_every`` (default 1 on CPU, 8 on CUDA): the host reads the new tokens and detects finished rows
  every k steps, so the decode loop does not wait for the device after every step; tokens a row made after
  finishing are dropped, so the text is the same as with k = 1.
* ``compile=True`` runs the decode attention (pure tensor code under the residual hooks) through
  ``torch.compile``, falling back to eager with a warning if compiling fails. The whole step is not
  captured as a CUDA graph: TransformerLens dispatches hooks in Python around every block, and rows
  leaving change the batch shape.

Exercised without a GPU: all of the above on CPU (tests run ``sync_every > 1``, ``compile=True`` and
``batch_size="auto"``). Only the CUDA branches of :func:`auto_batch_size` (``mem_get_info``) and of the
``sync_every`` default have not run.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Literal, cast

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from xsteer.core import kvcache
from xsteer.core.activations import residual_entering
from xsteer.core.inject import Lambda, steer
from xsteer.core.kvcache import SharedKVCache
from xsteer.core.models import blocks_from, encode, eos_ids, has_sliding_window, native_attention
from xsteer.core.models.backend import hf_config, kv_layout, register_attention
from xsteer.core.types import HookedModel
from xsteer.core.vectors import SteeringVectors

Positions = Literal["all", "generated"]
CacheKind = Literal["static", "dynamic"]


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
    model: HookedModel,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 256,
    stop: Sequence[str] = (),
    steering: Steering | None = None,
    temperature: float = 0.0,
    seeds: Sequence[int] | None = None,
    batch_size: int | Literal["auto"] = 32,
    progress: bool = False,
    cache: CacheKind | None = None,
    sync_every: int | None = None,
    compile: bool | str = False,
) -> list[Generation]:
    """Generate a completion for each prompt (already rendered through the chat template).

    Prompts are processed in batches of ``batch_size`` rows (``"auto"``: as many as memory holds), longest
    first, and returned in input order. ``cache``, ``sync_every`` and ``compile``: see the module docstring.
    """
    n = len(prompts)
    if n == 0:
        return []
    if max_new_tokens < 1:
        raise ValueError("max_new_tokens must be at least 1")
    if cache is None:
        cache = "static"
    if cache not in ("static", "dynamic"):
        raise ValueError(f"cache must be 'static' or 'dynamic', got {cache!r}")
    device = next(model.parameters()).device
    if sync_every is None:
        sync_every = 8 if device.type == "cuda" else 1
    if sync_every < 1:
        raise ValueError("sync_every must be at least 1")
    lam = lambda_rows(steering.lam, n) if steering is not None else None
    seeds = list(seeds) if seeds is not None else list(range(n))
    tok = model.tokenizer
    lengths = [len(tok(p).input_ids) for p in prompts]
    if batch_size == "auto":
        batch_size = auto_batch_size(model, max(lengths), max_new_tokens, n)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer or 'auto', got {batch_size!r}")
    order = sorted(range(n), key=lambda i: -lengths[i])
    results: list[Generation | None] = [None] * n
    bar = tqdm(total=n, desc="generate", disable=not progress, leave=False)
    run: Any
    if cache == "static":
        register_attention(kvcache.ATTENTION, kvcache.attention)
        kvcache.set_compiled(compile)
        run, extra = _generate_batch_static, {"sync_every": sync_every}
    else:
        run, extra = _generate_batch_dynamic, {}
    impl = kvcache.ATTENTION if cache == "static" else "sdpa"
    with native_attention(model, impl):
        _run_batches(
            model,
            prompts,
            order,
            results,
            bar,
            run,
            batch_size=batch_size,
            max_new_tokens=max_new_tokens,
            stop=stop,
            steering=steering,
            lam=lam,
            temperature=temperature,
            seeds=seeds,
            **extra,
        )
    bar.close()
    return results  # type: ignore[return-value]


def _run_batches(
    model: HookedModel,
    prompts: Sequence[str],
    order: list[int],
    results: list,
    bar: Any,
    run: Any,
    *,
    batch_size: int,
    lam: Tensor | None,
    seeds: list[int],
    **kw: Any,
) -> None:
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        outs = run(
            model,
            [prompts[i] for i in idx],
            lam=lam[idx] if lam is not None else None,
            seeds=[seeds[i] for i in idx],
            **kw,
        )
        for i, out in zip(idx, outs, strict=True):
            results[i] = out
        bar.update(len(idx))


def _available_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not POSIX: assume 4 GiB
        return 4 << 30


def auto_batch_size(
    model: HookedModel,
    prompt_tokens: int,
    max_new_tokens: int,
    n_rows: int,
    *,
    fraction: float = 0.6,
    available: int | None = None,
) -> int:
    """Rows per batch that fit ``fraction`` of free device memory (at most ``n_rows``).

    Per row: its own KV slots (prompt + new tokens, the worst case where no prefix is shared), one
    materialised copy of one layer's KV during prefill, the prefill activations of its prompt, and fp32
    logits for sampling. The weights are already resident, so free memory excludes them.
    """
    param = next(model.parameters())
    cfg = hf_config(model)
    n_layers, kv_heads, head_dim = kv_layout(model)
    per_token = kvcache.kv_bytes_per_token(n_layers, kv_heads, head_dim, param.dtype)
    seq = prompt_tokens + max_new_tokens
    width = param.element_size() * (
        4 * cfg.hidden_size + 3 * getattr(cfg, "intermediate_size", 4 * cfg.hidden_size)
    )
    per_row = per_token * seq + 2 * per_token // n_layers * seq + width * prompt_tokens + 12 * cfg.vocab_size
    budget = fraction * (available if available is not None else _available_bytes(param.device))
    return max(1, min(n_rows, int(budget // per_row)))


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


def _prefill(
    model: HookedModel, seqs: list[Tensor], device: Any, *, lam: Tensor | None = None, handle: Any = None
) -> tuple:
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
        keys = lam.tolist() if steered and lam is not None else [0.0] * n
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
            ids[i, width - len(s) :] = s
            own[i, width - len(s) :] = 1
    ids, own = ids.to(device), own.to(device)
    mask = torch.cat([own.new_ones(n, p), own], dim=1)
    positions = (p + own.cumsum(dim=1) - 1).clamp_min(0)
    logits, past = model(
        ids,
        attention_mask=mask,
        past_key_values=past,
        position_ids=positions,
        use_cache=True,
        return_type="logits_and_cache",
        logits_to_keep=1,
    )
    return past, mask, positions[:, -1], logits


def _prompt_units(
    model: HookedModel, prompts: list[str], steering: Steering | None, lam: Tensor | None
) -> tuple[bool, list[Tensor], list[int], Any]:
    """What both KV caches prefill: whether prompts are shared, the unpadded ids of each unit, each row's unit,
    and the steering context.

    Unsteered prompts, and prompts steered only from their last token on, are identical across the rows that
    repeat them (λ grid, samples), so their prefill runs once per distinct prompt and is shared.
    """
    share = steering is None or steering.positions == "generated"
    units = list(dict.fromkeys(prompts)) if share else prompts
    enc = encode(model.tokenizer, units)
    seqs = [row[m.bool()] for row, m in zip(enc.input_ids, enc.attention_mask, strict=True)]
    slot = {p: i for i, p in enumerate(units)}
    # lam is set whenever steering is (lambda_rows in generate)
    ctx = (
        steer(model, steering.vectors, lam=cast(Tensor, lam), layers=steering.layers)
        if steering is not None
        else nullcontext()
    )
    return share, seqs, [slot[p] for p in prompts], ctx


@torch.inference_mode()
def _generate_batch_dynamic(
    model: HookedModel,
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
    share_prefill, seqs, unit_of_row, ctx = _prompt_units(model, prompts, steering, lam)
    row_of = torch.tensor(unit_of_row, device=device)
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
            mask = (
                torch.cat([mask, mask.new_ones(b, 1)], dim=1)
                if mask is not None
                else torch.ones(b, 1, dtype=torch.long, device=device)
            )
            logits, past = model(
                last[:, None],
                attention_mask=mask,
                past_key_values=past,
                position_ids=pos[:, None],
                use_cache=True,
                return_type="logits_and_cache",
            )
        else:
            past, mask, pos, logits = _prefill(model, seqs, device, lam=lam, handle=handle)
        gens = [torch.Generator(device="cpu").manual_seed(int(s)) for s in seeds] if temperature > 0 else None
        alive = list(range(b))  # original row index of each batch row still generating
        tokens: list[list[int]] = [[] for _ in range(b)]
        finish: list[str] = ["length"] * b
        texts: list[str] = [""] * b
        for step in range(max_new_tokens):
            nxt = _sample(logits[:, -1, :], temperature, gens, alive)
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
            logits, past = model(
                nxt[:, None],
                attention_mask=mask,
                past_key_values=past,
                position_ids=pos[:, None],
                return_type="logits_and_cache",
            )
    out = []
    for r in range(b):
        text = texts[r] if stop and finish[r] == "stop" else tok.decode(tokens[r], skip_special_tokens=True)
        out.append(Generation(text=text, n_tokens=len(tokens[r]), finish=finish[r]))  # type: ignore[arg-type]
    return out


def _left_pad(
    seqs: Sequence[Tensor], start: int
) -> tuple[Int[Tensor, "row width"], Bool[Tensor, "row width"], Int[Tensor, "row width"]]:
    """Left-padded ids, which of them are real, and their positions when the sequences continue from ``start``
    (pads take no position: a row's positions are those of its unpadded sequence)."""
    width = max(len(s) for s in seqs)
    ids = torch.zeros(len(seqs), width, dtype=torch.long)
    real = torch.zeros(len(seqs), width, dtype=torch.bool)
    for i, s in enumerate(seqs):
        if len(s):
            ids[i, width - len(s) :] = s
            real[i, width - len(s) :] = True
    positions = (start + real.long().cumsum(dim=1) - 1).clamp_min(0)
    return ids, real, positions


def _forward(
    model: HookedModel,
    cache: SharedKVCache,
    ids: Int[Tensor, "row q"],
    real: Bool[Tensor, "row q"],
    positions: Int[Tensor, "row q"],
    *,
    all_real: bool | None = None,
    **kw: Any,
) -> Tensor:
    """One forward of the live rows through ``cache`` (the new tokens are written into it in place)."""
    cache.advance(real, positions, all_real=all_real)
    with cache.attending():
        return model(ids, past_key_values=cache, position_ids=positions, return_type="logits", **kw)


def _new_cache(
    model: HookedModel, rows: int, capacity: int, device: Any, levels: Sequence[kvcache.Level] = ()
) -> SharedKVCache:
    return SharedKVCache(kv_layout(model)[0], rows, capacity, levels=levels, device=device)


def _prefix_level(
    model: HookedModel, ids: Int[Tensor, "group p"], device: Any, *, first: int = 0
) -> list[kvcache.Level]:
    """Prefill identical-length blocks (no padding), one row per group; the result as a level of one group per row.

    When every group holds the same tokens and they differ only in how they are steered from block ``first``
    on (a few-shot prefix under each λ), blocks ``0 .. first-1`` run once for all groups: their keys and values
    are given to every group and their output is handed on to block ``first``, which runs per group."""
    g, p = ids.shape
    real = torch.ones(g, p, dtype=torch.bool, device=device)
    positions = torch.arange(p, device=device).expand(g, p)
    ids = ids.to(device)
    pre = _new_cache(model, g, p, device)
    if first > 0 and g > 1 and bool((ids == ids[:1]).all()):
        one = _new_cache(model, 1, p, device)
        resid = residual_entering(
            model, first, lambda: _forward(model, one, ids[:1], real[:1], positions[:1], all_real=True)
        )
        pre.share_layers(one, range(first))
        with blocks_from(model, first, resid.expand(g, -1, -1).clone()):
            _forward(model, pre, ids, real, positions, all_real=True, logits_to_keep=1)
    else:
        _forward(model, pre, ids, real, positions, all_real=True, logits_to_keep=1)
    return pre.as_level(range(g))


def _context_levels(model: HookedModel, contexts: list[Tensor], device: Any) -> list[kvcache.Level]:
    """KV levels holding ``contexts`` (one group per context): the prefix they all share once, then the rest
    of each. Runs unsteered (the caller switched steering off)."""
    if all(len(c) == 0 for c in contexts):
        return []
    p = shared_prefix_len(contexts)
    if p < MIN_SHARED_PREFIX:
        p = 0
    levels = _prefix_level(model, contexts[0][None, :p], device) if p else []
    levels = [lv.for_rows([0] * len(contexts)) for lv in levels]
    rest = [c[p:] for c in contexts]
    if any(len(r) for r in rest):
        ids, real, positions = _left_pad(rest, p)
        cache = _new_cache(model, len(rest), ids.shape[1], device, levels)
        _forward(model, cache, ids.to(device), real.to(device), positions.to(device), logits_to_keep=1)
        levels = cache.as_level(range(len(rest)))
    return levels


def _sample(
    logits: Float[Tensor, "row vocab"],
    temperature: float,
    gens: list[torch.Generator] | None,
    rows: list[int],
) -> Int[Tensor, " row"]:
    last = logits.float()
    if temperature <= 0:
        return last.argmax(-1)
    # Gumbel-max with each row's own generator: the draw is independent of the batch.
    noise = torch.stack([torch.rand(last.shape[-1], generator=gens[r]) for r in rows]).to(last.device)  # type: ignore[index]
    return (last / temperature - torch.log(-torch.log(noise.clamp_min(1e-20)))).argmax(-1)


@torch.inference_mode()
def _generate_batch_static(
    model: HookedModel,
    prompts: list[str],
    *,
    max_new_tokens: int,
    stop: Sequence[str],
    steering: Steering | None,
    lam: Tensor | None,
    temperature: float,
    seeds: list[int],
    sync_every: int,
) -> list[Generation]:
    tok = model.tokenizer
    device = next(model.parameters()).device
    eos = eos_ids(model)
    b = len(prompts)
    share_prefill, seqs, unit_of_row, ctx = _prompt_units(model, prompts, steering, lam)
    with ctx as handle:
        if share_prefill:
            # The prompt minus its last token is unsteered, hence the same for every row that repeats it.
            if handle is not None:
                handle.active = False
            levels = _context_levels(model, [s[:-1] for s in seqs], device)
            if handle is not None:
                handle.active = True
            cache = _new_cache(model, b, max_new_tokens, device, [lv.for_rows(unit_of_row) for lv in levels])
            ids = torch.stack([seqs[u][-1] for u in unit_of_row])[:, None].to(device)
            pos = torch.tensor([len(seqs[u]) - 1 for u in unit_of_row], device=device)
            logits = _forward(
                model, cache, ids, torch.ones_like(ids, dtype=torch.bool), pos[:, None], all_real=True
            )
        else:
            assert handle is not None and lam is not None
            levels = []
            p = shared_prefix_len(seqs)
            if p >= MIN_SHARED_PREFIX:
                # Steered prefix: computed once per distinct λ (the blocks below the first steered layer once
                # in all), read by the rows of that λ.
                keys = lam.tolist()
                groups = list(dict.fromkeys(keys))
                handle.set_lambda(torch.tensor(groups))
                levels = _prefix_level(
                    model, seqs[0][:p].expand(len(groups), p), device, first=min(handle.layers)
                )
                levels = [lv.for_rows([groups.index(k) for k in keys]) for lv in levels]
                handle.set_lambda(lam)
            else:
                p = 0
            ids, real, positions = _left_pad([s[p:] for s in seqs], p)
            cache = _new_cache(model, b, ids.shape[1] + max_new_tokens - 1, device, levels)
            logits = _forward(
                model, cache, ids.to(device), real.to(device), positions.to(device), logits_to_keep=1
            )
            pos = positions[:, -1].to(device)

        gens = [torch.Generator(device="cpu").manual_seed(int(s)) for s in seeds] if temperature > 0 else None
        alive = list(range(b))  # original row index of each batch row still generating
        tokens: list[list[int]] = [[] for _ in range(b)]
        finish: list[str] = ["length"] * b
        texts: list[str] = [""] * b
        pending: list[Tensor] = []  # next tokens since the host last looked
        for step in range(max_new_tokens):
            nxt = _sample(logits[:, -1, :], temperature, gens, alive)
            pending.append(nxt)
            last_step = step == max_new_tokens - 1
            if last_step or len(pending) == sync_every:
                block = torch.stack(pending, dim=1).tolist()  # the only device sync of these steps
                pending = []
                keep = [
                    j
                    for j, r in enumerate(alive)
                    if _extend(r, block[j], tokens, finish, texts, tok=tok, eos=eos, stop=stop)
                ]
                if not keep or last_step:
                    break
                if len(keep) < len(alive):
                    sel = torch.tensor(keep, device=device)
                    cache.keep(keep)
                    nxt, pos = nxt[sel], pos[sel]
                    if handle is not None:
                        handle.select_rows(sel)
                    alive = [alive[j] for j in keep]
            pos = pos + 1
            logits = _forward(
                model,
                cache,
                nxt[:, None],
                torch.ones(len(alive), 1, dtype=torch.bool, device=device),
                pos[:, None],
                all_real=True,
            )
    out = []
    for r in range(b):
        text = texts[r] if stop and finish[r] == "stop" else tok.decode(tokens[r], skip_special_tokens=True)
        out.append(Generation(text=text, n_tokens=len(tokens[r]), finish=finish[r]))  # type: ignore[arg-type]
    return out


def _extend(
    r: int,
    new: list[int],
    tokens: list[list[int]],
    finish: list[str],
    texts: list[str],
    *,
    tok: Any,
    eos: set[int],
    stop: Sequence[str],
) -> bool:
    """Append row ``r``'s new tokens up to the first that ends it; False once it has ended."""
    for t in new:
        if t in eos:
            finish[r] = "eos"
            return False
        tokens[r].append(t)
        if stop:
            texts[r], hit = _cut_at_stop(tok.decode(tokens[r], skip_special_tokens=True), stop)
            if hit:
                finish[r] = "stop"
                return False
    return True
