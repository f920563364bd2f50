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

from collections.abc import Sequence
from typing import Any

import einops
import torch
from jaxtyping import Float
from torch import Tensor

from xsteer.core.activations import next_token_logprobs, shared_lower_blocks
from xsteer.core.types import HookedModel
from xsteer.core.vectors import SteeringVectors


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
    ``lam[i] · stack[which[i]]``. Context and continuation are tokenized apart (exact boundary, as lm-eval)."""
    from xsteer.core.inject import steer_rows
    from xsteer.core.models import native_attention

    tok = model.tokenizer
    device = next(model.parameters()).device
    ctx = [tok(c).input_ids for c in contexts]  # the BOS, where the tokenizer adds one, leads the context
    cont = [tok(c, add_special_tokens=False).input_ids for c in continuations]
    out = torch.empty(len(contexts))
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    with native_attention(model):
        for start in range(0, len(contexts), batch_size):
            rows = range(start, min(start + batch_size, len(contexts)))
            seqs = [ctx[i] + cont[i] for i in rows]
            width = max(len(x) for x in seqs)
            ids = torch.full((len(seqs), width), pad, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for r, x in enumerate(seqs):  # left padding: every row's last token is at -1
                ids[r, width - len(x) :] = torch.tensor(x)
                mask[r, width - len(x) :] = 1
            index = torch.as_tensor([which[i] for i in rows])
            ids, mask = ids.to(device), mask.to(device)
            # Rows of one (context, answer) under many vectors × λ share the blocks below the steered layers.
            with (
                shared_lower_blocks(model, ids, mask, min(layers)),
                steer_rows(model, stack[index], lam=[lam[i] for i in rows], layers=layers),
            ):
                logits = model(ids, attention_mask=mask)
            lp = torch.log_softmax(logits[:, :-1].float(), dim=-1).gather(-1, ids[:, 1:, None])[..., 0]
            for r, i in enumerate(rows):
                out[i] = lp[r, width - 1 - len(cont[i]) :].sum().cpu()
    return out


__all__ = ["NextTokenLogOdds", "Readout", "sequence_logprobs"]
