"""The ITS study's report (issue #30) from its committed per-item records (``analysis/its_study.py``).

    python analysis/its_report.py analysis/results/its_study/NAME [...] [--out analysis/results/its_vs_sc.md]

No model runs: every number is computed from ``items.jsonl`` (one line per item and arm), ``study.json`` and
``timing.jsonl`` of each study folder. Only items that every arm of a study has finished are read, so all
comparisons are paired. The report opens with the paper-literal arm, then the five arms at equal generations
and at equal generated tokens, the diversity / oracle pass@k table, the intervals on the differences that
carry the claims, and the measured throughput. Text above the marker line of an existing ``--out`` (the
reading, written by hand) is kept; ``python -m analysis.regenerate`` rewrites the same file the same way.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from xsteer.evaluation.its import budget_vote, by_arm, distinct, oracle, paired_diff, tokens, vote
from xsteer.evaluation.records import RecordStore

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "analysis" / "results" / "its_vs_sc.md"
MARKER = "<!-- generated below by `python -m analysis.regenerate`; write the reading above this line -->"
TITLE = "# The paper's ITS claim: the paper-literal arm and five arms at matched compute (issue #30)"
METRICS = {"correct": "flexible", "strict_correct": "strict"}
POOLED = "random (pooled)"
VOTE_KINDS = ("parent", "parent_sampled", "self_consistency", "random", "native")


class Study:
    """One study folder: its settings, its complete items, and per-item vectors of what the report needs."""

    def __init__(self, folder: Path, n_boot: int = 10_000) -> None:
        self.folder = folder
        self.n_boot = n_boot
        self.doc = json.loads((folder / "study.json").read_text(encoding="utf-8"))
        self.kinds: dict[str, str] = self.doc["arms"]
        lines = by_arm(RecordStore(folder / "items.jsonl").load())
        # the items every arm of the study has finished (an arm without lines yet: none)
        self.items = sorted(set.intersection(*(set(lines.get(a, {})) for a in self.kinds)))
        self.lines = {a: [lines[a][i] for i in self.items] for a in self.kinds} if self.items else {}
        self._budget: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
        self.timing = (
            RecordStore(folder / "timing.jsonl").load() if (folder / "timing.jsonl").exists() else []
        )

    def arms(self, *kinds: str) -> list[str]:
        return [a for a, k in self.kinds.items() if k in kinds and a in self.lines]

    @property
    def random(self) -> list[str]:
        return self.arms("random")

    def per_item(self, arm: str, fn: Callable[..., Any], metric: str) -> np.ndarray:
        """Per item (n,), or per item and random draw (n, d) for the pooled random arm."""
        if arm == POOLED:
            return np.stack([self.per_item(a, fn, metric) for a in self.random], axis=1)
        return np.array([float(fn(line, metric)) for line in self.lines[arm]])

    def budget(self) -> np.ndarray:
        """Per item: the fewest generated tokens any vote arm spent on it (each arm is cut to this)."""
        arms = self.arms(*VOTE_KINDS)
        return np.min([[tokens(line) for line in self.lines[a]] for a in arms], axis=0)

    def at_budget(self, arm: str, metric: str) -> tuple[np.ndarray, np.ndarray]:
        """(expected vote correctness, expected tokens used) per item at the budget."""
        if arm == POOLED:
            pairs = [self.at_budget(a, metric) for a in self.random]
            return np.stack([p[0] for p in pairs], axis=1), np.stack([p[1] for p in pairs], axis=1)
        if (arm, metric) not in self._budget:
            budget = self.budget()
            out = [
                budget_vote(line, float(b), metric=metric)
                for line, b in zip(self.lines[arm], budget, strict=True)
            ]
            self._budget[arm, metric] = np.array([o[0] for o in out]), np.array([o[1] for o in out])
        return self._budget[arm, metric]

    def ci(self, values: np.ndarray) -> str:
        c = paired_diff(np.zeros(len(values)), -values, n_boot=self.n_boot)
        return f"{100 * c.estimate:.1f} [{100 * c.low:.1f}, {100 * c.high:.1f}]"

    def diff(self, a: np.ndarray, b: np.ndarray) -> str:
        c = paired_diff(a, b, n_boot=self.n_boot)
        return f"{100 * c.estimate:+.1f} [{100 * c.low:+.1f}, {100 * c.high:+.1f}]"

    def vote_arms(self) -> list[str]:
        """The five arms in the report's order (each random draw, then the draws pooled)."""
        return [
            *self.arms("parent"),
            *self.arms("parent_sampled"),
            *self.arms("self_consistency"),
            *self.random,
            *([POOLED] if len(self.random) > 1 else []),
            *self.arms("native"),
        ]

    def name(self, arm: str) -> str:
        if arm == POOLED:
            return f"random, {len(self.random)} draws pooled"
        kind = self.kinds[arm]
        label = {
            "parent": "greedy λ-vote, parent",
            "parent_sampled": f"sampled (T = {self.doc['temperature']:g}) λ-vote, parent",
            "native": "greedy λ-vote, child's own vector",
            "random": "greedy λ-vote, random direction",
            "self_consistency": f"self-consistency (T = {self.doc['temperature']:g})",
            "baseline": "baseline (greedy, unsteered)",
            "paper": "paper-literal arm",
        }[kind]
        return f"{label} (`{arm}`)"

    def mean_of(self, arm: str, fn: Callable[[Mapping[str, Any]], float]) -> float:
        arms = self.random if arm == POOLED else [arm]
        return float(np.mean([fn(line) for a in arms for line in self.lines[a]]))

    def heading(self) -> str:
        d = self.doc
        return (
            f"**{self.folder.name}**: child {d['child']}, task {d['task']} ({d['shots']}-shot, ≤ "
            f"{d['max_new_tokens']} new tokens; the five arms steer positions `{d['positions']}`), parents "
            f"{', '.join(d['parents'])}; "
            f"{len(self.items)} test items finished by every arm (of {d['test_items']})."
        )


# ---------------------------------------------------------------------------------------------- sections
def paper_section(s: Study) -> list[str]:
    arms = s.arms("paper")
    if not arms or "baseline" not in s.lines:
        return [s.heading(), "", "No paper-literal arm in this study."]
    pre = s.doc["paper_preset"]
    lam_star = s.doc["paper"].get("lambda_star", {})
    k = len(s.doc["paper_lambdas"])
    out = [
        s.heading(),
        "",
        f"The `paper` preset: {pre['method']} PC1 at norm `{pre['norm']}`, layers `{pre['layer_map']}`, widths "
        f"`{pre['width_map']}`, every position, λ ∈ {{{', '.join(f'{x:g}' for x in s.doc['paper_lambdas'])}}}; "
        f"λ* by Algorithm 2 on {s.doc['paper'].get('val_items', 0)} validation items.",
        "",
        f"| arm | metric | baseline % [95% CI] | λ* | at λ* % | Δ vs baseline (pts) [95% CI] | ITS vote over {k} λ % | "
        f"Δ vs baseline (pts) [95% CI] | distinct answers over {k} λ (mean) | items where all {k} answers equal the "
        "baseline's |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    base_lines = s.lines["baseline"]
    for arm in arms:
        lam = lam_star.get(arm)
        for metric, label in METRICS.items():
            base = s.per_item("baseline", vote, metric)
            its = s.per_item(arm, vote, metric)
            col = METRICS_FIELD[metric]
            if lam is not None:
                k = s.lines[arm][0]["slot"].index(lam)
                at = np.array([float(line[col][k] == "1") for line in s.lines[arm]])
                star = f"{s.ci(at)} | {s.diff(at, base)}"
            else:
                star = "— | —"
            same = np.mean(
                [
                    all(a == b[ANSWER_FIELD[metric]][0] for a in line[ANSWER_FIELD[metric]])
                    for line, b in zip(s.lines[arm], base_lines, strict=True)
                ]
            )
            out.append(
                f"| `{arm}` | {label} | {s.ci(base)} | {'—' if lam is None else f'{lam:g}'} | {star} | {s.ci(its)} | "
                f"{s.diff(its, base)} | {np.mean(s.per_item(arm, distinct, metric)):.2f} | {100 * same:.0f}% |"
            )
    return out


METRICS_FIELD = {"correct": "correct", "strict_correct": "strict_correct"}
ANSWER_FIELD = {"correct": "answer", "strict_correct": "strict_answer"}


def generations_section(s: Study) -> list[str]:
    out = [
        s.heading(),
        "",
        f"Every vote arm: {len(s.doc['lambdas'])} generations per item (λ-votes over "
        f"{', '.join(f'{x:g}' for x in s.doc['lambdas'])} × the child's mean residual norm at layers "
        f"{s.doc['steered_layers'][0]}–{s.doc['steered_layers'][-1]}; self-consistency as many samples).",
        "",
        "| arm | generations / item | generated tokens / item (mean) | flexible % [95% CI] | strict % [95% CI] |",
        "|---|---|---|---|---|",
    ]
    for arm in ["baseline", *s.vote_arms()]:
        if arm != POOLED and arm not in s.lines:
            continue
        gens = s.mean_of(arm, lambda line: len(line["n_tokens"]))
        toks = s.mean_of(arm, tokens)
        accs = " | ".join(s.ci(s.per_item(arm, vote, m)) for m in METRICS)
        out.append(f"| {s.name(arm)} | {gens:g} | {toks:.0f} | {accs} |")
    return out


def tokens_section(s: Study) -> list[str]:
    budget = s.budget()
    out = [
        s.heading(),
        "",
        f"Per item, every arm is cut to the fewest tokens any vote arm spent on that item (mean budget "
        f"{budget.mean():.0f} tokens): its outputs in 64 random orders, voting over as many as fit (at least one); "
        "accuracy is the expected vote over the orders.",
        "",
        "| arm | tokens used / item (mean) | generations used / item (mean) | flexible % [95% CI] | strict % [95% CI] |",
        "|---|---|---|---|---|",
    ]
    for arm in s.vote_arms():
        accs, used = [], None
        for m in METRICS:
            acc, used = s.at_budget(arm, m)
            accs.append(s.ci(acc))
        assert used is not None
        per_gen = s.mean_of(arm, lambda line: tokens(line) / max(1, len(line["n_tokens"])))
        out.append(
            f"| {s.name(arm)} | {used.mean():.0f} | {used.mean() / max(per_gen, 1e-9):.1f} | {' | '.join(accs)} |"
        )
    return out


def diversity_section(s: Study) -> list[str]:
    out = [
        s.heading(),
        "",
        "Distinct = different valid answers among an item's k votes; pass@k (oracle) = the right answer is among "
        "them; mode miss = pass@k but the vote is wrong (the mode picked badly).",
        "",
        "| arm | k | metric | distinct answers / item (mean) | items with one answer % | oracle pass@k % [95% CI] | "
        "vote % | mode miss % |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for arm in [*s.arms("paper"), *s.vote_arms()]:
        k = len(s.lines[s.random[0] if arm == POOLED else arm][0]["n_tokens"])
        for m, label in METRICS.items():
            d = s.per_item(arm, distinct, m)
            p = s.per_item(arm, oracle, m)
            v = s.per_item(arm, vote, m)
            out.append(
                f"| {s.name(arm)} | {k} | {label} | {d.mean():.2f} | {100 * np.mean(d == 1):.0f} | {s.ci(p)} | "
                f"{100 * v.mean():.1f} | {100 * (p.mean() - v.mean()):.1f} |"
            )
    return out


def differences(s: Study) -> list[tuple[str, str, str]]:
    """(what, left arm, right arm) for every difference that carries a claim."""
    pairs = []
    other = [POOLED] if len(s.random) > 1 else s.random
    for p in s.arms("parent"):
        pairs += [(f"parent − random ({p})", p, r) for r in other]
        pairs += [(f"parent − native ({p})", p, n) for n in s.arms("native")]
    sc = s.arms("self_consistency")
    for arm in s.vote_arms():
        if arm not in sc and (arm == POOLED or s.kinds[arm] != "random" or len(s.random) == 1):
            pairs += [
                (f"vote − self-consistency ({arm if arm != POOLED else 'random, pooled'})", arm, c)
                for c in sc
            ]
    return pairs


def differences_section(s: Study) -> list[str]:
    out = [
        s.heading(),
        "",
        f"Paired by item; percentile bootstrap ({s.n_boot:,} replicates); against the pooled random arm items and draws "
        "are both resampled. In points.",
        "",
        "| difference | flexible, equal generations | strict, equal generations | flexible, equal tokens | "
        "strict, equal tokens |",
        "|---|---|---|---|---|",
    ]
    for what, a, b in differences(s):
        cells = [s.diff(s.per_item(a, vote, m), s.per_item(b, vote, m)) for m in METRICS]
        cells += [s.diff(s.at_budget(a, m)[0], s.at_budget(b, m)[0]) for m in METRICS]
        out.append(f"| {what} | {' | '.join(cells)} |")
    return out


def throughput_section(s: Study) -> list[str]:
    if not s.timing:
        return [s.heading(), "", "No timing recorded."]
    out = [
        s.heading(),
        "",
        f"Runtime: {', '.join(f'{k} {v}' for k, v in s.doc['runtime'].items())}. Measured over the run(s) into this folder (a resumed chunk's time counts "
        "only what it redid).",
        "",
        "| arm | items | seconds | items / min | generations / s | tokens / s | CPU s / wall s |",
        "|---|---|---|---|---|---|---|",
    ]
    # A line marked "excluded" keeps its wall time in the file but not in a rate (e.g. the process was paused).
    timing = [t for t in s.timing if not t.get("excluded")]
    total = 0.0
    for arm in s.kinds:
        rows = [t for t in timing if t["arm"] == arm]
        if not rows:
            continue
        sec = sum(t["seconds"] for t in rows)
        total += sec
        items, gens, toks = (sum(t[k] for t in rows) for k in ("items", "generations", "tokens"))
        # CPU time was recorded from 2026-12-07 on: over the lines that have it, ~threads when the arm had the cores.
        cpu = [t for t in rows if "cpu_seconds" in t]
        share = (
            f"{sum(t['cpu_seconds'] for t in cpu) / max(sum(t['seconds'] for t in cpu), 1e-9):.2f}"
            if cpu
            else "—"
        )
        out.append(
            f"| `{arm}` | {items} | {sec:.0f} | {items / max(sec, 1e-9) * 60:.2f} | {gens / max(sec, 1e-9):.2f} | "
            f"{toks / max(sec, 1e-9):.1f} | {share} |"
        )
    out += ["", f"Test items, all arms: {total / 3600:.2f} h."]
    left = [t for t in s.timing if t.get("excluded")]
    if left:
        out += ["", "Left out of the rates (their items are in every other table):"]
        out += [f"- chunk {t['chunk']}, `{t['arm']}`, {t['seconds']:.0f} s: {t['excluded']}" for t in left]
    return out


SECTIONS: Sequence[tuple[str, Callable[[Study], list[str]]]] = (
    ("The paper-literal arm (`--preset paper`)", paper_section),
    ("Five arms at equal generations", generations_section),
    ("Five arms at equal generated tokens", tokens_section),
    ("Why the vote does what it does: distinct answers and oracle pass@k", diversity_section),
    ("Intervals on the differences that carry the claims", differences_section),
    ("Throughput", throughput_section),
)


def report(folders: Sequence[Path], out: Path = OUT, n_boot: int = 10_000) -> str:
    """The whole file: the hand-written head of ``out`` (if any), the marker, then the generated sections."""
    studies = [s for s in (Study(f, n_boot) for f in folders) if s.items]
    old = out.read_text(encoding="utf-8") if out.exists() else ""
    head = old.split(MARKER)[0].rstrip("\n") if MARKER in old else TITLE
    body = [
        f"Generated by `python analysis/its_report.py` from {', '.join(f'`{_rel(s.folder)}`' for s in studies)}."
    ]
    for title, section in SECTIONS:
        body += ["", f"## {title}"]
        for s in studies:
            body += ["", *section(s)]
    return f"{head}\n\n{MARKER}\n\n" + "\n".join(body) + "\n"


def _rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return path.name


def study_folders(root: Path = ROOT / "analysis" / "results" / "its_study") -> list[Path]:
    """The committed studies with at least one item line."""
    return sorted(
        p.parent
        for p in root.glob("*/items.jsonl")
        if p.stat().st_size and (p.parent / "study.json").exists()
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folders", nargs="*", type=Path, help="study folders (default: every committed one)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    folders = args.folders or study_folders()
    if not folders:
        raise SystemExit("no study folder with records")
    from xsteer.core.io import write_text_atomic

    text = report(folders, args.out)
    write_text_atomic(args.out, text)
    print(text)


if __name__ == "__main__":
    main()
