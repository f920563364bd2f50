"""``xs.evaluate``: the paper's evaluation in one call, for notebooks and scripts.

::

    summary = xs.evaluate(child, {"parent": mapped, "native": native}, task="synthetic", lambdas=(0.01, 0.03),
                          test_items=64, val_items=16)
    summary            # a table in a notebook; summary.rows for the numbers

It runs Algorithm 2 (λ* on validation), Algorithm 3 (test at λ*, ITS over the grid) with the baseline, a
random direction of equal norm and self-consistency, and keeps every record in ``out`` (a temporary folder
by default), so a rerun with the same ``out`` resumes. Its defaults are :class:`EvalPlan`'s, the same as
``xsteer evaluate`` and ``xsteer grid``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from xsteer.core.types import HookedModel
from xsteer.core.vectors import SteeringVectors
from xsteer.evaluation.plan import EvalPlan, check_mode, check_positions
from xsteer.evaluation.run import EvalSummary, run_evaluation
from xsteer.tasks import Task


def evaluate(
    child: HookedModel,
    vectors: Mapping[str, SteeringVectors],
    *,
    task: str | Task,
    lambdas: Sequence[float] = EvalPlan.lambdas,
    val_items: int = EvalPlan.val_items,
    test_items: int | None = EvalPlan.test_items,
    mode: str = EvalPlan.mode,
    shots: int = EvalPlan.shots,
    positions: str = EvalPlan.positions,
    max_new_tokens: int = EvalPlan.max_new_tokens,
    random: bool = EvalPlan.random,
    self_consistency: bool = EvalPlan.self_consistency,
    norm: str | None = None,
    norms: Any = None,
    data_dir: str | Path | None = None,
    out: str | Path | None = None,
    batch_size: int = EvalPlan.batch_size,
    seed: int = EvalPlan.seed,
    progress: bool = True,
) -> EvalSummary:
    """Evaluate ``child`` steered by each of ``vectors`` (child-space, one norm convention) on ``task``."""
    plan = EvalPlan(
        mode=check_mode(mode),
        shots=shots,
        lambdas=tuple(lambdas),
        positions=check_positions(positions),
        max_new_tokens=max_new_tokens,
        seed=seed,
        val_items=val_items,
        test_items=test_items,
        batch_size=batch_size,
        random=random,
        self_consistency=self_consistency,
    )
    return run_evaluation(
        child, vectors, plan, task=task, data_dir=data_dir, out=out, norm=norm, norms=norms, progress=progress
    )


__all__ = ["EvalSummary", "evaluate"]
