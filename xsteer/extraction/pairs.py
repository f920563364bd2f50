"""Contrastive prompt pairs: the data a concept is read from.

Each pair is two complete texts that differ in the concept only; extraction reads the residual stream
at the *last token* of each text. Builders turn dataset rows into pairs:

``corrupted_answer``
    question + reference reasoning + the gold final answer (positive) vs the same text with a wrong final
    answer (negative). The texts differ in their last tokens only, so the direction reads "this
    reasoning ends in the right answer". GSM8K/MATH/synthetic rows use their solution; ARC rows, which
    have none, contrast the right and a wrong choice.
``persona``
    RepE-style: an expert, meticulous persona vs a careless one as the system prompt, followed by the same
    question and the same reference reasoning truncated at a seeded random point (RepE reads
    statements at many cut points); the texts differ in the persona only.

User files are JSON Lines with one ``{"positive": "...", "negative": "..."}`` object a line; their texts
are used verbatim (no chat template is applied). A builder is any callable
``(examples, tokenizer, *, task, seed) -> list[ContrastivePair]``: pass one to :func:`build_pairs`, or
:func:`register_builder` it to use it by name from the CLI and configs.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xsteer.core.io import read_jsonl
from xsteer.errors import InputError
from xsteer.tasks import Example, Task, get_task
from xsteer.tasks.answers import corrupted_texts, strip_final
from xsteer.tasks.prompts import render_pair_text


@dataclass(frozen=True)
class ContrastivePair:
    positive: str
    negative: str
    source_id: str = ""


EXPERT = (
    "You are a meticulous expert problem solver. You reason carefully step by step, check every "
    "calculation, and only state an answer you have verified."
)
CARELESS = (
    "You are a careless, hasty student. You skim the problem, guess at the numbers, skip checking "
    "your work, and state whatever answer comes to mind first."
)


def corrupted_answer(
    examples: Sequence[Example], tokenizer: Any, *, task: Task, seed: int = 0
) -> list[ContrastivePair]:
    return [
        ContrastivePair(p, n, i) for p, n, i in corrupted_texts(examples, tokenizer, task=task, seed=seed)
    ]


def persona(
    examples: Sequence[Example], tokenizer: Any, *, task: Task, seed: int = 0
) -> list[ContrastivePair]:
    rng = random.Random(seed)
    pairs = []
    for ex in examples:
        response = strip_final(ex.solution) if ex.solution else f"The answer is [{ex.answer}]"
        words = response.split()
        # Cut somewhere in the reasoning (at least a few words in) so the last token sits mid-thought.
        cut = rng.randint(min(3, len(words)), len(words)) if words else 0
        partial = " ".join(words[:cut])
        pos = render_pair_text(tokenizer, ex.question, partial, system=EXPERT)
        neg = render_pair_text(tokenizer, ex.question, partial, system=CARELESS)
        pairs.append(ContrastivePair(pos, neg, ex.id))
    return pairs


Builder = Callable[..., list[ContrastivePair]]
BUILDERS: dict[str, Builder] = {
    "corrupted_answer": corrupted_answer,
    "persona": persona,
}


def register_builder(name: str, builder: Builder) -> Builder:
    """Make a pair builder usable by name (CLI ``--builder``, config ``pairs.builder``)."""
    if not callable(builder):
        raise InputError(f"a pair builder must be callable, got {type(builder).__name__}")
    BUILDERS[name] = builder
    return builder


def build_pairs(
    builder: str | Builder, examples: Sequence[Example], tokenizer: Any, *, task: str | Task, seed: int = 0
) -> list[ContrastivePair]:
    """Contrastive pairs from benchmark items, with a named builder (see the module docstring) or a callable."""
    if isinstance(builder, str):
        if builder not in BUILDERS:
            raise InputError(f"unknown pair builder {builder!r}; options: {', '.join(BUILDERS)}")
        builder = BUILDERS[builder]
    pairs = builder(examples, tokenizer, task=get_task(task), seed=seed)
    if not pairs:
        raise InputError("the pair set is empty: no examples to build contrastive pairs from")
    check_pairs(pairs)
    return pairs


def concept_pairs(concept: Any) -> list[ContrastivePair]:
    """A concept's (positive, negative) texts (:mod:`xsteer.tasks.concepts`) as pairs, used verbatim."""
    pairs = [ContrastivePair(p, n, f"{concept.name}:{i}") for i, (p, n) in enumerate(concept.pairs)]
    check_pairs(pairs)
    return pairs


def load_pairs_jsonl(path: str | Path) -> list[ContrastivePair]:
    """Read user pairs, one ``{"positive": str, "negative": str}`` a line; errors name the line."""
    pairs = []
    path = Path(path)
    for lineno, row in read_jsonl(path, with_lines=True):
        if not isinstance(row, dict) or not all(
            isinstance(row.get(k), str) and row[k] for k in ("positive", "negative")
        ):
            raise InputError(
                f"{path}:{lineno}: each line needs non-empty string fields 'positive' and 'negative'"
            )
        pairs.append(
            ContrastivePair(row["positive"], row["negative"], str(row.get("id", f"{path.name}:{lineno}")))
        )
    if not pairs:
        raise InputError(f"{path}: the pair set is empty")
    check_pairs(pairs)
    return pairs


#: Longest pair text accepted, in characters: a pasted book would otherwise try to allocate a terabyte of
#: attention (a 5 MB pair text did); real contrastive texts are sentences or short dialogues.
MAX_PAIR_CHARS = 20_000


def check_pairs(pairs: Sequence[ContrastivePair]) -> None:
    """Refuse pairs that carry no contrast (identical texts) or texts too long to be a pair."""
    same = [p.source_id or str(i) for i, p in enumerate(pairs) if p.positive.strip() == p.negative.strip()]
    if same:
        shown = ", ".join(same[:5]) + (f" and {len(same) - 5} more" if len(same) > 5 else "")
        raise InputError(
            f"{len(same)} pair(s) have identical positive and negative texts ({shown}): "
            "a pair must differ in the concept"
        )
    long = [
        p.source_id or str(i)
        for i, p in enumerate(pairs)
        if max(len(p.positive), len(p.negative)) > MAX_PAIR_CHARS
    ]
    if long:
        raise InputError(
            f"pair(s) {', '.join(long[:5])} have a text over {MAX_PAIR_CHARS:,} characters; "
            "contrastive pairs are short texts"
        )


def pairs_hash(pairs: Sequence[ContrastivePair]) -> str:
    blob = json.dumps([[p.positive, p.negative] for p in pairs], ensure_ascii=False).encode()
    return hashlib.sha256(blob).hexdigest()
