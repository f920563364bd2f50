import json

import pytest
from click.testing import CliRunner

from xsteer.app.cli import main
from xsteer.app.report import plain_summary, write_report
from xsteer.errors import InputError
from xsteer.evaluation.plan import EvalConfig
from xsteer.evaluation.records import RecordStore
from xsteer.evaluation.summary import summarize


def fake_records(n_items=12):
    recs = []
    for i in range(n_items):
        recs.append(
            {
                "split": "test",
                "item": f"i{i}",
                "condition": "baseline",
                "lam": 0.0,
                "sample": 0,
                "answer": str(i % 3),
                "correct": i % 3 == 0,
                "completion": f"base says {i % 3}",
                "gold": "1",
            }
        )
        for lam in (0.1, 0.5):
            for cond in ("parent", "random"):
                ok = (i + int(lam * 10)) % 2 == 0 if cond == "parent" else i % 4 == 0
                recs.append(
                    {
                        "split": "test",
                        "item": f"i{i}",
                        "condition": cond,
                        "lam": lam,
                        "sample": 0,
                        "answer": str(int(ok)),
                        "correct": ok,
                        "completion": f"{cond} at {lam} says <{int(ok)}>",
                        "gold": "1",
                    }
                )
                recs.append(
                    {
                        "split": "validation",
                        "item": f"v{i}",
                        "condition": cond,
                        "lam": lam,
                        "sample": 0,
                        "answer": "1",
                        "correct": ok,
                    }
                )
    return [{**r, "config": "h"} for r in recs]


def test_report_is_self_contained_html_with_figures(tmp_path):
    recs = fake_records()
    RecordStore(tmp_path / "records.jsonl").append(recs)
    summ = summarize(recs, {"parent": 0.1, "random": 0.5}, n_boot=200)
    (tmp_path / "summary.json").write_text(
        json.dumps(
            {
                "config": EvalConfig(dataset="gsm8k").__dict__,
                "config_hash": "h",
                "summaries": {"correct": summ},
            },
            default=str,
        )
    )
    out = write_report(tmp_path, title="t", sections=[("Extra", "| a | b |\n|---|---|\n| 1 | 2 |")])
    text = out.read_text()
    assert text.count("data:image/png;base64") == 3  # condition bars + two λ curves
    assert "parent@λ*" in text and "parent+ITS" in text and "<td>1</td>" in text
    for stem in ("conditions_correct", "lambda_validation", "lambda_test"):
        assert (tmp_path / "figures" / f"{stem}.png").stat().st_size > 1000
        assert (tmp_path / "figures" / f"{stem}.svg").exists()


def write_fake_run(folder, n_items=12):
    recs = fake_records(n_items)
    RecordStore(folder / "records.jsonl").append(recs)
    summ = summarize(recs, {"parent": 0.1, "random": 0.5}, n_boot=200)
    (folder / "summary.json").write_text(
        json.dumps(
            {
                "config": EvalConfig(dataset="gsm8k").__dict__,
                "config_hash": "h",
                "runtime": {"device": "cpu", "torch": "9.9"},
                "summaries": {"correct": summ},
            },
            default=str,
        )
    )
    return summ


def test_report_says_what_it_shows(tmp_path):
    summ = write_fake_run(tmp_path)
    text = write_report(tmp_path).read_text()
    said = plain_summary(summ)
    # 12 items, baseline 4/12: no paired interval excludes 0, and only a large effect was detectable
    assert said.startswith("No condition differs from baseline (33.3%)")
    assert "n = 12 test items" in said and "±53.9 points" in said
    assert "<h2>Summary</h2>" in text and text.index("Summary") < text.index("Test results")
    assert "Example generations" in text and "parent at 0.1 says &lt;" in text  # escaped, at parent's λ*
    assert (
        "base says 0" in text
        and "Runtime and versions" in text
        and "&quot;torch&quot;: &quot;9.9&quot;" in text
    )
    assert "95% bands" in text


def test_plain_summary_names_a_condition_that_differs():
    rows = [
        {"condition": "baseline", "acc": 0.3, "ci": [0.2, 0.4]},
        {
            "condition": "parent@λ*",
            "acc": 0.5,
            "ci": [0.4, 0.6],
            "delta": 0.2,
            "delta_ci": [0.1, 0.3],
            "mcnemar_p": 0.001,
            "wins": 25,
            "losses": 5,
        },
        {
            "condition": "random@λ*",
            "acc": 0.31,
            "ci": [0.2, 0.4],
            "delta": 0.01,
            "delta_ci": [-0.05, 0.07],
            "mcnemar_p": 0.8,
            "wins": 3,
            "losses": 2,
        },
    ]
    said = plain_summary({"rows": rows, "n_items": 100})
    assert said.startswith(
        "Differs from baseline (30.0%): parent@λ* +20.0 points [+10.0, +30.0] (McNemar p = 0.001)."
    )
    assert "random" not in said.split(".")[0] and "about 10% of the time" in said


@pytest.mark.parametrize("content", [None, "not json", '{"summaries": 3}', '{"config": {}}'])
def test_report_refuses_a_folder_with_nothing_to_report(tmp_path, content):
    """#15.14: an empty or garbage folder is an error with one line, and no empty report.html is written."""
    if content is not None:
        (tmp_path / "summary.json").write_text(content)
    with pytest.raises(InputError, match="summary"):
        write_report(tmp_path)
    result = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert result.exit_code != 0 and "Traceback" not in result.output and "summary" in result.output
    assert not (tmp_path / "report.html").exists()
