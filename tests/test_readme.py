"""The README's Python example runs as written (slow: it loads two zoo models and evaluates)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_example() -> str:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Python API", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "the README has no Python example under '## Python API'"
    return match.group(1)


def test_readme_example_uses_the_public_api_only():
    code = python_example()
    assert "import xsteer as xs" in code
    assert not re.search(r"^from xsteer\.|^import xsteer\.", code, re.M), "the example should need only `xs.`"


@pytest.mark.slow
def test_readme_example_runs(capsys):
    from conftest import zoo_model

    zoo_model("gemma3-270m")  # skips with a reason when the zoo is not installed
    namespace: dict = {}
    exec(compile(python_example(), str(README), "exec"), namespace)  # noqa: S102 - the README is ours
    out = capsys.readouterr().out
    assert "| mapped |" in out
    assert namespace["summary"].rows[0]["condition"] == "baseline"


@pytest.mark.slow
def test_the_readmes_main_command_the_demo_runs_and_states_its_reduced_size(tmp_path):
    """`xsteer demo` (the README's first command after set-up): the reduced instrument on the zoo, its sizes
    stated against the study's, and a verdict for the mapped vector and the control (~4 CPU minutes)."""
    from click.testing import CliRunner
    from conftest import zoo_model

    from xsteer.app.cli import main

    zoo_model("gemma3-270m")
    res = CliRunner().invoke(main, ["demo", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert (
        "reduced instrument: K = 10 placebos, R = 4 pipeline replicates, 4 λ (the study: 50, 20, 4)"
        in res.output
    )
    report = (tmp_path / "fidelity.md").read_text(encoding="utf-8")
    row = next(line for line in report.splitlines() if "| proportional×ridge |" in line)
    assert row.startswith("| gemma3-270m → smollm2-135m | sentiment |")
    assert re.search(r"\| [+-]\d\.\d\d \[[+-]\d\.\d\d, [+-]\d\.\d\d\] \|", row)  # fidelity [pipeline CI]
    assert "proportional×truncate_pad (control)" in report and "## Calibration on known nulls" in report
