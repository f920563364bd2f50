"""The paper's concept, "this reasoning ends in the right answer", as a concept (``corrupted_answer``).

Pairs: a task's train items, question + reference reasoning + the gold vs a corrupted final answer, in the
plain ``Question:/Answer:`` form both models read alike (:func:`xsteer.tasks.answers.corrupted_texts`). Probes:
its validation items, each a context ending where the final answer goes, read out as log p(gold answer) − log
p(corrupted answer) (:class:`AnswerLogOdds`). It needs the task's data (``data_dir``, or the hub).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import einops
import torch
from jaxtyping import Float
from torch import Tensor

from xsteer.core.generate import Steering
from xsteer.core.likelihood import continuation_logprobs
from xsteer.core.types import HookedModel
from xsteer.core.vectors import SteeringVectors
from xsteer.tasks import get_task
from xsteer.tasks.answers import corrupted_texts, strip_final, wrong_answer
from xsteer.tasks.concepts.base import ConceptError, ConceptOptions
from xsteer.tasks.concepts.readouts import Readout, sequence_logprobs

NAME = "corrupted_answer"


@dataclass(frozen=True)
class AnswerProbe:
    """A probe of the ``corrupted_answer`` concept: a context ending where the final answer goes, the gold
    continuation and a wrong one (the concept's positive pole is the gold answer)."""

    context: str
    gold: str
    wrong: str


class AnswerLogOdds(Readout):
    """log p(gold answer) - log p(corrupted answer) after each probe's context (summed over tokens)."""

    name = "log-odds of the gold vs a corrupted final answer"

    def __init__(self, probes: Sequence[AnswerProbe]):
        self.probes = list(probes)

    def __call__(
        self,
        model: HookedModel,
        vectors: SteeringVectors | None,
        lambdas: Sequence[float],
        *,
        layers: Sequence[int] | None = None,
        batch_size: int = 32,
    ) -> Float[Tensor, "lam probe"]:
        ctx = [p.context for _ in lambdas for p in self.probes for _ in (0, 1)]
        cont = [c for _ in lambdas for p in self.probes for c in (p.gold, p.wrong)]
        lam = [float(x) for x in lambdas for _ in self.probes for _ in (0, 1)]
        steering = Steering(vectors, lam, layers) if vectors is not None else None
        lp = torch.tensor(continuation_logprobs(model, ctx, cont, steering=steering, batch_size=batch_size))
        return (lp[0::2] - lp[1::2]).reshape(len(lambdas), len(self.probes))

    def read_stack(
        self,
        model: HookedModel,
        stack: Float[Tensor, "m layer d_model"],
        lambdas: Sequence[float],
        *,
        layers: Sequence[int],
        batch_size: int = 64,
    ) -> Float[Tensor, "m lam probe"]:
        """The readout of many vectors at once, each row (vector, λ, probe, answer) steered by its own vector.
        A probe's gold and wrong answers are adjacent rows, so they share one steered prefill of its context
        (:func:`sequence_logprobs`)."""
        m, n_lam, n_p = stack.shape[0], len(lambdas), len(self.probes)
        grid = [(p, v, j, a) for p in range(n_p) for v in range(m) for j in range(n_lam) for a in (0, 1)]
        lp = sequence_logprobs(
            model,
            [self.probes[p].context for p, _, _, _ in grid],
            [(self.probes[p].gold, self.probes[p].wrong)[a] for p, _, _, a in grid],
            stack=stack,
            which=[v for _, v, _, _ in grid],
            lam=[float(lambdas[j]) for _, _, j, _ in grid],
            layers=layers,
            batch_size=batch_size,
        )
        return einops.rearrange(lp[0::2] - lp[1::2], "(p m j) -> m j p", p=n_p, m=m, j=n_lam)


@dataclass(frozen=True)
class AnswerConcept:
    """The paper's concept: "this reasoning ends in the right answer" (pairs: gold vs corrupted answer)."""

    name: str
    pairs: tuple[tuple[str, str], ...]
    probes: tuple[AnswerProbe, ...]
    description: str = "correct vs corrupted final answer after the same reasoning (GSM8K)"
    source: str = "task:gsm8k"
    poles: tuple[str, str] = ("gold answer", "corrupted answer")
    open_ended = False

    def readout_for(self, tokenizer: Any) -> AnswerLogOdds:
        return AnswerLogOdds(self.probes)

    def score_text(self, text: str) -> int:
        raise ConceptError(f"concept {self.name!r} is read on answers, not on generated text")


def answer_concept(
    *,
    data_dir: str | Path | None = None,
    n_pairs: int = 64,
    n_probes: int = 32,
    seed: int = 0,
    task: str = "gsm8k",
) -> AnswerConcept:
    """The paper's concept as a fidelity concept: ``corrupted_answer`` pairs from the task's train split, in
    the plain ``Question:/Answer:`` form both models read alike, and held-out probes from its validation
    split, each read out on its gold vs a corrupted final answer."""
    t = get_task(task)
    examples = t.pair_examples("train", n_pairs, data_dir=data_dir, seed=seed)
    pairs = corrupted_texts(examples, None, task=t, seed=seed)
    rng = random.Random(seed)
    items = t.load("validation", data_dir=data_dir, limit=n_probes, seed=seed)
    answers = [e.answer for e in items]
    probes = []
    for ex in items:
        if not ex.solution:
            continue
        context = f"Question: {ex.question}\nAnswer: {strip_final(ex.solution)}\n{t.answer_prefix()}"
        probes.append(AnswerProbe(context, f" {ex.answer}", f" {wrong_answer(ex.answer, rng, answers)}"))
    return AnswerConcept(NAME, tuple((p, n) for p, n, _ in pairs), tuple(probes), source=f"task:{t.name}")


def load(name: str, options: ConceptOptions) -> AnswerConcept:
    """The registry's loader: the answer concept on GSM8K (its data from ``options.data_dir`` or the hub)."""
    return answer_concept(data_dir=options.data_dir, seed=options.seed)


def check(name: str, options: ConceptOptions) -> None:
    """Cheap: the data the concept needs is there (one validation item reads), before any model loads."""
    get_task("gsm8k").load("validation", data_dir=options.data_dir, limit=1)


__all__ = ["NAME", "AnswerConcept", "AnswerLogOdds", "AnswerProbe", "answer_concept"]
