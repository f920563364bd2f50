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
from matplotlib.ticker import MaxNLocator  # noqa: E402

from xsteer.core.io import atomic_path, slug, write_csv_atomic, write_json_atomic, write_text_atomic  # noqa: E402
from xsteer.errors import InputError
from xsteer.evaluation.stats import min_detectable_effect, wilson_ci  # noqa: E402
from xsteer.evaluation.summary import BASELINE, SELF_CONSISTENCY, accuracy_by_lambda  # noqa: E402
from xsteer.transfer.similarity import SimilarityResult, VectorComparison  # noqa: E402


def save_figure(fig: Any, path_stem: Path) -> Path:
    """Write ``stem.png`` and ``stem.svg`` (each atomically); return the PNG path."""
    try:
        for fmt, dpi in (("png", 130), ("svg", None)):
            with atomic_path(path_stem.with_name(f"{path_stem.name}.{fmt}")) as tmp:
                fig.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path_stem.with_name(f"{path_stem.name}.png")


def lambda_curves(
    records: Sequence[Mapping], split: str, out: Path, metric: str = "correct", title: str = ""
) -> Path | None:
    """Accuracy vs λ per vector condition (the paper's Fig. 3) with 95% Wilson bands, and the baseline as a
    line in its own band: at the n of a CPU study most of a curve's wiggle is inside the band."""
    conds = sorted({r["condition"] for r in records if r["split"] == split} - {BASELINE, SELF_CONSISTENCY})
    curves = {c: accuracy_by_lambda(records, split, c, metric) for c in conds}
    curves = {c: v for c, v in curves.items() if len(v) > 1}
    if not curves:
        return None
    sns.set_theme(style="whitegrid")
    fig, ax = plt.subplots(figsize=(6.4, 4))
    counts = _counts_by_lambda(records, split, metric)
    for c, acc in curves.items():
        (line,) = ax.plot(list(acc), [100 * a for a in acc.values()], marker="o", label=c)
        band = [wilson_ci(*counts[c, lam]) for lam in acc]
        ax.fill_between(
            list(acc),
            [100 * b.low for b in band],
            [100 * b.high for b in band],
            color=line.get_color(),
            alpha=0.15,
            lw=0,
        )
    lams = sorted({lam for acc in curves.values() for lam in acc})
    base = accuracy_by_lambda(records, split, BASELINE, metric)
    if base:
        b = wilson_ci(*counts[BASELINE, next(iter(base))])
        ax.axhline(100 * b.estimate, color="black", ls="--", lw=1, label="baseline")
        ax.axhspan(100 * b.low, 100 * b.high, color="black", alpha=0.06, lw=0)
    # λ grids are geometric-ish (the paper's spans 0.01..1): log scale, labelled at the λ values used.
    ax.set_xscale(
        "log" if lams[0] > 0 else "symlog",
        **({} if lams[0] > 0 else {"linthresh": min(x for x in lams if x > 0)}),
    )
    ax.set_xticks(lams, [f"{x:g}" for x in lams], rotation=45 if len(lams) > 8 else 0)
    ax.minorticks_off()
    ax.set_xlabel("λ")
    ax.set_ylabel(f"accuracy (%) [{metric}]")
    ax.set_title(title or f"accuracy vs λ ({split})")
    ax.legend(fontsize=8)
    return save_figure(fig, out)


def _counts_by_lambda(
    records: Sequence[Mapping], split: str, metric: str
) -> dict[tuple[str, float], tuple[int, int]]:
    """(condition, λ) -> (correct, n) over the first sample of each item."""
    out: dict[tuple[str, float], list[int]] = {}
    for r in records:
        if r["split"] == split and int(r.get("sample", 0)) == 0:
            k = out.setdefault((r["condition"], float(r["lam"])), [0, 0])
            k[0] += bool(r[metric])
            k[1] += 1
    return {key: (v[0], v[1]) for key, v in out.items()}


def plain_summary(summary: Mapping[str, Any]) -> str:
    """What the table shows, in words: which conditions differ from baseline (95% CI of the paired
    difference excluding 0), and the smallest effect this n could have detected."""
    rows = summary["rows"]
    base = next(r for r in rows if r["condition"] == BASELINE)
    n = int(summary["n_items"])
    differ = [r for r in rows if "delta_ci" in r and (r["delta_ci"][0] > 0 or r["delta_ci"][1] < 0)]
    if differ:
        said = "; ".join(
            f"{r['condition']} {100 * r['delta']:+.1f} points [{100 * r['delta_ci'][0]:+.1f}, "
            f"{100 * r['delta_ci'][1]:+.1f}] (McNemar p = {r['mcnemar_p']:.3g})"
            for r in differ
        )
        lead = f"Differs from baseline ({100 * base['acc']:.1f}%): {said}."
        if len(rows) > 2:
            lead += (
                f" With {len(rows) - 1} comparisons, one interval excluding 0 by chance is expected about "
                f"{5 * (len(rows) - 1)}% of the time."
            )
    else:
        lead = (
            f"No condition differs from baseline ({100 * base['acc']:.1f}%): every paired 95% interval of "
            f"the difference includes 0."
        )
    mde = min_detectable_effect(base["acc"], n)
    return (
        f"{lead} With n = {n} test items, the smallest difference this run could detect at 80% power "
        f"(two-sided α = 0.05, answers as independent as coin flips) is ±{100 * mde:.1f} points; "
        f"smaller effects are neither shown nor ruled out."
    )


def example_generations(
    records: Sequence[Mapping], lambda_star: Mapping[str, float], *, items: int = 3, chars: int = 400
) -> str:
    """HTML: the first test items' completions under the baseline and each condition at its λ*."""
    test = [r for r in records if r["split"] == "test" and "completion" in r and int(r.get("sample", 0)) == 0]
    if not test:
        return ""
    chosen = list(dict.fromkeys(r["item"] for r in test))[:items]
    conds = [BASELINE] + sorted({r["condition"] for r in test} - {BASELINE, SELF_CONSISTENCY})
    parts = []
    for item in chosen:
        gold = next(r["gold"] for r in test if r["item"] == item)
        rows = []
        for c in conds:
            lam = 0.0 if c == BASELINE else lambda_star.get(c)
            r = next(
                (
                    r
                    for r in test
                    if r["item"] == item
                    and r["condition"] == c
                    and (lam is None or float(r["lam"]) == float(lam))
                ),
                None,
            )
            if r is None:
                continue
            mark = "✓" if r.get("correct") else "✗"
            text = r["completion"] if len(r["completion"]) <= chars else r["completion"][:chars] + " …"
            rows.append(
                f"<tr><td>{html.escape(c)}</td><td>{float(r['lam']):g}</td><td>{mark} {html.escape(str(r.get('answer')))}</td>"
                f"<td><pre style='white-space:pre-wrap;margin:0'>{html.escape(text)}</pre></td></tr>"
            )
        parts.append(
            f"<h3>item {html.escape(str(item))} (gold: {html.escape(str(gold))})</h3><table>"
            "<tr><th>condition</th><th>λ</th><th>answer</th><th>completion</th></tr>"
            + "".join(rows)
            + "</table>"
        )
    return "".join(parts)


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


def embed_png(path: Path) -> str:
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
            out.append(
                "<table><tr>"
                + "".join(f"<th>{html.escape(c)}</th>" for c in head)
                + "</tr>"
                + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in body)
                + "</table>"
            )
            table = []
        if ln.strip():
            out.append(f"<p>{html.escape(ln)}</p>")
    return "\n".join(out)


def write_report(
    folder: str | Path, *, title: str = "xsteer report", sections: Sequence[tuple[str, str]] = ()
) -> Path:
    """Build ``report.html`` in ``folder`` from its records and summary, plus extra (heading, markdown) sections.

    It opens with what it shows in words (:func:`plain_summary`), then the tables and bars, λ curves with
    bands, example generations and the run's configuration and versions. A folder with nothing to report
    is an error, not an empty page.
    """
    folder = Path(folder)
    parts = [f"<h1>{html.escape(title)}</h1>"]
    summary_path = folder / "summary.json"
    figs = folder / "figures"
    if not summary_path.exists() and not sections:
        raise InputError(
            f"{folder}: no summary.json, so nothing to report; point `xsteer report` at the --out "
            f"folder of `xsteer evaluate` (or of a grid job)"
        )
    if summary_path.exists():
        try:
            doc = json.loads(summary_path.read_text(encoding="utf-8"))
            summaries = doc["summaries"]
            if not isinstance(summaries, dict):
                raise TypeError("'summaries' is not a mapping")
        except (ValueError, KeyError, TypeError) as e:
            raise InputError(
                f"{summary_path}: not a summary xsteer wrote ({type(e).__name__}: {e}); rerun "
                f"`xsteer evaluate` into this folder to rebuild it"
            ) from e
        from xsteer.evaluation.records import RecordStore
        from xsteer.evaluation.summary import summary_markdown

        records = RecordStore(folder / "records.jsonl").load(doc.get("config_hash"))
        first = True
        for metric, summ in summaries.items():
            if first:
                parts.append(f"<h2>Summary</h2><p>{html.escape(plain_summary(summ))}</p>")
                first = False
            parts.append(f"<h2>Test results ({html.escape(metric)})</h2>")
            parts.append(_md_table_to_html(summary_markdown(summ)))
            parts.append(embed_png(condition_bars(summ, figs / f"conditions_{metric}")))
        for split in ("validation", "test"):
            p = lambda_curves(records, split, figs / f"lambda_{split}")
            if p:
                parts.append(f"<h2>Accuracy vs λ ({split}), 95% bands</h2>" + embed_png(p))
        first_summary: Mapping[str, Any] = next(iter(summaries.values()), {})
        examples = example_generations(records, first_summary.get("lambda_star", {}))
        if examples:
            parts.append("<h2>Example generations (test, each condition at its λ*)</h2>" + examples)
        parts.append(
            "<h2>Configuration</h2><pre>"
            + html.escape(json.dumps(doc.get("config"), indent=2, default=str))
            + "</pre>"
        )
        if doc.get("runtime"):
            parts.append(
                "<h2>Runtime and versions</h2><pre>"
                + html.escape(json.dumps(doc["runtime"], indent=2))
                + "</pre>"
            )
    for heading, body in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        parts.append(body if body.lstrip().startswith("<") else _md_table_to_html(body))
    style = (
        "body{font-family:sans-serif;max-width:980px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;font-size:90%}"
        "th{background:#f3f3f3}pre{background:#f7f7f7;padding:1em;overflow:auto}"
    )
    out = folder / "report.html"
    write_text_atomic(
        out,
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{style}</style></head><body>{''.join(parts)}</body></html>",
    )
    return out


def heatmap(
    matrix: Any,
    out: Path,
    *,
    xlabel: str,
    ylabel: str,
    title: str,
    center: float | int | None = None,
    cmap: str = "viridis",
    annotate: bool = False,
    xticklabels: Any = "auto",
    yticklabels: Any = "auto",
) -> Path:
    """A layer × layer heatmap (CKA, cosine or correlation between two models' layers or vectors)."""
    import numpy as np

    m = np.asarray(matrix, dtype=float)
    sns.set_theme(style="white")
    fig, ax = plt.subplots(figsize=(min(12, 2 + 0.28 * m.shape[1]), min(10, 1.5 + 0.25 * m.shape[0])))
    sns.heatmap(
        m,
        ax=ax,
        cmap=cmap,
        center=center,
        annot=annotate,
        fmt=".2f",
        cbar_kws={"shrink": 0.8},
        xticklabels=xticklabels,
        yticklabels=yticklabels,
    )
    ax.invert_yaxis()  # layer 0 at the bottom, as depth grows upwards
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    return save_figure(fig, out)


def layer_lines(
    series: Mapping[str, Sequence[float]],
    out: Path,
    *,
    ylabel: str,
    title: str,
    bands: Mapping[str, float] | None = None,
) -> Path:
    """One line per named per-layer series, with optional horizontal reference levels (e.g. a null)."""
    sns.set_theme(style="whitegrid")
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for name, ys in series.items():
        ax.plot(range(len(ys)), list(ys), marker=".", label=name)
    for name, level in (bands or {}).items():
        ax.axhline(level, color="gray", ls=":", lw=1)
        ax.axhline(-level, color="gray", ls=":", lw=1)
        ax.text(0, level, f" {name}", va="bottom", fontsize=8, color="gray")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # layers are whole numbers
    ax.set_xlabel("layer")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    return save_figure(fig, out)


# ---------------------------------------------------------------------------------------------- ablations
def write_ablation(doc: Mapping[str, Any], folder: str | Path) -> list[Path]:
    """An :func:`xsteer.evaluation.ablate.ablation_study` document as ``ablate_STUDY.json`` and ``.csv`` (named
    by the study, so one study does not overwrite another) and its figures; returns the paths (the PNGs)."""
    folder = Path(folder)
    study = doc["study"]
    return [
        write_json_atomic(folder / f"ablate_{study}.json", doc),
        write_csv_atomic(folder / f"ablate_{study}.csv", doc["rows"]),
        *ablation_figures(doc, folder),
    ]


def ablation_figures(doc: Mapping[str, Any], folder: Path) -> list[Path]:
    """Figures of an :func:`xsteer.evaluation.ablate.ablation_study` document: a λ × layer heatmap and per-layer lines of
    the signal change (``single``, ``leave_one_out``), or the per-layer λ found (``coordinate``)."""
    from xsteer.evaluation.ablate import study_matrix

    study, figs = doc["study"], Path(folder) / "figures"
    if study == "coordinate":
        lam = [float("nan")] * doc["n_layers"]
        for r in doc["rows"]:
            lam[r["layer"]] = r["lam"]
        return [
            layer_lines(
                {"λ per layer": lam},
                figs / "ablate_coordinate_profile",
                ylabel="λ",
                title=f"coordinate search: Δ signal {doc['best_delta']:+.4f} over baseline",
            )
        ]
    what = "only this layer steered" if study == "single" else "this layer left out"
    lambdas, delta = study_matrix(doc)
    paths = [
        heatmap(
            delta,
            figs / f"ablate_{study}_heatmap",
            xlabel="layer",
            ylabel="λ",
            title=f"Δ gold log-prob vs baseline ({what})",
            center=0,
            cmap="RdBu_r",
            yticklabels=[f"{lam:g}" for lam in lambdas],
        )
    ]
    series = {f"λ = {lam:g}": delta[i].tolist() for i, lam in enumerate(lambdas)}
    paths.append(
        layer_lines(
            series,
            figs / f"ablate_{study}_layers",
            ylabel="Δ mean log p(gold) per token",
            title=f"{study}: {what}",
            bands={"baseline": 0.0},
        )
    )
    return paths


# ---------------------------------------------------------------------------------------------- similarity
def vector_labels(items: Sequence[tuple[str, Any]]) -> list[str]:
    """Display names for (file stem, vectors) pairs: the parent a mapped set came from, else the stem;
    stems where that would be ambiguous, then a counter."""
    labels = [str(sv.extra.get("parent") or stem) for stem, sv in items]
    labels = [stem if labels.count(lab) > 1 else lab for lab, (stem, _) in zip(labels, items, strict=True)]
    seen: dict[str, int] = {}
    out = []
    for lab in labels:
        seen[lab] = seen.get(lab, 0) + 1
        out.append(lab if labels.count(lab) == 1 else f"{lab}#{seen[lab]}")
    return out


def similarity_report(
    out: str | Path, result: SimilarityResult, *, title: str = "xsteer: similarity of concepts"
) -> dict[str, Any]:
    """Write a :func:`~xsteer.transfer.similarity.compare_all` result into ``out``: a cosine and a
    Pearson-correlation heatmap per vector comparison (the paper's Fig. 2 style), the per-layer cosines
    against the nulls, a CKA heatmap per activation pair, as ``figures/*.png|svg``; ``similarity.json``
    (everything, matrices included), ``similarity.csv`` (one row per comparison and layer), ``cka.csv`` (one
    row per pair and child layer) and ``report.html``. Returns the JSON document plus ``files`` (the paths
    written)."""
    out = Path(out)
    figs = out / "figures"
    sections = [
        (f"{c.name} vs {c.reference}: per-layer cosine", _comparison_text(c, result.q))
        for c in result.vectors
    ]
    figures = [f for c in result.vectors for f in _comparison_figures(c, figs)]
    if result.vectors:
        figures.append(_cosine_lines(result, figs))
    for k in result.cka:
        figures.append(
            heatmap(
                k.matrix,
                figs / f"cka_{slug(k.pair)}",
                xlabel="parent layer",
                ylabel="child layer",
                title=f"linear CKA, {k.pair}",
            )
        )
        best = ", ".join(f"{c}←{p} ({v:.2f})" for c, p, v in k.best)
        sections.append(
            (f"CKA {k.pair}", f"<p>Per child layer, the best parent layer and its CKA: {best}</p>")
        )
    doc = result.to_json()
    files = [write_json_atomic(out / "similarity.json", doc)]
    if result.vectors:
        files.append(write_csv_atomic(out / "similarity.csv", [r for c in result.vectors for r in c.rows()]))
    if result.cka:
        files.append(write_csv_atomic(out / "cka.csv", [r for k in result.cka for r in k.rows()]))
    body = "".join(f"<h3>{html.escape(p.stem)}</h3>{embed_png(p)}" for p in figures)
    files.append(write_report(out, title=title, sections=[*sections, ("Figures", body)]))
    files += [f for p in figures for f in (p, p.with_name(f"{p.stem}.svg"))]
    return {**doc, "files": [str(f) for f in files]}


def _comparison_figures(c: VectorComparison, figs: Path) -> list[Path]:
    return [
        heatmap(
            c.numbers[key],
            figs / f"{kind}_{slug(c.name)}",
            xlabel=f"{c.reference} layer",
            ylabel=f"{c.name} layer",
            title=f"{what}: {c.name} vs {c.reference}",
            center=0,
            cmap="RdBu_r",
        )
        for kind, key, what in (
            ("cosine", "cosine_matrix", "cosine"),
            ("corr", "correlation_matrix", "Pearson correlation (paper Fig. 2 style)"),
        )
    ]


def _comparison_text(c: VectorComparison, q: float) -> str:
    res = c.numbers
    text = (
        f"<p>{res['above_null']} of {len(res['layers'])} layers steered by both exceed the random null's "
        f"{q:.0%} |cos| quantile ({res['null']:.3f} in d = {c.d_model}). Max |cos| = {res['max_abs_cosine']:.3f}.</p>"
    )
    if c.mapped:
        text += (
            f"<p>{res['above_mapped_null']} of {len(res['layers'])} exceed the {q:.0%} |cos| of 500 random parent "
            f"directions sent through the same map (median of that quantile over layers: "
            f"{c.mapped_null_median():.3f}).</p>"
        )
    return text


def _cosine_lines(result: SimilarityResult, figs: Path) -> Path:
    series: dict[str, list[float]] = {}
    for c in result.vectors:
        series[f"{c.name} vs {c.reference}"] = c.numbers["cosine"]
        if c.mapped:
            series[f"{c.name}: mapped-random null, {result.q:.0%} |cos|"] = c.numbers["mapped_null"]
    # One band: the random null depends only on d, which every comparison with one reference shares.
    null = result.vectors[-1].numbers["null"]
    return layer_lines(
        series,
        figs / "cosine_per_layer",
        ylabel="cosine",
        title=f"per-layer cosine with {result.reference}",
        bands={f"random null {result.q:.0%}": null},
    )


def similarity_table(doc: Mapping[str, Any]) -> str:
    """A text summary of :func:`similarity_report`'s document (per-layer cosines, CKA best matches)."""
    lines = []
    for c in doc["comparisons"]:
        mapped = "mapped_null" in c
        lines.append(
            f"{c['name']} vs {doc['reference']}: {c['above_null']}/{len(c['layers'])} layers above the random "
            f"null ({doc['null_q']:.0%} |cos| = {c['null']:.3f})"
            + (f", {c['above_mapped_null']} above the mapped-random null" if mapped else "")
        )
        lines.append(f"{'layer':>5}  {'cosine':>8}" + (f"  {'mapped null':>11}" if mapped else ""))
        for layer in c["layers"]:
            lines.append(
                f"{layer:>5}  {c['cosine'][layer]:>8.3f}"
                + (f"  {c['mapped_null'][layer]:>11.3f}" if mapped else "")
            )
    for k in doc["cka"]:
        lines.append(f"CKA {k['pair']} ({k['n_texts']} texts): child layer <- best parent layer (CKA)")
        lines.append(
            "  ".join(f"{b['child_layer']}<-{b['parent_layer']} ({b['cka']:.2f})" for b in k["best"])
        )
    return "\n".join(lines)
