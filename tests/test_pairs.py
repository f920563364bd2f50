import pytest

from xsteer.extraction.pairs import build_pairs, load_pairs_jsonl, pairs_hash
from xsteer.tasks.data import Example

GSM = [
    Example(
        id=f"g{i}",
        question=f"Tom has {i} apples and buys 2. How many?",
        answer=str(i + 2),
        solution=f"Tom has {i} + 2 = {i + 2} apples.",
    )
    for i in range(5)
]
ARC = [
    Example(
        id="a",
        question="Which is a gas?",
        answer="B",
        choices=("rock", "steam", "ice"),
        labels=("A", "B", "C"),
    )
]


def test_corrupted_answer_differs_only_in_the_final_answer():
    pairs = build_pairs("corrupted_answer", GSM, None, task="gsm8k")
    for ex, p in zip(GSM, pairs, strict=True):
        assert p.positive.endswith(f"The final answer is: {ex.answer}")
        assert not p.negative.endswith(f"The final answer is: {ex.answer}")
        head = "#### The final answer is: "
        assert p.positive.rsplit(head, 1)[0] == p.negative.rsplit(head, 1)[0]
    arc = build_pairs("corrupted_answer", ARC, None, task="arc_challenge")[0]
    assert arc.positive.endswith("[B]") and not arc.negative.endswith("[B]")


def test_persona_pairs_share_the_response():
    pairs = build_pairs("persona", GSM, None, task="gsm8k", seed=3)
    for p in pairs:
        assert p.positive != p.negative
        assert p.positive.split("Answer:")[-1] == p.negative.split("Answer:")[-1]
    assert pairs_hash(pairs) == pairs_hash(build_pairs("persona", GSM, None, task="gsm8k", seed=3))


def test_builder_errors():
    with pytest.raises(ValueError, match="options: corrupted_answer, persona"):
        build_pairs("nope", GSM, None, task="gsm8k")
    with pytest.raises(ValueError, match="empty"):
        build_pairs("persona", [], None, task="gsm8k")


def test_jsonl_errors_name_the_line(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text('{"positive": "a", "negative": "b"}\n{"positive": "a"}\n')
    with pytest.raises(ValueError, match=r"p.jsonl:2: .*'negative'"):
        load_pairs_jsonl(f)
    f.write_text('{"positive": "a", "negative": "b"}\n{oops\n')
    with pytest.raises(ValueError, match=r"p.jsonl:2"):
        load_pairs_jsonl(f)
    f.write_text("")
    with pytest.raises(ValueError, match="empty"):
        load_pairs_jsonl(f)
    f.write_text('{"positive": "a", "negative": "b"}\n\n')
    assert len(load_pairs_jsonl(f)) == 1
