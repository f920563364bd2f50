"""Behavioural A/B sets as a task: ``xsteer evaluate --dataset ab:refusal --mode loglik`` measures how often the
steered child picks the behaviour-matching option (CAA's behavioural evaluation).

The items are the A/B concept's (:mod:`xsteer.tasks.concepts.ab`, loaded with seed 0, so the items and the
order of their options never depend on the evaluation's seed): ``test`` is its held-out items, never seen by
the pairs; ``train`` and ``validation`` are the items the pairs were made of (λ is tuned there, the test items
stay unseen). Gold = the matching letter. Log-likelihood mode reads the letter after ``Answer: (``, as the
concept's readout does; generative mode reads the letter the answer commits to (as for ARC).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from xsteer.errors import InputError
from xsteer.tasks.arc_scoring import score_arc
from xsteer.tasks.base import Example, Scored, Task, draw
from xsteer.tasks.concepts import ab
from xsteer.tasks.concepts.base import ConceptOptions

SYSTEM = "Answer the question by choosing one of the two options. State the letter of your choice, e.g. (A)."
LABELS = ("A", "B")


class ABTask(Task):
    """An A/B concept's items as a multiple-choice benchmark; one subclass per concept spec (its ``name``)."""

    name = "ab"
    description = "behavioural A/B items: share of behaviour-matching answers"
    system_prompt = SYSTEM
    multiple_choice = True
    own_splits = ("train", "validation", "test")

    def __init__(self, concept: ab.ABConcept):
        self.concept = concept

    def pool(self, split: str, data_dir: Path | None) -> list[Example]:
        items = self.concept.probes if split == "test" else self.concept.train_items
        return [
            Example(
                id=f"{self.name}/{'test' if split == 'test' else 'train'}/{i}",
                question=p.question,
                answer=p.matching,
                choices=p.options,
                labels=LABELS,
            )
            for i, p in enumerate(items)
        ]

    def shots(
        self,
        n: int = 5,
        *,
        seed: int = 0,
        train: Sequence[Example] | None = None,
        data_dir: str | Path | None = None,
    ) -> list[Example]:
        """``n`` exemplars drawn from the pair items (never test items)."""
        pool = list(train) if train is not None else self.load("train", seed=seed)
        return draw(pool, n, seed, self.name)

    def final_line(self, answer: str) -> str:
        return f"Answer: ({answer})"

    def format_question(self, example: Example) -> str:
        """The item as the concept shows it, without the answer."""
        return self.loglik_request(example)[0].removesuffix("\nAnswer: (")

    def score(self, completion: str, example: Example) -> Scored:
        return score_arc(completion, example.answer, labels=LABELS)

    def loglik_request(self, example: Example) -> tuple[str, list[str]]:
        """Context ending at ``Answer: (``, continuations the two letters (the concept's readout position)."""
        if example.choices is None or len(example.choices) != 2:
            raise InputError(f"{example.id}: an A/B item needs two choices")
        return ab.render(example.question, example.choices[0], example.choices[1]), list(LABELS)


def _task(spec: str, concept: ab.ABConcept) -> ABTask:
    cls = type(f"ABTask[{spec}]", (ABTask,), {"name": spec, "description": concept.description})
    return cls(concept)


#: ``KIND:REST`` task specs: ``ab:NAME`` / ``ab:PATH`` and ``caa:BEHAVIOUR``, as for concepts.
TASK_KINDS: dict[str, Callable[[str], Task]] = {
    "ab": lambda rest: _task(f"ab:{rest}", ab.load(rest, ConceptOptions())),
    "caa": lambda rest: _task(f"caa:{rest}", ab.load_caa(rest, ConceptOptions())),
}

__all__ = ["TASK_KINDS", "ABTask"]
