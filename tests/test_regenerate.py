"""Every published fidelity table is what the committed results give: `python -m analysis.regenerate --check`."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

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
    assert (
        regenerate.fidelity_study(tmp_path, tmp_path / "none.md") == honest
    )  # stored verdicts are not trusted
    assert "+9.99" not in honest


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
