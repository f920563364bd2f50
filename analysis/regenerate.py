"""Regenerate the published fidelity tables from the results committed in the repository (no model runs).

    python -m analysis.regenerate            # rewrite them
    python -m analysis.regenerate --check    # exit 1 if a committed table differs from its regeneration (CI)

* ``analysis/results/fidelity_study.md`` from ``analysis/results/fidelity_study/results/*.json``: the study with
  the instrument (placebo null, whole-pipeline interval, specificity, known nulls). Every verdict is derived
  again from the readouts the files keep (:func:`xsteer.app.fidelity.reanalyze`), not copied from them.
* ``analysis/results/ab_fidelity/**/fidelity.md`` from the ``results/*.json`` beside it (each folder an
  ``xsteer fidelity --out``, its ``spec.json`` beside): the instrument on the behavioural A/B concepts (issue
  #32), the same tables.
* ``analysis/results/fidelity_runs.md`` from ``analysis/results/fidelity_runs/results/*.json``: the 9 measurements
  of the earlier instrument whose raw results were kept (its figure is redrawn only when not checking).

* ``analysis/results/dtype_check.md`` from ``analysis/results/dtype_check/results/*.json``: study measurements
  made again in bf16, number by number against the study's own files.
* ``analysis/results/perf_sweep.md`` from ``analysis/results/perf/*.log``: the λ-sweep benchmark's own logs
  (``analysis/perf_report.py``).
* ``analysis/results/lmeval_parity.md`` from ``analysis/results/lmeval/parity.log``: the lm-eval parity tests'
  own log (``analysis/lmeval_report.py``).
* ``analysis/results/its_vs_sc.md`` from ``analysis/results/its_study/*/`` (the ITS study of issue #30: per-item
  lines of every arm, ``analysis/its_report.py``), once a study has committed item lines.

Each file keeps what is written by hand above its marker line; everything below is generated. Not regenerable, and
marked so where it is published: ``fidelity.md`` (the earlier instrument's first 26 measurements, raw results lost),
and the earlier ITS (``its_vs_sc_earlier.md``, ``its_vs_sc_19.md``, ``its_vs_sc_gsm8k.md``), zoo-study and speed figures
(their raw runs were not committed).

``--check`` also reads every number published by hand (README's results section, each file's reading above its
generated part) and fails on one that no committed table carries, and on a README paragraph that quotes only
tables which are not regenerable without saying so (:func:`published_numbers`).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

from analysis import earlier_fidelity

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "analysis" / "results"
MARKER = "<!-- generated below by `python -m analysis.regenerate`; write the reading above this line -->"


def _head(path: Path, title: str) -> str:
    old = path.read_text(encoding="utf-8") if path.exists() else f"# {title}\n"
    return old.split(MARKER)[0].rstrip("\n")


def _finished(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("results/*.json") if not p.name.endswith(".partial.json"))


def _instrument_result(path: Path) -> dict | None:
    """One finished measurement, its verdicts derived again from its stored readouts (None: not the instrument's)."""
    from xsteer.app.fidelity import reanalyze
    from xsteer.app.fidelity_tables import is_instrument_result

    doc = json.loads(path.read_text(encoding="utf-8"))
    return {**doc, "result": reanalyze(doc)} if is_instrument_result(doc) else None


def instrument_results(folder: Path = RESULTS / "fidelity_study") -> list[dict]:
    """The instrument study's finished measurements, each verdict derived again from its stored readouts."""
    return [d for p in _finished(folder) if (d := _instrument_result(p)) is not None]


def fidelity_study(
    folder: Path = RESULTS / "fidelity_study",
    out: Path = RESULTS / "fidelity_study.md",
    *,
    figure: bool = False,
) -> str:
    """The instrument study's write-up: the hand-written reading, the overview figure, then tables from the
    result files."""
    from xsteer.app.fidelity_tables import overview_figure, study_markdown

    paths = _finished(folder)
    docs = instrument_results(folder)
    under_way = sorted(p.name for p in folder.glob("results/*.partial.json"))
    body = study_markdown(docs) if docs else "No measurement has finished yet."
    if docs:
        table, summary = earlier_fidelity.changes(earlier_fidelity.load(), docs)
        body += "\n\n" + "\n\n".join(p for p in ("## Against the earlier instrument", table, summary) if p)
        name = f"{out.stem}_overview.png"
        if figure:
            overview_figure(docs, out.with_name(f"{out.stem}_overview"))
        body = f"![pairs x concepts: fidelity against the placebos]({name})\n\n{body}"
    size = sum(p.stat().st_size for p in paths)
    # The study's size as #29 asks for it: a cell is one (pair, concept, map) read against its placebos, so a
    # measurement whose reference is undefined has none; the hours are each measurement's own wall clock.
    cells = sum(len(d["result"].get("maps", {})) for d in docs)
    hours = sum(float(d.get("seconds", 0.0)) for d in docs) / 3600
    note = (
        f"{len(docs)} measurement{'' if len(docs) == 1 else 's'} finished: {cells} cells, {hours:.1f} h of wall "
        f"time on a 2-core CPU, {size / 1e6:.1f} MB of committed results"
        + (f"; under way: {', '.join(under_way)}" if under_way else "")
        + "."
    )
    return f"{_head(out, 'Transfer fidelity, measured by the instrument')}\n\n{MARKER}\n\n{note}\n\n{body}\n"


def ab_fidelity(folder: Path = RESULTS / "ab_fidelity") -> str:
    """The A/B behaviours' tables, as ``xsteer fidelity`` writes them into its folder, verdicts derived again."""
    from xsteer.app.fidelity_tables import study_markdown

    return study_markdown(instrument_results(folder)) + "\n"


def dtype_check(folder: Path = RESULTS / "dtype_check", out: Path = RESULTS / "dtype_check.md") -> str:
    """Fidelity measurements made again in another dtype (``XSTEER_DTYPE``) beside the study's own, number by
    number: whether the study may go on in bf16."""
    import torch

    def ci(x: list[float]) -> str:
        return f"[{x[0]:+.2f}, {x[1]:+.2f}]"

    blocks = []
    # Only the study's files that were made again are read (a study file and its remake share a name).
    for path in _finished(folder):
        b, a = (
            _instrument_result(path),
            _instrument_result(RESULTS / "fidelity_study" / "results" / path.name),
        )
        if a is None or b is None:
            raise ValueError(f"{path.name}: no instrument measurement of that name in both folders")
        ra, rb = a["result"], b["result"]
        rows = [
            ("dtype", a["spec"].get("dtype", "float32"), b["spec"].get("dtype", "float32")),
            ("wall time, s", f"{a['seconds']:.0f}", f"{b['seconds']:.0f}"),
            (
                "the child's own effect [CI]",
                *(f"{r['native_effect'][0]:+.2f} {ci(r['native_effect'][1:])}" for r in (ra, rb)),
            ),
            ("verdict", ra.get("verdict"), rb.get("verdict")),
        ]
        for m in ra.get("maps", {}):
            x, y = ra["maps"][m], rb["maps"][m]
            rows += [
                (
                    f"{m}: fidelity [pipeline CI]",
                    *(f"{r['fidelity']:+.2f} {ci(r['pipeline_ci'])}" for r in (x, y)),
                ),
                (f"{m}: probe-only CI", ci(x["probe_ci"]), ci(y["probe_ci"])),
                (f"{m}: placebo q95", f"{x['placebo_q95']:+.2f}", f"{y['placebo_q95']:+.2f}"),
                (
                    f"{m}: specificity [CI]",
                    *(f"{r['specificity']['index']:+.2f} {ci(r['specificity']['ci'])}" for r in (x, y)),
                ),
            ]
            if m in ra.get("judge", {}).get("maps", {}) and m in rb.get("judge", {}).get("maps", {}):
                jx, jy = ra["judge"]["maps"][m], rb["judge"]["maps"][m]
                rows.append(
                    (f"{m}: judge fidelity [CI]", *(f"{r['fidelity']:+.2f} {ci(r['ci'])}" for r in (jx, jy)))
                )
        diff = torch.cat(
            [
                (torch.tensor(b["readouts"][k][n]) - torch.tensor(r)).abs().flatten()
                for k in a["readouts"]
                for n, r in a["readouts"][k].items()
                if n in b["readouts"].get(k, {})
            ]
        )
        table = "\n".join(
            ["| | " + " | ".join(rows[0][1:]) + " |", "|---|---|---|"]
            + [f"| {r[0]} | {r[1]} | {r[2]} |" for r in rows[1:]]
        )
        blocks.append(
            f"## {a['parent']} → {a['child']}, {a['concept']}\n\n{table}\n\n"
            f"Every readout of both files ({diff.numel()} values: each vector, λ and probe on every readout): "
            f"|difference| median {diff.median():.3f}, 99th percentile {diff.quantile(0.99):.3f}, "
            f"largest {diff.max():.3f} nats."
        )
    body = "\n\n".join(blocks) if blocks else "No measurement has been made again in another dtype yet."
    return f"{_head(out, 'The fidelity instrument in bf16 against fp32')}\n\n{MARKER}\n\n{body}\n"


def _legacy_report() -> ModuleType:
    """``analysis/fidelity_report.py``, the earlier instrument's report script (its marker, its tables)."""
    if str(ROOT / "analysis") not in sys.path:
        sys.path.insert(0, str(ROOT / "analysis"))
    import fidelity_report

    return fidelity_report


def fidelity_runs(
    folder: Path = RESULTS / "fidelity_runs",
    out: Path = RESULTS / "fidelity_runs.md",
    *,
    figure: bool = False,
) -> str:
    """The earlier instrument's kept measurements, as ``analysis/fidelity_report.py`` writes them."""
    legacy = _legacy_report()
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


def perf_sweep(out: Path = RESULTS / "perf_sweep.md") -> str:
    """The λ-sweep speed table from the benchmark logs in ``analysis/results/perf/`` (``analysis/perf_report.py``)."""
    sys.path.insert(0, str(ROOT / "analysis"))
    import perf_report

    return f"{_head(out, 'λ-sweep speed (issue #33)')}\n\n{MARKER}\n\n{perf_report.body()}"


def lmeval_parity(out: Path = RESULTS / "lmeval_parity.md") -> str:
    """The lm-eval parity table from the parity tests' log in ``analysis/results/lmeval/`` (``analysis/lmeval_report.py``)."""
    sys.path.insert(0, str(ROOT / "analysis"))
    import lmeval_report

    return f"{_head(out, 'Parity with lm-evaluation-harness')}\n\n{MARKER}\n\n{lmeval_report.body()}"


README_START = "<!-- fidelity results: generated by `python -m analysis.regenerate` from analysis/results/fidelity_study -->"
README_END = "<!-- end of the generated fidelity results -->"


def readme(path: Path = ROOT / "README.md") -> str:
    """README.md with its fidelity results block rewritten from the study's files, so every number quoted
    there is one the committed results give."""
    from xsteer.app.fidelity_tables import calibration_table, overview, target_line

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
        f"nulls, per child:\n\n{calibration_table(docs)}\n\n{target_line(docs)}\n\nAgainst the earlier instrument "
        f"(`fidelity_study.md` has the table, measurement by measurement): "
        f"{earlier_fidelity.changes(earlier_fidelity.load(), docs)[1]}"
    )
    return f"{head}{README_START}\n{block}\n{README_END}{tail}"


#: A published result: a decimal, a percentage or a ratio ("0.87", "53.1%", "12.6x"); integers alone are counts
#: and sizes ("7 pairs", "384 items") whose every use cannot be told from prose, and a number glued to letters
#: is a name ("Qwen2.5", "0.5B").
NUMBER = re.compile(r"(?<![\w.])[+−-]?(\d+(?:\.\d+)?(?=%|x\b)|\d+\.\d+(?!\w|\.\d))")
#: A setting ("T = 0.7", "λ = 0.02", "K = 50") is a choice, not a result.
SETTING = re.compile(r"(?<![\w.])(?:T|λ|K|R|k)\s*=\s*[+−-]?\d+(?:\.\d+)?")
#: A run's wall time ("1.27 h", "6.9 s") in a reading is a fact of the run, not a result a table carries.
DURATION = re.compile(r"\d+(?:\.\d+)?\s?(?:h|s|min|ms)\b")
NOT_REGENERABLE = "not regenerable"
README_RESULTS = ("## Results on the offline zoo", "## Conventions")
#: Readings not checked number by number: superseded, and quoting figures whose data were lost with the raw results.
LEGACY = {"fidelity.md"}


def _generated(text: str) -> tuple[str, str]:
    """(reading written by hand, generated tables) of a results file."""
    for marker in (MARKER, _legacy_report().MARKER):
        if marker in text:
            head, body = text.split(marker, 1)
            return head, body
    if (
        text.startswith("<!-- written by") and "\n#" in text
    ):  # its_report.py: the reading precedes the first heading
        i = text.index("\n#")
        return text[:i], text[i:]
    return "", text


def published_numbers(readme_path: Path = ROOT / "README.md", results: Path = RESULTS) -> list[str]:
    """What a published number does wrong: absent from every committed table, or quoted from tables that are not
    regenerable by a README paragraph that does not say so. Each results file is either regenerated here or says
    "not regenerable" in its first lines."""
    files = sorted(p for p in results.glob("*.md") if p.name != "README.md") + sorted(results.glob("*.txt"))
    regenerated = {p.name for p in tables(check=True)}
    problems, carried, open_ = [], {}, set()
    for p in files:
        text = p.read_text(encoding="utf-8")
        carried[p.name] = _generated(text)[1]
        if p.name in regenerated:
            open_.add(p.name)
        elif NOT_REGENERABLE not in "\n".join(text.splitlines()[:6]).lower():
            problems.append(
                f"{p.relative_to(ROOT)}: neither regenerated nor marked '{NOT_REGENERABLE}' in its first lines"
            )

    def sources(n: str) -> set[str]:
        pat = re.compile(r"(?<![\d.])" + re.escape(n) + r"(?!\d)")
        return {k for k, v in carried.items() if pat.search(v)}

    readme = readme_path.read_text(encoding="utf-8")
    start, end = (readme.index(h) for h in README_RESULTS)
    readings = {"README.md": readme[start:end]}
    readings |= {p.name: _generated(p.read_text(encoding="utf-8"))[0] for p in files if p.suffix == ".md"}
    for where, text in readings.items():
        for para in text.split("\n\n"):
            prose = SETTING.sub("", para if where == "README.md" else DURATION.sub("", para))
            closed: set[str] = set()
            for m in NUMBER.finditer(prose):
                src = sources(m.group(1))
                if not src and where not in LEGACY:
                    problems.append(f"{where}: {m.group(0)} is in no committed table ({para[:60]!r}...)")
                if src and not src & open_:
                    closed |= src
            if where == "README.md" and closed and NOT_REGENERABLE not in para.lower():
                problems.append(
                    f"README.md: a paragraph quotes tables that are not regenerable ({', '.join(sorted(closed))}) "
                    f"without saying '{NOT_REGENERABLE}' ({para[:60]!r}...)"
                )
    return problems


def tables(*, check: bool) -> dict[Path, Callable[[], str]]:
    """Every regenerable file and how to make it (figures are redrawn only when not checking)."""
    out: dict[Path, Callable[[], str]] = {
        RESULTS / "fidelity_study.md": lambda: fidelity_study(figure=not check),
        RESULTS / "fidelity_runs.md": lambda: fidelity_runs(figure=not check),
        **{
            spec.with_name("fidelity.md"): partial(ab_fidelity, spec.parent)
            for spec in sorted((RESULTS / "ab_fidelity").glob("**/spec.json"))
        },
        ROOT / "README.md": lambda: readme(),
        RESULTS / "dtype_check.md": lambda: dtype_check(),
        RESULTS / "perf_sweep.md": lambda: perf_sweep(),
        RESULTS / "lmeval_parity.md": lambda: lmeval_parity(),
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
    problems = published_numbers() if args.check else []
    for line in problems:
        print(line)
    return 1 if stale or problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
