"""A task: one benchmark, owning everything xsteer needs to know about it.

Loading and splits, few-shot exemplars (and keeping them out of contrastive pairs), the chat messages a
prompt is made of, how a reference response states its final answer, answer extraction and scoring, and —
for multiple choice — the log-likelihood request. The pipeline asks the task and never tests a dataset's
name (lm-evaluation-harness's idea, at xsteer's size).

Splits: ``test`` keeps the source order, so ``limit=n`` is a prefix other tools can reproduce; ``train`` and
``validation`` come in a seeded order, so ``limit=n`` is a random subset. Tasks whose source has no
validation split carve :data:`VALIDATION_SIZE` seeded items out of train, and train then excludes them
(load both with the same seed).
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from xsteer.errors import InputError
from xsteer.tasks.scoring import Scored

SPLITS: tuple[str, ...] = ("train", "validation", "test")

#: Size of the validation carve taken out of a train pool.
VALIDATION_SIZE = 500

#: Where a task's offline data lives when no ``data_dir`` is given (unset: the Hugging Face hub).
ENV_DATA_DIR = "XSTEER_DATA_DIR"


def default_data_dir() -> Path | None:
    """The offline data directory from ``$XSTEER_DATA_DIR``, or None (meaning: use the hub)."""
    value = os.environ.get(ENV_DATA_DIR, "").strip()
    return Path(value).expanduser() if value else None


@dataclass(frozen=True)
class Example:
    """One benchmark item.

    ``answer`` is the gold FINAL answer as a string (GSM8K number, MATH ``answer`` field, ARC label).
    ``solution`` is reference reasoning (GSM8K/MATH) or None (ARC). ``choices``/``labels`` are set for
    multiple choice only. ``meta`` carries extra fields (subject, level, ...) and is excluded from
    equality and hashing.
    """

    id: str
    question: str
    answer: str
    solution: str | None = None
    choices: tuple[str, ...] | None = None
    labels: tuple[str, ...] | None = None
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def answer_index(self) -> int | None:
        """Index of the gold answer among ``labels`` (multiple choice), else None."""
        if self.labels is None or self.answer not in self.labels:
            return None
        return self.labels.index(self.answer)


class Task:
    """A benchmark. Subclasses set the class attributes and implement :meth:`pool`, :meth:`shots`,
    :meth:`final_line` and :meth:`score`; the rest has defaults that fit most tasks."""

    name: ClassVar[str]
    description: ClassVar[str]
    system_prompt: ClassVar[str]
    multiple_choice: ClassVar[bool] = False
    #: Splits the source ships; without its own validation split, validation is carved out of train.
    own_splits: ClassVar[tuple[str, ...]] = ("train", "test")

    # ------------------------------------------------------------------ data
    def pool(self, split: str, data_dir: Path | None) -> list[Example]:
        """The raw items ``split`` is drawn from: the split itself, or the train pool a validation carve
        comes out of. ``data_dir=None`` means the Hugging Face hub."""
        raise NotImplementedError

    def load(
        self, split: str, *, data_dir: str | Path | None = None, limit: int | None = None, seed: int = 0
    ) -> list[Example]:
        """``split`` as a deterministic list (see the module docstring for order and carving)."""
        check_split(split)
        if limit is not None and limit < 0:
            raise InputError(f"limit must be >= 0 or None, got {limit}")
        root = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
        items = self.split_items(split, self.pool(split, root), seed)
        return items if limit is None else items[:limit]

    def split_items(self, split: str, pool: list[Example], seed: int) -> list[Example]:
        if split == "test":
            return pool
        if "validation" in self.own_splits:  # nothing to carve: the source ships its own validation split
            return shuffled(pool, seed)
        return carve(pool, split, seed)

    def shots(
        self,
        n: int = 5,
        *,
        seed: int = 0,
        train: Sequence[Example] | None = None,
        data_dir: str | Path | None = None,
    ) -> list[Example]:
        """``n`` few-shot exemplars (the paper uses 5); never items of the evaluation splits."""
        raise NotImplementedError

    def pair_examples(
        self,
        split: str = "train",
        n: int | None = None,
        *,
        data_dir: str | Path | None = None,
        seed: int = 0,
        shots: int = 5,
    ) -> list[Example]:
        """Items contrastive pairs are built from: ``split`` without the task's few-shot exemplars, so an
        exemplar never doubles as a pair (as the paper does for MATH), whatever the split."""
        examples = self.load(split, data_dir=data_dir, seed=seed)
        if shots:
            drop = {
                e.id
                for e in self.shots(
                    shots, seed=seed, train=examples if split == "train" else None, data_dir=data_dir
                )
            }
            examples = [e for e in examples if e.id not in drop]
        if not examples:
            raise InputError(f"{self.name}:{split} has no examples to build pairs from")
        return examples if n is None else examples[:n]

    # ------------------------------------------------------------------ prompts
    def final_line(self, answer: str) -> str:
        """How a reference response states its final answer (few-shot exemplars, contrastive pairs)."""
        raise NotImplementedError

    def answer_prefix(self) -> str:
        """What a response says right before its final answer (``#### The final answer is:`` for GSM8K)."""
        return self.final_line("\x00").split("\x00")[0].rstrip()

    def format_question(self, example: Example) -> str:
        """The user-turn text of an item."""
        return example.question

    def format_answer(self, example: Example) -> str:
        """The assistant-turn text of an exemplar: reasoning, then the final-answer line."""
        reasoning = (example.solution or "").strip()
        final = self.final_line(example.answer)
        return f"{reasoning}\n{final}" if reasoning else final

    def messages(
        self, example: Example, shots: Sequence[Example], *, system: bool = True
    ) -> list[dict[str, str]]:
        """Chat messages: system prompt, one user/assistant pair per exemplar, then the item as a user turn."""
        messages: list[dict[str, str]] = [{"role": "system", "content": self.system_prompt}] if system else []
        for shot in shots:
            messages.append({"role": "user", "content": self.format_question(shot)})
            messages.append({"role": "assistant", "content": self.format_answer(shot)})
        messages.append({"role": "user", "content": self.format_question(example)})
        return messages

    # ------------------------------------------------------------------ scoring
    def score(self, completion: str, example: Example) -> Scored:
        raise NotImplementedError

    def loglik_request(self, example: Example) -> tuple[str, list[str]]:
        """lm-eval's multiple-choice log-likelihood request: a context and one continuation per choice."""
        raise InputError(f"task {self.name!r} is not multiple choice: it has no log-likelihood request")

    @property
    def modes(self) -> tuple[str, ...]:
        return ("generate", "loglik") if self.multiple_choice else ("generate",)

    def __repr__(self) -> str:
        return f"<task {self.name}>"


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise InputError(f"unknown split {split!r}; expected one of {SPLITS}")


def carve(pool: Sequence[Example], split: str, seed: int, n_val: int = VALIDATION_SIZE) -> list[Example]:
    """Seeded train/validation carve of ``pool``: validation = n_val items, train = the rest.

    Both come back in the seeded shuffled order so that ``limit`` gives a random subset. The
    permutation is computed on ids sorted, so it does not depend on how ``pool`` was ordered.
    """
    if len(pool) <= n_val:
        raise InputError(f"pool of {len(pool)} items is too small for a validation carve of {n_val}")
    items = sorted(pool, key=lambda e: e.id)
    rng = random.Random(f"xsteer-carve/{seed}")
    rng.shuffle(items)
    return items[:n_val] if split == "validation" else items[n_val:]


def shuffled(items: Sequence[Example], seed: int) -> list[Example]:
    """Seeded shuffle used for non-test splits that are not carved (ARC train/validation)."""
    out = list(items)
    random.Random(f"xsteer-order/{seed}").shuffle(out)
    return out


def draw(pool: Sequence[Example], n: int, seed: int, what: str) -> list[Example]:
    """``n`` seeded exemplars from ``pool``, independent of the order the caller loaded it in."""
    ordered = sorted(pool, key=lambda e: e.id)
    if n > len(ordered):
        raise InputError(f"{what}: asked for {n} few-shot exemplars but only {len(ordered)} candidates")
    return random.Random(f"xsteer-shots/{seed}").sample(ordered, n)
