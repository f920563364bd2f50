"""Algorithms 2 and 3 with controls, statistics and resumable records.

* **Algorithm 2** (:func:`tune`): every vector condition is run over the λ grid on the validation split;
  λ* = the λ of highest accuracy (ties: the smallest λ).
* **Algorithm 3** (:func:`test`): the test split, 5-shot. Each vector condition runs the whole grid (one
  batched pass: λ is a per-row value), which gives both the accuracy at λ* and *inference-time scaling*
  (ITS): the mode of each item's answers across the grid (:func:`xsteer.tasks.scoring.majority_vote`; invalid
  answers never win, ties go to the smallest λ).
* **Controls**: ``baseline`` (no steering), any number of vector conditions (the parent→child vectors,
  the child-native vectors, a random direction of equal norm per layer) and ``self_consistency``
  (temperature sampling with as many samples as the λ grid, majority vote) — ITS must beat it at equal
  compute to mean anything.
* **Records**: every (split, item, condition, λ, sample) output is appended to a JSON Lines file as soon as
  its batch is done, with the hash of the configuration; a rerun skips what is there. A kill loses at most
  the batch in flight; a torn last line is dropped on the next open.
* **Statistics**: accuracy with a 95% bootstrap CI, paired difference vs baseline with its CI, and the
  exact McNemar test.

ARC-Challenge can be scored in lm-eval's log-likelihood mode (``mode="loglik"``): each choice's summed
log-probability after ``Question: …\\nAnswer:``; ``correct`` is ``acc`` and ``correct_norm`` is ``acc_norm``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from tqdm.auto import tqdm

from xsteer.core.generate import Steering, generate
from xsteer.core.io import write_json_atomic, write_text_atomic
from xsteer.core.likelihood import continuation_logprobs
from xsteer.core.vectors import SteeringVectors
from xsteer.evaluation.stats import bootstrap_ci, mcnemar_exact, paired_bootstrap_diff
from xsteer.tasks.data import Example, read_jsonl
from xsteer.tasks.prompts import arc_loglik_request, build_messages, few_shot_examples, prompt_family, render
from xsteer.tasks.scoring import arc_loglik_choice, majority_vote, score

PAPER_GRID: tuple[float, ...] = tuple(round(0.01 * i, 2) for i in range(1, 10)) + tuple(round(0.1 * i, 1) for i in range(1, 11))
BASELINE, SELF_CONSISTENCY = "baseline", "self_consistency"


@dataclass(frozen=True)
class EvalConfig:
    """Everything that decides what a record means (hashed into every record)."""

    dataset: str
    mode: Literal["generate", "loglik"] = "generate"
    shots: int = 5
    lambdas: tuple[float, ...] = PAPER_GRID
    positions: Literal["all", "generated"] = "all"
    layers: tuple[int, ...] | None = None
    max_new_tokens: int = 256
    sc_temperature: float = 0.7
    seed: int = 0
    system_prompt: bool = True

    def __post_init__(self) -> None:
        import math

        if not self.lambdas:
            raise ValueError("the λ grid is empty")
        if not all(isinstance(x, (int, float)) and math.isfinite(x) for x in self.lambdas):
            raise ValueError(f"the λ grid must be finite numbers, got {list(self.lambdas)}")
        if self.mode == "loglik" and prompt_family(self.dataset) != "arc_challenge":
            raise ValueError("mode 'loglik' is for multiple-choice data (arc_challenge)")
        if self.mode not in ("generate", "loglik"):
            raise ValueError(f"unknown mode {self.mode!r}; options: generate, loglik")

    def hash(self, model_id: str, conditions: Mapping[str, SteeringVectors | None]) -> str:
        conds = {k: (None if v is None else [v.model_id, v.method, v.pairs_hash, v.norm, float(v.vectors.norm())]) for k, v in sorted(conditions.items())}
        blob = json.dumps({"cfg": asdict(self), "model": model_id, "conditions": conds}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------- records
class RecordStore:
    """Append-only JSON Lines records; safe against kill -9 (at most the batch in flight is lost)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._repair()

    def _repair(self) -> None:
        """Drop a torn last line left by a kill mid-write; anything else malformed is an error."""
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if not data or data.endswith(b"\n"):
            return
        cut = data.rfind(b"\n") + 1
        with open(self.path, "r+b") as f:
            f.truncate(cut)

    def load(self, config_hash: str | None = None) -> list[dict[str, Any]]:
        """All records, or those written under one configuration hash."""
        if not self.path.exists():
            return []
        return [r for r in read_jsonl(self.path) if config_hash is None or r.get("config") == config_hash]

    def append(self, records: Iterable[dict[str, Any]]) -> None:
        # One write per batch, then fsync: a kill leaves whole earlier lines and at most one torn line.
        blob = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        if not blob:
            return
        with open(self.path, "a") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())


def _key(r: Mapping[str, Any]) -> tuple:
    return (r["split"], r["item"], r["condition"], float(r["lam"]), int(r["sample"]))


# ---------------------------------------------------------------------------------------------- running
@dataclass
class Evaluator:
    """Runs conditions on one child model and writes records to ``store``."""

    model: Any
    cfg: EvalConfig
    store: RecordStore
    conditions: dict[str, SteeringVectors | None]  # name -> vectors; None = baseline
    shots: list[Example] = field(default_factory=list)
    batch_size: int = 32
    progress: bool = True

    def __post_init__(self) -> None:
        from xsteer.core.models import model_id

        self.config_hash = self.cfg.hash(model_id(self.model), self.conditions)
        if not self.shots and self.cfg.mode == "generate" and self.cfg.shots:
            self.shots = few_shot_examples(self.cfg.dataset, self.cfg.shots, seed=self.cfg.seed)

    # -- prompts
    def prompt(self, ex: Example) -> str:
        messages = build_messages(prompt_family(self.cfg.dataset), ex, self.shots, system=self.cfg.system_prompt)
        return render(self.model.tokenizer, messages)

    def _todo(self, split: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        done = {_key(r) for r in self.store.load(self.config_hash) if r["split"] == split}
        return [r for r in rows if _key(r) not in done]

    def run(self, split: str, examples: Sequence[Example], condition: str, lambdas: Sequence[float] = (0.0,), samples: int = 1) -> None:
        """Produce records for every (item, λ, sample) of ``condition`` not already on disk."""
        if condition != SELF_CONSISTENCY and condition not in self.conditions:
            raise ValueError(f"unknown condition {condition!r}; options: {', '.join([*self.conditions, SELF_CONSISTENCY])}")
        by_id = {ex.id: ex for ex in examples}
        rows = [
            {"split": split, "item": ex.id, "condition": condition, "lam": float(lam), "sample": s}
            for ex in examples
            for lam in lambdas
            for s in range(samples)
        ]
        rows = self._todo(split, rows)
        if not rows:
            return
        vectors = self.conditions.get(condition)
        bar = tqdm(total=len(rows), desc=f"{split}/{condition}", disable=not self.progress)
        # Rows of one item stay together (item-major), so a batch shares its prompts' prefill.
        for start in range(0, len(rows), self.batch_size):
            chunk = rows[start : start + self.batch_size]
            items = [by_id[r["item"]] for r in chunk]
            if self.cfg.mode == "loglik":
                outs = self._loglik(items, chunk, vectors)
            else:
                outs = self._generate(items, chunk, vectors, sampling=condition == SELF_CONSISTENCY)
            self.store.append({**r, **o, "config": self.config_hash} for r, o in zip(chunk, outs, strict=True))
            bar.update(len(chunk))
        bar.close()

    def _generate(self, items: list[Example], rows: list[dict], vectors: SteeringVectors | None, sampling: bool) -> list[dict]:
        prompts = [self.prompt(ex) for ex in items]
        steering = None
        if vectors is not None:
            steering = Steering(vectors, [r["lam"] for r in rows], self.cfg.layers, self.cfg.positions)
        seeds = [_seed(self.cfg.seed, r["item"], r["sample"]) for r in rows]
        gens = generate(
            self.model, prompts, max_new_tokens=self.cfg.max_new_tokens, stop=["Question:"],
            steering=steering, temperature=self.cfg.sc_temperature if sampling else 0.0, seeds=seeds,
            batch_size=self.batch_size,
        )
        family = prompt_family(self.cfg.dataset)
        out = []
        for ex, g in zip(items, gens, strict=True):
            s = score(family, g.text, ex.answer, labels=ex.labels)
            out.append({"completion": g.text, "answer": s.answer, "correct": s.correct, "strict_answer": s.strict_answer,
                        "strict_correct": s.strict_correct, "gold": ex.answer, "n_tokens": g.n_tokens, "finish": g.finish})
        return out

    def _loglik(self, items: list[Example], rows: list[dict], vectors: SteeringVectors | None) -> list[dict]:
        ctxs, conts, lams, owner = [], [], [], []
        for i, (ex, r) in enumerate(zip(items, rows, strict=True)):
            ctx, choices = arc_loglik_request(ex)
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
            acc_i, norm_i = arc_loglik_choice(per_item[i], list(ex.choices))
            out.append({"answer": ex.labels[acc_i], "correct": ex.labels[acc_i] == ex.answer, "answer_norm": ex.labels[norm_i],
                        "correct_norm": ex.labels[norm_i] == ex.answer, "gold": ex.answer, "logprobs": per_item[i]})
        return out

    # -- the paper's algorithms
    def tune(self, validation: Sequence[Example], vector_conditions: Sequence[str]) -> dict[str, float]:
        """Algorithm 2: λ* per vector condition on the validation split (these items only)."""
        best = {}
        for cond in vector_conditions:
            self.run("validation", validation, cond, self.cfg.lambdas)
            best[cond] = best_lambda(self.records_for("validation", validation), "validation", cond)
        return best

    def records_for(self, split: str, examples: Sequence[Example]) -> list[dict[str, Any]]:
        """This configuration's records of ``split`` for exactly these items (a reused store may hold more)."""
        ids = {ex.id for ex in examples}
        return [r for r in self.store.load(self.config_hash) if r["split"] == split and r["item"] in ids]

    def tune_and_summarize(self, validation: Sequence[Example], vector_conditions: Sequence[str], *,
                           baseline: bool = True, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Algorithm 2 alone: λ* per vector condition and the accuracy-by-λ tables (every metric), plus the
        unsteered baseline on the same items when ``baseline``; written to ``tune.json`` beside the records.
        Returns the document (λ keys of the tables are strings, as in the JSON)."""
        if not validation:
            raise ValueError("the λ search needs at least one validation item")
        lam_star = self.tune(validation, vector_conditions)
        if baseline:
            self.run("validation", validation, BASELINE)
        records = self.records_for("validation", validation)
        tables: dict[str, dict[str, dict[str, float]]] = {}
        for m in metrics_of(self.cfg.mode):
            conds = [*vector_conditions, *([BASELINE] if baseline else [])]
            tables[m] = {c: {str(float(lam)): acc for lam, acc in accuracy_by_lambda(records, "validation", c, m).items()} for c in conds}
        doc = {"config": asdict(self.cfg), **(extra or {}), "config_hash": self.config_hash, "split": "validation",
               "n_items": len(validation), "lambda_star": lam_star, "accuracy_by_lambda": tables}
        write_json_atomic(self.store.path.parent / "tune.json", doc)
        return doc

    def test(self, test: Sequence[Example], vector_conditions: Sequence[str], *, its: bool = True,
             lambda_star: Mapping[str, float] | None = None, self_consistency: bool = True) -> None:
        """Algorithm 3: baseline, each vector condition (whole grid if ITS, else λ*), self-consistency."""
        self.run("test", test, BASELINE)
        for cond in vector_conditions:
            lams = self.cfg.lambdas if its or lambda_star is None else [lambda_star[cond]]
            self.run("test", test, cond, lams)
        if self_consistency and self.cfg.mode == "generate":
            self.run("test", test, SELF_CONSISTENCY, samples=len(self.cfg.lambdas))

    def run_and_summarize(self, validation: Sequence[Example], test: Sequence[Example], vector_conditions: Sequence[str],
                          *, self_consistency: bool = True, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Algorithm 2 (when there are validation items), Algorithm 3, then ``summary.json`` and
        ``summary.md`` beside the records, one summary per metric. Returns the summary document."""
        lam_star = self.tune(validation, vector_conditions) if validation else {}
        self.test(test, vector_conditions, its=len(self.cfg.lambdas) > 1, lambda_star=lam_star or None,
                  self_consistency=self_consistency)
        records = self.store.load(self.config_hash)
        summaries = {m: summarize(records, lam_star, metric=m, seed=self.cfg.seed) for m in metrics_of(self.cfg.mode)}
        doc = {"config": asdict(self.cfg), **(extra or {}), "config_hash": self.config_hash, "lambda_star": lam_star,
               "summaries": summaries}
        folder = self.store.path.parent
        write_text_atomic(folder / "summary.json", json.dumps(doc, indent=2, default=str))
        write_text_atomic(folder / "summary.md", "\n\n".join(summary_markdown(s) for s in summaries.values()) + "\n")
        return doc


def metrics_of(mode: str) -> list[str]:
    """The record fields that are a correctness metric in this scoring mode (the first is the main one)."""
    return ["correct", "correct_norm"] if mode == "loglik" else ["correct", "strict_correct"]


def _seed(seed: int, item: str, sample: int) -> int:
    return int(hashlib.sha256(f"{seed}:{item}:{sample}".encode()).hexdigest()[:8], 16)


# ---------------------------------------------------------------------------------------------- analysis
def accuracy_by_lambda(records: Sequence[Mapping], split: str, condition: str, metric: str = "correct") -> dict[float, float]:
    acc: dict[float, list[bool]] = defaultdict(list)
    for r in records:
        if r["split"] == split and r["condition"] == condition:
            acc[float(r["lam"])].append(bool(r[metric]))
    return {lam: sum(v) / len(v) for lam, v in sorted(acc.items())}


def best_lambda(records: Sequence[Mapping], split: str, condition: str, metric: str = "correct") -> float:
    """argmax_λ accuracy; ties go to the smallest λ (the least intervention)."""
    acc = accuracy_by_lambda(records, split, condition, metric)
    if not acc:
        raise ValueError(f"no {split} records for condition {condition!r}")
    top = max(acc.values())
    return min(lam for lam, a in acc.items() if a == top)


def _by_item(records: Sequence[Mapping], split: str, condition: str) -> dict[str, list[Mapping]]:
    out: dict[str, list[Mapping]] = defaultdict(list)
    for r in records:
        if r["split"] == split and r["condition"] == condition:
            out[r["item"]].append(r)
    return out


# Each metric judges its own extracted answer, and the vote must count that same answer.
ANSWER_OF = {"correct": "answer", "strict_correct": "strict_answer", "correct_norm": "answer_norm"}


def vote_correct(rows: Sequence[Mapping], metric: str = "correct") -> bool:
    """Correctness of the majority answer (rows in λ / sample order); no valid answer counts as wrong."""
    key = ANSWER_OF[metric]
    rows = sorted(rows, key=lambda r: (float(r["lam"]), int(r["sample"])))
    winner = majority_vote([r[key] for r in rows])
    return winner is not None and any(r[key] == winner and r[metric] for r in rows)


def summarize(records: Sequence[Mapping], lambda_star: Mapping[str, float], *, metric: str = "correct",
              n_boot: int = 10_000, seed: int = 0) -> dict[str, Any]:
    """Table-1-style summary on the test split: accuracy [95% CI], Δ vs baseline [CI], McNemar p."""
    base_rows = _by_item(records, "test", BASELINE)
    items = sorted(base_rows)
    if not items:
        raise ValueError("no baseline test records to summarize")
    base = [bool(base_rows[i][0][metric]) for i in items]

    def entry(correct: list[bool], name: str, **extra: Any) -> dict[str, Any]:
        ci = bootstrap_ci(correct, n_boot=n_boot, seed=seed)
        e: dict[str, Any] = {"condition": name, "n": len(correct), "acc": ci.estimate, "ci": [ci.low, ci.high], **extra}
        if name != BASELINE:
            d = paired_bootstrap_diff(base, correct, n_boot=n_boot, seed=seed)
            m = mcnemar_exact(base, correct)
            e.update(delta=d.estimate, delta_ci=[d.low, d.high], mcnemar_p=m.p_value, wins=m.b01, losses=m.b10)
        return e

    rows = [entry(base, BASELINE)]
    conds = sorted({r["condition"] for r in records if r["split"] == "test"} - {BASELINE, SELF_CONSISTENCY})
    for cond in conds:
        by = _by_item(records, "test", cond)
        if sorted(by) != items:
            continue  # incomplete run: summarize only what covers every item
        if cond in lambda_star:
            lam = lambda_star[cond]
            at = [next((bool(r[metric]) for r in by[i] if float(r["lam"]) == lam), None) for i in items]
            if None not in at:
                rows.append(entry(at, f"{cond}@λ*", lam=lam))
        if len({float(r["lam"]) for r in by[items[0]]}) > 1:
            rows.append(entry([vote_correct(by[i], metric) for i in items], f"{cond}+ITS",
                              lambdas=len({float(r['lam']) for r in by[items[0]]})))
    sc = _by_item(records, "test", SELF_CONSISTENCY)
    if sc and sorted(sc) == items:
        rows.append(entry([vote_correct(sc[i], metric) for i in items], SELF_CONSISTENCY, samples=len(sc[items[0]])))
    return {"metric": metric, "n_items": len(items), "lambda_star": dict(lambda_star), "rows": rows}


def summary_markdown(summary: Mapping[str, Any]) -> str:
    lines = [f"metric: {summary['metric']}, test items: {summary['n_items']}", "",
             "| condition | λ | accuracy % [95% CI] | Δ vs baseline (pts) [95% CI] | McNemar p | wins/losses |",
             "|---|---|---|---|---|---|"]
    for r in summary["rows"]:
        lam = r.get("lam", f"grid×{r['lambdas']}" if "lambdas" in r else (f"{r['samples']} samples" if "samples" in r else "—"))
        acc = f"{100 * r['acc']:.1f} [{100 * r['ci'][0]:.1f}, {100 * r['ci'][1]:.1f}]"
        if "delta" in r:
            d = f"{100 * r['delta']:+.1f} [{100 * r['delta_ci'][0]:+.1f}, {100 * r['delta_ci'][1]:+.1f}]"
            p, wl = f"{r['mcnemar_p']:.3g}", f"{r['wins']}/{r['losses']}"
        else:
            d, p, wl = "—", "—", "—"
        lines.append(f"| {r['condition']} | {lam} | {acc} | {d} | {p} | {wl} |")
    return "\n".join(lines)


def tune_markdown(doc: Mapping[str, Any]) -> str:
    """The accuracy-by-λ tables of :meth:`Evaluator.tune_and_summarize`, one per metric; λ* is starred."""
    out = []
    for metric, table in doc["accuracy_by_lambda"].items():
        conds = [c for c in table if c != BASELINE]
        lams = sorted({float(k) for c in conds for k in table[c]})
        lines = [f"metric: {metric}, {doc['split']} items: {doc['n_items']} (* = λ*)", "",
                 "| λ | " + " | ".join(f"{c} %" for c in conds) + " |", "|---|" + "---|" * len(conds)]
        for lam in lams:
            cells = []
            for c in conds:
                acc = table[c].get(str(lam))
                star = "*" if metric == "correct" and doc["lambda_star"].get(c) == lam else ""
                cells.append("—" if acc is None else f"{100 * acc:.1f}{star}")
            lines.append(f"| {lam:g} | " + " | ".join(cells) + " |")
        if BASELINE in table and table[BASELINE]:
            base = f"{100 * next(iter(table[BASELINE].values())):.1f}"
            lines.append("| baseline (λ = 0) | " + " | ".join(base for _ in conds) + " |")
        out.append("\n".join(lines))
    return "\n\n".join(out)
