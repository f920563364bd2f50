"""Tables, figures and an HTML page for a fidelity study (:mod:`xsteer.app.fidelity`).

The page opens with a plain reading — which maps carried which concepts, and whether any beat its nulls —
then the fidelity table with CIs and nulls side by side, a heatmap of fidelity over layer maps × width maps,
dose-response curves with 95% bands, and example generations per condition.
"""

from __future__ import annotations

import html
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from xsteer.app.report import embed_png, heatmap, save_figure
from xsteer.core.io import write_text_atomic
from xsteer.evaluation.fidelity import NATIVE, effect_ci, monotone_lambdas, restrict
from xsteer.evaluation.stats import upper_prediction_bound


def _f(x: Sequence[float] | None) -> str:
    return "—" if x is None else f"{x[0]:+.2f} [{x[1]:+.2f}, {x[2]:+.2f}]"


def map_names(result: Mapping[str, Any]) -> list[str]:
    return [c for c in result["conditions"] if "×" in c and not c.endswith("/mapped-random")]


RANDOM_LEVEL = 0.95


@dataclass(frozen=True)
class RandomNull:
    """The random-direction null of one measurement: its draws' fidelity estimates, and the bound a map must
    clear — the one-sided 95% upper prediction bound for one more random direction (normal model over the
    draws), or the single draw's estimate when there is only one."""

    draws: tuple[float, ...]

    @property
    def bound(self) -> float:
        if len(self.draws) == 1:
            return self.draws[0]
        return upper_prediction_bound(self.draws, RANDOM_LEVEL)

    def __str__(self) -> str:
        if len(self.draws) == 1:
            return f"{self.bound:+.2f} (1 draw)"
        mean = statistics.mean(self.draws)
        return (
            f"{self.bound:+.2f} ({len(self.draws)} draws: {mean:+.2f} ± {statistics.stdev(self.draws):.2f})"
        )


def random_null(result: Mapping[str, Any]) -> RandomNull | None:
    """The random child directions' fidelity estimates, or None when fidelity is undefined."""
    fids = [
        result["fidelity"][c][0]
        for c in result["conditions"]
        if (c == "random" or c.startswith("random#")) and result["fidelity"].get(c) is not None
    ]
    return RandomNull(tuple(fids)) if fids else None


def _null_cell(result: Mapping[str, Any]) -> str:
    null = random_null(result)
    return "—" if null is None else str(null)


def verdict(result: Mapping[str, Any], name: str) -> str:
    """``beats nulls`` when the map's fidelity CI (over probes) lies above its mapped-random null's estimate and
    above the random directions' 95% prediction bound (over directions); ``null`` when its CI covers 0; else
    ``weak``. Both uncertainties count: the probe CI says how well this direction's effect is measured, the
    bound how far any direction of equal norm moves the readout."""
    fid = result["fidelity"]
    f = fid.get(name)
    if f is None:
        return "undefined"
    rnd = random_null(result)
    mapped = fid.get(f"{name}/mapped-random")
    nulls = [mapped[0] if mapped else None, rnd.bound if rnd else None]
    top = max((n for n in nulls if n is not None), default=0.0)
    if f[1] > max(top, 0.0):
        return "beats nulls"
    if f[1] <= 0.0 <= f[2]:
        return "null"
    return "weak"


def best_map(result: Mapping[str, Any]) -> str | None:
    names = [n for n in map_names(result) if result["fidelity"].get(n) is not None]
    return max(names, key=lambda n: result["fidelity"][n][0]) if names else None


def pair_name(result: Mapping[str, Any]) -> str:
    return f"{result['meta']['parent']} → {result['meta']['child']}"


def best_beating_map(result: Mapping[str, Any]) -> str | None:
    """The map with the largest fidelity among those that beat both nulls, if any does."""
    names = [n for n in map_names(result) if verdict(result, n) == "beats nulls"]
    return max(names, key=lambda n: result["fidelity"][n][0]) if names else None


def _concept_order(results: Sequence[Mapping[str, Any]]) -> list[str]:
    from xsteer.tasks.concepts import BUILTIN

    names = list(dict.fromkeys(r["concept"] for r in results))
    return sorted(names, key=lambda c: (BUILTIN.index(c) if c in BUILTIN else len(BUILTIN), c))


def _pairs_by_concepts(
    results: Sequence[Mapping[str, Any]],
) -> tuple[list[str], list[str], dict[tuple[str, str], Mapping[str, Any]]]:
    """The overview's rows (pairs, in order of first appearance), columns (concepts) and cells."""
    pairs = list(dict.fromkeys(pair_name(r) for r in results))
    return pairs, _concept_order(results), {(pair_name(r), r["concept"]): r for r in results}


def _outcome(result: Mapping[str, Any]) -> tuple[str, str | None]:
    """One overview cell: ("undefined", None) when the child's own vector does not steer; ("beats", map) for
    the best map that beats both nulls; else ("none", the best map by estimate, if any has a fidelity)."""
    if not result["native_steers"]:
        return "undefined", None
    if (b := best_beating_map(result)) is not None:
        return "beats", b
    return "none", best_map(result)


def overview(results: Sequence[Mapping[str, Any]]) -> str:
    """Pairs × concepts: the best map that beats both nulls, its fidelity [CI]; or why none does.

    The best of several maps is a selected maximum, so read its CI as optimistic; the full table keeps every
    map. ``·`` marks a (pair, concept) that has not been measured."""
    pairs, concepts, cells = _pairs_by_concepts(results)
    lines = ["| parent → child | " + " | ".join(concepts) + " |", "|---" * (len(concepts) + 1) + "|"]
    for pair in pairs:
        row = []
        for c in concepts:
            if (r := cells.get((pair, c))) is None:
                row.append("·")
                continue
            kind, name = _outcome(r)
            if kind == "undefined":
                row.append(f"undefined: native {_f(r['native_effect'])}")
            elif kind == "beats":
                f, lo, hi = r["fidelity"][name]
                row.append(f"**{f:.2f}** [{lo:.2f}, {hi:.2f}] {name}")
            else:
                row.append(f"none beats nulls (best {name} {r['fidelity'][name][0]:+.2f})" if name else "—")
        lines.append(f"| {pair} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def scoreboard(results: Sequence[Mapping[str, Any]]) -> str:
    """Per map, over the measurements where fidelity is defined: how often it beats both nulls, and the
    median and range of its fidelity."""
    rows: dict[str, list[tuple[float, bool]]] = {}
    for r in results:
        if not r["native_steers"]:
            continue
        for n in map_names(r):
            if (f := r["fidelity"].get(n)) is not None:
                rows.setdefault(n, []).append((f[0], verdict(r, n) == "beats nulls"))
    lines = [
        "| map | beats nulls | median fidelity | range |",
        "|---|---|---|---|",
    ]
    # maps run on many measurements first; among those, the ones that beat the nulls most often
    for n, cells in sorted(rows.items(), key=lambda kv: (-len(kv[1]), -sum(b for _, b in kv[1]))):
        fs = sorted(f for f, _ in cells)
        lines.append(
            f"| {n} | {sum(b for _, b in cells)} of {len(cells)} | {statistics.median(fs):+.2f} | "
            f"{fs[0]:+.2f} … {fs[-1]:+.2f} |"
        )
    return "\n".join(lines)


def heldout_fit(result: Mapping[str, Any], name: str) -> float | None:
    """A map's held-out fit where it matters: the centred cosine between mapped and true child activations on
    held-out texts, averaged over the steered child layers (None when the result does not record it)."""
    report = result["meta"].get("maps", {}).get(name, {}).get("heldout_cos_centred", {})
    fits = [report[str(layer)] for layer in result["meta"].get("steered_layers", []) if str(layer) in report]
    return sum(fits) / len(fits) if fits else None


def cos_to_native(result: Mapping[str, Any], name: str) -> float | None:
    """Mean cosine of the mapped vector with the child's own over the steered layers, each coordinate divided
    by its spread in the child (raw cosines are ruled by a few massive-activation coordinates); None when the
    result does not record it."""
    return result["meta"].get("maps", {}).get(name, {}).get("std_cos_to_native")


def predicts_fidelity(
    results: Sequence[Mapping[str, Any]],
    predictor: Callable[[Mapping[str, Any], str], float | None],
    label: str,
    *,
    n_boot: int = 2000,
) -> str:
    """Per width map: does ``predictor`` (a number per map, known before steering) rank its fidelity? Spearman
    ρ over the (measurement, layer map) cells where fidelity is defined, with a bootstrap CI over cells (cells
    share measurements, so the CI is optimistic)."""
    from xsteer.evaluation.stats import spearman_ci

    cells: dict[str, list[tuple[float, float]]] = {}
    for r in results:
        if not r["native_steers"]:
            continue
        for n in map_names(r):
            x, f = predictor(r, n), r["fidelity"].get(n)
            if x is not None and f is not None:
                cells.setdefault(n.split("×")[1], []).append((x, f[0]))
    lines = [f"| width map | cells | {label} | Spearman ρ({label}, fidelity) [95% CI] |", "|---|---|---|---|"]
    for wm, xs in cells.items():
        values, fids = zip(*xs, strict=True)
        rho = "—"
        if len(xs) >= 5:
            ci = spearman_ci(values, fids, n_boot=n_boot)
            rho = f"{ci.estimate:+.2f} [{ci.low:+.2f}, {ci.high:+.2f}]"
        lines.append(f"| {wm} | {len(xs)} | {min(values):+.2f} … {max(values):+.2f} | {rho} |")
    return "\n".join(lines)


def fit_vs_fidelity(results: Sequence[Mapping[str, Any]], *, n_boot: int = 2000) -> str:
    """Does a map's held-out fit rank its fidelity? A map whose fit says nothing about transfer cannot be
    chosen by its fit alone."""
    return predicts_fidelity(results, heldout_fit, "held-out fit", n_boot=n_boot)


def in_monotone_range(results: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Every result read again on the part of its λ grid where the child's own vector still acts monotonically
    (:func:`xsteer.evaluation.fidelity.monotone_lambdas`), from the stored readouts."""
    out = []
    for r in results:
        native = torch.tensor(r["readouts"][NATIVE]) - torch.tensor(r["baseline"])[None, :]
        lams = monotone_lambdas(r["lambdas"], native)
        out.append(restrict(r, lams, n_boot=r["meta"].get("n_boot", 2000), seed=r["meta"].get("seed", 0)))
    return out


def _count_wins(results: Sequence[Mapping[str, Any]]) -> tuple[int, int]:
    steer = [r for r in results if r["native_steers"]]
    wins = sum(verdict(r, n) == "beats nulls" for r in steer for n in map_names(r))
    return wins, sum(len(map_names(r)) for r in steer)


def study_markdown(results: Sequence[Mapping[str, Any]]) -> str:
    """The plain reading, the pairs × concepts overview, the map scoreboard, the fit check, the same overview
    within each native curve's monotone λ range, and the full table."""
    mono = in_monotone_range(results)
    (w, n), (wm, nm) = _count_wins(results), _count_wins(mono)
    ranges = ", ".join(
        f"{pair_name(r)} {r['concept']} ±{max(r['lambdas'])}"
        for r in mono
        if len(r["lambdas"]) < len(results[0]["lambdas"])
    )
    return "\n\n".join(
        [
            plain_reading(results),
            "Best map that beats both nulls, per (pair, concept) (fidelity [95% CI]; a maximum over maps):",
            overview(results),
            "Maps over all measurements:",
            scoreboard(results),
            "Does a map's held-out fit predict its fidelity?",
            fit_vs_fidelity(results),
            "Does the mapped vector's cosine with the child's own (over the steered layers) predict its fidelity?",
            predicts_fidelity(results, cos_to_native, "standardized cos to native"),
            "Within the native curve's monotone λ range (where the child's own vector still acts monotonically; "
            f"narrower than the grid for {ranges or 'none'}): {wm} of {nm} (measurement, map) cells beat both "
            f"nulls, against {w} of {n} on the whole grid.",
            overview(mono),
            "Every (measurement, map) cell (whole grid):",
            study_table(results),
        ]
    )


def overview_figure(results: Sequence[Mapping[str, Any]], out: Path) -> Path:
    """Pairs × concepts heatmap of the best map's fidelity among maps that beat both nulls; blank where none
    does, labelled "null" / "undefined" / "not run"."""
    import matplotlib.pyplot as plt
    import numpy as np
    import seaborn as sns

    pairs, concepts, cells = _pairs_by_concepts(results)
    values = np.full((len(pairs), len(concepts)), np.nan)
    labels = np.full(values.shape, "not run", dtype=object)
    for i, pair in enumerate(pairs):
        for j, c in enumerate(concepts):
            if (r := cells.get((pair, c))) is None:
                continue
            kind, name = _outcome(r)
            if kind == "undefined":
                labels[i, j] = "undefined"
            elif kind == "beats":
                f, lo, hi = r["fidelity"][name]
                values[i, j] = f
                labels[i, j] = f"{f:.2f} [{lo:.2f}, {hi:.2f}]\n{name}"
            else:
                labels[i, j] = "no map\nbeats nulls"
    sns.set_theme(style="white")
    fig, ax = plt.subplots(figsize=(2.2 + 1.9 * len(concepts), 1.2 + 0.75 * len(pairs)))
    sns.heatmap(
        values,
        ax=ax,
        cmap="viridis",
        vmin=0.0,
        vmax=max(1.0, float(np.nanmax(values)) if np.isfinite(values).any() else 1.0),
        annot=labels,
        fmt="",
        annot_kws={"fontsize": 7},
        cbar_kws={"label": "fidelity (best map that beats nulls)", "shrink": 0.8},
        xticklabels=concepts,
        yticklabels=pairs,
        linewidths=0.5,
        linecolor="#ddd",
    )
    ax.set_facecolor("#f4f4f4")
    for i, j in zip(*np.nonzero(np.isnan(values)), strict=True):  # seaborn leaves NaN cells unlabelled
        ax.text(j + 0.5, i + 0.5, labels[i, j], ha="center", va="center", fontsize=7, color="#777")
    ax.set_xlabel("concept")
    ax.set_ylabel("parent → child")
    ax.set_title("Transfer fidelity: how much of the child's own effect the mapped parent vector keeps")
    return save_figure(fig, out)


def _cos_cell(result: Mapping[str, Any], name: str) -> str:
    cos = cos_to_native(result, name)
    return "—" if cos is None else f"{cos:+.2f}"


def study_table(results: Sequence[Mapping[str, Any]]) -> str:
    """One row per (pair, concept, map): fidelity [CI] beside its nulls, and the native effect."""
    lines = [
        "| parent → child | concept | map | fidelity [95% CI] | mapped-random | random (95% bound) | native effect "
        "| std. cos to native | reading |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        pair = pair_name(r)
        native = _f(r["native_effect"]) + ("" if r["native_steers"] else " (does not steer)")
        for name in map_names(r):
            lines.append(
                f"| {pair} | {r['concept']} | {name} | {_f(r['fidelity'].get(name))} | "
                f"{_f(r['fidelity'].get(f'{name}/mapped-random'))} | {_null_cell(r)} | {native} | "
                f"{_cos_cell(r, name)} | {verdict(r, name)} |"
            )
    return "\n".join(lines)


def plain_reading(results: Sequence[Mapping[str, Any]]) -> str:
    """A few sentences a reader can check against the table."""
    steer = [r for r in results if r["native_steers"]]
    lines = [
        f"{len(results)} (pair, concept) measurements; in {len(steer)} the child's own vector moves the readout "
        "(its effect's 95% CI excludes 0), so fidelity is defined there."
    ]
    if not steer:
        return lines[0]
    wins, total = _count_wins(results)
    lines.append(
        f"{wins} of {total} (measurement, map) cells beat both nulls (fidelity CI above the mapped-random "
        "direction's estimate and above the 95% prediction bound of a random child direction's fidelity)."
    )
    by_concept: dict[str, list[float | None]] = {}
    for r in steer:
        b = best_beating_map(r)
        by_concept.setdefault(r["concept"], []).append(r["fidelity"][b][0] if b else None)
    for concept, fs in by_concept.items():
        won = [f for f in fs if f is not None]
        best = f" (best such map: {min(won):+.2f} … {max(won):+.2f})" if won else ""
        lines.append(f"{concept}: a map beats both nulls in {len(won)} of {len(fs)} pairs{best}.")
    return " ".join(lines)


def fidelity_heatmap(result: Mapping[str, Any], out: Path) -> Path | None:
    """Fidelity over layer maps (rows) × width maps (columns) for one measurement."""
    names = map_names(result)
    if not names or not result["native_steers"]:
        return None
    lms = list(dict.fromkeys(n.split("×")[0] for n in names))
    wms = list(dict.fromkeys(n.split("×")[1] for n in names))
    m = torch.full((len(lms), len(wms)), float("nan"))
    for n in names:
        f = result["fidelity"].get(n)
        if f is not None:
            lm, wm = n.split("×")
            m[lms.index(lm), wms.index(wm)] = f[0]
    title = f"fidelity: {result['meta']['parent']} → {result['meta']['child']}, {result['concept']}"
    return heatmap(
        m,
        out,
        xlabel="width map",
        ylabel="layer map",
        title=title,
        center=0.0,
        xticklabels=wms,
        yticklabels=lms,
        annotate=True,
        cmap="RdBu_r",
    )


def dose_response(result: Mapping[str, Any], out: Path, *, conditions: Sequence[str] | None = None) -> Path:
    """Mean effect Δ(λ) over probes with 95% bootstrap bands, for native, the best map and the nulls."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    best = best_map(result)
    conditions = conditions or [
        c for c in (NATIVE, best, f"{best}/mapped-random" if best else None, "random") if c
    ]
    lams = result["lambdas"]
    base = torch.tensor(result["baseline"])
    sns.set_theme(style="whitegrid")
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for c in conditions:
        delta = torch.tensor(result["readouts"][c]) - base[None, :]
        ests = [effect_ci(delta[i], n_boot=1000, seed=i) for i in range(len(lams))]
        ax.plot(lams, [e.estimate for e in ests], marker="o", label=c)
        ax.fill_between(lams, [e.low for e in ests], [e.high for e in ests], alpha=0.2)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xlabel("λ (share of the child's residual norm per steered layer)")
    ax.set_ylabel("Δ readout vs unsteered (log-odds)")
    ax.set_title(f"{result['concept']}: {result['meta']['parent']} → {result['meta']['child']}")
    ax.legend(fontsize=8)
    return save_figure(fig, out)


def examples_html(result: Mapping[str, Any], *, per_condition: int = 3) -> str:
    gens = result.get("generations") or []
    if not gens:
        return ""
    best = best_map(result)
    keep = ["unsteered", NATIVE, best, "random"]
    rows = []
    for cond in [c for c in keep if c]:
        chosen = [g for g in gens if g["condition"] == cond and g["lam"] >= 0][:per_condition]
        for g in chosen:
            rows.append(
                f"<tr><td>{html.escape(cond)}</td><td>{g['lam']:+g}</td><td>{html.escape(g['probe'])}"
                f"<b>{html.escape(g['text'])}</b></td><td>{g['score']:+d}</td></tr>"
            )
    return (
        "<table><tr><th>condition</th><th>λ</th><th>probe + <b>continuation</b></th><th>lexicon score</th></tr>"
        + "".join(rows)
        + "</table>"
    )


def write_fidelity_report(
    results: Sequence[Mapping[str, Any]], folder: str | Path, *, title: str = "Transfer fidelity"
) -> Path:
    """``folder/report.html`` (figures in ``folder/figures``) for a list of result documents."""
    from xsteer.app.report import _md_table_to_html

    folder = Path(folder)
    figs = folder / "figures"
    parts = [
        f"<h1>{html.escape(title)}</h1>",
        "<h2>What this shows</h2>",
        f"<p>{html.escape(plain_reading(results))}</p>",
        "<p>Fidelity = the mapped parent vector's mean signed effect on the concept's held-out probes ÷ the child's "
        "own vector's, at the same λ grid and norm; 1 = the whole effect crossed, 0 = none. Nulls: a random parent "
        "direction through the same map (mapped-random) and random child directions of equal norm (the table's "
        "random column: the 95% upper prediction bound for one more random direction, from the draws' mean ± sd; "
        "the curves show the first draw).</p>",
    ]
    if len(results) > 1:
        parts += [
            "<h2>Overview</h2>",
            embed_png(overview_figure(results, figs / "overview")),
            _md_table_to_html(overview(results)),
            "<h2>Maps over all measurements</h2>",
            _md_table_to_html(scoreboard(results)),
            "<h2>Does a map's held-out fit, or its vector's cosine with the child's own, predict fidelity?</h2>",
            _md_table_to_html(fit_vs_fidelity(results)),
            _md_table_to_html(predicts_fidelity(results, cos_to_native, "standardized cos to native")),
            "<h2>Within each native curve's monotone λ range</h2>",
            _md_table_to_html(overview(in_monotone_range(results))),
        ]
    parts += ["<h2>Fidelity table</h2>", _md_table_to_html(study_table(results))]
    for r in results:
        stem = f"{r['meta']['parent']}__{r['meta']['child']}__{r['concept']}".replace("/", "_")
        parts.append(
            f"<h2>{html.escape(r['meta']['parent'])} → {html.escape(r['meta']['child'])}: "
            f"{html.escape(r['concept'])}</h2>"
        )
        parts.append(embed_png(dose_response(r, figs / f"dose_{stem}")))
        hm = fidelity_heatmap(r, figs / f"heatmap_{stem}")
        if hm is not None:
            parts.append(embed_png(hm))
        parts.append(examples_html(r))
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;font-size:85%}"
        "th{background:#f3f3f3}"
    )
    out = folder / "report.html"
    write_text_atomic(
        out,
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{style}</style></head><body>{''.join(parts)}</body></html>",
    )
    return out
