"""MATH (Hendrycks et al. 2021) and its PRM800K split MATH-500.

``math``: test = all 5,000 test problems (``math/test.jsonl``), train = the official 7,500-problem train
split minus a seeded validation carve. Offline, train is read only from ``math/train.jsonl`` if someone
provides it (the shipped data lacks it; the error points to ``math500``). From the hub, train and test come
from a maintained mirror (:data:`HUB_MIRRORS`), since ``hendrycks/competition_math`` was taken down in
January 2025.

``math500``: test = MATH-500 (``math/math500.jsonl``; hub ``HuggingFaceH4/MATH-500``); train and
validation come from the other 4,500 problems of the 5,000-problem test set (matched on ``unique_id``
offline, on the normalised problem text with the hub mirror, which has no ids), with a seeded validation
carve. Few-shot exemplars and contrastive pairs come from this train split, so MATH-500 is never seen
before evaluation.

Responses box their final answer (``\\boxed{}``); scoring is the last box, Hendrycks/Minerva normalisation
and ``math_verify`` equivalence.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from xsteer.errors import DataNotFoundError, InputError
from xsteer.tasks.base import Example, Scored, Task, draw
from xsteer.tasks.data import data_file, hub_rows, map_rows
from xsteer.tasks.math_scoring import last_boxed, score_math

# System prompt: the paper's Appendix A, Table 2. The PDF->text extraction dropped LaTeX inside <code>:
# both occurrences of "<code>answer</code>" were "\boxed{answer}" -- the prompt itself says "state the final
# answer in a box", and MATH's reference solutions use \boxed. The wording around it ("The format for the
# final answer should \boxed{answer}.") is kept verbatim, without guessing a lost "be".
SYSTEM = """\
You are an expert mathematician and a meticulous problem solver. Your task is to solve the following math problem from the MATH dataset. Follow these instructions carefully:

1. Understand the Problem: Read the problem statement carefully and identify the key information, the question being asked, and any constraints.
2. Formulate a Plan: Outline the steps you will take to solve the problem. State the mathematical concepts, formulas, or theorems you will use.
3. Show Your Work: Execute your plan step-by-step, showing all your reasoning and calculations clearly. This is crucial for understanding your thought process.
4. Final Answer: After your detailed solution, clearly state the final answer in a box. The format for the final answer should \\boxed{answer}.

Let's break down your response structure:

- Step-by-step thinking: Present your reasoning in a logical and sequential manner. Explain each step of your calculation.
- Clarity and Precision: Use precise mathematical language and notation.
- Final Answer Encapsulation: The final numerical or symbolic answer must be enclosed in \\boxed{answer}."""


#: Hub mirrors of the full MATH dataset (train 7,500 / test 5,000), tried in order.
#: Each entry is (repo id, list of configs to concatenate).
HUB_MIRRORS: tuple[tuple[str, tuple[str | None, ...]], ...] = (
    (
        "EleutherAI/hendrycks_math",
        (
            "algebra",
            "counting_and_probability",
            "geometry",
            "intermediate_algebra",
            "number_theory",
            "prealgebra",
            "precalculus",
        ),
    ),
    ("DigitalLearningGmbH/MATH-lighteval", ("default",)),
)


def _parse_level(level: Any) -> int | None:
    if isinstance(level, int):
        return level
    m = re.search(r"\d+", str(level))  # hub mirrors say "Level 3"; some train rows say "Level ?"
    return int(m.group()) if m else None


def row_to_example(row: dict[str, Any], ex_id: str | None = None) -> Example:
    """A MATH row (``problem``, ``solution``, optional ``answer``/``unique_id``) as an :class:`Example`."""
    solution = str(row["solution"])
    answer = row.get("answer")
    if answer is None:  # hub mirrors carry no answer field: the gold is the solution's last box
        answer = last_boxed(solution)
        if answer is None:
            raise InputError(f"MATH row {ex_id or row.get('unique_id')}: no \\boxed answer in solution")
    subject = row.get("subject", row.get("type"))
    uid = row.get("unique_id") or ex_id
    if uid is None:
        raise InputError("MATH row without unique_id needs an explicit id")
    return Example(
        id=str(uid),
        question=str(row["problem"]),
        answer=str(answer),
        solution=solution,
        meta={"subject": subject, "level": _parse_level(row.get("level")), "unique_id": row.get("unique_id")},
    )


def _norm_problem(text: str) -> str:
    return " ".join(text.split())


def _hub_full(split: str) -> list[Example]:
    """Full MATH train or test split from the first mirror that loads."""
    errors: list[str] = []
    for repo, configs in HUB_MIRRORS:
        try:
            out: list[Example] = []
            for config in configs:
                counters: dict[str, int] = {}
                for row in hub_rows(repo, config, split, "math"):
                    subject = str(row.get("type", config))
                    slug = re.sub(r"[^a-z]+", "_", subject.lower().replace("&", "and")).strip("_")
                    k = counters.get(slug, 0)
                    counters[slug] = k + 1
                    # The mirrors drop the original file names, so ids are positional and marked "hub".
                    out.append(row_to_example(row, ex_id=f"hub/{split}/{slug}/{k}"))
            return out
        except (DataNotFoundError, InputError) as exc:
            errors.append(f"{repo}: {exc}")
    raise DataNotFoundError("no MATH hub mirror could be loaded:\n  " + "\n  ".join(errors))


class _MathTask(Task):
    system_prompt = SYSTEM

    def shots(
        self,
        n: int = 5,
        *,
        seed: int = 0,
        train: Sequence[Example] | None = None,
        data_dir: str | Path | None = None,
    ) -> list[Example]:
        """``n`` problems drawn with ``seed`` from the train split (never evaluation items). Only solutions
        with a box and no ``[asy]`` figure code are candidates (figure code is meaningless as text)."""
        if n < 0:
            raise InputError(f"n must be >= 0, got {n}")
        pool = list(train) if train is not None else self.load("train", data_dir=data_dir, seed=seed)
        candidates = [e for e in pool if e.solution and "\\boxed" in e.solution and "[asy]" not in e.solution]
        return draw(candidates, n, seed, self.name)

    def final_line(self, answer: str) -> str:
        return f"The final answer is $\\boxed{{{answer}}}$."

    def format_answer(self, example: Example) -> str:
        """The reference solution as given: it already boxes its answer (one is appended if missing)."""
        reasoning = (example.solution or "").strip()
        if "\\boxed" in reasoning:
            return reasoning
        return super().format_answer(example)

    def score(self, completion: str, example: Example) -> Scored:
        return score_math(completion, example.answer)


class Math(_MathTask):
    name = "math"
    description = (
        "MATH, all 5,000 test problems; train from the official train split (hub or math/train.jsonl)"
    )

    def pool(self, split: str, data_dir: Path | None) -> list[Example]:
        if data_dir is None:
            return _hub_full("test" if split == "test" else "train")
        if split == "test":
            return map_rows(
                data_file(data_dir, "math/test.jsonl", self.name, split), lambda r, i: row_to_example(r)
            )
        path = data_dir / "math/train.jsonl"
        if not path.is_file():
            raise DataNotFoundError(
                f"{path} not found (task 'math', split {split!r}): the MATH train split is not available "
                "offline, only split 'test' (full 5,000). Use task 'math500' (test = MATH-500, "
                "train/validation from the other 4,500 test problems, as PRM800K does), or the hub."
            )
        # A user-provided train file may lack unique_id: give positional ids that cannot clash with test.
        return map_rows(path, lambda r, i: row_to_example(r, ex_id=f"train/{i}"))


class Math500(_MathTask):
    name = "math500"
    description = "MATH-500 (PRM800K split): test = 500 problems, train/validation from the other 4,500"

    def pool(self, split: str, data_dir: Path | None) -> list[Example]:
        if data_dir is None:
            test500 = [row_to_example(r) for r in hub_rows("HuggingFaceH4/MATH-500", None, "test", self.name)]
            if split == "test":
                return test500
            held_out = {_norm_problem(e.question) for e in test500}
            full = _hub_full("test")
            pool = [e for e in full if _norm_problem(e.question) not in held_out]
            if len(full) - len(pool) != len(test500):
                warnings.warn(
                    f"math500: matched {len(full) - len(pool)} of {len(test500)} MATH-500 problems in the hub "
                    "mirror by text; unmatched ones may leak into train/validation",
                    stacklevel=3,
                )
            return pool
        test500 = map_rows(
            data_file(data_dir, "math/math500.jsonl", self.name, split), lambda r, i: row_to_example(r)
        )
        if split == "test":
            return test500
        held_out = {e.id for e in test500}
        full = map_rows(
            data_file(data_dir, "math/test.jsonl", self.name, split), lambda r, i: row_to_example(r)
        )
        pool = [e for e in full if e.id not in held_out]
        if len(full) - len(pool) != len(held_out):
            raise InputError(
                f"{data_dir / 'math/test.jsonl'}: only {len(full) - len(pool)} of {len(held_out)} MATH-500 "
                "unique_ids found; refusing to build a train split that could contain test problems"
            )
        return pool


MATH = Math()
MATH500 = Math500()
