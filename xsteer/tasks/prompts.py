"""Prompts: the paper's system prompts (Appendix A), 5-shot exemplars and chat rendering.

Generation prompts are chat conversations (:func:`build_messages`) rendered through the child
model's own chat template (:func:`render`). Models without a template (base models such as the
Gemma-3-270M GGUF, which echo nonsense when fed chat markup) get a documented plain
"Question:/Answer:" fallback. Rendered text is kept exactly as the template writes it, BOS included:
:func:`xsteer.core.models.encode` removes a leading BOS only for tokenizers that add one themselves
(SmolLM2's BOS *is* ``<|im_start|>``, the first token of every ChatML turn, and must stay).

Answer formats shots end with (what the scorer should look for):

* gsm8k / synthetic: ``#### The final answer is: N`` (the paper's GSM8K format);
* math / math500: ``\\boxed{answer}`` (inside the reference solution);
* arc_challenge: the option label in brackets, ``Final Answer: [B]``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from .data import Example, default_data_dir, load_examples

__all__ = [
    "ARC_SHOTS",
    "GSM8K_COT_SHOTS",
    "SYSTEM_PROMPTS",
    "arc_loglik_request",
    "build_messages",
    "few_shot_examples",
    "format_answer",
    "format_question",
    "prompt_family",
    "render",
    "render_pair_text",
]

# --------------------------------------------------------------------------------------------------
# System prompts (paper, Appendix A, Tables 2-4)
# --------------------------------------------------------------------------------------------------
# Restoration notes. The paper's PDF->text extraction turned the prompts into HTML fragments
# (<p>, <ol style="list-style-type: none">, <ul>) and dropped LaTeX/markup inside <code>:
#   * MATH (Table 2): both occurrences of "<code>answer</code>" were "\boxed{answer}" -- the prompt
#     itself says "state the final answer in a box", and MATH's reference solutions use \boxed.
#     The wording around it ("The format for the final answer should \boxed{answer}.") is kept
#     verbatim, without guessing a lost "be".
#   * ARC-c (Table 4): "<code>[answer]</code>" kept its brackets; the code tags are dropped. The
#     intended format is the option label in brackets, e.g. "[B]", which the ARC few-shot exemplars
#     demonstrate (the prompt itself keeps the paper's literal "[answer]").
#   * GSM8K (Table 3): no marker was lost; "#### The final answer is: [...]" is the paper's format and
#     the "**...**" are literal markdown asterisks in the prompt.
# HTML paragraphs became blank-line separated paragraphs and list items became lines (the lists were
# unnumbered, "list-style-type: none": numbers appear only where the item text carries them; ARC's
# nested sub-items are shown as "- " lines). No other words were changed.

_MATH_SYSTEM = """\
You are an expert mathematician and a meticulous problem solver. Your task is to solve the following math problem from the MATH dataset. Follow these instructions carefully:

1. Understand the Problem: Read the problem statement carefully and identify the key information, the question being asked, and any constraints.
2. Formulate a Plan: Outline the steps you will take to solve the problem. State the mathematical concepts, formulas, or theorems you will use.
3. Show Your Work: Execute your plan step-by-step, showing all your reasoning and calculations clearly. This is crucial for understanding your thought process.
4. Final Answer: After your detailed solution, clearly state the final answer in a box. The format for the final answer should \\boxed{answer}.

Let's break down your response structure:

- Step-by-step thinking: Present your reasoning in a logical and sequential manner. Explain each step of your calculation.
- Clarity and Precision: Use precise mathematical language and notation.
- Final Answer Encapsulation: The final numerical or symbolic answer must be enclosed in \\boxed{answer}."""

_GSM8K_SYSTEM = """\
You are an expert AI assistant specializing in solving grade-school math word problems (GSM8K). Your primary goal is to provide a clear, accurate, and step-by-step solution to the given problem. You must act as a meticulous and logical thinker.

**Core Instructions:**

1. **Deconstruct the Problem:** Read the word problem carefully. Identify all the given numbers, quantities, and the relationships between them. Clearly understand what question needs to be answered.
2. **Think Step-by-Step:** Do not try to solve the problem in a single leap. Break it down into smaller, manageable steps. Your reasoning process is more important than the final answer.
3. **Show Your Work:** For each step, explain the logic behind it and show the calculation. For example, instead of just writing "10 - 4 = 6", write "To find the number of remaining apples, I subtract the 4 apples that were eaten from the initial 10 apples: 10 - 4 = 6."
4. **Double-Check Your Work:** Before concluding, review your steps. Do they logically follow each other? Are the arithmetic calculations correct? Does the final answer make sense in the context of the problem?
5. **Strict Output Format:** You MUST present your entire response in the following format. Do not add any conversational text before or after this structure.

#### Step-by-step derivation:

1. [First logical step and calculation, explained clearly.]
2. [Second logical step and calculation, explained clearly.]
...
N. [The final step that arrives at the answer.]

#### The final answer is: [The final numerical answer only]"""

_ARC_SYSTEM = """\
You are an expert AI assistant specializing in scientific reasoning and problem-solving. Your task is to meticulously analyze and answer multiple-choice questions from the AllenAI ARC dataset. These questions require deep understanding and logical reasoning, not just fact recall.

Your response must be structured in two distinct parts: your detailed Reasoning Process followed by the Final Answer in a specified format.

Part 1: Reasoning Process

Before providing the final answer, you must first work through the following structured thinking process. This section should contain your detailed analysis.

Deconstruct the Question:
- Identify the core scientific concept being tested.
- Break down the question into its fundamental components and constraints.
- Paraphrase the question to confirm your understanding of what is being asked.
Analyze the Options:
- Evaluate each multiple-choice option independently.
- For each option, explain the scientific principles or logic that support or refute it.
- Critically assess the validity of each choice in the context of the question.
Synthesize and Conclude:
- Provide a step-by-step chain of thought that logically connects the question's requirements to the most plausible answer.
- Explicitly compare the options and eliminate the incorrect ones based on your analysis, leading to your final conclusion.
Always remember to encapsulate the final answer as mentioned in Part 2.

Part 2: Final Answer

Final Answer Encapsulation: The final answer must be enclosed in [answer]."""

SYSTEM_PROMPTS: dict[str, str] = {
    "math": _MATH_SYSTEM,
    "gsm8k": _GSM8K_SYSTEM,
    "arc_challenge": _ARC_SYSTEM,
}

# Datasets that share another dataset's prompts and answer format.
_FAMILY: dict[str, str] = {
    "gsm8k": "gsm8k",
    "synthetic": "gsm8k",
    "math": "math",
    "math500": "math",
    "arc_challenge": "arc_challenge",
}

GSM8K_FINAL = "#### The final answer is: {answer}"
ARC_FINAL = "Final Answer: [{answer}]"


def prompt_family(dataset: str) -> str:
    """The prompt family ("gsm8k", "math" or "arc_challenge") whose prompts ``dataset`` uses."""
    try:
        return _FAMILY[dataset]
    except KeyError:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {tuple(_FAMILY)}") from None


# --------------------------------------------------------------------------------------------------
# Few-shot exemplars
# --------------------------------------------------------------------------------------------------
# GSM8K: the eight chain-of-thought exemplars of Wei et al. (2022), the ones lm-eval's gsm8k-cot uses
# (also the few-shot set of Kojima et al. 2022, which the paper cites). ``solution`` is the rationale
# without its closing "The answer is N."; format_answer() appends the paper's
# "#### The final answer is: N" instead.
_WEI_COT: tuple[tuple[str, str, str], ...] = (
    (
        "There are 15 trees in the grove. Grove workers will plant trees in the grove today. "
        "After they are done, there will be 21 trees. How many trees did the grove workers plant today?",
        "There are 15 trees originally. Then there were 21 trees after some more were planted. "
        "So there must have been 21 - 15 = 6.",
        "6",
    ),
    (
        "If there are 3 cars in the parking lot and 2 more cars arrive, how many cars are in the parking lot?",
        "There are originally 3 cars. 2 more cars arrive. 3 + 2 = 5.",
        "5",
    ),
    (
        "Leah had 32 chocolates and her sister had 42. If they ate 35, how many pieces do they have left in total?",
        "Originally, Leah had 32 chocolates. Her sister had 42. So in total they had 32 + 42 = 74. "
        "After eating 35, they had 74 - 35 = 39.",
        "39",
    ),
    (
        "Jason had 20 lollipops. He gave Denny some lollipops. Now Jason has 12 lollipops. "
        "How many lollipops did Jason give to Denny?",
        "Jason started with 20 lollipops. Then he had 12 after giving some to Denny. So he gave Denny 20 - 12 = 8.",
        "8",
    ),
    (
        "Shawn has five toys. For Christmas, he got two toys each from his mom and dad. How many toys does he have now?",
        "Shawn started with 5 toys. If he got 2 toys each from his mom and dad, then that is 4 more toys. 5 + 4 = 9.",
        "9",
    ),
    (
        "There were nine computers in the server room. Five more computers were installed each day, "
        "from monday to thursday. How many computers are now in the server room?",
        "There were originally 9 computers. For each of 4 days, 5 more computers were added. "
        "So 5 * 4 = 20 computers were added. 9 + 20 is 29.",
        "29",
    ),
    (
        "Michael had 58 golf balls. On tuesday, he lost 23 golf balls. On wednesday, he lost 2 more. "
        "How many golf balls did he have at the end of wednesday?",
        "Michael started with 58 golf balls. After losing 23 on tuesday, he had 58 - 23 = 35. "
        "After losing 2 more, he had 35 - 2 = 33 golf balls.",
        "33",
    ),
    (
        "Olivia has $23. She bought five bagels for $3 each. How much money does she have left?",
        "Olivia had 23 dollars. 5 bagels for 3 dollars each will be 5 x 3 = 15 dollars. "
        "So she has 23 - 15 dollars left. 23 - 15 is 8.",
        "8",
    ),
)

GSM8K_COT_SHOTS: tuple[Example, ...] = tuple(
    Example(id=f"wei2022-cot/{i}", question=q, answer=a, solution=s, meta={"source": "Wei et al. 2022"})
    for i, (q, s, a) in enumerate(_WEI_COT)
)

# ARC: the paper generated its ARC exemplars with Gemini and did not publish them. These five are
# hand-written for xsteer (not taken from ARC, so they cannot overlap any split), grade-school science,
# four options A-D, short reasoning ending in the bracketed label.
_ARC_HANDWRITTEN: tuple[tuple[str, tuple[str, ...], str, str], ...] = (
    (
        "A student puts a metal spoon and a wooden spoon into the same cup of hot water. After two minutes, "
        "the handle of the metal spoon feels much warmer than the handle of the wooden spoon. "
        "Which statement best explains this?",
        (
            "Metal conducts heat better than wood.",
            "Wood absorbs more water than metal.",
            "The metal spoon is heavier than the wooden spoon.",
            "Wood gives off cold into the water.",
        ),
        "A",
        "The question is about heat transfer by conduction. Heat moved from the hot water up each handle, "
        "and the metal handle warmed faster, so metal carries heat more easily. Absorbing water (B) and "
        "weight (C) do not explain a handle getting warm, and cold is not a substance that flows out of "
        "wood (D).",
    ),
    (
        "Which of these energy sources is renewable?",
        ("coal", "natural gas", "wind", "oil"),
        "C",
        "A renewable source is replaced naturally within a human lifetime. Coal, natural gas and oil are "
        "fossil fuels that took millions of years to form, so they are nonrenewable. Wind keeps being "
        "produced by the Sun heating the air unevenly, so it is renewable.",
    ),
    (
        "In a pond, which organism is a producer?",
        ("frog", "algae", "snail", "heron"),
        "B",
        "Producers make their own food from sunlight by photosynthesis. Frogs, snails and herons must eat "
        "other organisms, so they are consumers. Algae contain chlorophyll and photosynthesize, so algae "
        "are the producer.",
    ),
    (
        "A puddle on a playground is gone by the afternoon of a sunny day. What happened to most of the water?",
        (
            "It froze into ice.",
            "It turned into soil.",
            "It was used up by the sunlight.",
            "It evaporated into the air.",
        ),
        "D",
        "Energy from the Sun warms the water and changes liquid water into water vapor, which mixes into "
        "the air. Freezing (A) needs cold, water does not become soil (B), and matter is not used up by "
        "light (C). The water evaporated.",
    ),
    (
        "A toy car rolls across a carpet and slowly comes to a stop. Which force mainly causes the car to stop?",
        ("magnetism", "friction", "buoyancy", "electricity"),
        "B",
        "A force acting against the motion slowed the car. The rough carpet rubbing against the wheels "
        "produces friction, which opposes motion. There is no magnet, fluid or electric charge involved, "
        "so magnetism, buoyancy and electricity do not apply.",
    ),
)

ARC_SHOTS: tuple[Example, ...] = tuple(
    Example(
        id=f"xsteer-arc-shot/{i}",
        question=q,
        answer=ans,
        solution=reasoning,
        choices=choices,
        labels=tuple("ABCD"[: len(choices)]),
        meta={"source": "xsteer hand-written"},
    )
    for i, (q, choices, ans, reasoning) in enumerate(_ARC_HANDWRITTEN)
)


def _draw(pool: Sequence[Example], n: int, seed: int, what: str) -> list[Example]:
    # Sorting by id first makes the draw independent of the order the caller loaded the pool in.
    ordered = sorted(pool, key=lambda e: e.id)
    if n > len(ordered):
        raise ValueError(f"{what}: asked for {n} few-shot exemplars but only {len(ordered)} candidates")
    return random.Random(f"xsteer-shots/{seed}").sample(ordered, n)


def few_shot_examples(
    dataset: str, n: int = 5, *, train: Sequence[Example] | None = None, seed: int = 0
) -> list[Example]:
    """``n`` few-shot exemplars for ``dataset`` (the paper uses 5).

    * gsm8k: the first ``n`` (<= 8) Wei et al. CoT exemplars (``train``/``seed`` unused).
    * arc_challenge: the first ``n`` (<= 5) hand-written :data:`ARC_SHOTS`.
    * math / math500: ``n`` problems drawn with ``seed`` from ``train`` (the train split, so they are
      never evaluation items). Only solutions with a ``\\boxed`` answer and no ``[asy]`` figure code are
      candidates (figure code is meaningless as text and very long). If ``train`` is None, the
      dataset's train split is loaded from :func:`default_data_dir` (or the hub). The caller must
      remove the shots from the pair set (``data.exclude_examples``), as the paper did.
    * synthetic: ``n`` drawn with ``seed`` from ``train`` or the synthetic train split.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    family = prompt_family(dataset)
    if dataset == "synthetic":
        pool = list(train) if train is not None else load_examples("synthetic", "train", seed=seed)
        return _draw(pool, n, seed, dataset)
    if family == "gsm8k":
        if n > len(GSM8K_COT_SHOTS):
            raise ValueError(f"gsm8k: only {len(GSM8K_COT_SHOTS)} Wei et al. exemplars exist, asked for {n}")
        return list(GSM8K_COT_SHOTS[:n])
    if family == "arc_challenge":
        if n > len(ARC_SHOTS):
            raise ValueError(f"arc_challenge: only {len(ARC_SHOTS)} exemplars exist, asked for {n}")
        return list(ARC_SHOTS[:n])
    pool = list(train) if train is not None else load_examples(dataset, "train", data_dir=default_data_dir())
    candidates = [e for e in pool if e.solution and "\\boxed" in e.solution and "[asy]" not in e.solution]
    return _draw(candidates, n, seed, dataset)


# --------------------------------------------------------------------------------------------------
# Messages
# --------------------------------------------------------------------------------------------------


def format_question(dataset: str, example: Example) -> str:
    """The user-turn text for ``example``; ARC adds one "A. text" line per choice, with its own labels."""
    if prompt_family(dataset) != "arc_challenge":
        return example.question
    if example.choices is None or example.labels is None:
        raise ValueError(f"{example.id}: an arc_challenge example needs choices and labels")
    lines = [example.question] + [
        f"{label}. {text}" for label, text in zip(example.labels, example.choices, strict=True)
    ]
    return "\n".join(lines)


def format_answer(dataset: str, example: Example) -> str:
    """The assistant-turn text for a shot (or a reference response): reasoning + final-answer marker.

    gsm8k/synthetic: ``solution`` + ``"\\n#### The final answer is: N"``; math: ``solution`` as given
    (it contains ``\\boxed``; one is appended if missing); ARC: reasoning (if any) +
    ``"\\nFinal Answer: [X]"``.
    """
    family = prompt_family(dataset)
    reasoning = (example.solution or "").strip()
    if family == "gsm8k":
        final = GSM8K_FINAL.format(answer=example.answer)
    elif family == "arc_challenge":
        final = ARC_FINAL.format(answer=example.answer)
    else:
        if "\\boxed" in reasoning:
            return reasoning
        final = f"The final answer is $\\boxed{{{example.answer}}}$."
    return f"{reasoning}\n{final}" if reasoning else final


def build_messages(
    dataset: str, example: Example, shots: Sequence[Example], *, system: bool = True
) -> list[dict[str, str]]:
    """Chat messages: system prompt, one user/assistant pair per shot, then the question as a user turn."""
    messages: list[dict[str, str]] = []
    if system:
        messages.append({"role": "system", "content": SYSTEM_PROMPTS[prompt_family(dataset)]})
    for shot in shots:
        messages.append({"role": "user", "content": format_question(dataset, shot)})
        messages.append({"role": "assistant", "content": format_answer(dataset, shot)})
    messages.append({"role": "user", "content": format_question(dataset, example)})
    return messages


def arc_loglik_request(example: Example) -> tuple[str, list[str]]:
    """lm-eval ``arc_challenge`` style log-likelihood request: context and one continuation per choice.

    Context ``"Question: {q}\\nAnswer:"``, continuations ``" {choice text}"``; the gold index is
    ``example.answer_index``.
    """
    if example.choices is None:
        raise ValueError(f"{example.id}: not a multiple-choice example")
    return f"Question: {example.question}\nAnswer:", [f" {c}" for c in example.choices]


# --------------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------------


def _has_template(tokenizer: Any) -> bool:
    return tokenizer is not None and bool(getattr(tokenizer, "chat_template", None))


def _merge_system(messages: Sequence[dict[str, str]]) -> list[dict[str, str]]:
    """Fold system messages into the first user turn (for templates without a system role)."""
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    rest = [dict(m) for m in messages if m["role"] != "system"]
    if not system:
        return rest
    for m in rest:
        if m["role"] == "user":
            m["content"] = f"{system}\n\n{m['content']}"
            return rest
    return [{"role": "user", "content": system}, *rest]


def _render_plain(messages: Sequence[dict[str, str]], add_generation_prompt: bool) -> str:
    """Plain fallback: "system\\n\\n" then "Question: {user}\\nAnswer: {assistant}\\n\\n" per turn."""
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    parts: list[str] = [f"{system}\n\n"] if system else []
    turns = [m for m in messages if m["role"] != "system"]
    for i, m in enumerate(turns):
        if m["role"] == "user":
            parts.append(f"Question: {m['content']}\n")
            nxt = turns[i + 1] if i + 1 < len(turns) else None
            if nxt is None:
                if add_generation_prompt:
                    parts.append("Answer:")
            elif nxt["role"] != "assistant":
                parts.append("\n")
        elif m["role"] == "assistant":
            parts.append(f"Answer: {m['content']}\n\n")
        else:
            raise ValueError(f"unsupported role {m['role']!r}")
    return "".join(parts)


def render(tokenizer: Any, messages: Sequence[dict[str, str]], *, add_generation_prompt: bool = True) -> str:
    """Render chat ``messages`` to one prompt string for ``tokenizer``.

    With a chat template (``tokenizer.chat_template`` set): ``apply_chat_template(tokenize=False)``.
    A template that rejects the system role (raises, e.g. Gemma-2) or silently drops it gets the
    system text prepended to the first user turn instead. Without a template: the plain fallback, i.e. system text + blank
    line, then ``"Question: {user}\\nAnswer: {assistant}\\n\\n"`` per turn, ending with
    ``"Question: {q}\\nAnswer:"``. ``tokenizer=None`` also selects the plain fallback.
    """
    messages = [dict(m) for m in messages]
    if not _has_template(tokenizer):
        return _render_plain(messages, add_generation_prompt)

    def apply(msgs: list[dict[str, str]]) -> str:
        out = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=add_generation_prompt)
        if not isinstance(out, str):  # defensive: some versions wrap the string
            raise TypeError(f"apply_chat_template returned {type(out).__name__}, expected str")
        return out

    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system").strip()
    if not system:
        return apply(messages)
    try:
        text = apply(messages)
    except Exception:  # jinja2 TemplateError ("System role not supported", "roles must alternate")
        text = None
    if text is None or system not in text:
        text = apply(_merge_system(messages))
    return text


# End-of-turn markers of common chat templates (ChatML/Qwen, Gemma, Llama-3, Phi, Mistral, DeepSeek),
# stripped after a final assistant message.
_END_MARKERS: tuple[str, ...] = (
    "<|im_end|>",
    "<end_of_turn>",
    "<|eot_id|>",
    "<|end|>",
    "<|endoftext|>",
    "</s>",
    "<|end_of_text|>",
    "<｜end▁of▁sentence｜>",
)


def render_pair_text(tokenizer: Any, question: str, response: str, *, system: str | None = None) -> str:
    """One (user ``question``, assistant ``response``) exchange as a single string, for contrastive pairs.

    Through the chat template when present (``add_generation_prompt=False``), with anything the
    template appends after the response (end-of-turn token, EOS, newlines) cut off, so the LAST token
    is the last token of the response -- the position steering-vector extraction reads. Without a
    template: ``"Question: {question}\\nAnswer: {response}"`` (preceded by ``system`` + blank line).
    """
    messages: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
    messages += [{"role": "user", "content": question}, {"role": "assistant", "content": response}]
    text = render(tokenizer, messages, add_generation_prompt=False)
    target = response.strip()
    trimmed = _strip_end_markers(tokenizer, text)
    # Usual case: the template appended only end-of-turn markers/whitespace after the response.
    if not target or trimmed.endswith(target):
        return trimmed
    # Otherwise cut right after the response's last occurrence (e.g. a template that appends more text).
    pos = text.rfind(target)
    return text[: pos + len(target)] if pos >= 0 else trimmed


def _strip_end_markers(tokenizer: Any, text: str) -> str:
    """Strip trailing whitespace, EOS and known end-of-turn markers until nothing changes."""
    markers = list(_END_MARKERS)
    eos = getattr(tokenizer, "eos_token", None)
    if isinstance(eos, str) and eos:
        markers.insert(0, eos)
    changed = True
    while changed:
        changed = False
        text = text.rstrip()
        for marker in markers:
            if text.endswith(marker):
                text = text[: -len(marker)]
                changed = True
    return text
