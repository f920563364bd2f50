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
are used verbatim (no chat template is applied).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xsteer.tasks.data import Example, read_jsonl
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


def _wrong_answer(answer: str, rng: random.Random, others: Sequence[str]) -> str:
    """A deterministic wrong answer: a nearby number for numeric answers, else another row's answer."""
    s = answer.strip().replace(",", "")
    if re.fullmatch(r"-?\d+", s):
        delta = rng.choice([d for d in range(-10, 11) if d != 0])
        return str(int(s) + delta)
    if re.fullmatch(r"-?\d*\.\d+", s):
        return f"{float(s) + rng.choice([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5]):g}"
    candidates = [o for o in others if o.strip() != answer.strip()]
    return rng.choice(candidates) if candidates else answer + "+1"


def _final_line(dataset: str, answer: str) -> str:
    if dataset == "math" or dataset == "math500":
        return f"The final answer is $\\boxed{{{answer}}}$."
    return f"#### The final answer is: {answer}"


def corrupted_answer(examples: Sequence[Example], tokenizer: Any, *, dataset: str, seed: int = 0) -> list[ContrastivePair]:
    rng = random.Random(seed)
    answers = [e.answer for e in examples]
    pairs = []
    for ex in examples:
        if ex.choices is not None and ex.labels is not None:  # multiple choice: right vs wrong choice
            wrong = rng.choice([lab for lab in ex.labels if lab != ex.answer])
            right_text = ex.choices[list(ex.labels).index(ex.answer)]
            wrong_text = ex.choices[list(ex.labels).index(wrong)]
            pos = f"The answer is {right_text}. [{ex.answer}]"
            neg = f"The answer is {wrong_text}. [{wrong}]"
            question = ex.question + "\n" + "\n".join(f"{lab}. {t}" for lab, t in zip(ex.labels, ex.choices, strict=True))
        else:
            if not ex.solution:
                raise ValueError(f"example {ex.id!r} has no reference solution to build a corrupted_answer pair")
            reasoning = _strip_final(ex.solution)
            wrong = _wrong_answer(ex.answer, rng, answers)
            pos = f"{reasoning}\n{_final_line(dataset, ex.answer)}"
            neg = f"{reasoning}\n{_final_line(dataset, wrong)}"
            question = ex.question
        pairs.append(ContrastivePair(render_pair_text(tokenizer, question, pos), render_pair_text(tokenizer, question, neg), ex.id))
    return pairs


def _strip_final(solution: str) -> str:
    """Drop a trailing '#### N' line so the builder controls the final-answer line itself."""
    return re.sub(r"\n?\s*####.*\Z", "", solution.strip(), flags=re.S).rstrip()


def persona(examples: Sequence[Example], tokenizer: Any, *, dataset: str, seed: int = 0) -> list[ContrastivePair]:
    rng = random.Random(seed)
    pairs = []
    for ex in examples:
        response = _strip_final(ex.solution) if ex.solution else f"The answer is [{ex.answer}]"
        words = response.split()
        # Cut somewhere in the reasoning (at least a few words in) so the last token sits mid-thought.
        cut = rng.randint(min(3, len(words)), len(words)) if words else 0
        partial = " ".join(words[:cut])
        pos = render_pair_text(tokenizer, ex.question, partial, system=EXPERT)
        neg = render_pair_text(tokenizer, ex.question, partial, system=CARELESS)
        pairs.append(ContrastivePair(pos, neg, ex.id))
    return pairs


BUILDERS: dict[str, Callable[..., list[ContrastivePair]]] = {
    "corrupted_answer": corrupted_answer,
    "persona": persona,
}


def build_pairs(builder: str, examples: Sequence[Example], tokenizer: Any, *, dataset: str, seed: int = 0) -> list[ContrastivePair]:
    """Build contrastive pairs with a named builder (see the module docstring)."""
    if builder not in BUILDERS:
        raise ValueError(f"unknown pair builder {builder!r}; options: {', '.join(BUILDERS)}")
    pairs = BUILDERS[builder](examples, tokenizer, dataset=dataset, seed=seed)
    if not pairs:
        raise ValueError("the pair set is empty: no examples to build contrastive pairs from")
    return pairs


def load_pairs_jsonl(path: str | Path) -> list[ContrastivePair]:
    """Read user pairs, one ``{"positive": str, "negative": str}`` a line; errors name the line."""
    pairs = []
    for lineno, row in enumerate(read_jsonl(path), start=1):
        if not isinstance(row, dict) or not all(isinstance(row.get(k), str) and row[k] for k in ("positive", "negative")):
            raise ValueError(f"{path}:{lineno}: each line needs non-empty string fields 'positive' and 'negative'")
        pairs.append(ContrastivePair(row["positive"], row["negative"], str(row.get("id", lineno))))
    if not pairs:
        raise ValueError(f"{path}: the pair set is empty")
    return pairs


def pairs_hash(pairs: Sequence[ContrastivePair]) -> str:
    blob = json.dumps([[p.positive, p.negative] for p in pairs], ensure_ascii=False).encode()
    return hashlib.sha256(blob).hexdigest()
