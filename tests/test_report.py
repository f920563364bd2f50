import json

from xsteer.app.report import write_report
from xsteer.evaluation.evaluate import EvalConfig
from xsteer.evaluation.records import RecordStore
from xsteer.evaluation.summary import summarize


def fake_records(n_items=12):
    recs = []
    for i in range(n_items):
        recs.append({"split": "test", "item": f"i{i}", "condition": "baseline", "lam": 0.0, "sample": 0, "answer": str(i % 3), "correct": i % 3 == 0})
        for lam in (0.1, 0.5):
            for cond in ("parent", "random"):
                ok = (i + int(lam * 10)) % 2 == 0 if cond == "parent" else i % 4 == 0
                recs.append({"split": "test", "item": f"i{i}", "condition": cond, "lam": lam, "sample": 0, "answer": str(int(ok)), "correct": ok})
                recs.append({"split": "validation", "item": f"v{i}", "condition": cond, "lam": lam, "sample": 0, "answer": "1", "correct": ok})
    return [{**r, "config": "h"} for r in recs]


def test_report_is_self_contained_html_with_figures(tmp_path):
    recs = fake_records()
    RecordStore(tmp_path / "records.jsonl").append(recs)
    summ = summarize(recs, {"parent": 0.1, "random": 0.5}, n_boot=200)
    (tmp_path / "summary.json").write_text(json.dumps({"config": EvalConfig(dataset="gsm8k").__dict__, "config_hash": "h",
                                                       "summaries": {"correct": summ}}, default=str))
    out = write_report(tmp_path, title="t", sections=[("Extra", "| a | b |\n|---|---|\n| 1 | 2 |")])
    text = out.read_text()
    assert text.count("data:image/png;base64") == 3  # condition bars + two λ curves
    assert "parent@λ*" in text and "parent+ITS" in text and "<td>1</td>" in text
    for stem in ("conditions_correct", "lambda_validation", "lambda_test"):
        assert (tmp_path / "figures" / f"{stem}.png").stat().st_size > 1000
        assert (tmp_path / "figures" / f"{stem}.svg").exists()
