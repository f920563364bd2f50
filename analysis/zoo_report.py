"""One report over the offline-zoo study (issue #5), from saved artifacts only (no model is run).

Gathers what `analysis/zoo_study.sh` and the Gemma study wrote into one self-contained HTML page:

* the best-λ table (the paper's Appendix C) and the test summaries (Table 1 layout, with CIs and McNemar p);
* ITS bars: baseline vs λ* vs ITS vs controls with 95% CIs (Fig. 1), per run;
* λ robustness (Fig. 3): accuracy vs λ for both parents into SmolLM2 on the ARC test items both runs share;
* per-layer ablations: Δ gold log-probability and Δ accuracy when steering one layer, parent × layer;
* similarity: per-layer cosine to the child-native vectors against the nulls, parent vs parent correlation in
  the child's space (Fig. 2), linear CKA between models' layers.

    python analysis/zoo_report.py --study runs/study --out runs/study/zoo_report
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from xsteer.app.report import (
    condition_bars,
    embed_png,
    heatmap,
    lambda_curves,
    similarity_table,
    write_report,
)
from xsteer.evaluation.ablate import study_matrix
from xsteer.evaluation.records import RecordStore
from xsteer.evaluation.summary import summary_markdown

# run folder -> (label, which vector condition holds the parent's mapped vectors)
RUNS = {
    "gsm8k": "GSM8K, Gemma-3-270M → SmolLM2-135M",
    "arc": "ARC-Challenge (log-likelihood), Gemma-3-270M → SmolLM2-135M",
    "arc_qwen": "ARC-Challenge (log-likelihood), Qwen2.5-Coder-1.5B → SmolLM2-135M",
}
PARENT_LABEL = {
    "arc": "gemma3-270m",
    "arc_qwen": "qwen2.5-coder-1.5b",
    "ablate_g2s": "gemma3-270m",
    "ablate_q2s": "qwen2.5-coder-1.5b",
}


def load_run(folder: Path) -> tuple[dict, list[dict]] | None:
    if not (folder / "summary.json").exists():
        return None
    doc = json.loads((folder / "summary.json").read_text())
    return doc, RecordStore(folder / "records.jsonl").load(doc["config_hash"])


def best_lambda_table(runs: dict[str, tuple[dict, list[dict]]]) -> str:
    lines = [
        "| run | condition | λ* (validation; ties: smallest λ) | validation accuracy at λ* % | λ grid |",
        "|---|---|---|---|---|",
    ]
    for name, (doc, records) in runs.items():
        for cond, lam in doc["lambda_star"].items():
            val = [
                r
                for r in records
                if r["split"] == "validation" and r["condition"] == cond and float(r["lam"]) == lam
            ]
            acc = 100 * sum(r["correct"] for r in val) / max(1, len(val))
            lines.append(
                f"| {name} | {cond} | {lam:g} | {acc:.1f} (n = {len(val)}) | {doc['config']['lambdas']} |"
            )
    return "\n".join(lines)


def shared_arc_curves(runs: dict[str, tuple[dict, list[dict]]], out: Path) -> Path | None:
    """Both parents' λ curves on the ARC test items both runs scored, conditions named by parent."""
    if "arc" not in runs or "arc_qwen" not in runs:
        return None
    items = {r["item"] for r in runs["arc_qwen"][1] if r["split"] == "test"}
    merged = []
    for name in ("arc", "arc_qwen"):
        for r in runs[name][1]:
            if r["split"] != "test" or r["item"] not in items:
                continue
            if r["condition"] == "parent":
                r = {**r, "condition": f"{PARENT_LABEL[name]} → smollm2"}
            elif name == "arc_qwen":
                continue  # baseline once (identical: same child, items and prompts)
            merged.append(r)
    return lambda_curves(
        merged, "test", out, title=f"ARC-Challenge test (n = {len(items)}): accuracy vs λ, both parents"
    )


def ablation_section(study: Path, figs: Path) -> tuple[str, list[Path]]:
    docs = {
        name: json.loads((study / name / "ablate_single.json").read_text())
        for name in ("ablate_g2s", "ablate_q2s")
        if (study / name / "ablate_single.json").exists()
    }
    if not docs:
        return "", []
    labels = [PARENT_LABEL[n] for n in docs]
    lam = docs[next(iter(docs))]["lambdas"][-1]
    rows, acc_rows, text = [], [], []
    for name, doc in docs.items():
        lams, m = study_matrix(doc, "delta")
        rows.append(m[lams.index(lam)])
        _, a = study_matrix(doc, "accuracy")
        acc_rows.append(100 * (a[lams.index(lam)] - doc.get("accuracy_baseline", float("nan"))))
        best = int(torch.nan_to_num(rows[-1], nan=-1e9).argmax())
        text.append(
            f"{PARENT_LABEL[name]}: baseline signal {doc['baseline']:.4f}, accuracy {100 * doc.get('accuracy_baseline', float('nan')):.1f}% "
            f"({doc['n_items']} {doc['split']} items: one item = {100 / doc['n_items']:.1f} accuracy points); "
            f"largest Δ log p at layer {best} ({float(rows[-1][best]):+.4f})"
        )
    paths = [
        heatmap(
            torch.stack(rows),
            figs / "ablation_single_logprob",
            xlabel="steered layer (SmolLM2)",
            ylabel="parent",
            title=f"Δ mean log p(gold), one layer steered, λ = {lam:g}",
            center=0,
            cmap="RdBu_r",
            yticklabels=labels,
        ),
        heatmap(
            torch.stack(acc_rows),
            figs / "ablation_single_accuracy",
            xlabel="steered layer (SmolLM2)",
            ylabel="parent",
            title=f"Δ accuracy (points), one layer steered, λ = {lam:g}",
            center=0,
            cmap="RdBu_r",
            yticklabels=labels,
        ),
    ]
    return "<br>".join(text), paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--study", default="runs/study")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    study = Path(args.study)
    out = Path(args.out or study / "zoo_report")
    figs = out / "figures"
    runs = {name: r for name in RUNS if (r := load_run(study / name))}
    sections: list[tuple[str, str]] = []
    if runs:
        sections.append(("Best λ per run (Appendix C)", best_lambda_table(runs)))
    for name, (doc, records) in runs.items():
        summ = doc["summaries"]["correct"]
        bars = condition_bars(summ, figs / f"its_{name}", title=f"{RUNS[name]}, test n = {summ['n_items']}")
        curve = lambda_curves(
            records, "test", figs / f"lambda_{name}", title=f"{RUNS[name]}: accuracy vs λ (test)"
        )
        body = summary_markdown(summ)
        sections.append((RUNS[name], body))
        sections.append((f"{RUNS[name]}: figures", embed_png(bars) + (embed_png(curve) if curve else "")))
    shared = shared_arc_curves(runs, figs / "lambda_arc_both_parents")
    if shared:
        sections.append(("λ robustness, both parents (Fig. 3)", embed_png(shared)))
    text, paths = ablation_section(study, figs)
    if paths:
        sections.append(
            (
                "Per-layer λ ablation: one layer steered",
                f"<p>{text}</p>" + "".join(embed_png(p) for p in paths),
            )
        )
    for folder, heading in (
        ("similarity", "Similarity to the child-native vectors, and CKA"),
        ("similarity_parents", "Parent vs parent in SmolLM2's space (Fig. 2)"),
    ):
        sim = study / folder
        if (sim / "similarity.json").exists():
            table = similarity_table(json.loads((sim / "similarity.json").read_text()))
            pngs = sorted((sim / "figures").glob("*.png"))
            sections.append(
                (heading, f"<pre>{table}</pre>" + "".join(f"<h3>{p.stem}</h3>{embed_png(p)}" for p in pngs))
            )
    report = write_report(
        out,
        title="xsteer: offline-zoo study (Gemma-3-270M and Qwen2.5-Coder-1.5B → SmolLM2-135M)",
        sections=sections,
    )
    print(f"wrote {report} ({len(list(figs.glob('*.png')))} figures in {figs})")


if __name__ == "__main__":
    main()
