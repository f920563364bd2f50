"""Tests for xsteer.tasks.data: offline splits (skipped without the shared data), JSONL errors, synthetic set."""

from __future__ import annotations

import os
import re
from fractions import Fraction
from pathlib import Path

import pytest

from xsteer.tasks import VALIDATION_SIZE, task_names
from xsteer.tasks.data import (
    Example,
    default_data_dir,
    exclude_examples,
    load_examples,
    read_jsonl,
)
from xsteer.tasks.math_scoring import last_boxed
from xsteer.tasks.synthetic import SIZES as SYNTHETIC_SIZES


def _shared_data() -> Path | None:
    env = os.environ.get("XSTEER_DATA_DIR")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[2] / "shared" / "data")
    for c in candidates:
        if (c / "gsm8k" / "test.jsonl").is_file():
            return c
    return None


@pytest.fixture(scope="module")
def data_dir() -> Path:
    d = _shared_data()
    if d is None:
        pytest.skip("offline benchmark data not found (set XSTEER_DATA_DIR or provide ../shared/data)")
    return d


# ---------------------------------------------------------------------------------------------- offline


@pytest.mark.parametrize(
    "name,split,count",
    [
        ("gsm8k", "train", 7473 - VALIDATION_SIZE),
        ("gsm8k", "validation", VALIDATION_SIZE),
        ("gsm8k", "test", 1319),
        ("arc_challenge", "train", 1119),
        ("arc_challenge", "validation", 299),
        ("arc_challenge", "test", 1172),
        ("math500", "train", 4500 - VALIDATION_SIZE),
        ("math500", "validation", VALIDATION_SIZE),
        ("math500", "test", 500),
        ("math", "test", 5000),
    ],
)
def test_counts(data_dir: Path, name: str, split: str, count: int) -> None:
    items = load_examples(name, split, data_dir=data_dir)
    assert len(items) == count
    assert len({e.id for e in items}) == count  # ids are unique


@pytest.mark.parametrize("name", ["gsm8k", "math500"])
def test_train_validation_disjoint_and_cover_pool(data_dir: Path, name: str) -> None:
    train = {e.id for e in load_examples(name, "train", data_dir=data_dir)}
    val = {e.id for e in load_examples(name, "validation", data_dir=data_dir)}
    test = {e.id for e in load_examples(name, "test", data_dir=data_dir)}
    assert not train & val
    assert not (train | val) & test
    if name == "gsm8k":
        assert all(i.startswith("gsm8k/train/") for i in train | val)
        assert len(train | val) == 7473


def test_arc_splits_disjoint(data_dir: Path) -> None:
    ids = [
        {e.id for e in load_examples("arc_challenge", s, data_dir=data_dir)}
        for s in ("train", "validation", "test")
    ]
    assert not ids[0] & ids[1] and not ids[0] & ids[2] and not ids[1] & ids[2]


def test_math500_excluded_from_train_and_validation(data_dir: Path) -> None:
    test500 = load_examples("math500", "test", data_dir=data_dir)
    held = {e.id for e in test500}
    held_text = {" ".join(e.question.split()) for e in test500}
    for split in ("train", "validation"):
        items = load_examples("math500", split, data_dir=data_dir)
        assert not {e.id for e in items} & held
        assert not {" ".join(e.question.split()) for e in items} & held_text
    assert all(e.id.startswith("test/") for e in test500)


def test_math_train_offline_is_a_clear_error(data_dir: Path) -> None:
    with pytest.raises(FileNotFoundError, match="math500"):
        load_examples("math", "train", data_dir=data_dir)


def test_determinism_and_seed(data_dir: Path) -> None:
    a = load_examples("gsm8k", "validation", data_dir=data_dir, seed=0)
    b = load_examples("gsm8k", "validation", data_dir=data_dir, seed=0)
    c = load_examples("gsm8k", "validation", data_dir=data_dir, seed=1)
    assert a == b
    assert {e.id for e in a} != {e.id for e in c}
    # Train and validation loaded with the same seed never overlap.
    train1 = {e.id for e in load_examples("gsm8k", "train", data_dir=data_dir, seed=1)}
    assert not train1 & {e.id for e in c}


def test_test_split_keeps_file_order_and_limit_is_prefix(data_dir: Path) -> None:
    full = load_examples("gsm8k", "test", data_dir=data_dir)
    assert [e.id for e in full[:3]] == ["gsm8k/test/0", "gsm8k/test/1", "gsm8k/test/2"]
    assert load_examples("gsm8k", "test", data_dir=data_dir, limit=10) == full[:10]
    assert load_examples("gsm8k", "test", data_dir=data_dir, seed=5) == full  # seed never touches test
    assert load_examples("math500", "test", data_dir=data_dir, limit=0) == []


def test_gold_answers_parse(data_dir: Path) -> None:
    for split in ("train", "validation", "test"):
        for e in load_examples("gsm8k", split, data_dir=data_dir):
            int(e.answer)  # every GSM8K gold is an integer once "1,080" -> "1080"
            assert (
                e.solution and "<<" not in e.solution and ">>" not in e.solution and "####" not in e.solution
            )
        for e in load_examples("arc_challenge", split, data_dir=data_dir):
            assert e.labels is not None and e.choices is not None
            assert e.answer in e.labels and len(e.labels) == len(e.choices) in (3, 4, 5)
            assert e.answer_index is not None and e.solution is None
    for e in load_examples("math", "test", data_dir=data_dir):
        assert e.answer and e.solution is not None
        assert last_boxed(e.solution) == e.answer.strip()  # one rule for golds and predictions (scoring)
        assert e.meta["level"] in range(1, 6) and e.meta["subject"]


def test_gsm8k_mapping(data_dir: Path) -> None:
    e = load_examples("gsm8k", "test", data_dir=data_dir, limit=1)[0]
    assert e.answer == e.meta["raw_answer"].rsplit("####", 1)[1].strip().replace(",", "")
    assert e.choices is None and e.labels is None


def test_arc_keeps_numeric_labels(data_dir: Path) -> None:
    labels = {e.labels for e in load_examples("arc_challenge", "test", data_dir=data_dir)}
    assert ("1", "2", "3", "4") in labels and ("A", "B", "C", "D", "E") in labels


def test_missing_file_names_path_and_splits(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as info:
        load_examples("gsm8k", "test", data_dir=tmp_path)
    msg = str(info.value)
    assert str(tmp_path / "gsm8k" / "test.jsonl") in msg and "gsm8k" in msg and "validation" in msg


# ------------------------------------------------------------------------------------- no data needed


def test_unknown_dataset_and_split() -> None:
    with pytest.raises(ValueError, match="synthetic"):
        load_examples("mmlu", "test")
    with pytest.raises(ValueError, match="validation"):
        load_examples("synthetic", "dev")
    with pytest.raises(ValueError):
        load_examples("synthetic", "test", limit=-1)


def test_read_jsonl_reports_line_number(tmp_path: Path) -> None:
    p = tmp_path / "pairs.jsonl"
    p.write_text('{"a": 1}\n\n{"a": 2}\n{"a": 3,,}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"pairs\.jsonl:4: "):
        read_jsonl(p)
    p.write_text('{"a": 1}\n[1, 2]\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r":2: expected a JSON object"):
        read_jsonl(p)
    p.write_text('{"a": 1}\n\n{"b": "x"}\n', encoding="utf-8")
    assert read_jsonl(p) == [{"a": 1}, {"b": "x"}]


def test_default_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("XSTEER_DATA_DIR", raising=False)
    assert default_data_dir() is None
    monkeypatch.setenv("XSTEER_DATA_DIR", str(tmp_path))
    assert default_data_dir() == tmp_path


def test_example_hash_ignores_meta() -> None:
    a = Example(id="x", question="q", answer="1", meta={"k": 1})
    b = Example(id="x", question="q", answer="1", meta={"k": 2})
    assert a == b and hash(a) == hash(b)
    assert exclude_examples([a, Example(id="y", question="q", answer="2")], ["x"])[0].id == "y"


def test_last_boxed() -> None:
    assert last_boxed(r"so $\boxed{\frac{1}{2}}$ and") == r"\frac{1}{2}"
    assert last_boxed(r"\boxed{1} then \boxed{2}") == "2"
    assert last_boxed(r"answer $\boxed 5$.") == "5"
    assert last_boxed("no box") is None


_EQUATION = re.compile(r"(\d+) ([-+*/]) (\d+) = (\d+)")


def _recompute(ops: tuple[tuple[int | str, ...], ...]) -> Fraction:
    value = Fraction(0)
    for op in ops:
        kind, args = op[0], op[1:]
        if kind == "start":
            value = Fraction(args[0])
        elif kind == "buy":
            value += args[0]
        elif kind == "sell":
            value -= args[0]
        elif kind == "multiply":
            value += args[0] * args[1]
        elif kind == "share":
            value /= args[0]
        else:
            raise AssertionError(kind)
    return value


def test_synthetic_answers_verified_by_recomputation() -> None:
    for split in ("train", "validation", "test"):
        items = load_examples("synthetic", split)
        assert len(items) == SYNTHETIC_SIZES[split]
        for e in items:
            ops = e.meta["ops"]
            assert 2 <= len(ops) - 1 <= 4
            value = _recompute(ops)
            assert value.denominator == 1 and value > 0  # exact integer answers
            assert e.answer == str(int(value))
            assert e.meta["raw_answer"].endswith(f"#### {e.answer}")
            # Every equation written in the reference solution is arithmetically right.
            equations = _EQUATION.findall(e.solution or "")
            assert len(equations) >= len(ops) - 1
            for a, op, b, c in equations:
                a, b, c = int(a), int(b), int(c)
                assert {"+": a + b, "-": a - b, "*": a * b, "/": a // b if a % b == 0 else None}[op] == c
            assert equations[-1][3] == e.answer


def test_synthetic_disjoint_and_deterministic() -> None:
    splits = {s: load_examples("synthetic", s) for s in ("train", "validation", "test")}
    questions = {s: {e.question for e in items} for s, items in splits.items()}
    assert all(len(questions[s]) == len(splits[s]) for s in splits)  # no duplicates within a split
    assert not questions["train"] & questions["validation"]
    assert not questions["train"] & questions["test"]
    assert not questions["validation"] & questions["test"]
    assert load_examples("synthetic", "test") == splits["test"]
    assert load_examples("synthetic", "test", seed=1) != splits["test"]
    assert load_examples("synthetic", "train", limit=7) == splits["train"][:7]


class _FakeDatasetDict(dict):
    """Stands in for datasets.DatasetDict: split name -> list of row dicts."""


def _fake_hub(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str | None]]:
    """Patch datasets.load_dataset with tiny in-memory tables; returns the list of calls made."""
    datasets = pytest.importorskip("datasets")
    calls: list[tuple[str, str | None]] = []
    shared = {
        "problem": "Shared problem.",
        "solution": "So $\\boxed{7}$.",
        "level": "Level 2",
        "type": "Algebra",
    }
    tables = {
        ("openai/gsm8k", "main"): {
            "train": [{"question": f"q{i}", "answer": f"a <<1+1=2>>2\n#### 1,00{i}"} for i in range(600)],
            "test": [{"question": "t", "answer": "x\n#### 5"}],
        },
        ("allenai/ai2_arc", "ARC-Challenge"): {
            "test": [
                {
                    "id": "a1",
                    "question": "Q",
                    "choices": {"text": ["x", "y"], "label": ["A", "B"]},
                    "answerKey": "B",
                }
            ]
        },
        ("HuggingFaceH4/MATH-500", None): {
            "test": [
                {
                    **shared,
                    "answer": "7",
                    "subject": "Algebra",
                    "level": 2,
                    "unique_id": "test/algebra/1.json",
                }
            ]
        },
        ("EleutherAI/hendrycks_math", "algebra"): {
            "test": [shared]
            + [
                {"problem": f"P{i}", "solution": f"$\\boxed{{{i}}}$", "level": "Level ?", "type": "Algebra"}
                for i in range(520)
            ],
            "train": [{"problem": "T", "solution": "$\\boxed{1}$", "level": "Level 1", "type": "Algebra"}]
            * 501,
        },
    }

    def load_dataset(repo: str, config: str | None = None) -> _FakeDatasetDict:
        calls.append((repo, config))
        if (repo, config) not in tables:
            return _FakeDatasetDict({"train": [], "test": []})
        return _FakeDatasetDict(tables[(repo, config)])

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    monkeypatch.delenv("XSTEER_DATA_DIR", raising=False)
    return calls


def test_hub_path_maps_rows_like_jsonl(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _fake_hub(monkeypatch)
    test = load_examples("gsm8k", "test")
    assert test[0] == Example(id="gsm8k/test/0", question="t", answer="5", solution="x")
    train = load_examples("gsm8k", "train")
    assert len(train) == 100 and train[0].solution == "a 2"
    assert calls[0] == ("openai/gsm8k", "main")
    arc = load_examples("arc_challenge", "test")
    assert arc[0].labels == ("A", "B") and arc[0].answer_index == 1
    with pytest.raises(FileNotFoundError, match="available splits: test"):
        load_examples("arc_challenge", "train")
    # math500 train: the mirror's test split minus the MATH-500 problems (matched on text).
    pool = load_examples("math500", "train") + load_examples("math500", "validation")
    assert len(pool) == 520 and all(e.question != "Shared problem." for e in pool)
    assert pool[0].meta["level"] is None and pool[0].id.startswith("hub/test/algebra/")
    assert load_examples("math500", "test")[0].id == "test/algebra/1.json"


def test_datasets_constant() -> None:
    assert task_names() == ("gsm8k", "math", "math500", "arc_challenge", "synthetic")
