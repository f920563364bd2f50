"""Algorithms 2 and 3 with controls, statistics and resumable records.

* **Algorithm 2** (:meth:`Evaluator.tune`): every vector condition is run over the λ grid on the validation
  split; λ* = the λ of highest accuracy (ties: the smallest λ).
* **Algorithm 3** (:meth:`Evaluator.test`): the test split, few-shot. Each vector condition runs the whole
  grid (one batched pass: λ is a per-row value), which gives both the accuracy at λ* and *inference-time
  scaling* (ITS): the mode of each item's answers across the grid (invalid answers never win, ties go to
  the smallest λ).
* **Controls**: ``baseline`` (no steering), any number of vector conditions (the parent→child vectors, the
  child-native vectors, a random direction of equal norm per layer) and ``self_consistency`` (temperature
  sampling with as many samples as the λ grid, majority vote) — ITS must beat it at equal compute to mean
  anything. Every vector condition of one evaluation shares one norm convention, or the evaluator refuses:
  λ would mean different things on one grid.
* **Records** (:mod:`xsteer.evaluation.records`): written as each batch finishes; a rerun resumes.
* **Summaries** (:mod:`xsteer.evaluation.summary`): accuracy [95% CI], Δ vs baseline [CI], McNemar p.

Multiple-choice tasks can be scored in lm-eval's log-likelihood mode (``mode="loglik"``): each choice's
summed log-probability after ``Question: …\\nAnswer:``; ``correct`` is ``acc`` and ``correct_norm`` is
``acc_norm``.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from xsteer.core.generate import Steering, generate
from xsteer.core.io import write_json_atomic, write_text_atomic
from xsteer.core.likelihood import continuation_logprobs
from xsteer.core.models import dtype_tag, model_id, runtime
from xsteer.core.progress import Progress
from xsteer.core.types import HookedModel
from xsteer.core.vectors import SteeringVectors
from xsteer.errors import InputError, NormConventionError
from xsteer.evaluation.plan import (
    PAPER_GRID as PAPER_GRID,  # lived here before the plan did; callers still import it from here
)
from xsteer.evaluation.plan import (
    EvalConfig,
)
from xsteer.evaluation.records import Record, RecordStore, of_items, record_key
from xsteer.evaluation.summary import (
    BASELINE,
    SELF_CONSISTENCY,
    accuracy_by_lambda,
    best_lambda,
    metrics_of,
    summarize,
    summary_markdown,
)
from xsteer.tasks import Example
from xsteer.tasks.arc_scoring import arc_loglik_choice
from xsteer.tasks.prompts import render

#: Condition names the evaluator gives meaning to; a user's vectors cannot take them.
RESERVED = (BASELINE, SELF_CONSISTENCY, "random")


def check_norms(conditions: Mapping[str, SteeringVectors | None]) -> str | None:
    """The one norm convention all vector conditions share (None without vectors), else a clear error."""
    norms = {name: v.norm for name, v in conditions.items() if v is not None}
    if len(set(norms.values())) > 1:
        listed = ", ".join(f"{name}: {norm}" for name, norm in norms.items())
        raise NormConventionError(
            f"the vector conditions use different norm conventions ({listed}); λ would mean different things "
            "on one grid. Rescale them to one convention (e.g. `xsteer evaluate --norm resid_mean`, or "
            "`xsteer transfer --norm unit`)"
        )
    return next(iter(norms.values()), None)


def _seed(seed: int, item: str, sample: int) -> int:
    return int(hashlib.sha256(f"{seed}:{item}:{sample}".encode()).hexdigest()[:8], 16)


@dataclass
class Evaluator:
    """Runs conditions on one child model and writes records to ``store``."""

    model: HookedModel
    cfg: EvalConfig
    store: RecordStore
    conditions: dict[str, SteeringVectors | None]  # name -> vectors; None = baseline
    shots: list[Example] = field(default_factory=list)
    batch_size: int = 32
    progress: bool = True
    data_dir: str | Path | None = None  # where the task's train split (MATH exemplars) is read
    # Vector conditions decoded by sampling at ``cfg.sc_temperature`` (one sample per λ, seeded per item
    # and λ) instead of greedily: the λ-vote with sampling.
    sampled: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise InputError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        self.sampled = frozenset(self.sampled)
        wrong = sorted(n for n in self.sampled if self.conditions.get(n) is None)
        if wrong:
            raise InputError(f"only vector conditions can be sampled, not {wrong}")
        self.norm = check_norms(self.conditions)
        for v in self.conditions.values():
            if v is not None:
                v.check_compatible(self.model.cfg.n_layers, self.model.cfg.d_model, model_id(self.model))
        self.task = self.cfg.task
        mid = model_id(self.model)
        dtype = dtype_tag(next(self.model.parameters()).dtype)
        # condition -> hash of what made its records; records under another hash are not reused.
        self.config_hash = {
            name: self.cfg.hash(mid, v, sampled=name in self.sampled, dtype=dtype)
            for name, v in self.conditions.items()
        }
        self.config_hash[SELF_CONSISTENCY] = self.cfg.hash(mid, None, dtype=dtype)
        if not self.shots and self.cfg.mode == "generate" and self.cfg.shots:
            self.shots = self.task.shots(self.cfg.shots, seed=self.cfg.seed, data_dir=self.data_dir)

    # -- prompts
    def prompt(self, ex: Example) -> str:
        return render(self.model.tokenizer, self.task.messages(ex, self.shots, system=self.cfg.system_prompt))

    def _todo(self, split: str, rows: list[Record]) -> list[Record]:
        done = {record_key(r) for r in self.store.load(self.config_hash) if r["split"] == split}
        return [r for r in rows if record_key(r) not in done]

    def run(
        self,
        split: str,
        examples: Sequence[Example],
        condition: str,
        lambdas: Sequence[float] = (0.0,),
        samples: int = 1,
    ) -> None:
        """Produce records for every (item, λ, sample) of ``condition`` not already on disk."""
        if condition != SELF_CONSISTENCY and condition not in self.conditions:
            raise InputError(
                f"unknown condition {condition!r}; options: {', '.join([*self.conditions, SELF_CONSISTENCY])}"
            )
        by_id = {ex.id: ex for ex in examples}
        rows: list[Record] = [
            {"split": split, "item": ex.id, "condition": condition, "lam": float(lam), "sample": s}
            for ex in examples
            for lam in lambdas
            for s in range(samples)
        ]
        rows = self._todo(split, rows)
        if not rows:
            return
        vectors = self.conditions.get(condition)
        # Rows of one item stay together (item-major), so a batch shares its prompts' prefill.
        with Progress(len(rows), f"{split}/{condition}", unit="rows", enabled=self.progress) as bar:
            for start in range(0, len(rows), self.batch_size):
                chunk = rows[start : start + self.batch_size]
                items = [by_id[r["item"]] for r in chunk]
                if self.cfg.mode == "loglik":
                    outs = self._loglik(items, chunk, vectors)
                else:
                    sampling = condition == SELF_CONSISTENCY or condition in self.sampled
                    outs = self._generate(items, chunk, vectors, sampling=sampling)
                self.store.append(
                    {**r, **o, "config": self.config_hash[condition]}
                    for r, o in zip(chunk, outs, strict=True)
                )
                bar.update(len(chunk))

    def _generate(
        self, items: list[Example], rows: list[Record], vectors: SteeringVectors | None, sampling: bool
    ) -> list[dict[str, Any]]:
        prompts = [self.prompt(ex) for ex in items]
        steering = None
        if vectors is not None:
            steering = Steering(vectors, [r["lam"] for r in rows], self.cfg.layers, self.cfg.positions)
        # A sampled vector condition draws afresh at each λ (seeded by item and λ), not the same stream.
        seeds = [
            _seed(
                self.cfg.seed,
                f"{r['item']}@{r['lam']!r}" if sampling and vectors is not None else r["item"],
                r["sample"],
            )
            for r in rows
        ]
        gens = generate(
            self.model,
            prompts,
            max_new_tokens=self.cfg.max_new_tokens,
            stop=["Question:"],
            steering=steering,
            temperature=self.cfg.sc_temperature if sampling else 0.0,
            seeds=seeds,
            batch_size=self.batch_size,
        )
        out = []
        for ex, g in zip(items, gens, strict=True):
            s = self.task.score(g.text, ex)
            out.append(
                {
                    "completion": g.text,
                    "answer": s.answer,
                    "correct": s.correct,
                    "strict_answer": s.strict_answer,
                    "strict_correct": s.strict_correct,
                    "gold": ex.answer,
                    "n_tokens": g.n_tokens,
                    "finish": g.finish,
                }
            )
        return out

    def _loglik(
        self, items: list[Example], rows: list[Record], vectors: SteeringVectors | None
    ) -> list[dict[str, Any]]:
        ctxs, conts, lams, owner = [], [], [], []
        for i, (ex, r) in enumerate(zip(items, rows, strict=True)):
            ctx, choices = self.task.loglik_request(ex)
            ctxs += [ctx] * len(choices)
            conts += choices
            lams += [r["lam"]] * len(choices)
            owner += [i] * len(choices)
        steering = Steering(vectors, lams, self.cfg.layers) if vectors is not None else None
        lps = continuation_logprobs(self.model, ctxs, conts, steering=steering, batch_size=self.batch_size)
        per_item: dict[int, list[float]] = defaultdict(list)
        for i, lp in zip(owner, lps, strict=True):
            per_item[i].append(lp)
        out = []
        for i, ex in enumerate(items):
            assert ex.labels is not None and ex.choices is not None  # loglik_request refused anything else
            acc_i, norm_i = arc_loglik_choice(per_item[i], list(ex.choices))
            out.append(
                {
                    "answer": ex.labels[acc_i],
                    "correct": ex.labels[acc_i] == ex.answer,
                    "answer_norm": ex.labels[norm_i],
                    "correct_norm": ex.labels[norm_i] == ex.answer,
                    "gold": ex.answer,
                    "logprobs": per_item[i],
                }
            )
        return out

    # -- the paper's algorithms
    def tune(self, validation: Sequence[Example], vector_conditions: Sequence[str]) -> dict[str, float]:
        """Algorithm 2: λ* per vector condition on the validation split (these items only)."""
        for cond in vector_conditions:
            self.run("validation", validation, cond, self.cfg.lambdas)
        records = self.records_for({"validation": validation})
        return {cond: best_lambda(records, "validation", cond) for cond in vector_conditions}

    def records_for(self, items: Mapping[str, Sequence[Example]]) -> list[Record]:
        """This configuration's records for exactly these items of each split (a reused store may hold
        more), in one read of the store."""
        ids = {split: [ex.id for ex in examples] for split, examples in items.items()}
        return of_items(self.store.load(self.config_hash), ids)

    def _doc(self, extra: Mapping[str, Any] | None) -> dict[str, Any]:
        return {
            "config": asdict(self.cfg),
            **(extra or {}),
            "config_hash": self.config_hash,
            "norm": self.norm,
            "runtime": runtime(self.model),
        }

    def tune_and_summarize(
        self,
        validation: Sequence[Example],
        vector_conditions: Sequence[str],
        *,
        baseline: bool = True,
        extra: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Algorithm 2 alone: λ* per vector condition and the accuracy-by-λ tables (every metric), plus the
        unsteered baseline on the same items when ``baseline``; written to ``tune.json`` beside the records.
        Returns the document (λ keys of the tables are strings, as in the JSON)."""
        if not validation:
            raise InputError("the λ search needs at least one validation item")
        lam_star = self.tune(validation, vector_conditions)
        if baseline:
            self.run("validation", validation, BASELINE)
        records = self.records_for({"validation": validation})
        tables: dict[str, dict[str, dict[str, float]]] = {}
        for m in metrics_of(self.cfg.mode):
            conds = [*vector_conditions, *([BASELINE] if baseline else [])]
            tables[m] = {
                c: {
                    str(float(lam)): acc
                    for lam, acc in accuracy_by_lambda(records, "validation", c, m).items()
                }
                for c in conds
            }
        doc = {
            **self._doc(extra),
            "split": "validation",
            "n_items": len(validation),
            "lambda_star": lam_star,
            "accuracy_by_lambda": tables,
        }
        write_json_atomic(self.store.path.parent / "tune.json", doc)
        return doc

    def test(
        self,
        test: Sequence[Example],
        vector_conditions: Sequence[str],
        *,
        its: bool = True,
        lambda_star: Mapping[str, float] | None = None,
        self_consistency: bool = True,
    ) -> None:
        """Algorithm 3: baseline, each vector condition (whole grid if ITS, else λ*), self-consistency."""
        self.run("test", test, BASELINE)
        for cond in vector_conditions:
            lams = self.cfg.lambdas if its or lambda_star is None else [lambda_star[cond]]
            self.run("test", test, cond, lams)
        if self_consistency and self.cfg.mode == "generate":
            self.run("test", test, SELF_CONSISTENCY, samples=len(self.cfg.lambdas))

    def run_and_summarize(
        self,
        validation: Sequence[Example],
        test: Sequence[Example],
        vector_conditions: Sequence[str],
        *,
        self_consistency: bool = True,
        extra: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Algorithm 2 (when there are validation items), Algorithm 3, then ``summary.json`` and
        ``summary.md`` beside the records, one summary per metric. Returns the summary document."""
        if not test:
            raise InputError("the evaluation needs at least one test item")
        lam_star = self.tune(validation, vector_conditions) if validation else {}
        self.test(
            test,
            vector_conditions,
            its=len(self.cfg.lambdas) > 1,
            lambda_star=lam_star or None,
            self_consistency=self_consistency,
        )
        # These items only: a store reused with a smaller test set holds rows of items this run does not have.
        # Their ids go into the summary so that a report over the records reads the same items.
        items = {"validation": [ex.id for ex in validation], "test": [ex.id for ex in test]}
        records = of_items(self.store.load(self.config_hash), items)
        summaries = {
            m: summarize(records, lam_star, metric=m, seed=self.cfg.seed) for m in metrics_of(self.cfg.mode)
        }
        doc = {**self._doc(extra), "lambda_star": lam_star, "items": items, "summaries": summaries}
        folder = self.store.path.parent
        write_text_atomic(folder / "summary.json", json.dumps(doc, indent=2, default=str))
        write_text_atomic(
            folder / "summary.md", "\n\n".join(summary_markdown(s) for s in summaries.values()) + "\n"
        )
        return doc
