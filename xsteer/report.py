"""Figures (PNG + SVG) and one self-contained HTML report per experiment folder.

Reads what the evaluator wrote (``records.jsonl``, ``summary.json``) plus optional extras (a transfer fit
table, vector files), so a report can be rebuilt at any time without rerunning a model.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display on servers; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402
import seaborn as sns  # noqa: E402

from xsteer.evaluate import BASELINE, SELF_CONSISTENCY, accuracy_by_lambda  # noqa: E402


def save_figure(fig: Any, path_stem: Path) -> Path:
    """Write ``stem.png`` and ``stem.svg``; return the PNG path."""
    path_stem.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path_stem.with_suffix(".png"), dpi=130, bbox_inches="tight")
    fig.savefig(path_stem.with_suffix(".svg"), bbox_inches="tight")
    plt.close(fig)
    return path_stem.with_suffix(".png")


def lambda_curves(records: Sequence[Mapping], split: str, out: Path, metric: str = "correct", title: str = "") -> Path | None:
    """Accuracy vs λ per vector condition (the paper's Fig. 3), with the baseline as a line."""
    conds = sorted({r["condition"] for r in records if r["split"] == split} - {BASELINE, SELF_CONSISTENCY})
    curves = {c: accuracy_by_lambda(records, split, c, metric) for c in conds}
    curves = {c: v for c, v in curves.items() if len(v) > 1}
    if not curves:
        return None
    sns.set_theme(style="whitegrid")
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for c, acc in curves.items():
        ax.plot(list(acc), [100 * a for a in acc.values()], marker="o", label=c)
    base = accuracy_by_lambda(records, split, BASELINE, metric)
    if base:
        ax.axhline(100 * next(iter(base.values())), color="black", ls="--", lw=1, label="baseline")
    lams = sorted({lam for acc in curves.values() for lam in acc})
    # λ grids are geometric-ish (the paper's spans 0.01..1): log scale, labelled at the λ values used.
    ax.set_xscale("log" if lams[0] > 0 else "symlog", **({} if lams[0] > 0 else {"linthresh": min(x for x in lams if x > 0)}))
    ax.set_xticks(lams, [f"{x:g}" for x in lams], rotation=45 if len(lams) > 8 else 0)
    ax.minorticks_off()
    ax.set_xlabel("λ")
    ax.set_ylabel(f"accuracy (%) [{metric}]")
    ax.set_title(title or f"accuracy vs λ ({split})")
    ax.legend(fontsize=8)
    return save_figure(fig, out)


def condition_bars(summary: Mapping[str, Any], out: Path, title: str = "") -> Path:
    """Baseline vs λ* vs ITS vs controls with 95% CIs (the paper's Fig. 1, with intervals)."""
    rows = summary["rows"]
    sns.set_theme(style="whitegrid")
    fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(rows) + 2), 4))
    names = [r["condition"] for r in rows]
    acc = [100 * r["acc"] for r in rows]
    err = [[100 * (r["acc"] - r["ci"][0]) for r in rows], [100 * (r["ci"][1] - r["acc"]) for r in rows]]
    colors = sns.color_palette("deep", len(rows))
    ax.bar(names, acc, yerr=err, capsize=4, color=colors)
    ax.set_ylabel(f"accuracy (%) [{summary['metric']}], 95% CI")
    ax.set_title(title or f"test, n = {summary['n_items']}")
    plt.setp(ax.get_xticklabels(), rotation=30, ha="right")
    return save_figure(fig, out)


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" style="max-width:100%">'


def _md_table_to_html(md: str) -> str:
    """The small markdown tables xsteer writes, as HTML tables."""
    out, rows = [], [ln for ln in md.strip().splitlines()]
    table: list[list[str]] = []
    for ln in rows + [""]:
        if ln.startswith("|"):
            cells = [c.strip() for c in ln.strip("|").split("|")]
            if not all(set(c) <= {"-", ":"} for c in cells):
                table.append(cells)
            continue
        if table:
            head, *body = table
            out.append("<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in head) + "</tr>"
                       + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in body) + "</table>")
            table = []
        if ln.strip():
            out.append(f"<p>{html.escape(ln)}</p>")
    return "\n".join(out)


def write_report(folder: str | Path, *, title: str = "xsteer report", sections: Sequence[tuple[str, str]] = ()) -> Path:
    """Build ``report.html`` in ``folder`` from its records and summary, plus extra (heading, markdown) sections."""
    folder = Path(folder)
    parts = [f"<h1>{html.escape(title)}</h1>"]
    summary_path = folder / "summary.json"
    figs = folder / "figures"
    if summary_path.exists():
        doc = json.loads(summary_path.read_text())
        from xsteer.evaluate import RecordStore, summary_markdown

        records = RecordStore(folder / "records.jsonl").load(doc.get("config_hash"))
        for metric, summ in doc["summaries"].items():
            parts.append(f"<h2>Test results ({html.escape(metric)})</h2>")
            parts.append(_md_table_to_html(summary_markdown(summ)))
            parts.append(_img(condition_bars(summ, figs / f"conditions_{metric}")))
        for split in ("validation", "test"):
            p = lambda_curves(records, split, figs / f"lambda_{split}")
            if p:
                parts.append(f"<h2>Accuracy vs λ ({split})</h2>" + _img(p))
        parts.append("<h2>Configuration</h2><pre>" + html.escape(json.dumps(doc.get("config"), indent=2, default=str)) + "</pre>")
    for heading, body in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        parts.append(body if body.lstrip().startswith("<") else _md_table_to_html(body))
    style = ("body{font-family:sans-serif;max-width:980px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;font-size:90%}"
             "th{background:#f3f3f3}pre{background:#f7f7f7;padding:1em;overflow:auto}")
    out = folder / "report.html"
    out.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
                   f"<style>{style}</style></head><body>{''.join(parts)}</body></html>")
    return out


def heatmap(matrix: Any, out: Path, *, xlabel: str, ylabel: str, title: str, center: float | None = None,
            cmap: str = "viridis", annotate: bool = False) -> Path:
    """A layer × layer heatmap (CKA, cosine or correlation between two models' layers or vectors)."""
    import numpy as np

    m = np.asarray(matrix, dtype=float)
    sns.set_theme(style="white")
    fig, ax = plt.subplots(figsize=(min(12, 2 + 0.28 * m.shape[1]), min(10, 1.5 + 0.25 * m.shape[0])))
    sns.heatmap(m, ax=ax, cmap=cmap, center=center, annot=annotate, fmt=".2f", cbar_kws={"shrink": 0.8})
    ax.invert_yaxis()  # layer 0 at the bottom, as depth grows upwards
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    return save_figure(fig, out)


def layer_lines(series: Mapping[str, Sequence[float]], out: Path, *, ylabel: str, title: str,
                bands: Mapping[str, float] | None = None) -> Path:
    """One line per named per-layer series, with optional horizontal reference levels (e.g. a null)."""
    sns.set_theme(style="whitegrid")
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for name, ys in series.items():
        ax.plot(range(len(ys)), list(ys), marker=".", label=name)
    for name, level in (bands or {}).items():
        ax.axhline(level, color="gray", ls=":", lw=1)
        ax.axhline(-level, color="gray", ls=":", lw=1)
        ax.text(0, level, f" {name}", va="bottom", fontsize=8, color="gray")
    ax.set_xlabel("layer")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    return save_figure(fig, out)
