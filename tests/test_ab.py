"""Behavioural A/B concepts (xsteer.tasks.concepts.ab): the in-house sets, the readout against a hand-computed
log-probability difference, the CAA and model-written-evals loaders, and bad input as one line each."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from xsteer.core.vectors import SteeringVectors
from xsteer.tasks.concepts import Concept, ConceptError, ab, load_concept, register_concept
from xsteer.tasks.concepts.registry import _NAMES


def _item(q: str, a: str, b: str, matching: str = "(A)", other: str = "(B)", **extra) -> dict:
    return {
        "question": f"{q}\n\nChoices:\n (A) {a}\n (B) {b}",
        "answer_matching_behavior": matching,
        "answer_not_matching_behavior": other,
        **extra,
    }


def _write(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _items(n: int, **extra) -> list[dict]:
    return [_item(f"Question number {i}?", f"yes {i}", f"no {i}", **extra) for i in range(n)]


# ---------------------------------------------------------------------------------------------- in-house sets
@pytest.mark.parametrize("name", ab.INHOUSE)
def test_inhouse_set_is_large_balanced_and_keeps_held_out_items_unseen(name):
    c = load_concept(f"ab:{name}", min_pairs=8, min_probes=8)
    assert isinstance(c, Concept) and c.name == f"ab:{name}" and c.source == f"builtin:ab:{name}"
    assert len(c.pairs) + len(c.probes) >= 60
    assert (len(c.pairs), len(c.probes)) == (2 * 43, 21)  # a seeded third held out; pair items in both orders
    # Pairs differ in the answer letter only; every pair item comes in both orders, so each letter ends exactly
    # half of the positive texts and of the negative ones and cancels out of the mean difference.
    assert all(
        p[:-1] == n[:-1] and p.endswith("Answer: (" + p[-1]) and {p[-1], n[-1]} == {"A", "B"}
        for p, n in c.pairs
    )
    assert sum(p[-1] == "A" for p, _ in c.pairs) == 43
    for (p1, _), (p2, _) in zip(c.pairs[::2], c.pairs[1::2], strict=True):
        q = p1[: p1.index("\nChoices:")]
        assert p2.startswith(q) and {p1[-1], p2[-1]} == {"A", "B"}
    # The held-out items are each read once, the matching letter at (A) for exactly half (rounded up).
    assert sum(p.matching == "A" for p in c.probes) == 11
    seen = {p[: p.index("\nChoices:")] for p, _ in c.pairs}
    assert not seen & {p.prompt[: p.prompt.index("\nChoices:")] for p in c.probes}
    header = json.loads((ab.DATA_DIR / f"{name}.jsonl").read_text().splitlines()[0])
    assert header["ab"] == name and "MIT" in header["licence"]


def test_another_seed_shows_other_orders_but_the_same_items():
    a, b = load_concept("ab:refusal", seed=0), load_concept("ab:refusal", seed=1)
    assert a.pairs != b.pairs
    assert len(a.pairs) + len(a.probes) == len(b.pairs) + len(b.probes)


def test_in_house_format_file_by_bare_path(tmp_path):
    rows = [{"ab": "mine", "description": "d"}, *_items(9)]
    c = load_concept(_write(tmp_path / "mine.jsonl", rows))
    assert c.name == "ab:mine" and (len(c.pairs), len(c.probes)) == (12, 3)


# ---------------------------------------------------------------------------------------------- the readout
def test_the_readout_is_the_log_probability_difference_of_the_two_letters(tiny):
    c = ab.build(
        "t", "", "test", [ab.parse_item(r, f"x:{i}") for i, r in enumerate(_items(6))], ab.ConceptOptions()
    )
    readout = c.readout_for(tiny.tokenizer)
    got = readout(tiny, None, [0.0])[0]
    tok = tiny.tokenizer
    expected = []
    for p in c.probes:
        ids = torch.tensor([tok(p.prompt).input_ids])
        with torch.no_grad():
            lp = torch.log_softmax(tiny(ids)[0, -1].float(), dim=-1)
        a, b = tok.convert_tokens_to_ids("A"), tok.convert_tokens_to_ids("B")
        expected.append(float(lp[a] - lp[b]) if p.matching == "A" else float(lp[b] - lp[a]))
    assert {p.matching for p in c.probes} == {"A", "B"}  # both signs are exercised
    torch.testing.assert_close(got, torch.tensor(expected), atol=1e-4, rtol=1e-4)
    # Many vectors at once read as each alone.
    stack = torch.randn(2, tiny.cfg.n_layers, tiny.cfg.d_model, generator=torch.Generator().manual_seed(0))
    together = readout.read_stack(tiny, stack, [-1.0, 1.0], layers=[1, 2])
    for i in range(2):
        v = SteeringVectors(stack[i], "tiny-llama", "x", (1, 2))
        torch.testing.assert_close(together[i], readout(tiny, v, [-1.0, 1.0]), atol=2e-4, rtol=1e-4)


def test_a_tokenizer_that_merges_the_letter_cannot_read_it():
    class Merging:
        def __call__(self, text):
            ids = [ord(ch) for ch in text.replace("(A", "\x01").replace("(B", "\x02")]
            return type("Enc", (), {"input_ids": ids})()

    with pytest.raises(ConceptError, match="own token"):
        ab.letter_id(Merging(), "Answer: (", "A")


# ---------------------------------------------------------------------------------------------- loaders
def test_model_written_evals_file_by_path_with_yes_no_answers(tmp_path):
    rows = [
        {
            "question": f'Is the following statement something you would say?\n"I like rule {i}"',
            "statement": f"I like rule {i}",
            "answer_matching_behavior": " Yes",
            "answer_not_matching_behavior": [" No"],
        }
        for i in range(12)
    ]
    c = load_concept(_write(tmp_path / "persona.jsonl", rows))
    assert c.name == "ab:persona" and (len(c.pairs), len(c.probes)) == (16, 4)
    # The two answers are the options; the positive text ends in the letter of "Yes", the negative in that of "No".
    assert all(f"({p[-1]}) Yes\n" in p and f"({n[-1]}) No\n" in n for p, n in c.pairs)
    assert {p[-1] for p, _ in c.pairs} == {"A", "B"}
    assert load_concept(f"ab:{tmp_path / 'persona.jsonl'}").pairs == c.pairs


def test_caa_files_load_from_the_source_once_then_from_the_cache(tmp_path, monkeypatch):
    src = tmp_path / "caa"
    for rel, n in (("generate/refusal/generate_dataset.json", 10), ("test/refusal/test_dataset_ab.json", 4)):
        (src / rel).parent.mkdir(parents=True)
        rows = [_item(f"{rel[:4]} {i}?", f"refuse {i}", f"comply {i}") for i in range(n)]
        (src / rel).write_text(json.dumps(rows))
    monkeypatch.setenv("XSTEER_CAA_URL", src.as_uri())
    monkeypatch.setenv("XSTEER_CACHE", str(tmp_path / "cache"))
    c = load_concept("caa:refusal")
    assert (c.name, c.source, len(c.pairs), len(c.probes)) == ("ab:refusal", "caa:refusal", 20, 4)
    assert all(p.prompt.startswith("Question: test") for p in c.probes)
    monkeypatch.setenv("XSTEER_CAA_URL", (tmp_path / "gone").as_uri())
    assert load_concept("caa:refusal").pairs == c.pairs  # read from the cache, not the source


def test_caa_offline_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("XSTEER_CAA_URL", (tmp_path / "nowhere").as_uri())
    monkeypatch.setenv("XSTEER_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ConceptError) as e:
        load_concept("caa:sycophancy")
    msg = str(e.value)
    assert "\n" not in msg and "cannot download" in msg and "ab:" in msg
    with pytest.raises(ConceptError, match="unknown CAA behaviour 'honesty'; options: coordinate-other-ais"):
        load_concept("caa:honesty")


# ---------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (
            [
                {
                    "question": "Q?\n\nChoices:\n (A) yes",
                    "answer_matching_behavior": "(A)",
                    "answer_not_matching_behavior": "(B)",
                }
            ],
            r"bad\.jsonl:1: the question lists option \(A\) only; an A/B item needs two options",
        ),
        (
            [_item("Q?", "yes", "no", matching="(C)")],
            r"bad\.jsonl:1: the matching answer '\(C\)' is not among the options \(A\), \(B\)",
        ),
        (
            [*_items(3, split="pair"), _item("Question number 1?", "yes 1", "no 1", split="held_out")],
            r"bad\.jsonl:4: duplicate question in both the pairs and the held-out items \(also .*bad\.jsonl:2\)",
        ),
        (
            [_item("Q?", "yes", "no", matching="(B)", other="(B)")],
            r"bad\.jsonl:1: the matching and the other answer are the same",
        ),
        ([_item("Q?", "yes", "no", split="test")], r"bad\.jsonl:1: 'split' must be one of"),
        (
            [{"question": "Q?", "answer_matching_behavior": "(A)"}],
            r"bad\.jsonl:1: 'answer_not_matching_behavior' must be",
        ),
        ([*_items(3, split="pair")], r"needs pair items and held-out items, got 3 and 0"),
    ],
)
def test_bad_ab_files_are_one_clear_line(tmp_path, rows, message):
    path = _write(tmp_path / "bad.jsonl", rows)
    with pytest.raises(ConceptError, match=message) as e:
        load_concept(f"ab:{path}")
    assert "\n" not in str(e.value)


def test_too_few_items_and_unknown_sets_are_refused(tmp_path):
    path = _write(tmp_path / "small.jsonl", _items(6))
    with pytest.raises(ConceptError, match="has 2 probes, fewer than the 8 required"):
        load_concept(f"ab:{path}", min_probes=8)
    with pytest.raises(
        ConceptError, match="unknown A/B set 'honesty': in-house sets are sycophancy, refusal"
    ):
        load_concept("ab:honesty")
    with pytest.raises(ConceptError, match="names the kind 'ab' but nothing of it"):
        load_concept("ab:")


# ---------------------------------------------------------------------------------------------- registry
def test_register_a_concept_by_name(monkeypatch):
    monkeypatch.setattr("xsteer.tasks.concepts.registry._NAMES", dict(_NAMES))
    register_concept("refusal-small", lambda name, o: ab.load("refusal", o))
    assert load_concept("refusal-small").pairs == load_concept("ab:refusal").pairs
    with pytest.raises(ConceptError.__mro__[1], match="already registered"):
        register_concept("refusal-small", lambda name, o: ab.load("refusal", o))
    with pytest.raises(ConceptError, match=r"unknown concept 'nope'.*ab:NAME.*caa:BEHAVIOUR"):
        load_concept("nope")


def test_fidelity_takes_an_ab_concept_and_refuses_a_bad_one_before_any_model(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from xsteer.app import fidelity as study
    from xsteer.app.cli import main
    from xsteer.app.fidelity import FidelitySpec

    assert FidelitySpec(parents=("p",), children=("c",), concepts=("ab:refusal",)).concepts == ("ab:refusal",)

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded: the bad concept was not refused first")

    monkeypatch.setattr(study, "load_model", no_model)
    bad = _write(tmp_path / "bad.jsonl", [_item("Q?", "yes", "no", matching="(C)")])
    args = ["fidelity", "--parent", "gemma3-270m", "--child", "smollm2-135m", "--out", str(tmp_path / "o")]
    res = CliRunner().invoke(main, [*args, "--concept", f"ab:{bad}"])
    assert res.exit_code != 0 and "the matching answer '(C)' is not among the options" in res.output
    assert res.output.strip().count("\n") == 0, res.output


# ---------------------------------------------------------------------------------------------- xsteer evaluate
def test_an_ab_set_is_a_task_whose_baseline_agrees_with_the_concept_readout(tiny_dir, tmp_path):
    """``xsteer extract --pairs ab:refusal`` then ``xsteer evaluate --dataset ab:refusal --mode loglik``: the
    unsteered child picks the behaviour-matching letter exactly where the concept's readout is positive."""
    from click.testing import CliRunner

    from xsteer.app.cli import main
    from xsteer.core.models import load_model
    from xsteer.tasks import get_task

    task = get_task("ab:refusal")
    assert task.multiple_choice and task is get_task("ab:refusal")
    assert len(task.load("test")) == 21 and {e.answer for e in task.load("test")} == {"A", "B"}
    vec = tmp_path / "v.safetensors"
    run = CliRunner().invoke
    res = run(
        main,
        [
            "extract",
            "--parent",
            str(tiny_dir),
            "--pairs",
            "ab:refusal",
            "--method",
            "mean_diff",
            "--out",
            str(vec),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "86 pairs" in res.output
    out = tmp_path / "run"
    args = [
        "--dataset",
        "ab:refusal",
        "--mode",
        "loglik",
        "--val-items",
        "2",
        "--test-items",
        "6",
        "--lambdas",
        "0,4",
    ]
    res = run(
        main,
        [
            "evaluate",
            "--child",
            str(tiny_dir),
            "--vectors",
            f"refusal={vec}",
            *args,
            "--no-self-consistency",
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    base = {r["item"]: r for r in rows if r["condition"] == "baseline" and r["split"] == "test"}
    assert len(base) == 6
    child = load_model(str(tiny_dir), device="cpu")
    values = load_concept("ab:refusal").readout_for(child.tokenizer)(child, None, [0.0])[0][:6]
    for i, value in enumerate(values.tolist()):
        r = base[f"ab:refusal/test/{i}"]
        lp = dict(zip("AB", r["logprobs"], strict=True))
        other = "B" if r["gold"] == "A" else "A"
        assert lp[r["gold"]] - lp[other] == pytest.approx(
            value, abs=1e-4
        )  # the task reads what the concept reads
        assert r["correct"] == (value > 0)


def test_unknown_task_names_the_ab_sets():
    from xsteer.errors import InputError
    from xsteer.tasks import get_task

    with pytest.raises(
        InputError, match=r"unknown task 'mmlu'; options: gsm8k.*ab:NAME, ab:PATH, caa:BEHAVIOUR"
    ):
        get_task("mmlu")
    with pytest.raises(ConceptError, match="unknown A/B set 'nope'"):
        get_task("ab:nope")
