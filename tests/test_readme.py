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
