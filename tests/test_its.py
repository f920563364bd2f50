"""Issue #30: per-item ITS records and what the report reads from them (votes, distinct answers, oracle pass@k,
votes at a token budget, paired intervals pooled over random draws), on hand-made records with known values;
and the study end to end on tiny models, killed and resumed."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from xsteer.errors import InputError
from xsteer.evaluation.its import (
    budget_vote,
    by_arm,
    compact,
    distinct,
    oracle,
    paired_diff,
    tokens,
    vote,
)

ROOT = Path(__file__).resolve().parents[1]


def rec(item, lam, sample, answer, correct, strict=None, n_tokens=10, condition="x"):
    return {
        "split": "test",
        "item": item,
        "condition": condition,
        "lam": lam,
        "sample": sample,
        "answer": answer,
        "correct": correct,
        "strict_answer": strict,
        "strict_correct": strict is not None and correct,
        "gold": "4",
        "n_tokens": n_tokens,
        "completion": "long text that the compact line drops",
    }


LINE = {
    "item": "a",
    "arm": "x",
    "gold": "4",
    "slot": [0.1, 0.2, 0.3],
    "answer": ["4", "5", "5"],
    "correct": "100",
    "strict_answer": ["4", None, None],
    "strict_correct": "100",
    "n_tokens": [10, 20, 30],
}


def test_compact_keeps_slots_in_vote_order_and_drops_completions():
    rows = [rec("a", 0.3, 0, "5", False, n_tokens=30), rec("a", 0.1, 0, "4", True, "4", 10)]
    rows.append(rec("a", 0.2, 0, "5", False, n_tokens=20))
    assert compact(rows, "x") == LINE
    sc = compact([rec("b", 0.0, s, str(s), s == 1) for s in (2, 0, 1)], "sc")
    assert sc["slot"] == [0, 1, 2] and sc["answer"] == ["0", "1", "2"] and sc["correct"] == "010"
    with pytest.raises(InputError, match="one item"):
        compact([rec("a", 0.1, 0, "4", True), rec("b", 0.1, 0, "4", True)], "x")


def test_vote_distinct_and_oracle_on_known_lines():
    # flexible: "5" wins 2-1 although "4" (right) is among the votes: pass@3 yes, vote wrong, 2 answers
    assert (vote(LINE), distinct(LINE), oracle(LINE)) == (False, 2, True)
    # strict: the only valid answer is "4": it wins
    assert (
        vote(LINE, "strict_correct"),
        distinct(LINE, "strict_correct"),
        oracle(LINE, "strict_correct"),
    ) == (
        True,
        1,
        True,
    )
    tie = {**LINE, "answer": ["5", "4"], "correct": "01", "n_tokens": [1, 1]}
    assert vote(tie) is False  # a tie goes to the first slot (the smallest λ)
    none = {**LINE, "answer": [None, ""], "correct": "00", "n_tokens": [1, 1]}
    assert (vote(none), distinct(none), oracle(none)) == (False, 0, False)
    assert tokens(LINE) == 60
    with pytest.raises(InputError, match="unknown metric"):
        vote(LINE, "acc")


def test_the_vote_at_a_token_budget():
    assert budget_vote(LINE, 60) == (0.0, 60.0)  # everything fits: the full vote
    equal = {**LINE, "answer": ["4", "4", "4"], "correct": "111", "n_tokens": [10, 10, 10]}
    assert budget_vote(equal, 20) == (1.0, 20.0)  # two of three slots, always right
    assert budget_vote(equal, 5) == (1.0, 10.0)  # at least one slot, even over the budget
    # two of {4, 5, 5}: {4,5} ties to the earlier slot (right), {4,5'} right, {5,5'} wrong: 2/3 of pairs
    mixed = {**equal, "answer": ["4", "5", "5"], "correct": "100"}
    acc, used = budget_vote(mixed, 20, orders=4000)
    assert used == 20.0 and abs(acc - 2 / 3) < 0.03
    assert budget_vote(mixed, 20, orders=50) == budget_vote(mixed, 20, orders=50)  # seeded


def test_paired_diff_on_known_cases():
    a, b = np.array([1, 1, 0, 0]), np.zeros(4)
    c = paired_diff(a, b, n_boot=2000)
    assert c.estimate == 0.5 and 0.0 <= c.low < 0.5 < c.high <= 1.0 and c.n == 4
    same = paired_diff(a, a, n_boot=500)
    assert (same.estimate, same.low, same.high) == (0.0, 0.0, 0.0)
    # Pooled over two draws that disagree completely (one always right, one never): the interval carries the
    # spread between draws, since draws are resampled too: pooled means 1, 0.5 or 0.
    draws = np.tile([1.0, 0.0], (50, 1))
    pooled = paired_diff(np.ones(50), draws, n_boot=4000)
    assert (pooled.estimate, pooled.low, pooled.high) == (0.5, 0.0, 1.0)
    # one draw as a column is the plain paired difference
    one = paired_diff(np.ones(50), np.zeros((50, 1)), n_boot=100)
    assert (one.estimate, one.low, one.high) == (1.0, 1.0, 1.0)
    with pytest.raises(InputError, match="paired_diff"):
        paired_diff(np.ones(3), np.ones(4))
    assert paired_diff(np.tile([1.0, 0.0], (50, 1)), np.ones(50), n_boot=500).estimate == -0.5


def test_a_line_recorded_twice_is_refused():
    assert set(by_arm([LINE, {**LINE, "arm": "y"}])) == {"x", "y"}
    with pytest.raises(InputError, match="recorded twice"):
        by_arm([LINE, LINE])


def test_a_sampled_vector_condition_is_hashed_apart_and_only_vectors_are_sampled(tiny, tmp_path):
    from test_cli import unit_vectors

    from xsteer.evaluation.evaluate import EvalConfig, Evaluator
    from xsteer.evaluation.records import RecordStore

    v = unit_vectors(tiny.cfg.n_layers, tiny.cfg.d_model, model_id="tiny-llama")
    cfg = EvalConfig("synthetic", shots=0, lambdas=(0.1, 0.2), max_new_tokens=2)
    # greedy records keep the hash they always had; a sampled condition's records are never taken for them
    assert cfg.hash("m", v) == cfg.hash("m", v, sampled=False) != cfg.hash("m", v, sampled=True)
    store = RecordStore(tmp_path / "r.jsonl")
    conditions = {"baseline": None, "p": v, "p@T": v}
    ev = Evaluator(tiny, cfg, store, conditions, progress=False, sampled=frozenset({"p@T"}))
    assert ev.config_hash["p"] != ev.config_hash["p@T"]
    with pytest.raises(InputError, match="only vector conditions"):
        Evaluator(tiny, cfg, store, conditions, sampled=frozenset({"baseline"}))


# ---------------------------------------------------------------------------------------------- the report
def _study(folder: Path) -> None:
    """A hand-made study folder: 4 items; a paper arm that never changes the baseline's answer."""
    folder.mkdir(parents=True)
    arms = {
        "baseline": "baseline",
        "paper:p": "paper",
        "p": "parent",
        "p@T0.7": "parent_sampled",
        "self_consistency": "self_consistency",
        "random": "random",
        "random#1": "random",
        "native": "native",
    }
    doc = {
        "child": "c", "task": "synthetic", "shots": 5, "max_new_tokens": 8, "positions": "all",
        "parents": ["p"], "test_items": 4, "temperature": 0.7, "lambdas": [0.01, 0.02],
        "steered_layers": [1, 2], "paper_lambdas": [0.01, 0.02], "runtime": "cpu",
        "paper_preset": {"norm": "unit", "method": "pca", "layer_map": "greedy", "width_map": "truncate_pad"},
        "paper": {"lambda_star": {"paper:p": 0.02}, "val_items": 2}, "arms": arms,
    }  # fmt: skip
    (folder / "study.json").write_text(json.dumps(doc))
    gold = "4"
    base_answers = ["4", "5", "4", "6"]  # baseline right on items 0 and 2
    votes = {  # per arm, per item: two answers
        "paper:p": [[a, a] for a in base_answers],
        "p": [["4", "4"], ["5", "5"], ["5", "5"], ["6", "6"]],  # 1/4, pass@2 1/4, one answer each
        "p@T0.7": [["4", "5"], ["5", "4"], ["4", "4"], ["6", "6"]],  # votes right on 0, 2; pass@2 3/4
        "self_consistency": [["4", "4"], ["4", "4"], ["4", "4"], ["6", "4"]],  # 3/4; pass@2 4/4
        "random": [["4", "4"]] * 4,
        "random#1": [["5", "5"]] * 4,
        "native": [["4", "5"], ["5", "5"], ["4", "4"], ["6", "6"]],
    }
    lines = []
    for i in range(4):
        item = f"i{i}"
        b = base_answers[i]
        lines.append(
            {"item": item, "arm": "baseline", "gold": gold, "slot": [0], "answer": [b], "correct": str(int(b == gold)),
             "strict_answer": [b], "strict_correct": str(int(b == gold)), "n_tokens": [5]}
        )  # fmt: skip
        for arm, per_item in votes.items():
            ans = per_item[i]
            bits = "".join(str(int(a == gold)) for a in ans)
            lines.append(
                {"item": item, "arm": arm, "gold": gold, "slot": [0.01, 0.02], "answer": ans, "correct": bits,
                 "strict_answer": ans, "strict_correct": bits, "n_tokens": [4, 4] if arm != "p" else [2, 2]}
            )  # fmt: skip
    (folder / "items.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))


@pytest.fixture()
def its_report():
    sys.path.insert(0, str(ROOT / "analysis"))
    import its_report

    return its_report


def test_report_numbers_on_a_hand_made_study(tmp_path, its_report):
    _study(tmp_path / "s")
    text = its_report.report([tmp_path / "s"], tmp_path / "out.md", n_boot=200)
    assert text.startswith(its_report.TITLE) and its_report.MARKER in text
    sections = [line for line in text.splitlines() if line.startswith("## ")]
    assert [s[3:] for s in sections] == [t for t, _ in its_report.SECTIONS]
    assert "4 test items finished by every arm (of 4)" in text
    gens = text.split("## Five arms at equal generations")[1].split("## ")[0]
    rows = {line.split(" | ")[0].strip("| "): line for line in gens.splitlines() if line.startswith("| ")}
    # the paper arm: baseline 50%, never a different answer from the baseline's
    paper = next(line for line in text.splitlines() if line.startswith("| `paper:p` | flexible"))
    assert "| 50.0 [" in paper and "| 0.02 |" in paper and paper.endswith("| 1.00 | 100% |")
    # equal generations: self-consistency 75% with 8 tokens per item; the parent's greedy vote 25% with 4
    sc = rows["self-consistency (T = 0.7) (`self_consistency`)"]
    assert "| 2 | 8 | 75.0 [" in sc
    assert "| 2 | 4 | 25.0 [" in rows["greedy λ-vote, parent (`p`)"]
    assert "| 2 | 8 | 50.0 [" in rows["random, 2 draws pooled"]
    # diversity: the sampled parent vote gives 2 answers on items 0 and 1 -> mean 1.5; pass@2 75%, vote 50%
    sampled = next(
        line
        for line in text.splitlines()
        if line.startswith("| sampled (T = 0.7) λ-vote, parent (`p@T0.7`) | 2 | flexible")
    )
    assert "| 1.50 | 50 | 75.0 [" in sampled and sampled.endswith("| 50.0 | 25.0 |")
    # at equal tokens the budget is the parent's 4 tokens per item: every other arm votes over one output
    tok = text.split("## Five arms at equal generated tokens")[1].split("## ")[0]
    assert "mean budget 4 tokens" in tok
    assert "| self-consistency (T = 0.7) (`self_consistency`) | 4 | 1.0 |" in tok
    diffs = text.split("## Intervals on the differences")[1]
    for what in ("parent − random (p)", "parent − native (p)", "vote − self-consistency (p)",
                 "vote − self-consistency (random, pooled)", "vote − self-consistency (p@T0.7)"):  # fmt: skip
        assert f"| {what} | " in diffs
    # parent (25%) − native (native votes right on items 0 and 2: 50%) at equal generations, flexible
    assert "| parent − native (p) | -25.0 [" in diffs


def test_report_keeps_the_reading_and_reads_complete_items_only(tmp_path, its_report):
    _study(tmp_path / "s")
    with open(tmp_path / "s" / "items.jsonl", "a") as f:  # an item only one arm has finished
        f.write(json.dumps({**LINE, "item": "extra", "arm": "p"}) + "\n")
    out = tmp_path / "out.md"
    out.write_text(f"# My title\n\nMy reading.\n\n{its_report.MARKER}\n\nold tables\n")
    text = its_report.report([tmp_path / "s"], out, n_boot=100)
    assert text.startswith("# My title\n\nMy reading.\n\n") and "old tables" not in text
    assert "4 test items finished by every arm" in text and "extra" not in text


# ---------------------------------------------------------------------------------------------- the study
def test_the_study_end_to_end_killed_and_resumed(tmp_path, tiny_dir, its_report):
    """Tiny child and parent (other width and depth): every arm's line per item; a kill (a torn last line, a
    chunk's generations lost) and a rerun give back exactly the lines of the uninterrupted run, none twice."""
    from conftest import tiny_hf

    sys.path.insert(0, str(ROOT / "analysis"))
    import its_study

    parent = tmp_path / "parent"
    hf, tok = tiny_hf("qwen2", d_model=48, n_layers=4, seed=1)
    hf.save_pretrained(parent)
    tok.save_pretrained(parent)
    results, work = tmp_path / "results", tmp_path / "work"
    argv = [
        "--name", "t", "--child", str(tiny_dir), "--parents", str(parent), "--task", "synthetic",
        "--shots", "0", "--max-new-tokens", "3", "--n-lambdas", "2", "--random-draws", "2", "--val-items", "1",
        "--test-items", "3", "--chunk", "2", "--n-pairs", "8", "--fit-text", "synthetic:train:8",
        "--batch-size", "8", "--device", "cpu", "--results", str(results), "--work", str(work),
    ]  # fmt: skip
    its_study.main(argv)
    path = results / "items.jsonl"
    first = path.read_text().splitlines()
    study = json.loads((results / "study.json").read_text())
    kinds = sorted(set(study["arms"].values()))
    assert kinds == ["baseline", "native", "paper", "parent", "parent_sampled", "random", "self_consistency"]
    assert len(first) == 3 * len(study["arms"]) == 3 * 8
    lines = [json.loads(x) for x in first]
    assert len({(x["item"], x["arm"]) for x in lines}) == len(lines)
    k = {x["arm"]: len(x["n_tokens"]) for x in lines}
    assert k[f"paper:{parent}"] == 19 and k["self_consistency"] == k[str(parent)] == 2 and k["baseline"] == 1
    # the paper arm steers the child's first min(4, 3) layers, at unit norm
    assert study["paper_steered_layers"] == {f"paper:{parent}": [0, 1, 2]}
    # a kill: the last chunk's lines cut, one torn; that chunk's generations lost too
    path.write_text("\n".join(first[:-5]) + "\n" + first[-5][:17])
    (work / "chunks" / "00001.jsonl").unlink()
    its_study.main(argv)
    again = path.read_text().splitlines()
    assert len(again) == len(first) and sorted(again) == sorted(first)  # none lost, none twice, same results
    timing = [json.loads(x) for x in (results / "timing.jsonl").read_text().splitlines()]
    assert {t["arm"] for t in timing} == set(study["arms"]) and all(t["seconds"] >= 0 for t in timing)
    text = its_report.report([results], tmp_path / "its.md", n_boot=100)
    assert "3 test items finished by every arm (of 3)" in text and "## Throughput" in text
    # Another machine, before λ* was written: no work folder, and the paper arm's λ* is found again from the
    # committed validation records, none of them generated again (the vectors are rebuilt bit for bit).
    validation = (results / "validation.jsonl").read_text()
    assert len(validation.splitlines()) == 1 + 19  # one item: unsteered and at the paper's 19 λ
    shutil.rmtree(work)
    (results / "study.json").write_text(json.dumps({**study, "paper": {}}))
    its_study.main(argv)
    assert (results / "validation.jsonl").read_text() == validation
    assert json.loads((results / "study.json").read_text())["paper"] == study["paper"]
