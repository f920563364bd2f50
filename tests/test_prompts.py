"""Tests for xsteer.tasks.prompts with tiny in-test tokenizers (no network, no real models)."""

from __future__ import annotations

import pytest

pytest.importorskip("tokenizers")
pytest.importorskip("transformers")

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors  # noqa: E402
from transformers import PreTrainedTokenizerFast  # noqa: E402

from xsteer.core.models import encode, prepare_tokenizer  # noqa: E402
from xsteer.tasks import get_task  # noqa: E402
from xsteer.tasks.data import Example, load_examples  # noqa: E402
from xsteer.tasks.prompts import (  # noqa: E402
    render,
    render_pair_text,
)

# The task objects own prompts and exemplars; these names keep the tests below about prompts, not plumbing.
SYSTEM_PROMPTS = {name: get_task(name).system_prompt for name in ("math", "gsm8k", "arc_challenge")}


def few_shot_examples(dataset, n=5, *, train=None, seed=0):
    return get_task(dataset).shots(n, train=train, seed=seed)


def format_answer(dataset, example):
    return get_task(dataset).format_answer(example)


def format_question(dataset, example):
    return get_task(dataset).format_question(example)


def arc_loglik_request(example):
    return get_task("arc_challenge").loglik_request(example)


def build_messages(dataset, example, shots, *, system=True):
    return get_task(dataset).messages(example, shots, system=system)


CHATML = (
    "{{ bos_token }}{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# Gemma-2 style: no system role.
NO_SYSTEM = (
    "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
    "{% for m in messages %}<start_of_turn>{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n"
    "{{ m['content'] | trim }}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


def _tokenizer(template: str | None) -> PreTrainedTokenizerFast:
    """Byte-level tokenizer with no merges (one token per byte) that adds BOS, like Llama/Gemma."""
    specials = ["<s>", "</s>", "<|im_start|>", "<|im_end|>", "<start_of_turn>", "<end_of_turn>"]
    vocab = {t: i for i, t in enumerate(specials + sorted(pre_tokenizers.ByteLevel.alphabet()))}
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, bos_token="<s>", eos_token="</s>", additional_special_tokens=specials[2:]
    )
    tok.chat_template = template
    return tok


@pytest.fixture(scope="module")
def chatml() -> PreTrainedTokenizerFast:
    return _tokenizer(CHATML)


@pytest.fixture(scope="module")
def plain() -> PreTrainedTokenizerFast:
    return _tokenizer(None)


def _math_train() -> list[Example]:
    return [
        Example(
            id=f"train/{i}", question=f"What is {i}+1?", answer=str(i + 1), solution=f"$\\boxed{{{i + 1}}}$"
        )
        for i in range(30)
    ] + [Example(id="train/asy", question="figure", answer="1", solution="[asy]draw();[/asy] $\\boxed{1}$")]


def test_system_prompts_restored() -> None:
    assert set(SYSTEM_PROMPTS) == {"math", "gsm8k", "arc_challenge"}
    for text in SYSTEM_PROMPTS.values():
        assert "<p>" not in text and "<code>" not in text and "<ol" not in text
    assert SYSTEM_PROMPTS["math"].count("\\boxed{answer}") == 2
    assert "#### The final answer is:" in SYSTEM_PROMPTS["gsm8k"]
    assert "[answer]" in SYSTEM_PROMPTS["arc_challenge"]


@pytest.mark.parametrize("dataset", ["gsm8k", "arc_challenge", "math", "math500", "synthetic"])
def test_few_shot_count(dataset: str) -> None:
    shots = few_shot_examples(dataset, train=_math_train() if "math" in dataset else None)
    assert len(shots) == 5
    assert len({s.id for s in shots}) == 5
    assert len(few_shot_examples(dataset, 3, train=_math_train() if "math" in dataset else None)) == 3


def test_gsm8k_shots_are_wei_et_al() -> None:
    shots = few_shot_examples("gsm8k")
    assert shots[0].question.startswith("There are 15 trees in the grove.")
    assert format_answer("gsm8k", shots[0]).endswith("21 - 15 = 6.\n#### The final answer is: 6")
    assert [s.answer for s in shots] == ["6", "5", "39", "8", "9"]
    with pytest.raises(ValueError):
        few_shot_examples("gsm8k", 9)


def test_math_shots_drawn_only_from_train() -> None:
    train = _math_train()
    shots = few_shot_examples("math500", train=train, seed=3)
    ids = {e.id for e in train}
    assert all(s.id in ids for s in shots)
    assert all("[asy]" not in (s.solution or "") for s in shots)
    # Deterministic, and independent of the order the pool was loaded in.
    assert shots == few_shot_examples("math500", train=list(reversed(train)), seed=3)
    assert shots != few_shot_examples("math500", train=train, seed=4)
    assert all("\\boxed" in format_answer("math", s) for s in shots)


def test_synthetic_shots_from_synthetic_train() -> None:
    train_ids = {e.id for e in load_examples("synthetic", "train")}
    shots = few_shot_examples("synthetic")
    assert all(s.id in train_ids for s in shots)
    assert format_answer("synthetic", shots[0]).endswith(f"#### The final answer is: {shots[0].answer}")


def test_arc_question_and_answer_format() -> None:
    ex = Example(
        id="x",
        question="Which is a gas?",
        answer="3",
        choices=("rock", "water", "steam"),
        labels=("1", "2", "3"),
    )
    assert format_question("arc_challenge", ex) == "Which is a gas?\n1. rock\n2. water\n3. steam"
    assert format_answer("arc_challenge", ex) == "Final Answer: [3]"
    shot = few_shot_examples("arc_challenge")[0]
    assert format_answer("arc_challenge", shot).endswith(f"[{shot.answer}]")
    ctx, conts = arc_loglik_request(ex)
    assert ctx == "Question: Which is a gas?\nAnswer:" and conts == [" rock", " water", " steam"]
    assert ex.answer_index == 2


def test_build_messages_structure() -> None:
    shots = few_shot_examples("gsm8k")
    ex = Example(id="q", question="How many?", answer="1", solution="1.")
    msgs = build_messages("gsm8k", ex, shots)
    assert [m["role"] for m in msgs] == ["system"] + ["user", "assistant"] * 5 + ["user"]
    assert msgs[0]["content"] == SYSTEM_PROMPTS["gsm8k"] and msgs[-1]["content"] == "How many?"
    assert build_messages("gsm8k", ex, shots, system=False)[0]["role"] == "user"


def test_render_with_chat_template(chatml: PreTrainedTokenizerFast) -> None:
    msgs = [{"role": "system", "content": "SYS"}, {"role": "user", "content": "hi"}]
    text = render(chatml, msgs)
    # The template's BOS stays in the text; encode() drops it because this tokenizer adds its own.
    assert text == (
        "<s><|im_start|>system\nSYS<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    )
    ids = encode(prepare_tokenizer(chatml), [text])["input_ids"][0].tolist()
    assert ids.count(chatml.bos_token_id) == 1 and ids[0] == chatml.bos_token_id


def test_render_template_without_system_role() -> None:
    tok = _tokenizer(NO_SYSTEM)
    text = render(tok, [{"role": "system", "content": "SYS"}, {"role": "user", "content": "hi"}])
    assert text == "<start_of_turn>user\nSYS\n\nhi<end_of_turn>\n<start_of_turn>model\n"


def test_render_plain_fallback(plain: PreTrainedTokenizerFast) -> None:
    msgs = [
        {"role": "system", "content": "SYS"},
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "q2"},
    ]
    expected = "SYS\n\nQuestion: q1\nAnswer: a1\n\nQuestion: q2\nAnswer:"
    assert render(plain, msgs) == expected
    assert render(None, msgs) == expected
    assert "<|im_start|>" not in render(plain, build_messages("gsm8k", few_shot_examples("gsm8k")[0], []))


@pytest.mark.parametrize("template", [CHATML, NO_SYSTEM, None])
def test_render_pair_text_ends_with_response(template: str | None) -> None:
    tok = _tokenizer(template)
    response = "First 2 + 3 = 5.\n#### The final answer is: 5"
    text = render_pair_text(tok, "What is 2+3?", response + "\n", system="SYS")
    assert text.endswith(response)
    assert "What is 2+3?" in text and "SYS" in text
    # The last token of the encoded text is the last token of the response, not an end-of-turn token.
    ids = tok(text)["input_ids"]
    assert tok.decode(ids[-1:]) == response[-1]
    if template is None:
        assert text == "SYS\n\nQuestion: What is 2+3?\nAnswer: " + response
        assert not text.startswith("<s>")


def test_render_pair_text_short_response(chatml: PreTrainedTokenizerFast) -> None:
    # A one-letter response that also occurs inside the end marker "</s>" must not confuse trimming.
    tok = _tokenizer(CHATML + "</s>")
    assert render_pair_text(tok, "q", "s").endswith("assistant\ns")
    assert render_pair_text(chatml, "q", "B").endswith("assistant\nB")
