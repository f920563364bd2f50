"""Readouts: a concept's position on its axis, read on its held-out probes, steered or not.

``readout(model, vectors, lambdas)`` gives one value per (λ, probe); ``readout.read_stack(model, stack, lambdas,
layers=...)`` reads many vectors at once, each batch row steered by its own vector and λ (what the fidelity
instrument does). A concept builds its readout (:meth:`xsteer.tasks.concepts.Concept.readout_for`); the two
families here are shared by the concept kinds:

* :class:`NextTokenLogOdds` — log Σ p(+ tokens) − log Σ p(− tokens) at the token after each probe, with a sign
  per probe (lexicon concepts read pole words; A/B concepts read the behaviour-matching answer letter);
* :func:`sequence_logprobs` — the summed log-probability of a continuation after a context, each row steered
  by its own vector (the answer concept reads a gold vs a corrupted final answer).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import einops
import torch
from jaxtyping import Float
from torch import Tensor

from xsteer.core.activations import next_token_logprobs
from xsteer.core.types import HookedModel
from xsteer.core.vectors import SteeringVectors
from xsteer.errors import InputError


class Readout:
    """``readout(model, vectors, lams)`` -> one value per (λ, probe): the concept's position on its axis."""

    name = "readout"
    probes: Sequence[Any] = ()

    def __call__(
        self,
        model: HookedModel,
        vectors: SteeringVectors | None,
        lambdas: Sequence[float],
        *,
        layers: Sequence[int] | None = None,
        batch_size: int = 32,
    ) -> Float[Tensor, "lam probe"]:
        raise NotImplementedError

    def read_stack(
        self,
        model: HookedModel,
        stack: Float[Tensor, "m layer d_model"],
        lambdas: Sequence[float],
        *,
        layers: Sequence[int],
        batch_size: int = 64,
    ) -> Float[Tensor, "m lam probe"]:
        raise NotImplementedError


class NextTokenLogOdds(Readout):
    """``sign_p · (log Σ p(+ token) − log Σ p(− token))`` at the next token after each probe ``p``."""

    def __init__(
        self,
        probes: Sequence[str],
        pos: Sequence[int],
        neg: Sequence[int],
        *,
        signs: Sequence[float] | None = None,
        name: str | None = None,
    ):
        self.probes = list(probes)
        self.pos, self.neg = list(pos), list(neg)
        self.signs = None if signs is None else torch.tensor([float(s) for s in signs])
        if name is not None:
            self.name = name

    def _odds(self, lp: Float[Tensor, "n token"]) -> Float[Tensor, " n"]:
        k = len(self.pos)
        return torch.logsumexp(lp[:, :k], dim=-1) - torch.logsumexp(lp[:, k:], dim=-1)

    def __call__(
        self,
        model: HookedModel,
        vectors: SteeringVectors | None,
        lambdas: Sequence[float],
        *,
        layers: Sequence[int] | None = None,
        batch_size: int = 32,
    ) -> Float[Tensor, "lam probe"]:
        texts = [p for _ in lambdas for p in self.probes]
        lam = [float(x) for x in lambdas for _ in self.probes]
        lp = next_token_logprobs(
            model,
            texts,
            self.pos + self.neg,
            vectors=vectors,
            lam=lam if vectors is not None else None,
            layers=layers,
            batch_size=batch_size,
        )
        odds = self._odds(lp).reshape(len(lambdas), len(self.probes))
        return odds if self.signs is None else odds * self.signs[None, :]

    def read_stack(
        self,
        model: HookedModel,
        stack: Float[Tensor, "m layer d_model"],
        lambdas: Sequence[float],
        *,
        layers: Sequence[int],
        batch_size: int = 64,
    ) -> Float[Tensor, "m lam probe"]:
        """The readout of many vectors at once: rows are (vector, λ, probe), each steered by its own vector,
        ordered probe-major so a batch holds few distinct probe lengths (little padding)."""
        m, n_lam, n_p = stack.shape[0], len(lambdas), len(self.probes)
        grid = [(p, v, j) for p in range(n_p) for v in range(m) for j in range(n_lam)]
        lp = next_token_logprobs(
            model,
            [self.probes[p] for p, _, _ in grid],
            self.pos + self.neg,
            vectors=stack,
            which=[v for _, v, _ in grid],
            lam=[float(lambdas[j]) for _, _, j in grid],
            layers=layers,
            batch_size=batch_size,
        )
        odds = einops.rearrange(self._odds(lp), "(p m j) -> m j p", p=n_p, m=m, j=n_lam)
        return odds if self.signs is None else odds * self.signs[None, None, :]


@torch.inference_mode()
def sequence_logprobs(
    model: HookedModel,
    contexts: Sequence[str],
    continuations: Sequence[str],
    *,
    stack: Float[Tensor, "m layer d_model"],
    which: Sequence[int],
    lam: Sequence[float],
    layers: Sequence[int],
    batch_size: int = 32,
) -> Float[Tensor, " n"]:
    """Sum of log p(continuation | context) per row, row ``i`` steered at every position by
    ``lam[i] · stack[which[i]]``. Context and continuation are tokenized apart (exact boundary, as lm-eval).

    The context dominates the cost (a GSM8K solution is ~160 tokens, an answer 2-4), so rows that share a
    context, a vector and a λ (the gold and the wrong answer of one probe) share one prefill of it, which each
    continuation then reads from the KV cache, and all the (vector, λ) of one context share its blocks below
    the first steered layer. ``batch_size`` bounds the continuation rows of one forward."""
    from xsteer.core import kvcache
    from xsteer.core.generate import _forward, _left_pad, _new_cache, _prefix_level
    from xsteer.core.inject import steer_rows
    from xsteer.core.models import native_attention
    from xsteer.core.models.backend import register_attention

    if not len(contexts) == len(continuations) == len(which) == len(lam):
        raise InputError("one continuation, vector index and λ per context")
    tok = model.tokenizer
    device = next(model.parameters()).device
    ctx_ids = {
        c: torch.tensor(tok(c).input_ids) for c in dict.fromkeys(contexts)
    }  # the BOS leads the context
    cont = [torch.tensor(tok(c, add_special_tokens=False).input_ids) for c in continuations]
    if any(len(c) == 0 for c in cont) or any(len(c) == 0 for c in ctx_ids.values()):
        raise InputError("every context and continuation needs at least one token")
    # A unit is one (context, vector, λ): one prefill of the context, read by each of its rows.
    units: dict[tuple[str, int, float], list[int]] = {}
    for i, key in enumerate(zip(contexts, which, lam, strict=True)):
        units.setdefault((key[0], int(key[1]), float(key[2])), []).append(i)
    out = torch.empty(len(contexts))
    register_attention(kvcache.ATTENTION, kvcache.attention)
    with native_attention(model, kvcache.ATTENTION):
        for chunk in _unit_chunks(units, batch_size):
            context = chunk[0][0]
            head, last = ctx_ids[context][:-1], ctx_ids[context][-1:]
            rows = [r for key in chunk for r in units[key]]
            unit_of_row = [u for u, key in enumerate(chunk) for _ in units[key]]
            levels = []
            if len(head):
                # The context but its last token, which goes with the continuation so that it predicts the first.
                with steer_rows(
                    model, stack[[k[1] for k in chunk]], lam=[k[2] for k in chunk], layers=layers
                ):
                    levels = _prefix_level(model, head.expand(len(chunk), -1), device, first=min(layers))
            ids, real, positions = _left_pad([torch.cat([last, cont[r]]) for r in rows], len(head))
            cache = _new_cache(
                model, len(rows), ids.shape[1], device, [lv.for_rows(unit_of_row) for lv in levels]
            )
            ids = ids.to(device)
            with steer_rows(
                model, stack[[which[r] for r in rows]], lam=[lam[r] for r in rows], layers=layers
            ):
                logits = _forward(model, cache, ids, real.to(device), positions.to(device))
            lp = torch.log_softmax(logits[:, :-1].float(), dim=-1).gather(-1, ids[:, 1:, None])[..., 0]
            width = ids.shape[1]
            for k, r in enumerate(rows):  # left padding: every row's last token is at -1
                out[r] = lp[k, width - 1 - len(cont[r]) :].sum().cpu()
    return out


def _unit_chunks(
    units: Mapping[tuple[str, int, float], list[int]], rows: int
) -> list[list[tuple[str, int, float]]]:
    """The units in order, cut into chunks of one context each whose rows number at most ``rows`` (a unit with
    more rows than that is a chunk of its own)."""
    chunks: list[list[tuple[str, int, float]]] = []
    size = 0
    for key, members in units.items():
        if chunks and chunks[-1][0][0] == key[0] and size + len(members) <= rows:
            chunks[-1].append(key)
            size += len(members)
        else:
            chunks.append([key])
            size = len(members)
    return chunks


__all__ = ["NextTokenLogOdds", "Readout", "sequence_logprobs"]
