"""The built-in synthetic task: templated multi-step arithmetic word problems, no data files needed.

Each problem is GSM8K-shaped (``{"question", "answer": "... #### N"}``) and read exactly like a GSM8K row, so
it shares GSM8K's prompts, answer format and scoring; ``meta["ops"]`` records the computation, so tests can
recompute every answer. Splits are generated from different seeds and made disjoint by question text. Useful
for smoke tests, the demo and small children: a 0.5B model sits well above its floor here.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from xsteer.errors import InputError
from xsteer.tasks.base import Example, check_split, draw
from xsteer.tasks.gsm8k import GSM8K, row_to_example

#: Default split sizes: a test split large enough for a 95% CI half-width under 5 points.
SIZES: dict[str, int] = {"train": 512, "validation": 128, "test": 512}

_NAMES: tuple[tuple[str, str, str], ...] = (
    ("Ava", "she", "her"),
    ("Liam", "he", "his"),
    ("Maya", "she", "her"),
    ("Noah", "he", "his"),
    ("Zoe", "she", "her"),
    ("Omar", "he", "his"),
    ("Lena", "she", "her"),
    ("Ravi", "he", "his"),
)
_OBJECTS: tuple[str, ...] = (
    "apples",
    "pencils",
    "stickers",
    "marbles",
    "cookies",
    "books",
    "stamps",
    "oranges",
)
_CONTAINERS: tuple[tuple[str, str], ...] = (
    ("bags", "bag"),
    ("boxes", "box"),
    ("packs", "pack"),
    ("jars", "jar"),
)
_CONNECTIVES: tuple[str, ...] = ("Then", "After that,", "Next,", "Later,")


def _synthetic_problem(
    rng: random.Random,
) -> tuple[str, str, int, tuple[tuple[Any, ...], ...], dict[str, str]]:
    """One problem: (question, GSM8K-style answer text ending '#### N', N, ops, names).

    ``ops`` records the computation, e.g. (("start", 12), ("buy", 5), ("multiply", 3, 4), ("share", 2)),
    so tests can recompute the answer independently of the text.
    """
    name, pron, poss = rng.choice(_NAMES)
    obj = rng.choice(_OBJECTS)
    x = rng.randint(5, 40)
    ops: list[tuple[Any, ...]] = [("start", x)]
    q = [f"{name} has {x} {obj}."]
    sol = [f"{name} starts with {x} {obj}."]
    n_steps = rng.randint(2, 3)  # short enough for a 135M child to finish its chain of thought in 64 tokens
    shared = False
    connectives = rng.sample(_CONNECTIVES, n_steps)  # no connective repeats within a problem
    for step in range(n_steps):
        conn = connectives[step]
        last = step == n_steps - 1
        divisors = [k for k in range(2, 7) if x % k == 0]
        # Sharing changes what is counted (per friend), so it may only be the final step.
        kinds = ["buy", "sell", "multiply"] + (["share"] if last and divisors else [])
        if x < 2:
            kinds.remove("sell")
        kind = rng.choice(kinds)
        if kind == "buy":
            k = rng.randint(2, 30)
            q.append(f"{conn} {pron} buys {k} more {obj}.")
            sol.append(f"After buying {k} more, {pron} has {x} + {k} = {x + k} {obj}.")
            x += k
            ops.append(("buy", k))
        elif kind == "sell":
            k = rng.randint(1, min(x - 1, 25))
            q.append(f"{conn} {pron} sells {k} {obj}.")
            sol.append(f"After selling {k}, {pron} has {x} - {k} = {x - k} {obj}.")
            x -= k
            ops.append(("sell", k))
        elif kind == "multiply":
            plural, singular = rng.choice(_CONTAINERS)
            m, n = rng.randint(2, 6), rng.randint(2, 12)
            q.append(f"{conn} {pron} buys {m} {plural} of {obj} with {n} {obj} in each {singular}.")
            sol.append(
                f"The {m} {plural} hold {m} * {n} = {m * n} {obj}, so {pron} has {x} + {m * n} = {x + m * n} {obj}."
            )
            x += m * n
            ops.append(("multiply", m, n))
        else:
            k = rng.choice(divisors)
            q.append(f"{conn} {pron} shares all of {poss} {obj} equally among {k} friends.")
            sol.append(f"Each of the {k} friends gets {x} / {k} = {x // k} {obj}.")
            x //= k
            ops.append(("share", k))
            shared = True
    q.append(f"How many {obj} does each friend get?" if shared else f"How many {obj} does {name} have now?")
    answer_text = "\n".join(sol) + f"\n#### {x}"
    return " ".join(q), answer_text, x, tuple(ops), {"name": name, "object": obj}


def synthetic_examples(split: str, *, seed: int = 0, n: int | None = None) -> list[Example]:
    """Deterministic synthetic split (default sizes :data:`SIZES`).

    Splits are generated from different seeds and made disjoint by question text: test is generated
    first, validation avoids test, train avoids both. Each raw problem is GSM8K-shaped
    (``{"question", "answer": "... #### N"}``) and mapped exactly like a GSM8K row, so ``solution``
    excludes the ``####`` line; ``meta["ops"]`` records the computation for verification.
    """
    check_split(split)
    taken: set[str] = set()
    out: list[Example] = []
    for s in ("test", "validation", "train"):
        size = n if (n is not None and s == split) else SIZES[s]
        rng = random.Random(f"xsteer-synthetic/{s}/{seed}")
        out = []
        attempts = 0
        while len(out) < size:
            attempts += 1
            if attempts > 100 * size + 1000:  # the template space is huge; this only guards bugs
                raise RuntimeError(f"synthetic: could not generate {size} unique problems for {s!r}")
            question, raw, value, ops, names = _synthetic_problem(rng)
            if question in taken:
                continue
            taken.add(question)
            ex = row_to_example({"question": question, "answer": raw}, f"synthetic/{s}/{len(out)}")
            out.append(
                Example(
                    id=ex.id,
                    question=ex.question,
                    answer=ex.answer,
                    solution=ex.solution,
                    meta={**ex.meta, "ops": ops, "value": value, **names, "seed": seed},
                )
            )
        if s == split:
            return out
    raise AssertionError(split)  # pragma: no cover


class Synthetic(GSM8K):
    name = "synthetic"
    description = "built-in 2-3 step arithmetic word problems (GSM8K format and scoring), no data files"

    def pool(self, split: str, data_dir: Path | None) -> list[Example]:
        return synthetic_examples(split)

    def load(
        self, split: str, *, data_dir: str | Path | None = None, limit: int | None = None, seed: int = 0
    ) -> list[Example]:
        # Generated, not read: the seed picks the problems, and the order is already random.
        check_split(split)
        if limit is not None and limit < 0:
            raise InputError(f"limit must be >= 0 or None, got {limit}")
        items = synthetic_examples(split, seed=seed)
        return items if limit is None else items[:limit]

    def shots(
        self,
        n: int = 5,
        *,
        seed: int = 0,
        train: Sequence[Example] | None = None,
        data_dir: str | Path | None = None,
    ) -> list[Example]:
        pool = list(train) if train is not None else synthetic_examples("train", seed=seed)
        return draw(pool, n, seed, self.name)


TASK = Synthetic()
