"""Every published fidelity table is what the committed results give: `python -m analysis.regenerate --check`."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analysis import regenerate  # noqa: E402


def test_the_committed_tables_regenerate_from_the_committed_results(capsys):
    assert regenerate.main(["--check"]) == 0, capsys.readouterr().out


def test_a_table_that_no_longer_matches_its_results_is_caught(tmp_path):
    # A result file whose verdicts were edited by hand: regeneration derives them again from the readouts.
    src = sorted((ROOT / "analysis/results/fidelity_study/results").glob("*__*.json"))
    src = [p for p in src if not p.name.endswith(".partial.json")]
    if not src:
        import pytest

        pytest.skip("no finished measurement is committed yet")
    (tmp_path / "results").mkdir()
    doc = json.loads(src[0].read_text())
    shutil.copy(src[0], tmp_path / "results" / src[0].name)
    honest = regenerate.fidelity_study(tmp_path, tmp_path / "none.md")
    doc["result"]["maps"] = {m: {**row, "fidelity": 9.99} for m, row in doc["result"]["maps"].items()}
    (tmp_path / "results" / src[0].name).write_text(json.dumps(doc))

    def tables(text: str) -> str:  # the edited file's size differs: the size note is no verdict
        return re.sub(r"[\d.]+ MB of committed results", "", text)

    assert tables(regenerate.fidelity_study(tmp_path, tmp_path / "none.md")) == tables(
        honest
    )  # stored verdicts are not trusted
    assert "+9.99" not in honest


def _published(tmp_path, readme_results: str, files: dict[str, str]) -> list[str]:
    (tmp_path / "results").mkdir(parents=True)
    for name, text in files.items():
        (tmp_path / "results" / name).write_text(text)
    readme = tmp_path / "README.md"
    readme.write_text(
        f"# x\n\n## Results on the offline zoo\n\n{readme_results}\n\n## Conventions\n\n3.14 here is free.\n"
    )
    old_root, regenerate.ROOT = regenerate.ROOT, tmp_path
    try:
        return regenerate.published_numbers(readme, tmp_path / "results")
    finally:
        regenerate.ROOT = old_root


def test_a_published_number_no_table_carries_is_caught(tmp_path):
    study = f"# study\n\nReading: fidelity 0.87, bar 0.42.\n\n{regenerate.MARKER}\n\n| 0.87 [0.77, 0.92] | 0.42 |\n"
    old = "# old\n\n> **Not regenerable**: lost.\n\n| 12.6x | 53.1% |\n"
    files = {"fidelity_study.md": study, "perf.md": old}
    assert _published(tmp_path / "a", "Fidelity 0.87 [0.77, 0.92], 7 pairs.", files) == []
    [problem] = _published(tmp_path / "b", "Fidelity 0.88 [0.77, 0.92].", files)
    assert problem.startswith("README.md: 0.88 is in no committed table")
    # A number read only from a table that is not regenerable must be said to be so.
    [problem] = _published(tmp_path / "c", "Speed 12.6x.", files)
    assert "quotes tables that are not regenerable (perf.md)" in problem
    assert _published(tmp_path / "d", "Speed 12.6x (not regenerable: timings lost).", files) == []
    assert _published(tmp_path / "g", "Sampled at T = 0.7, λ = 0.02.", files) == []  # settings, not results
    # A reading above the generated tables is held to them too; a wall time in it is a fact of the run.
    bad = study.replace("bar 0.42.", "bar 0.45, in 1.27 h.")
    [problem] = _published(tmp_path / "e", "", {**files, "fidelity_study.md": bad})
    assert problem.startswith("fidelity_study.md: 0.45 is in no committed table")
    # A results file that is neither regenerated nor marked is caught.
    [problem] = _published(tmp_path / "f", "", {**files, "zoo.md": "# zoo\n\n| 0.5 |\n"})
    assert "zoo.md: neither regenerated nor marked 'not regenerable'" in problem


def test_the_its_report_is_regenerated_only_from_committed_study_records(tmp_path, monkeypatch):
    from test_its import _study

    its = regenerate.its_study()
    monkeypatch.setattr(its, "OUT", tmp_path / "its_vs_sc.md")
    monkeypatch.setattr(its, "study_folders", lambda: [])
    assert its.OUT not in regenerate.tables(check=True)  # nothing committed: the earlier file is left alone
    _study(tmp_path / "study")
    monkeypatch.setattr(its, "study_folders", lambda: [tmp_path / "study"])
    make = regenerate.tables(check=True)[its.OUT]
    assert make() == its.report([tmp_path / "study"], its.OUT)
    assert "## Five arms at equal generated tokens" in make()


def test_the_speed_tables_come_from_whole_benchmark_logs():
    """The speed tables read the committed benchmark logs; a cut-off log is refused, not read as a partial row."""
    from analysis import perf_report

    logs = sorted((ROOT / "analysis" / "results" / "perf").glob("*.log"))
    assert {p.name.split("_")[0] for p in logs} == {"sweep", "cell"}
    sweep = next(p for p in logs if p.name == "sweep_generated.log").read_text(encoding="utf-8")
    d = perf_report.parse(sweep)
    # The ratio the table prints is the one the benchmark printed in its summary.
    printed = re.search(r"prefix-cached alternative: ([\d.]+)x", sweep).group(1)
    assert f"{d['sides']['prefix-cached']['wall'] / d['sides']['xsteer']['wall']:.2f}" == printed
    # The profile's groups make up the whole profiled wall time, and its table prints them as the log did.
    pr = d["profile"]
    assert sum(float(pr[k]) for k in ("gemm", "attn", "other", "outside")) == pytest.approx(100, abs=0.3)
    assert f"| {pr['gemm']}% |" in perf_report.profile_table([("sweep_generated.log", d)])
    with pytest.raises(ValueError, match="not a complete"):
        perf_report.parse(sweep.split("== summary ==")[0].split("\nxsteer ")[0])
    cell = next(p for p in logs if p.name.startswith("cell_smollm2")).read_text(encoding="utf-8")
    with pytest.raises(ValueError, match="not a complete"):
        perf_report.parse_cell(cell.split("\none measurement")[0])


def test_the_lmeval_parity_table_comes_from_the_parity_tests_log():
    """Every condition the parity tests printed is a row, gap and accuracies as printed; a log with no parity
    line is refused."""
    from analysis import lmeval_report

    line = {
        "condition": "steered 3 layer(s)",
        "lm_eval_version": "0.4.13",
        "max_abs_dloglik": 2.3e-05,
        "n_choices": 80,
        "lm_eval": {"acc": 0.25, "acc_norm": 0.3},
        "xsteer": {"acc": 0.25, "acc_norm": 0.3},
        "layers": [10, 15, 20],
        "lam": 4.0,
        "max_abs_effect_of_steering": 1.5,
        "max_abs_dloglik_vs_late_binding": 0.75,
    }
    log = f"tests/test_interop.py {json.dumps(line)}\n.\n"
    [row] = lmeval_report.parse(log)
    assert row == line
    assert "| steered 3 layer(s) | 10, 15, 20 | 4.0 | 0.4.13 | 80 | 2.3e-05 | 0.2500 / 0.2500 |" in (
        lmeval_report.table([row])
    )
    with pytest.raises(ValueError, match="no parity line"):
        lmeval_report.parse("1 passed\n")


def test_the_earlier_tables_are_transcribed_as_data_and_the_committed_transcription_matches(tmp_path, capsys):
    from analysis import earlier_fidelity

    md = tmp_path / "old.md"
    md.write_text(
        "# x\n\n| parent → child | concept | map | fidelity [95% CI] | mapped-random | random (95% bound) | "
        "native effect | std. cos to native | reading |\n|---|---|---|---|---|---|---|---|---|\n"
        "| a → b | topic | proportional×ridge | +0.50 [+0.40, +0.60] | -0.20 [-0.30, -0.10] | +0.30 (8 draws: +0.1 ± 0.1) "
        "| +1.00 [+0.90, +1.10] | +0.50 | beats nulls |\n"
        "| a → b | topic | proportional×truncate_pad | +0.10 [-0.05, +0.25] | +0.20 [+0.10, +0.30] | — | +1.00 | +0.00 | null |\n"
        "| a → b | certainty | proportional×ridge | — | — | — | +0.10 [-0.03, +0.25] (does not steer) | +0.6 | undefined |\n"
        "\nafter the table\n"
    )
    rows = earlier_fidelity.transcribe([md])
    assert [
        (r["concept"], r["map"], r["fidelity"], r["ci"], r["null_bound"], r["reading"]) for r in rows
    ] == [
        ("topic", "proportional×ridge", 0.5, [0.4, 0.6], 0.3, "beats nulls"),
        ("topic", "proportional×truncate_pad", 0.1, [-0.05, 0.25], 0.2, "null"),
        ("certainty", "proportional×ridge", None, None, None, "undefined"),
    ]
    assert {(r["parent"], r["child"], r["source"]) for r in rows} == {("a", "b", "old.md")}
    assert earlier_fidelity.main(["--check"]) == 0, capsys.readouterr().out


def _doc(
    concept: str, *, crosses: bool = False, f=0.6, pipe=(0.5, 0.7), probe=(0.55, 0.65), bar=0.4, valid=True
):
    maps = {
        "proportional×ridge": {"fidelity": f, "pipeline_ci": list(pipe), "probe_ci": list(probe)},
        "proportional×truncate_pad": {"beats_placebo": False},
    }
    result = (
        {
            "reference": "valid",
            "maps": maps,
            "family_q95": bar,
            "crosses": ["proportional×ridge"] if crosses else [],
        }
        | {"verdict": "crosses" if crosses else "does not cross"}
        if valid
        else {"reference": "undefined: no", "maps": {}}
    )
    return {"parent": "a", "child": "b", "concept": concept, "result": result}


def _old(concept: str, reading: str, *, others: tuple[str, ...] = (), ci=(0.5, 0.6)) -> list[dict]:
    row = {"parent": "a", "child": "b", "concept": concept, "map": "proportional×ridge"}
    undefined = reading == "undefined"
    return [
        row
        | {"fidelity": None if undefined else 0.55, "ci": None if undefined else list(ci)}
        | {"null_bound": None if undefined else 0.45, "reading": reading},
        row
        | {"map": "proportional×truncate_pad", "fidelity": None if undefined else 0.0, "ci": [-0.1, 0.1]}
        | {"null_bound": 0.3, "reading": "undefined" if undefined else "null"},
    ] + [
        row | {"map": m, "fidelity": 0.9, "ci": [0.8, 1.0], "null_bound": 0.3, "reading": "beats nulls"}
        for m in others
    ]


def test_what_changed_is_read_off_both_studies_numbers():
    from analysis import earlier_fidelity

    cases = [  # (earlier rows, the study's measurement, the kind of change expected)
        (_old("same", "beats nulls"), _doc("same", crosses=True), "same verdict"),
        (_old("pipe", "beats nulls"), _doc("pipe", pipe=(0.3, 0.9)), "the whole-pipeline interval"),
        (
            _old("bar", "beats nulls"),
            _doc("bar", f=0.35, pipe=(0.2, 0.5), probe=(0.3, 0.4)),
            "under the placebo bar",
        ),
        (
            _old("probe", "beats nulls"),
            _doc("probe", pipe=(0.2, 0.9), probe=(0.35, 0.8)),
            "the probe-only interval",
        ),
        (
            _old("other", "weak", others=("cka_diff×anchor",)),
            _doc("other", pipe=(0.3, 0.9)),
            "earlier only by",
        ),
        (_old("now", "weak"), _doc("now", crosses=True), "crosses now"),
        (_old("lost", "beats nulls"), _doc("lost", valid=False), "undefined now"),
        (_old("never", "undefined"), _doc("never", valid=False), "undefined both times"),
        (_old("found", "undefined"), _doc("found"), "defined now"),
    ]
    earlier = [r for rows, _, _ in cases for r in rows]
    table, summary = earlier_fidelity.changes(earlier, [doc for _, doc, _ in cases])
    last = [line.rsplit("|", 2)[1].strip() for line in table.splitlines()[2:]]
    assert [w.startswith(kind) for w, (_, _, kind) in zip(last, cases, strict=True)] == [True] * len(cases)
    assert last[1] == (
        "the whole-pipeline interval: its probe-only lower bound +0.55 clears the bar +0.40, its whole-pipeline one "
        "+0.30 does not"
    )
    assert last[5].endswith("earlier its lower bound +0.50 fell under the nulls' bound +0.45")
    assert summary.startswith("9 of the earlier instrument's 9 measurements made anew;")
    # Controls counted where both studies read them: the 6 measurements valid both times, none passing.
    assert summary.endswith(
        "beat both earlier nulls in 0 of the 6 of them where both studies read it; it beats the "
        "placebo bar by the candidates' rule in 0."
    )
    assert (
        earlier_fidelity.changes(earlier, [])[1]
        == "No measurement of the earlier instrument has been made anew yet."
    )
