"""Per-item results of an inference-time-scaling (ITS) study, and what is read from them.

An *arm* gives each test item ``k`` generations (λ values of a vote, or samples) and answers by their
majority vote (:func:`xsteer.tasks.scoring.majority_vote`: invalid answers never win, ties go to the first
slot). The study keeps one compact line per (item, arm) — the answers, their correctness and generated tokens
per slot, no completions — and everything the report says is computed from those lines:

* the vote's correctness (:func:`vote`), the number of distinct valid answers (:func:`distinct`) and the oracle
  pass@k, whether the right answer is among the ``k`` (:func:`oracle`): does the grid lack diversity, or does
  the mode pick badly?
* the vote at a token budget (:func:`budget_vote`): the arm's slots in random orders, as many as fit in the
  budget (at least one), expected correctness over the orders — arms compared at equal generated tokens;
* paired bootstrap intervals on per-item differences (:func:`paired_diff`), with the second arm optionally
  several draws (random directions) pooled: items and draws are both resampled.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from xsteer.errors import InputError
from xsteer.evaluation.stats import CI
from xsteer.tasks.scoring import majority_vote

#: metric -> (the answer field it judges, its correctness field), as in the records.
METRICS = {"correct": ("answer", "correct"), "strict_correct": ("strict_answer", "strict_correct")}


def compact(rows: Sequence[Mapping[str, Any]], arm: str) -> dict[str, Any]:
    """One item's records of one condition as one line: slots in vote order (λ, then sample), answers,
    correctness as '0'/'1' strings, generated tokens."""
    if not rows:
        raise InputError(f"no records for arm {arm!r}")
    items = {r["item"] for r in rows}
    if len(items) != 1:
        raise InputError(f"one item per line, got {sorted(items)}")
    rows = sorted(rows, key=lambda r: (float(r["lam"]), int(r["sample"])))
    one_lam = len({float(r["lam"]) for r in rows}) == 1
    return {
        "item": rows[0]["item"],
        "arm": arm,
        "gold": rows[0].get("gold"),
        "slot": [int(r["sample"]) if one_lam else float(r["lam"]) for r in rows],
        "answer": [r.get("answer") for r in rows],
        "correct": "".join("1" if r.get("correct") else "0" for r in rows),
        "strict_answer": [r.get("strict_answer") for r in rows],
        "strict_correct": "".join("1" if r.get("strict_correct") else "0" for r in rows),
        "n_tokens": [int(r.get("n_tokens", 0)) for r in rows],
    }


def _fields(line: Mapping[str, Any], metric: str) -> tuple[list[Any], list[bool]]:
    if metric not in METRICS:
        raise InputError(f"unknown metric {metric!r}; options: {', '.join(METRICS)}")
    answer, correct = METRICS[metric]
    return list(line[answer]), [c == "1" for c in line[correct]]


def _vote(answers: Sequence[Any], correct: Sequence[bool]) -> bool:
    winner = majority_vote(answers)
    return winner is not None and any(a == winner and c for a, c in zip(answers, correct, strict=True))


def vote(line: Mapping[str, Any], metric: str = "correct") -> bool:
    """Whether the majority answer over the line's slots is right (no valid answer: wrong)."""
    return _vote(*_fields(line, metric))


def distinct(line: Mapping[str, Any], metric: str = "correct") -> int:
    """How many different valid answers the slots gave."""
    answers, _ = _fields(line, metric)
    return len({a for a in answers if a not in (None, "")})


def oracle(line: Mapping[str, Any], metric: str = "correct") -> bool:
    """Oracle pass@k: whether any of the k slots is right."""
    return any(_fields(line, metric)[1])


def tokens(line: Mapping[str, Any]) -> int:
    """Generated tokens over all of the line's slots."""
    return sum(line["n_tokens"])


def budget_vote(
    line: Mapping[str, Any], budget: float | int, *, metric: str = "correct", orders: int = 64, seed: int = 0
) -> tuple[float, float]:
    """The vote at a token budget: (expected correctness, expected tokens used) over ``orders`` random
    orders of the slots, each voting over the longest prefix whose tokens fit in ``budget`` (at least one
    slot, so a single generation may exceed it). A budget that covers every slot is the full vote."""
    answers, correct = _fields(line, metric)
    n_tok = list(line["n_tokens"])
    if sum(n_tok) <= budget:
        return float(_vote(answers, correct)), float(sum(n_tok))
    rng = np.random.default_rng([seed, len(n_tok), int(budget)])
    hits = used = 0.0
    for _ in range(orders):
        perm = rng.permutation(len(n_tok))
        spent, take = 0, list[int]()
        for i in perm:
            if take and spent + n_tok[i] > budget:
                break
            take.append(int(i))
            spent += n_tok[i]
        take.sort()  # vote in slot order, so ties break as in the full vote
        hits += _vote([answers[i] for i in take], [correct[i] for i in take])
        used += spent
    return hits / orders, used / orders


def paired_diff(
    a: ArrayLike, b: ArrayLike, *, n_boot: int = 10_000, alpha: float = 0.05, seed: int = 0
) -> CI:
    """Mean of ``a − b`` over items with a percentile-bootstrap CI, paired by item.

    Each side is per item (n,) or per item and draw (n, d): d draws of one kind of arm (random directions),
    pooled by their mean, with items AND draws resampled in each replicate, so the interval also carries the
    spread between draws. Values may be fractions (votes at a budget)."""
    sides = [np.asarray(v, dtype=float) for v in (a, b)]
    sides = [v[:, None] if v.ndim == 1 else v for v in sides]
    x, y = sides
    if any(v.ndim != 2 or not v.shape[0] or not v.shape[1] for v in sides) or len(x) != len(y):
        raise InputError(
            f"paired_diff needs (n,) or (n, d) on both sides with one n >= 1, got {x.shape}, {y.shape}"
        )
    if n_boot < 1 or not 0 < alpha < 1:
        raise InputError("n_boot must be >= 1 and alpha in (0, 1)")
    n = len(x)
    rng = np.random.default_rng(seed)

    def pooled(v: np.ndarray, w: np.ndarray) -> np.ndarray:
        d = v.shape[1]
        dw = rng.multinomial(d, np.full(d, 1 / d), size=len(w)) if d > 1 else np.ones((len(w), 1), dtype=int)
        return ((w @ v) / n * dw).sum(axis=1) / d

    reps = np.empty(n_boot)
    for start in range(0, n_boot, 1000):
        m = min(1000, n_boot - start)
        w = rng.multinomial(n, np.full(n, 1 / n), size=m)  # how often each item is drawn, per replicate
        reps[start : start + m] = pooled(x, w) - pooled(y, w)
    low, high = np.quantile(reps, [alpha / 2, 1 - alpha / 2])
    return CI(float(x.mean() - y.mean()), float(low), float(high), n)


def by_arm(lines: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Mapping[str, Any]]]:
    """arm -> item -> line; a line given twice for one (item, arm) is an error (a resumed run must not
    duplicate)."""
    out: dict[str, dict[str, Mapping[str, Any]]] = {}
    for line in lines:
        arm = out.setdefault(line["arm"], {})
        if line["item"] in arm:
            raise InputError(f"item {line['item']!r} of arm {line['arm']!r} is recorded twice")
        arm[line["item"]] = line
    return out


__all__ = [
    "METRICS",
    "budget_vote",
    "by_arm",
    "compact",
    "distinct",
    "oracle",
    "paired_diff",
    "tokens",
    "vote",
]
