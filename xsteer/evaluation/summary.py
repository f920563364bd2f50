"""From records to the paper's tables: accuracy by λ, λ*, ITS votes, and Table-1 summaries with CIs.

Every number comes with its uncertainty: accuracy with a 95% percentile bootstrap CI, the paired difference
vs baseline with its bootstrap CI, and the exact McNemar test on discordant items.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from xsteer.errors import InputError
from xsteer.evaluation.stats import bootstrap_ci, mcnemar_exact, paired_bootstrap_diff
from xsteer.tasks.scoring import majority_vote

BASELINE, SELF_CONSISTENCY = "baseline", "self_consistency"


def metrics_of(mode: str) -> list[str]:
    """The record fields that are a correctness metric in this scoring mode (the first is the main one)."""
    return ["correct", "correct_norm"] if mode == "loglik" else ["correct", "strict_correct"]


def accuracy_by_lambda(
    records: Sequence[Mapping], split: str, condition: str, metric: str = "correct"
) -> dict[float, float]:
    acc: dict[float, list[bool]] = defaultdict(list)
    for r in records:
        if r["split"] == split and r["condition"] == condition:
            acc[float(r["lam"])].append(bool(r[metric]))
    return {lam: sum(v) / len(v) for lam, v in sorted(acc.items())}


def best_lambda(records: Sequence[Mapping], split: str, condition: str, metric: str = "correct") -> float:
    """argmax_λ accuracy; ties go to the smallest λ (the least intervention)."""
    acc = accuracy_by_lambda(records, split, condition, metric)
    if not acc:
        raise InputError(f"no {split} records for condition {condition!r}")
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


def summarize(
    records: Sequence[Mapping],
    lambda_star: Mapping[str, float],
    *,
    metric: str = "correct",
    n_boot: int = 10_000,
    seed: int = 0,
) -> dict[str, Any]:
    """Table-1-style summary on the test split: accuracy [95% CI], Δ vs baseline [CI], McNemar p."""
    base_rows = _by_item(records, "test", BASELINE)
    items = sorted(base_rows)
    if not items:
        raise InputError("no baseline test records to summarize")
    base = [bool(base_rows[i][0][metric]) for i in items]

    def entry(correct: list[bool], name: str, **extra: Any) -> dict[str, Any]:
        ci = bootstrap_ci(correct, n_boot=n_boot, seed=seed)
        e: dict[str, Any] = {
            "condition": name,
            "n": len(correct),
            "acc": ci.estimate,
            "ci": [ci.low, ci.high],
            **extra,
        }
        if name != BASELINE:
            d = paired_bootstrap_diff(base, correct, n_boot=n_boot, seed=seed)
            m = mcnemar_exact(base, correct)
            e.update(
                delta=d.estimate, delta_ci=[d.low, d.high], mcnemar_p=m.p_value, wins=m.b01, losses=m.b10
            )
        return e

    rows = [entry(base, BASELINE)]
    vote_rows: dict[str, list[bool]] = {}
    conds = sorted({r["condition"] for r in records if r["split"] == "test"} - {BASELINE, SELF_CONSISTENCY})
    for cond in conds:
        by = _by_item(records, "test", cond)
        if sorted(by) != items:
            continue  # incomplete run: summarize only what covers every item
        if cond in lambda_star:
            lam = lambda_star[cond]
            found = [next((bool(r[metric]) for r in by[i] if float(r["lam"]) == lam), None) for i in items]
            at = [x for x in found if x is not None]
            if len(at) == len(items):
                rows.append(entry(at, f"{cond}@λ*", lam=lam))
        if len({float(r["lam"]) for r in by[items[0]]}) > 1:
            vote_rows[f"{cond}+ITS"] = [vote_correct(by[i], metric) for i in items]
            rows.append(
                entry(
                    vote_rows[f"{cond}+ITS"],
                    f"{cond}+ITS",
                    lambdas=len({float(r["lam"]) for r in by[items[0]]}),
                )
            )
    sc = _by_item(records, "test", SELF_CONSISTENCY)
    if sc and sorted(sc) == items:
        sc_correct = [vote_correct(sc[i], metric) for i in items]
        rows.append(entry(sc_correct, SELF_CONSISTENCY, samples=len(sc[items[0]])))
        # The question that matters for ITS: does voting over λ beat voting over samples at equal compute?
        for r in rows:
            if r["condition"].endswith("+ITS"):
                its = vote_rows[r["condition"]]
                d = paired_bootstrap_diff(sc_correct, its, n_boot=n_boot, seed=seed)
                m = mcnemar_exact(sc_correct, its)
                r.update(vs_sc_delta=d.estimate, vs_sc_ci=[d.low, d.high], vs_sc_p=m.p_value)
    return {"metric": metric, "n_items": len(items), "lambda_star": dict(lambda_star), "rows": rows}


def summary_markdown(summary: Mapping[str, Any]) -> str:
    lines = [
        f"metric: {summary['metric']}, test items: {summary['n_items']}",
        "",
        "| condition | λ | accuracy % [95% CI] | Δ vs baseline (pts) [95% CI] | McNemar p | wins/losses | Δ vs self-consistency (pts) [95% CI], p |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in summary["rows"]:
        lam = r.get(
            "lam",
            f"grid×{r['lambdas']}"
            if "lambdas" in r
            else (f"{r['samples']} samples" if "samples" in r else "—"),
        )
        acc = f"{100 * r['acc']:.1f} [{100 * r['ci'][0]:.1f}, {100 * r['ci'][1]:.1f}]"
        if "delta" in r:
            d = f"{100 * r['delta']:+.1f} [{100 * r['delta_ci'][0]:+.1f}, {100 * r['delta_ci'][1]:+.1f}]"
            p, wl = f"{r['mcnemar_p']:.3g}", f"{r['wins']}/{r['losses']}"
        else:
            d, p, wl = "—", "—", "—"
        sc = (
            f"{100 * r['vs_sc_delta']:+.1f} [{100 * r['vs_sc_ci'][0]:+.1f}, {100 * r['vs_sc_ci'][1]:+.1f}], {r['vs_sc_p']:.3g}"
            if "vs_sc_delta" in r
            else "—"
        )
        lines.append(f"| {r['condition']} | {lam} | {acc} | {d} | {p} | {wl} | {sc} |")
    return "\n".join(lines)


def tune_markdown(doc: Mapping[str, Any]) -> str:
    """The accuracy-by-λ tables of :meth:`Evaluator.tune_and_summarize`, one per metric; λ* is starred."""
    out = []
    for metric, table in doc["accuracy_by_lambda"].items():
        conds = [c for c in table if c != BASELINE]
        lams = sorted({float(k) for c in conds for k in table[c]})
        lines = [
            f"metric: {metric}, {doc['split']} items: {doc['n_items']} (* = λ*)",
            "",
            "| λ | " + " | ".join(f"{c} %" for c in conds) + " |",
            "|---|" + "---|" * len(conds),
        ]
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


def vote_curve(
    records: Sequence[Mapping],
    condition: str,
    sizes: Sequence[int],
    *,
    split: str = "test",
    metric: str = "correct",
    n_subsets: int = 200,
    seed: int = 0,
) -> dict[int, dict[str, float]]:
    """Accuracy of a vote over ``k`` of an item's outputs (λ values, or samples), for each ``k`` in ``sizes``.

    For each k, ``n_subsets`` random k-subsets of the output slots (the same slots for every item) are voted
    and scored; the result is the mean accuracy over subsets with the 2.5/97.5% quantiles across subsets
    (how much the choice of λ values matters). k = all slots is the full vote, computed once.
    """
    import random

    by = _by_item(records, split, condition)
    if not by:
        raise InputError(f"no {split} records for condition {condition!r}")
    items = sorted(by)
    slots = sorted({(float(r["lam"]), int(r["sample"])) for r in by[items[0]]})
    rows = {i: {(float(r["lam"]), int(r["sample"])): r for r in by[i]} for i in items}
    rng = random.Random(seed)
    out: dict[int, dict[str, float]] = {}
    for k in sizes:
        if not 1 <= k <= len(slots):
            raise InputError(f"a vote over {k} of {len(slots)} outputs is impossible")
        subsets = [slots] if k == len(slots) else [sorted(rng.sample(slots, k)) for _ in range(n_subsets)]
        accs = sorted(
            sum(vote_correct([rows[i][s] for s in sub if s in rows[i]], metric) for i in items) / len(items)
            for sub in subsets
        )
        out[k] = {
            "acc": sum(accs) / len(accs),
            "low": accs[int(0.025 * (len(accs) - 1))],
            "high": accs[int(0.975 * (len(accs) - 1))],
            "subsets": len(subsets),
        }
    return out


def its_diagnostics(
    records: Sequence[Mapping], condition: str, *, split: str = "test", metric: str = "correct"
) -> list[dict[str, Any]]:
    """For each item where the vote over ``condition``'s λ grid and the baseline disagree in correctness: how
    many distinct answers the grid produced, the winning answer's share of votes, and the λ values where it
    appeared (where does a winning — or losing — vote come from?)."""
    key = ANSWER_OF[metric]
    base = _by_item(records, split, BASELINE)
    by = _by_item(records, split, condition)
    out = []
    for item in sorted(set(base) & set(by)):
        rows = sorted(by[item], key=lambda r: (float(r["lam"]), int(r["sample"])))
        won = vote_correct(rows, metric)
        b = bool(base[item][0][metric])
        if won == b:
            continue
        answers = [r[key] for r in rows]
        winner = majority_vote(answers)
        valid = [a for a in answers if a not in (None, "")]
        out.append(
            {
                "item": item,
                "baseline_correct": b,
                "vote_correct": won,
                "baseline_answer": base[item][0][key],
                "winner": winner,
                "gold": rows[0].get("gold"),
                "n_distinct": len(set(valid)),
                "n_valid": len(valid),
                "winner_share": (valid.count(winner) / len(valid)) if valid and winner is not None else 0.0,
                "winner_lambdas": [float(r["lam"]) for r in rows if r[key] == winner and winner is not None],
            }
        )
    return out
