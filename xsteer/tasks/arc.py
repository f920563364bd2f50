"""ARC-Challenge (Clark et al. 2018): grade-school science, multiple choice.

train/validation/test files as given (hub: ``allenai/ai2_arc``, config ``ARC-Challenge``). Choice labels are
kept as given: mostly A-D, some rows 1-4, a few rows have 3 or 5 choices. Two scoring modes: generative (the
response states the label in brackets, ``Final Answer: [B]``) and lm-eval's log-likelihood mode (each
choice's summed log-probability after ``Question: …\\nAnswer:``; ``acc`` and ``acc_norm``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from xsteer.errors import InputError
from xsteer.tasks.arc_scoring import score_arc
from xsteer.tasks.base import Example, Scored, Task
from xsteer.tasks.data import data_file, hub_rows, map_rows

# System prompt: the paper's Appendix A, Table 4. "<code>[answer]</code>" kept its brackets and the code
# tags are dropped: the intended format is the option label in brackets, e.g. "[B]", which the exemplars
# demonstrate (the prompt itself keeps the paper's literal "[answer]"). HTML lists became "- " lines.
SYSTEM = """\
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


FINAL = "Final Answer: [{answer}]"

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

SHOTS: tuple[Example, ...] = tuple(
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


def row_to_example(row: dict[str, Any]) -> Example:
    """An ARC row (``id``, ``question``, ``choices: {text, label}``, ``answerKey``) as an :class:`Example`."""
    choices = row["choices"]
    texts = tuple(str(t) for t in choices["text"])
    labels = tuple(str(label) for label in choices["label"])
    answer = str(row["answerKey"])
    if answer not in labels:
        raise InputError(f"ARC row {row.get('id')}: answerKey {answer!r} not among labels {labels}")
    return Example(
        id=str(row["id"]),
        question=str(row["question"]),
        answer=answer,
        solution=None,
        choices=texts,
        labels=labels,
        meta={"n_choices": len(texts)},
    )


class ArcChallenge(Task):
    name = "arc_challenge"
    description = "ARC-Challenge science questions; generative ([X] label) or log-likelihood (acc, acc_norm)"
    system_prompt = SYSTEM
    multiple_choice = True
    own_splits = ("train", "validation", "test")

    def pool(self, split: str, data_dir: Path | None) -> list[Example]:
        if data_dir is None:
            return [row_to_example(r) for r in hub_rows("allenai/ai2_arc", "ARC-Challenge", split, self.name)]
        return map_rows(
            data_file(data_dir, f"arc_challenge/{split}.jsonl", self.name, split),
            lambda r, i: row_to_example(r),
        )

    def shots(
        self,
        n: int = 5,
        *,
        seed: int = 0,
        train: Sequence[Example] | None = None,
        data_dir: str | Path | None = None,
    ) -> list[Example]:
        """The first ``n`` (<= 5) hand-written exemplars; never ARC items, so nothing to exclude from pairs."""
        if not 0 <= n <= len(SHOTS):
            raise InputError(f"arc_challenge: only {len(SHOTS)} exemplars exist, asked for {n}")
        return list(SHOTS[:n])

    def final_line(self, answer: str) -> str:
        return FINAL.format(answer=answer)

    def format_question(self, example: Example) -> str:
        """The question, then one "A. text" line per choice, with the item's own labels."""
        if example.choices is None or example.labels is None:
            raise InputError(f"{example.id}: an arc_challenge example needs choices and labels")
        lines = [example.question] + [
            f"{label}. {text}" for label, text in zip(example.labels, example.choices, strict=True)
        ]
        return "\n".join(lines)

    def score(self, completion: str, example: Example) -> Scored:
        return score_arc(completion, example.answer, labels=example.labels)

    def loglik_request(self, example: Example) -> tuple[str, list[str]]:
        """lm-eval's ``arc_challenge``: context ``"Question: {q}\\nAnswer:"``, continuations ``" {choice}"``."""
        if example.choices is None:
            raise InputError(f"{example.id}: not a multiple-choice example")
        return f"Question: {example.question}\nAnswer:", [f" {c}" for c in example.choices]


TASK = ArcChallenge()
