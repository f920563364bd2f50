"""Tables of a fidelity study measured by the instrument (results of format ``xsteer.fidelity/2``).

Everything here is computed from the result files alone (:func:`xsteer.app.fidelity.reanalyze` re-derives the
verdicts from the stored readouts), so the tables regenerate on any machine with no model.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from xsteer.evaluation.instrument import FORMAT, replicated_probe_only
from xsteer.evaluation.stats import wilson_ci


def is_instrument_result(doc: Mapping[str, Any]) -> bool:
    return doc.get("format") == FORMAT


def _ci(lo_hi: Sequence[float] | None) -> str:
    return "—" if not lo_hi else f"[{lo_hi[0]:+.2f}, {lo_hi[1]:+.2f}]"


def cell_rows(results: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per (parent, child, concept, map), in the result files' order."""
    rows = []
    for doc in results:
        res = doc["result"]
        base = {"parent": doc["parent"], "child": doc["child"], "concept": doc["concept"]}
        if res["reference"] != "valid":
            rows.append({**base, "map": "—", "verdict": res["reference"]})
            continue
        for m, row in res["maps"].items():
            if "fidelity" not in row:
                rows.append({**base, "map": m, "verdict": row.get("note", "")})
                continue
            spec = row.get("specificity")
            judged = res.get("judge") or {}
            jrow = (judged.get("maps") or {}).get(m)
            cost = judged.get("fluency_cost") or {}
            rows.append(
                {
                    **base,
                    "judge": jrow,
                    "judge_reference": judged.get("reference"),
                    "fluency": (cost.get(f"{m}/mapped"), cost.get("native")),
                    "map": m + (" (control)" if row["control"] else ""),
                    "fidelity": row["fidelity"],
                    "pipeline_ci": row.get("pipeline_ci"),
                    "probe_ci": row["probe_ci"],
                    "placebo_q95": row["placebo_q95"],
                    "beats_placebo": row["beats_placebo"],
                    "specificity": None if spec is None else spec["index"],
                    "specificity_ci": None if spec is None else spec["ci"],
                    "verdict": res.get("verdict", "") if not row["control"] else "",
                }
            )
    return rows


def cell_table(results: Sequence[Mapping[str, Any]]) -> str:
    """The per-map table: fidelity with its whole-pipeline interval (headline) and probe-only interval, the
    placebo bar it must clear, specificity, and the (pair, concept) verdict."""
    lines = [
        "| parent → child | concept | map | fidelity [pipeline 95% CI] | probe-only CI | placebo q95 | "
        "beats placebo | specificity [CI] | judge: fidelity [CI] (placebo q95) | fluency cost, mapped / native | "
        "verdict |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in cell_rows(results):
        pair = f"{r['parent']} → {r['child']}"
        if "fidelity" not in r:
            lines.append(
                f"| {pair} | {r['concept']} | {r['map']} | — | — | — | — | — | — | — | {r['verdict']} |"
            )
            continue
        spec = "—" if r["specificity"] is None else f"{r['specificity']:+.2f} {_ci(r['specificity_ci'])}"
        interval = _ci(r["pipeline_ci"]) if r["pipeline_ci"] else "(a control, measured without replicates)"
        lines.append(
            f"| {pair} | {r['concept']} | {r['map']} | {r['fidelity']:+.2f} {interval} | "
            f"{_ci(r['probe_ci'])} | {r['placebo_q95']:+.2f} | {'yes' if r['beats_placebo'] else 'no'} | {spec} | "
            f"{_judged(r)} | {_fluency(r['fluency'])} | {r['verdict']} |"
        )
    return "\n".join(lines)


def _judged(r: Mapping[str, Any]) -> str:
    j = r.get("judge")
    if j is None:
        return "not read" if r.get("judge_reference") is None else str(r["judge_reference"]).split(":")[0]
    bar = f" ({j['placebo_q95']:+.2f})" if "placebo_q95" in j else ""
    agree = "" if "agrees" not in j else ("; agrees" if j["agrees"] else "; **disagrees**")
    return f"{j['fidelity']:+.2f} {_ci(j['ci'])}{bar}{agree}"


def _fluency(pair: tuple[Any, Any]) -> str:
    mapped, native = pair
    return "—" if mapped is None or native is None else f"{mapped:+.2f} / {native:+.2f} nats"


def calibration_counts(results: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, list[int]]]:
    """Per child, false passes of each known null summed over its measurements: [passes, trials]."""
    out: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    for doc in results:
        res = doc["result"]
        for kind, (k, n) in res.get("calibration", {}).items():
            out[doc["child"]][kind][0] += k
            out[doc["child"]][kind][1] += n
        for row in res.get("maps", {}).values():
            k, n = replicated_probe_only(row)  # (0, 0) on a row with no placebos given replicates
            if n:
                out[doc["child"]]["placebo_replicated_ci"][0] += k
                out[doc["child"]]["placebo_replicated_ci"][1] += n
        q95 = [row["placebo_q95"] for row in res.get("maps", {}).values() if not row.get("control", True)]
        if q95 and res.get("random_child"):
            bar = min(q95)
            out[doc["child"]]["random_child"][0] += sum(x > bar for x in res["random_child"])
            out[doc["child"]]["random_child"][1] += len(res["random_child"])
    return {c: dict(v) for c, v in out.items()}


KNOWN_NULLS = {
    "control": "truncate_pad's mapped concept vector (cross-family: cannot carry it), by the candidates' rule",
    "control_specific": "the same control by the whole verdict (crosses, and as specific as the child's own vector)",
    "control_point": "truncate_pad's mapped concept vector by its point value (an upper bound, the rule before the control had replicates)",
    "random_parent": "random parent directions through each map",
    "placebo_cross_kind": "placebos of one kind against the other kind's 95th percentile, by their point values",
    "placebo_cross_kind_ci": "the same, by each placebo's probe-only CI lower bound (a candidate's rule, narrower interval: an upper bound)",
    "placebo_cross_kind_pipeline": "the same, by the whole-pipeline CI lower bound of the placebos given replicates (exactly the candidates' rule)",
    "placebo_replicated_ci": "the same placebos given replicates, by their probe-only CI lower bound instead (what the whole-pipeline interval changes)",
    "random_child": "covariance-shaped random child directions against the candidate map's placebo q95",
}


def calibration_table(results: Sequence[Mapping[str, Any]]) -> str:
    """The instrument's false-pass rate per child on known nulls, with Wilson 95% intervals (target ≤ 5%)."""
    counts = calibration_counts(results)
    lines = ["| child | known null | false passes | rate [Wilson 95% CI] |", "|---|---|---|---|"]
    for child, kinds in counts.items():
        for kind, (k, n) in kinds.items():
            if not n:
                continue
            ci = wilson_ci(k, n)
            lines.append(
                f"| {child} | {KNOWN_NULLS.get(kind, kind)} | {k} of {n} | "
                f"{100 * k / n:.0f}% [{100 * ci.low:.0f}%, {100 * ci.high:.0f}%] |"
            )
    return "\n".join(lines)


def target_line(results: Sequence[Mapping[str, Any]], *, target: float = 0.05) -> str:
    """Where the false-pass rate of exactly the candidates' rule (the placebos given pipeline replicates) is
    shown under the target: the Wilson interval's upper end below it (0 passes of 73 or more), shown over it:
    the lower end above it; else not yet shown either way. The rounded table cannot say which (4.6% prints
    as 5%)."""
    counts = calibration_counts(results)
    verdicts: dict[str, list[str]] = {"shown met": [], "shown missed": [], "not yet shown either way": []}
    for child, kinds in counts.items():
        k, n = kinds.get("placebo_cross_kind_pipeline", (0, 0))
        if not n:
            continue
        ci = wilson_ci(k, n)
        key = (
            "shown met"
            if ci.high < target
            else "shown missed"
            if ci.low > target
            else "not yet shown either way"
        )
        verdicts[key].append(
            f"{child} ({k} of {n}, Wilson interval [{100 * ci.low:.1f}%, {100 * ci.high:.1f}%])"
        )
    said = [f"{key} on {_and(children)}" for key, children in verdicts.items() if children]
    if not said:
        return "No placebo has had pipeline replicates yet: the candidates' own rule is not yet calibrated."
    return (
        f"The ≤ {100 * target:.0f}% false-pass target, by exactly the candidates' rule (the placebos given "
        f"pipeline replicates), is " + "; it is ".join(said) + "."
    )


def _and(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def overview(results: Sequence[Mapping[str, Any]]) -> str:
    """Pairs × concepts: the verdict and the best candidate map that crosses (or the best that does not)."""
    concepts = list(dict.fromkeys(doc["concept"] for doc in results))
    pairs = list(dict.fromkeys(f"{doc['parent']} → {doc['child']}" for doc in results))
    cells: dict[tuple[str, str], str] = {}
    for doc in results:
        res = doc["result"]
        key = (f"{doc['parent']} → {doc['child']}", doc["concept"])
        if res["reference"] != "valid":
            cells[key] = "undefined (reference)"
            continue
        cand = {m: r for m, r in res["maps"].items() if "fidelity" in r and not r["control"]}
        if not cand:
            cells[key] = "no candidate map"
            continue
        best = max(cand, key=lambda m: cand[m]["pipeline_ci"][0])
        r = cand[best]
        cells[key] = (
            f"{res['verdict']}: {best} {r['fidelity']:+.2f} {_ci(r['pipeline_ci'])} (bar {res['family_q95']:+.2f})"
        )
    lines = ["| pair | " + " | ".join(concepts) + " |", "|---|" + "---|" * len(concepts)]
    for p in pairs:
        lines.append(f"| {p} | " + " | ".join(cells.get((p, c), "—") for c in concepts) + " |")
    return "\n".join(lines)


PHASES = (
    ("setup", "set-up"),
    ("vectors", "vectors"),
    ("reference", "reference"),
    ("target", "target readout"),
    ("off_target", "off-target readouts"),
    ("judge", "judge"),
)


def cost_table(results: Sequence[Mapping[str, Any]]) -> str:
    """Where the study's CPU time goes: each measurement's wall time and, where it was recorded, its phases
    (loading the models and reading their activations; building the vectors and fitting the maps; the child's own
    and the mapped vectors, read first; the rest of the target readout; the other concepts' readouts; the judge)."""
    # The dtype column appears once a measurement ran in another dtype than fp32 (bf16 runs ~2x faster here).
    dtyped = any(d.get("spec", {}).get("dtype") for d in results)
    head = (
        "| parent → child | concept | reference | wall, h | "
        + ("dtype | " if dtyped else "")
        + " | ".join(h for _, h in PHASES)
        + " |"
    )
    lines = [head, "|" + "---|" * (4 + dtyped + len(PHASES))]
    total = undefined = 0.0
    shares: dict[str, float] = defaultdict(float)
    for doc in sorted(results, key=lambda d: -float(d.get("seconds", 0.0))):
        sec = float(doc.get("seconds", 0.0))
        valid = doc["result"]["reference"] == "valid"
        total += sec
        undefined += 0.0 if valid else sec
        ph = doc.get("phases") or {}
        if abs(sum(float(v) for v in ph.values()) - sec) > max(1.0, 0.01 * sec):
            ph = {}  # phases of a later run only (a measurement made before phases were recorded, completed since)
        for k, _ in PHASES:
            shares[k] += float(ph.get(k, 0.0))
        cells = [f"{float(ph[k]) / sec:.0%}" if k in ph and sec else "—" for k, _ in PHASES]
        lines.append(
            f"| {doc['parent']} → {doc['child']} | {doc['concept']} | {'valid' if valid else 'undefined'} "
            f"| {sec / 3600:.2f} | "
            + (f"{doc.get('spec', {}).get('dtype') or 'float32'} | " if dtyped else "")
            + " | ".join(cells)
            + " |"
        )
    timed = sum(shares.values())
    summary = (
        f"{len(results)} measurements, {total / 3600:.1f} h of wall time on this CPU ({undefined / 3600:.1f} h in "
        "the ones whose reference is undefined). A measurement's wall time is its own run's (or runs', where a "
        "judge or the placebos' replicates were added later), with other jobs sharing the 2 cores; a measurement "
        "resumed from a partial file counts only its last run. The phases (shares of each measurement's wall "
        "time) were recorded from issue #33 on; '—' where they were not, or cover only what was added later."
    )
    if timed:
        summary += (
            " Over the measurements that recorded them: "
            + ", ".join(f"{h} {shares[k] / timed:.0%}" for k, h in PHASES)
            + "."
        )
    return summary + "\n\n" + "\n".join(lines)


def interval_order(results: Sequence[Mapping[str, Any]]) -> str:
    """How often a concept vector's whole-pipeline interval starts at or below its probe-only one: where it does,
    a placebo judged by its probe-only lower bound faces a stricter rule than a candidate, and its false-pass
    rate is an upper bound on the candidates' rule."""
    rows = [
        row
        for doc in results
        for row in doc["result"].get("maps", {}).values()
        if "pipeline_ci" in row and "probe_ci" in row
    ]
    below = sum(row["pipeline_ci"][0] <= row["probe_ci"][0] for row in rows)
    return (
        f"The whole-pipeline interval's lower end lies at or below the probe-only one in {below} of "
        f"{len(rows)} map rows (mapped concept vectors, candidates and controls)."
    )


def study_markdown(results: Sequence[Mapping[str, Any]]) -> str:
    return "\n\n".join(
        [
            "## Overview (pairs × concepts)",
            overview(results),
            "## Every map",
            cell_table(results),
            "## Calibration on known nulls",
            calibration_table(results),
            target_line(results),
            interval_order(results),
            "## Where the time goes",
            cost_table(results),
        ]
    )


__all__ = [
    "KNOWN_NULLS",
    "calibration_counts",
    "calibration_table",
    "cell_rows",
    "cell_table",
    "cost_table",
    "interval_order",
    "is_instrument_result",
    "overview",
    "study_markdown",
    "target_line",
]


def overview_figure(results: Sequence[Mapping[str, Any]], path_stem: Any) -> Any:
    """One row per (pair, concept): each candidate map's fidelity with its whole-pipeline interval against its
    placebos (grey) and the family-wise bar (red tick); the control's fidelity as an orange cross."""
    from pathlib import Path

    import matplotlib.pyplot as plt

    from xsteer.app.report import save_figure

    rows = [d for d in results]
    fig, ax = plt.subplots(figsize=(7.5, 0.55 * len(rows) + 1.2))
    labels = []
    for y, doc in enumerate(rows):
        res = doc["result"]
        labels.append(f"{doc['parent']} → {doc['child']}: {doc['concept']}")
        if res["reference"] != "valid":
            ax.text(0.0, y, "undefined: the child's own vector does not steer", va="center", fontsize=7)
            continue
        for row in res["maps"].values():
            if "fidelity" not in row:
                continue
            if row["control"]:
                ax.plot(row["fidelity"], y, "x", color="tab:orange", ms=7)
                continue
            pl = row["placebo_neutral"] + row["placebo_flip"]
            ax.plot(pl, [y + 0.18] * len(pl), "|", color="0.6", ms=6)
            lo, hi = row["pipeline_ci"]
            # The interval as a line, not error bars: with few replicates the point estimate (from the full data)
            # can lie outside its whole-pipeline interval, which error bars cannot draw.
            ax.plot([lo, hi], [y, y], "|-", color="black", lw=1, ms=5)
            ax.plot(row["fidelity"], y, "o", color="black", ms=4)
        if "family_q95" in res:
            ax.plot([res["family_q95"]] * 2, [y - 0.3, y + 0.3], color="tab:red", lw=2)
    ax.set_yticks(range(len(rows)), labels, fontsize=7)
    ax.axvline(0, color="0.8", lw=0.8)
    ax.axvline(1, color="0.8", lw=0.8, ls="--")
    ax.invert_yaxis()
    ax.set_xlabel(
        "fidelity (mapped effect / child's own effect); black: candidate map with whole-pipeline 95% CI;\n"
        "grey: its placebos; red: family-wise placebo bar; orange ×: truncate_pad control",
        fontsize=7,
    )
    return save_figure(fig, Path(path_stem))
