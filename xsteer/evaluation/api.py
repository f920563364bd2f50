"""``xs.evaluate``: the paper's evaluation in one call, for notebooks and scripts.

::

    summary = xs.evaluate(child, {"parent": mapped, "native": native}, task="synthetic", lambdas=(0.01, 0.03),
                          test_items=64, val_items=16)
    summary            # a table in a notebook; summary.rows for the numbers

It runs Algorithm 2 (λ* on validation), Algorithm 3 (test at λ*, ITS over the grid) with the baseline, a
random direction of equal norm and self-consistency, and keeps every record in ``out`` (a temporary folder
by default), so a rerun with the same ``out`` resumes.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xsteer.core.types import HookedModel
from xsteer.core.vectors import SteeringVectors
from xsteer.evaluation.conditions import build_conditions
from xsteer.evaluation.evaluate import PAPER_GRID, EvalConfig, Evaluator
from xsteer.evaluation.records import Record, RecordStore
from xsteer.evaluation.summary import summary_markdown
from xsteer.tasks import Task, get_task


@dataclass(frozen=True)
class EvalSummary:
    """What an evaluation found: one summary per metric, λ*, and where the records are."""

    task: str
    summaries: dict[str, dict[str, Any]]
    lambda_star: dict[str, float]
    folder: Path

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


def evaluate(
    child: HookedModel,
    vectors: Mapping[str, SteeringVectors],
    *,
    task: str | Task,
    lambdas: Sequence[float] = PAPER_GRID,
    val_items: int = 16,
    test_items: int | None = 64,
    mode: str = "generate",
    shots: int = 5,
    positions: str = "generated",
    max_new_tokens: int = 256,
    random: bool = True,
    self_consistency: bool = True,
    norm: str | None = None,
    norms: Any = None,
    data_dir: str | Path | None = None,
    out: str | Path | None = None,
    batch_size: int = 32,
    seed: int = 0,
    progress: bool = True,
) -> EvalSummary:
    """Evaluate ``child`` steered by each of ``vectors`` (child-space, one norm convention) on ``task``."""
    t = get_task(task)
    cfg = EvalConfig(
        dataset=t.name,
        mode=mode,  # type: ignore[arg-type]
        shots=shots,
        lambdas=tuple(lambdas),
        positions=positions,  # type: ignore[arg-type]
        max_new_tokens=max_new_tokens,
        seed=seed,
    )
    conditions = build_conditions(vectors, random=random, seed=seed, norm=norm, norms=norms)
    folder = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="xsteer-eval-"))
    val = t.load("validation", data_dir=data_dir, limit=val_items, seed=seed) if val_items else []
    test = t.load("test", data_dir=data_dir, limit=test_items, seed=seed)
    ev = Evaluator(
        child,
        cfg,
        RecordStore(folder / "records.jsonl"),
        conditions,
        batch_size=batch_size,
        progress=progress,
        data_dir=data_dir,
    )
    doc = ev.run_and_summarize(
        val,
        test,
        [n for n, v in conditions.items() if v is not None],
        self_consistency=self_consistency and mode == "generate",
    )
    return EvalSummary(t.name, doc["summaries"], doc["lambda_star"], folder)
