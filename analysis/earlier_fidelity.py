"""The earlier instrument's fidelity table as data, and what the instrument study changed of its verdicts.

    python -m analysis.earlier_fidelity            # transcribe the earlier tables into EARLIER (below)
    python -m analysis.earlier_fidelity --check    # exit 1 if EARLIER is not what those tables say

The earlier instrument (``xsteer.app.fidelity_report``: nulls of isotropic random directions and one mapped random
direction, intervals over probes only) measured all 35 (pair, concept) of the study; the raw results of 26 were
lost, so the tables of ``fidelity.md`` (and of ``fidelity_runs.md`` for the other 9) are all that is left of it.
Their every (measurement, map) row is transcribed into ``fidelity_study/earlier_instrument.json``, so that
``python -m analysis.regenerate`` compares the study with them from data (:func:`changes`), and the comparison
outlives those files when the rerun supersedes them.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "analysis" / "results"
SOURCES = (RESULTS / "fidelity.md", RESULTS / "fidelity_runs.md")
EARLIER = RESULTS / "fidelity_study" / "earlier_instrument.json"
FORMAT = "xsteer.earlier-fidelity/1"
HEADER = "| parent → child | concept | map | fidelity [95% CI] |"
#: The study fits this candidate and this control; the earlier instrument fitted them among others.
CANDIDATE, CONTROL = "proportional×ridge", "proportional×truncate_pad"
_LEAD = re.compile(r"([+-]\d+\.\d+)")
_FIDELITY = re.compile(r"([+-]\d+\.\d+) \[([+-]\d+\.\d+), ([+-]\d+\.\d+)\]")


def transcribe(paths: Sequence[Path] = SOURCES) -> list[dict[str, Any]]:
    """Every row of the per-(measurement, map) tables of the earlier write-ups: its fidelity, its probe-only
    95% CI (``None`` where the child's own vector did not steer), the bound its lower end had to clear and its
    reading (``beats nulls``: CI above both nulls; ``weak``: above 0 but not above them; ``null``: covering 0;
    ``undefined``)."""
    rows = []
    for path in paths:
        lines = path.read_text(encoding="utf-8").splitlines()
        starts = [i for i, line in enumerate(lines) if line.startswith(HEADER)]
        if len(starts) != 1:
            raise ValueError(f"{path.name}: expected one per-cell table, found {len(starts)}")
        for line in lines[starts[0] + 2 :]:
            if not line.startswith("|"):
                break
            cols = [c.strip() for c in line.strip("|").split("|")]
            parent, child = cols[0].split(" → ")
            f = _FIDELITY.fullmatch(cols[3])
            nulls = [float(m[1]) for c in cols[4:6] if (m := _LEAD.match(c))]
            rows.append(
                {
                    "parent": parent,
                    "child": child,
                    "concept": cols[1],
                    "map": cols[2],
                    "fidelity": float(f[1]) if f else None,
                    "ci": [float(f[2]), float(f[3])] if f else None,
                    # What the CI's lower end had to clear: the mapped-random estimate, the random directions'
                    # 95% prediction bound, and 0 (xsteer.app.fidelity_report.verdict).
                    "null_bound": max([*nulls, 0.0]) if f else None,
                    "reading": cols[-1],
                    "source": path.name,
                }
            )
    return rows


def document(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "made_by": "python -m analysis.earlier_fidelity",
        "from": "the per-(measurement, map) tables of analysis/results/fidelity.md (26 measurements, raw results "
        "lost) and analysis/results/fidelity_runs.md (9, raw results in fidelity_runs/results/)",
        "rows": list(rows),
    }


def dumps(doc: Mapping[str, Any]) -> str:
    """The document with one row a line (a diff of the transcription reads row by row)."""
    head = {k: v for k, v in doc.items() if k != "rows"}
    rows = ",\n".join(json.dumps(r, ensure_ascii=False) for r in doc["rows"])
    return json.dumps(head, indent=1, ensure_ascii=False)[:-2] + f',\n "rows": [\n{rows}\n ]\n}}\n'


def load(path: Path = EARLIER) -> list[dict[str, Any]]:
    doc = json.loads(path.read_text(encoding="utf-8"))
    if doc.get("format") != FORMAT:
        raise ValueError(f"{path}: not {FORMAT}")
    return doc["rows"]


def _earlier_verdict(rows: Sequence[Mapping[str, Any]]) -> tuple[str, list[str]]:
    """The earlier headline: a (pair, concept) crossed when any of its maps beat both nulls (the control too)."""
    if all(r["reading"] == "undefined" for r in rows):
        return "undefined", []
    beat = [r["map"] for r in rows if r["reading"] == "beats nulls"]
    return ("crosses" if beat else "does not cross"), beat


def _f(x: float) -> str:
    return f"{x:+.2f}"


def _why(
    earlier: str, beat: Sequence[str], cand: Mapping[str, Any] | None, res: Mapping[str, Any]
) -> tuple[str, str]:
    """What moved the verdict, read off both studies' numbers: (its kind, the sentence). ``cand`` is the
    earlier instrument's proportional×ridge row, the map both studies fit."""
    now_valid = res["reference"] == "valid"
    if earlier == "undefined":
        if not now_valid:
            return "undefined both times", "undefined both times"
        return "defined now", "defined now: the child's own vector raises the new readout"
    if not now_valid:
        return "undefined now", "undefined now: the child's own vector does not raise the new readout"
    if (earlier == "crosses") == bool(res.get("crosses")):
        return "same verdict", "same verdict"
    row, bar = res["maps"][CANDIDATE], res["family_q95"]
    lo, probe_lo = row["pipeline_ci"][0], row["probe_ci"][0]
    then = (
        ""
        if cand is None or cand["ci"] is None
        else f"; earlier its lower bound {_f(cand['ci'][0])} "
        f"{'cleared' if cand['reading'] == 'beats nulls' else 'fell under'} the nulls' bound {_f(cand['null_bound'])}"
    )
    if res.get("crosses"):
        return (
            "crosses now",
            f"crosses now: its whole-pipeline lower bound {_f(lo)} clears the placebo bar {_f(bar)}{then}",
        )
    if CANDIDATE not in beat:
        return "earlier only by maps the study does not fit as candidates", (
            f"earlier only by {_maps(beat)}, {'a map' if len(beat) == 1 else 'maps'} the study does not fit as a candidate; "
            f"{CANDIDATE} did not beat its nulls then either"
        )
    if row["fidelity"] <= bar:
        return "under the placebo bar", f"under the placebo bar: {_f(row['fidelity'])} ≤ {_f(bar)}{then}"
    if probe_lo > bar:
        return "the whole-pipeline interval", (
            f"the whole-pipeline interval: its probe-only lower bound {_f(probe_lo)} clears the bar {_f(bar)}, its "
            f"whole-pipeline one {_f(lo)} does not"
        )
    return (
        "the probe-only interval",
        f"the probe-only interval reaches under the bar: {_f(probe_lo)} ≤ {_f(bar)}{then}",
    )


def _maps(names: Sequence[str], most: int = 3) -> str:
    return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")


def changes(earlier: Sequence[Mapping[str, Any]], docs: Sequence[Mapping[str, Any]]) -> tuple[str, str]:
    """(table, summary): per measurement made anew, the earlier verdict and candidate map beside the study's,
    and what changed; then the counts. ``docs`` are the study's finished measurements, verdicts derived again
    from their readouts."""
    by_key: dict[tuple[str, str, str], list[Mapping[str, Any]]] = {}
    for r in earlier:
        by_key.setdefault((r["parent"], r["child"], r["concept"]), []).append(r)
    lines = [
        "| pair | concept | earlier verdict (maps beating both nulls) | earlier proportional×ridge [probe-only CI], "
        "reading | now proportional×ridge [whole-pipeline CI] (bar) | now | what changed |",
        "|---|---|---|---|---|---|---|",
    ]
    tally: Counter[str] = Counter()
    # The control: measurements where both studies read it, those where it beat the earlier nulls, and those
    # where it beats the placebo bar now.
    control = [0, 0, 0]
    for doc in docs:
        key = (doc["parent"], doc["child"], doc["concept"])
        rows, res = by_key.get(key), doc["result"]
        if not rows:
            continue
        earlier_verdict, beat = _earlier_verdict(rows)
        cand = next((r for r in rows if r["map"] == CANDIDATE), None)
        old = (
            "—"
            if cand is None or cand["fidelity"] is None
            else f"{_f(cand['fidelity'])} [{_f(cand['ci'][0])}, {_f(cand['ci'][1])}], {cand['reading']}"
        )
        valid = res["reference"] == "valid"
        row = res["maps"].get(CANDIDATE) if valid else None
        new = (
            "—"
            if row is None
            else f"{_f(row['fidelity'])} [{_f(row['pipeline_ci'][0])}, {_f(row['pipeline_ci'][1])}] "
            f"({_f(res['family_q95'])})"
        )
        kind, why = _why(earlier_verdict, beat, cand, res)
        tally[kind] += 1
        old_control = next((r for r in rows if r["map"] == CONTROL), None)
        if (
            valid
            and old_control is not None
            and old_control["fidelity"] is not None
            and CONTROL in res["maps"]
        ):
            control[0] += 1
            control[1] += old_control["reading"] == "beats nulls"
            control[2] += bool(res["maps"][CONTROL]["beats_placebo"])
        beat_text = f" ({_maps(beat)})" if beat else ""
        lines.append(
            f"| {doc['parent']} → {doc['child']} | {doc['concept']} | {earlier_verdict}{beat_text} | {old} | {new} | "
            f"{res.get('verdict', 'undefined') if valid else 'undefined'} | {why} |"
        )
    n = len(lines) - 2
    if not n:
        return "", "No measurement of the earlier instrument has been made anew yet."
    counts = ", ".join(f"{k} {v}" for k, v in sorted(tally.items(), key=lambda kv: (-kv[1], kv[0])))
    return "\n".join(lines), (
        f"{n} of the earlier instrument's {len(by_key)} measurements made anew; what changed (the first reason that "
        f"holds, the table's last column): {counts}. The control ({CONTROL}) beat both earlier nulls in {control[1]} "
        f"of the {control[0]} of them where both studies read it; it beats the placebo bar by the candidates' rule in "
        f"{control[2]}."
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--check", action="store_true", help="compare with the committed transcription; write nothing"
    )
    args = ap.parse_args(argv)
    text = dumps(document(transcribe()))
    if args.check:
        same = EARLIER.exists() and EARLIER.read_text(encoding="utf-8") == text
        print(
            "the transcription matches" if same else f"{EARLIER.relative_to(ROOT)} is not what the tables say"
        )
        return 0 if same else 1
    from xsteer.core.io import write_text_atomic

    write_text_atomic(EARLIER, text)
    print(f"wrote {EARLIER.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
