"""Regenerate the published fidelity tables from the results committed in the repository (no model runs).

    python -m analysis.regenerate            # rewrite them
    python -m analysis.regenerate --check    # exit 1 if a committed table differs from its regeneration (CI)

* ``analysis/results/fidelity_study.md`` from ``analysis/results/fidelity_study/results/*.json``: the study with
  the instrument (placebo null, whole-pipeline interval, specificity, known nulls). Every verdict is derived
  again from the readouts the files keep (:func:`xsteer.app.fidelity.reanalyze`), not copied from them.
* ``analysis/results/fidelity_runs.md`` from ``analysis/results/fidelity_runs/results/*.json``: the 9 measurements
  of the earlier instrument whose raw results were kept (its figure is redrawn only when not checking).

* ``analysis/results/its_vs_sc.md`` from ``analysis/results/its_study/*/`` (the ITS study of issue #30: per-item
  lines of every arm, ``analysis/its_report.py``), once a study has committed records; until then the file
  holds the earlier study's tables, which are not regenerable.

Each file keeps what is written by hand above its marker line; everything below is generated. Not regenerable, and
marked so where it is published: ``fidelity.md`` (the earlier instrument's first 26 measurements, raw results lost),
and the earlier ITS (``its_vs_sc_19.md``, ``its_vs_sc_gsm8k.md``), zoo-study, speed and lm-eval parity figures
(their raw runs were not committed).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "analysis" / "results"
MARKER = "<!-- generated below by `python -m analysis.regenerate`; write the reading above this line -->"


def _head(path: Path, title: str) -> str:
    old = path.read_text(encoding="utf-8") if path.exists() else f"# {title}\n"
    return old.split(MARKER)[0].rstrip("\n")


def instrument_results(folder: Path = RESULTS / "fidelity_study") -> list[dict]:
    """The instrument study's finished measurements, each verdict derived again from its stored readouts."""
    from xsteer.app.fidelity import reanalyze
    from xsteer.app.fidelity_tables import is_instrument_result

    paths = sorted(p for p in folder.glob("results/*.json") if not p.name.endswith(".partial.json"))
    docs = [json.loads(p.read_text(encoding="utf-8")) for p in paths]
    return [{**d, "result": reanalyze(d)} for d in docs if is_instrument_result(d)]


def fidelity_study(
    folder: Path = RESULTS / "fidelity_study",
    out: Path = RESULTS / "fidelity_study.md",
    *,
    figure: bool = False,
) -> str:
    """The instrument study's write-up: the hand-written reading, the overview figure, then tables from the
    result files."""
    from xsteer.app.fidelity_tables import overview_figure, study_markdown

    paths = sorted(p for p in folder.glob("results/*.json") if not p.name.endswith(".partial.json"))
    docs = instrument_results(folder)
    under_way = sorted(p.name for p in folder.glob("results/*.partial.json"))
    body = study_markdown(docs) if docs else "No measurement has finished yet."
    if docs:
        name = f"{out.stem}_overview.png"
        if figure:
            overview_figure(docs, out.with_name(f"{out.stem}_overview"))
        body = f"![pairs x concepts: fidelity against the placebos]({name})\n\n{body}"
    size = sum(p.stat().st_size for p in paths)
    note = (
        f"{len(docs)} measurement{'' if len(docs) == 1 else 's'} finished ({size / 1e6:.1f} MB of committed results)"
        + (f"; under way: {', '.join(under_way)}" if under_way else "")
        + "."
    )
    return f"{_head(out, 'Transfer fidelity, measured by the instrument')}\n\n{MARKER}\n\n{note}\n\n{body}\n"


def fidelity_runs(
    folder: Path = RESULTS / "fidelity_runs",
    out: Path = RESULTS / "fidelity_runs.md",
    *,
    figure: bool = False,
) -> str:
    """The earlier instrument's kept measurements, as ``analysis/fidelity_report.py`` writes them."""
    sys.path.insert(0, str(ROOT / "analysis"))
    import fidelity_report as legacy

    from xsteer.app.fidelity import load_results
    from xsteer.app.fidelity_report import overview_figure, study_markdown

    results = load_results(folder)
    name = f"{out.stem}_overview.png"
    if figure:
        name = overview_figure(results, out.with_name(f"{out.stem}_overview")).name
    old = out.read_text(encoding="utf-8") if out.exists() else "# Transfer fidelity\n\n"
    head = old.split(legacy.MARKER)[0].rstrip("\n")
    run = folder.relative_to(ROOT)
    body = f"![pairs x concepts overview]({name})\n\n{study_markdown(results)}\n"
    return f"{head}\n\n{legacy.MARKER}\n\n## Tables (from {run})\n\n{body}"


def its_study() -> Any:
    """``analysis/its_report.py`` as a module."""
    sys.path.insert(0, str(ROOT / "analysis"))
    import its_report

    return its_report


README_START = "<!-- fidelity results: generated by `python -m analysis.regenerate` from analysis/results/fidelity_study -->"
README_END = "<!-- end of the generated fidelity results -->"


def readme(path: Path = ROOT / "README.md") -> str:
    """README.md with its fidelity results block rewritten from the study's files, so every number quoted
    there is one the committed results give."""
    from xsteer.app.fidelity_tables import calibration_table, overview

    text = path.read_text(encoding="utf-8")
    if README_START not in text:
        return text
    head, rest = text.split(README_START, 1)
    tail = rest.split(README_END, 1)[1]
    docs = instrument_results()
    block = (
        "No measurement of the instrument study has finished yet."
        if not docs
        else f"Pairs × concepts (best candidate map; its whole-pipeline 95% CI; the family-wise placebo bar it must "
        f"clear), {len(docs)} measurement{'' if len(docs) == 1 else 's'} so far:\n\n{overview(docs)}\n\nThe instrument's false passes on known "
        f"nulls, per child:\n\n{calibration_table(docs)}"
    )
    return f"{head}{README_START}\n{block}\n{README_END}{tail}"


def tables(*, check: bool) -> dict[Path, Callable[[], str]]:
    """Every regenerable file and how to make it (figures are redrawn only when not checking)."""
    out: dict[Path, Callable[[], str]] = {
        RESULTS / "fidelity_study.md": lambda: fidelity_study(figure=not check),
        RESULTS / "fidelity_runs.md": lambda: fidelity_runs(figure=not check),
        ROOT / "README.md": lambda: readme(),
    }
    its = its_study()
    folders = its.study_folders()
    if folders:  # only results that exist: the file is the earlier study's until a study commits records
        out[its.OUT] = lambda: its.report(folders, its.OUT)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="compare with the committed files; write nothing")
    args = ap.parse_args(argv)
    stale = []
    for path, make in tables(check=args.check).items():
        text = make()
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(path.relative_to(ROOT))
        else:
            from xsteer.core.io import write_text_atomic

            write_text_atomic(path, text)
            print(f"wrote {path.relative_to(ROOT)}")
    if stale:
        print(
            f"not what the committed results give: {', '.join(map(str, stale))}; run python -m analysis.regenerate"
        )
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
