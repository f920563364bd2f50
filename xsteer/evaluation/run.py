"""The one wiring from an :class:`~xsteer.evaluation.plan.EvalPlan` to records and a summary: the plan's
splits, the conditions (:func:`~xsteer.evaluation.conditions.build_conditions`) and the evaluator.

``xs.evaluate``, ``xsteer evaluate``, ``xsteer tune``, the grid's jobs and analysis/its_study.py each parse
their input into a plan and call :func:`run_evaluation` or :func:`run_tune`, so which items are read, how
the conditions are built and which settings the records are hashed under is decided here only.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jaxtyping import Float
from torch import Tensor

from xsteer.core.models import model_id
from xsteer.core.types import HookedModel
from xsteer.core.vectors import SteeringVectors
from xsteer.errors import InputError
from xsteer.evaluation.conditions import Conditions, build_conditions
from xsteer.evaluation.evaluate import Evaluator
from xsteer.evaluation.plan import EvalPlan
from xsteer.evaluation.records import Record, RecordStore
from xsteer.evaluation.summary import BASELINE, summary_markdown
from xsteer.tasks import Example, Task, get_task


@dataclass(frozen=True)
class EvalSummary:
    """What an evaluation found: one summary per metric, λ*, and where the records are."""

    task: str
    summaries: dict[str, dict[str, Any]]
    lambda_star: dict[str, float]
    folder: Path
    config_hash: dict[str, str] = field(default_factory=dict)  # condition -> hash its records carry

    @property
    def rows(self) -> list[dict[str, Any]]:
        """The main metric's rows: condition, accuracy, CI, Δ vs baseline with CI, McNemar p."""
        return next(iter(self.summaries.values()))["rows"]

    def records(self) -> list[Record]:
        return RecordStore(self.folder / "records.jsonl").load()

    def table(self) -> str:
        return "\n\n".join(summary_markdown(s) for s in self.summaries.values())

    def _repr_markdown_(self) -> str:
        return f"**{self.task}**, λ* = {self.lambda_star}\n\n{self.table()}"

    def __str__(self) -> str:
        return self.table()


def load_splits(
    task: str | Task, plan: EvalPlan, *, data_dir: str | Path | None = None, test: bool = True
) -> tuple[list[Example], list[Example]]:
    """The plan's validation and test items of ``task`` (validation empty when ``val_items`` is 0, test
    empty when not ``test``). Cheap, so front ends call it before a model loads and pass the result on."""
    t = get_task(task)
    test_items = t.load("test", data_dir=data_dir, limit=plan.test_items, seed=plan.seed) if test else []
    val = (
        t.load("validation", data_dir=data_dir, limit=plan.val_items, seed=plan.seed)
        if plan.val_items
        else []
    )
    return val, test_items


def _conditions(
    conditions_or_vectors: Mapping[str, SteeringVectors | None],
    plan: EvalPlan,
    norm: str | None,
    norms: Float[Tensor, " layer"] | None,
) -> Conditions:
    # Built conditions always hold the baseline, a name no user vector may take, so the two kinds of input
    # cannot be confused.
    if BASELINE in conditions_or_vectors and conditions_or_vectors[BASELINE] is None:
        if norm is not None:
            raise InputError("norm applies to vectors, not to conditions already built")
        return dict(conditions_or_vectors)
    vectors: dict[str, SteeringVectors] = {}
    for name, v in conditions_or_vectors.items():
        if v is None:
            raise InputError(f"{name!r} has no vectors; only the baseline is unsteered")
        vectors[name] = v
    return build_conditions(vectors, random=plan.random, seed=plan.seed, norm=norm, norms=norms)


def _evaluator(
    child: HookedModel,
    conditions: Conditions,
    plan: EvalPlan,
    task: Task,
    folder: Path,
    data_dir: str | Path | None,
    progress: bool,
) -> Evaluator:
    return Evaluator(
        child,
        plan.config(task.name),
        RecordStore(folder / "records.jsonl"),
        conditions,
        batch_size=plan.batch_size,
        progress=progress,
        data_dir=data_dir,
    )


def run_evaluation(
    child: HookedModel,
    conditions_or_vectors: Mapping[str, SteeringVectors | None],
    plan: EvalPlan,
    *,
    task: str | Task,
    data_dir: str | Path | None = None,
    out: str | Path | None = None,
    norm: str | None = None,
    norms: Float[Tensor, " layer"] | None = None,
    splits: tuple[Sequence[Example], Sequence[Example]] | None = None,
    progress: bool = True,
    extra: Mapping[str, Any] | None = None,
) -> EvalSummary:
    """Algorithms 2 + 3 of ``plan`` on one child into ``out`` (records, ``summary.json``, ``summary.md``; a
    temporary folder when None); resumable.

    ``conditions_or_vectors`` is either conditions from :func:`build_conditions` (they hold the baseline) or
    named child-space vectors, which become conditions here: ``norm``/``norms`` as in ``build_conditions``,
    the random control when ``plan.random``. ``splits`` (validation, test) are the plan's items when given
    by a caller that loaded them early (:func:`load_splits`); otherwise they are loaded here."""
    t = get_task(task)
    conditions = _conditions(conditions_or_vectors, plan, norm, norms)
    val, test = splits if splits is not None else load_splits(t, plan, data_dir=data_dir)
    folder = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="xsteer-eval-"))
    ev = _evaluator(child, conditions, plan, t, folder, data_dir, progress)
    doc = ev.run_and_summarize(
        val,
        test,
        [n for n, v in conditions.items() if v is not None],
        self_consistency=plan.self_consistency and plan.mode == "generate",
        extra={"child": model_id(child), **(extra or {})},
    )
    return EvalSummary(t.name, doc["summaries"], doc["lambda_star"], folder, doc["config_hash"])


def run_tune(
    child: HookedModel,
    conditions_or_vectors: Mapping[str, SteeringVectors | None],
    plan: EvalPlan,
    *,
    task: str | Task,
    data_dir: str | Path | None = None,
    out: str | Path,
    norm: str | None = None,
    norms: Float[Tensor, " layer"] | None = None,
    validation: Sequence[Example] | None = None,
    baseline: bool = True,
    progress: bool = True,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Algorithm 2 of ``plan`` alone: λ* per vector condition on the plan's validation items (or
    ``validation``), the accuracy-by-λ tables and, with ``baseline``, the unsteered child on the same items;
    written to ``out``/tune.json beside the records. Returns that document."""
    t = get_task(task)
    conditions = _conditions(conditions_or_vectors, plan, norm, norms)
    val = validation if validation is not None else load_splits(t, plan, data_dir=data_dir, test=False)[0]
    ev = _evaluator(child, conditions, plan, t, Path(out), data_dir, progress)
    return ev.tune_and_summarize(
        val,
        [n for n, v in conditions.items() if v is not None],
        baseline=baseline,
        extra={"child": model_id(child), **(extra or {})},
    )


__all__ = ["EvalSummary", "load_splits", "run_evaluation", "run_tune"]
