"""Tables and the votes figure of an ITS study folder (``analysis/its_study.py``), as markdown and PNG.

    python analysis/its_report.py runs/its-synthetic [--out analysis/results/its_vs_sc.md]

Text above the report's first heading in an existing ``--out`` file (a hand-written reading) is kept.
Writes: the Table-1 summary with Δ vs baseline and vs self-consistency (McNemar p), accuracy vs the number of
votes (1, 3, …, 19 λ values and the same numbers of self-consistency samples, mean over random subsets with
the spread across subsets), and, for every item where a vote and the baseline disagree, how many distinct
answers the grid produced and at which λ the winning answer appeared.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from xsteer.evaluation.records import RecordStore, of_items
from xsteer.evaluation.summary import (
    SELF_CONSISTENCY,
    its_diagnostics,
    summarize,
    summary_markdown,
    vote_curve,
)


def votes_figure(curves: dict[str, dict[int, dict[str, float]]], base: float, out: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4))
    for name, curve in curves.items():
        ks = sorted(curve)
        ax.plot(
            ks,
            [100 * curve[k]["acc"] for k in ks],
            marker="o",
            label=name,
            ls="--" if name == SELF_CONSISTENCY else "-",
        )
        ax.fill_between(
            ks, [100 * curve[k]["low"] for k in ks], [100 * curve[k]["high"] for k in ks], alpha=0.12
        )
    ax.axhline(100 * base, color="black", lw=1, ls=":", label="baseline (greedy, unsteered)")
    ax.set_xlabel("votes (λ values, or samples at T = 0.7)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.savefig(out, dpi=130, bbox_inches="tight")
    plt.close(fig)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder")
    ap.add_argument("--out", default=None, help="markdown file (default: FOLDER/its_vs_sc.md)")
    ap.add_argument("--metric", default="correct")
    args = ap.parse_args()
    folder = Path(args.folder)
    study = json.loads((folder / "study.json").read_text())
    summary = json.loads((folder / "eval" / "summary.json").read_text())
    if "items" not in summary:
        raise SystemExit(
            f"{folder / 'eval' / 'summary.json'} predates the item lists: rerun analysis/its_study.py with the same "
            "arguments (it reuses every record) and then this report"
        )
    records = of_items(
        RecordStore(folder / "eval" / "records.jsonl").load(summary["config_hash"]), summary["items"]
    )
    out = Path(args.out) if args.out else folder / "its_vs_sc.md"
    lambda_star = summary["lambda_star"]
    lines = [
        f"# λ-vote (ITS) vs self-consistency: {study['child']} on {study['task']}",
        "",
        f"Test items: {summary['summaries'][args.metric]['n_items']}; λ grid ({len(study['lambdas'])} values, share of the "
        f"child's residual norm at steered layers {study['steered_layers'][0]}–{study['steered_layers'][-1]}): "
        f"{', '.join(f'{x:g}' for x in study['lambdas'])}. Positions: generated (greedy; one shared prefill per item). "
        f"Self-consistency: {len(study['lambdas'])} samples at T = 0.7. λ* from {study['val_items']} validation items: "
        f"{lambda_star}.",
        "",
    ]
    for metric, s in summary["summaries"].items():
        lines += [f"## {metric}", "", summary_markdown(s), ""]
    conds = [c for c in study["conditions"] if c != "baseline"]
    sizes = [k for k in range(1, len(study["lambdas"]) + 1, 2)]
    curves = {c: vote_curve(records, c, sizes, metric=args.metric) for c in conds}
    curves[SELF_CONSISTENCY] = vote_curve(records, SELF_CONSISTENCY, sizes, metric=args.metric)
    base = next(
        r
        for r in summarize(records, lambda_star, metric=args.metric, n_boot=200)["rows"]
        if r["condition"] == "baseline"
    )["acc"]
    fig = votes_figure(
        curves, base, out.with_suffix(".png"), f"{study['child']} on {study['task']}: accuracy vs votes"
    )
    lines += [
        "## Accuracy vs number of votes",
        "",
        f"![votes]({fig.name})",
        "",
        "Mean accuracy over 200 random subsets of k λ values (or k samples); [2.5%, 97.5%] across subsets.",
        "",
        "| k | " + " | ".join(curves) + " |",
        "|---|" + "---|" * len(curves),
    ]
    for k in sizes:
        lines.append(
            f"| {k} | "
            + " | ".join(
                f"{100 * curves[c][k]['acc']:.1f} [{100 * curves[c][k]['low']:.1f}, "
                f"{100 * curves[c][k]['high']:.1f}]"
                for c in curves
            )
            + " |"
        )
    lines += ["", "## Where the vote and the baseline disagree", ""]
    for c in conds:
        diag = its_diagnostics(records, c, metric=args.metric)
        wins = [d for d in diag if d["vote_correct"]]
        losses = [d for d in diag if not d["vote_correct"]]

        def describe(ds: list[dict]) -> str:
            if not ds:
                return "none"
            distinct = sorted(d["n_distinct"] for d in ds)
            first = Counter(min(d["winner_lambdas"]) if d["winner_lambdas"] else None for d in ds)
            share = sum(d["winner_share"] for d in ds) / len(ds)
            return (
                f"{len(ds)} items; distinct answers per item median {distinct[len(distinct) // 2]} (range {distinct[0]}–"
                f"{distinct[-1]}); the winner held {100 * share:.0f}% of valid votes on average; smallest λ where the winner "
                f"appeared: {', '.join(f'{k:g}×{v}' if k is not None else f'none×{v}' for k, v in sorted(first.items(), key=lambda kv: (kv[0] is None, kv[0] or 0)))}"
            )

        lines += [
            f"- **{c}** — vote right, baseline wrong: {describe(wins)}.",
            f"  Vote wrong, baseline right: {describe(losses)}.",
        ]
    wall = folder / "eval" / "wall.json"
    if wall.exists():
        lines += [
            "",
            f"Wall time of the last run into this folder: {json.loads(wall.read_text())['seconds'] / 3600:.2f} h ({study['runtime']}).",
        ]
    out.write_text(hand_written_head(out) + "\n".join(lines) + "\n", encoding="utf-8")
    print(out.read_text())


def hand_written_head(out: Path) -> str:
    """What a reader wrote above the generated title of an earlier report (the reading of the numbers), kept on
    regeneration; a first report gets the marker that says where hand-written text goes."""
    old = out.read_text(encoding="utf-8").splitlines() if out.exists() else []
    title = next((i for i, line in enumerate(old) if line.startswith("# ")), None)
    head = old[:title] if title else [HEAD_MARKER, ""]
    return "\n".join(head) + "\n"


HEAD_MARKER = (
    "<!-- written by analysis/its_report.py; the paragraphs above the first heading were added by hand -->"
)


if __name__ == "__main__":
    main()
