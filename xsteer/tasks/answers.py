"""A task's final answers, stated and corrupted: the texts of the paper's ``corrupted_answer`` concept.

Question + reference reasoning + the gold final answer (positive) vs the same text with a wrong final answer
(negative): the texts differ in their last tokens only, so a direction read from them says "this reasoning
ends in the right answer". GSM8K/MATH/synthetic rows use their solution; ARC rows, which have none, contrast
the right and a wrong choice. :mod:`xsteer.extraction.pairs` builds its ``corrupted_answer`` pairs from
:func:`corrupted_texts`, and :mod:`xsteer.tasks.concepts.answer` its concept.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from typing import Any

from xsteer.errors import InputError
from xsteer.tasks.base import Example, Task
from xsteer.tasks.prompts import render_pair_text


def wrong_answer(answer: str, rng: random.Random, others: Sequence[str]) -> str:
    """A deterministic wrong answer: a nearby number for numeric answers, else another row's answer."""
    s = answer.strip().replace(",", "")
    if re.fullmatch(r"-?\d+", s):
        delta = rng.choice([d for d in range(-10, 11) if d != 0])
        return str(int(s) + delta)
    if re.fullmatch(r"-?\d*\.\d+", s):
        return f"{float(s) + rng.choice([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5]):g}"
    candidates = [o for o in others if o.strip() != answer.strip()]
    return rng.choice(candidates) if candidates else answer + "+1"


def strip_final(solution: str) -> str:
    """Drop a trailing '#### N' line so the builder controls the final-answer line itself."""
    return re.sub(r"\n?\s*####.*\Z", "", solution.strip(), flags=re.S).rstrip()


def corrupted_texts(
    examples: Sequence[Example], tokenizer: Any, *, task: Task, seed: int = 0
) -> list[tuple[str, str, str]]:
    """(gold text, corrupted text, example id) per example, rendered for ``tokenizer`` (None: plain text)."""
    rng = random.Random(seed)
    answers = [e.answer for e in examples]
    out = []
    for ex in examples:
        if ex.choices is not None and ex.labels is not None:  # multiple choice: right vs wrong choice
            wrong = rng.choice([lab for lab in ex.labels if lab != ex.answer])
            right_text = ex.choices[list(ex.labels).index(ex.answer)]
            wrong_text = ex.choices[list(ex.labels).index(wrong)]
            pos = f"The answer is {right_text}. [{ex.answer}]"
            neg = f"The answer is {wrong_text}. [{wrong}]"
            question = (
                ex.question
                + "\n"
                + "\n".join(f"{lab}. {t}" for lab, t in zip(ex.labels, ex.choices, strict=True))
            )
        else:
            if not ex.solution:
                raise InputError(
                    f"example {ex.id!r} has no reference solution to build a corrupted_answer pair"
                )
            reasoning = strip_final(ex.solution)
            wrong = wrong_answer(ex.answer, rng, answers)
            pos = f"{reasoning}\n{task.final_line(ex.answer)}"
            neg = f"{reasoning}\n{task.final_line(wrong)}"
            question = ex.question
        out.append(
            (render_pair_text(tokenizer, question, pos), render_pair_text(tokenizer, question, neg), ex.id)
        )
    return out


__all__ = ["corrupted_texts", "strip_final", "wrong_answer"]
