"""GSM8K (Cobbe et al. 2021): grade-school math word problems.

train/test from ``gsm8k/{train,test}.jsonl`` (hub: ``openai/gsm8k``, config ``main``). ``validation`` is a
seeded carve of 500 problems out of the train file, and ``train`` EXCLUDES them, so contrastive pairs are
never built from validation items. ``answer`` is the number after ``####`` with thousands separators
removed ("1,080" -> "1080"); ``solution`` is the text before ``####`` without the ``<<48/2=24>>``
calculator annotations. Responses end with the paper's ``#### The final answer is: N``; scoring is
lm-eval's strict (``####`` / "The final answer is") and flexible (last number) extraction.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from xsteer.errors import InputError
from xsteer.tasks.base import Example, Scored, Task
from xsteer.tasks.data import data_file, hub_rows, map_rows
from xsteer.tasks.scoring import LEADING_SIGN, SIGN, UNSIGNED, normalize_number

# System prompt: the paper's Appendix A, Table 3. No marker was lost in the PDF->text extraction;
# "#### The final answer is: [...]" is the paper's format and the "**...**" are literal markdown asterisks.
SYSTEM = """\
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


FINAL = "#### The final answer is: {answer}"

# GSM8K: the eight chain-of-thought exemplars of Wei et al. (2022), the ones lm-eval's gsm8k-cot uses
# (also the few-shot set of Kojima et al. 2022, which the paper cites). ``solution`` is the rationale
# without its closing "The answer is N."; Task.format_answer() appends the paper's
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

SHOTS: tuple[Example, ...] = tuple(
    Example(id=f"wei2022-cot/{i}", question=q, answer=a, solution=s, meta={"source": "Wei et al. 2022"})
    for i, (q, s, a) in enumerate(_WEI_COT)
)


_CALC_ANNOTATION = re.compile(r"<<.*?>>")


def row_to_example(row: dict[str, Any], ex_id: str) -> Example:
    """A GSM8K-shaped row (``question``, ``answer`` ending in ``#### N``) as an :class:`Example`."""
    raw = str(row["answer"])
    if "####" not in raw:
        raise InputError(f"GSM8K row {ex_id}: answer has no '####' marker")
    reasoning, final = raw.rsplit("####", 1)
    solution = _CALC_ANNOTATION.sub("", reasoning).strip()
    # Thousands separators make "1,080" != "1080" under string comparison; gold is kept bare.
    answer = final.strip().replace(",", "")
    return Example(
        id=ex_id,
        question=str(row["question"]).strip(),
        answer=answer,
        solution=solution,
        meta={"raw_answer": raw},
    )


# ---------------------------------------------------------------------------------------------- scoring
# A number as lm-eval's strict regex sees it ([0-9.,]+), but it must contain a digit,
# so that "#### ." or "#### ," is not an "answer".
_STRICT_NUM = SIGN + r"?[0-9.,]*[0-9][0-9.,]*"

# "#### 42" (lm-eval strict-match) and the paper's "#### The final answer is: 42".
_STRICT_HASH_RE = re.compile(
    r"####\s*(?:(?:the\s+)?(?:final\s+)?answer(?:\s+is)?\s*:?\s*)?(?P<num>" + _STRICT_NUM + ")",
    re.IGNORECASE,
)
# "The final answer is: 42" / "The answer is 42" (lm-eval gsm8k-cot's strict regex
# "The answer is (\-?[0-9\.\,]+)." without the trailing wildcard, plus optional bold / $).
_STRICT_PHRASE_RE = re.compile(
    r"\banswer\s+is\s*:?\s*(?:\*\*)?\s*\$?\s*(?P<num>" + _STRICT_NUM + ")",
    re.IGNORECASE,
)

# Flexible number: optional sign, optional "$" (a space may follow the "$", never the
# sign), digits with optional separators, optional decimal part; or a bare ".5".
_FLEX_RE = re.compile(r"(?:" + LEADING_SIGN + r")?(?:\$\s?)?" + UNSIGNED)


def gsm8k_strict(text: str) -> str | None:
    """Extract the GSM8K answer in the *strict* format, or ``None``.

    Precedence (first rule that matches anywhere in ``text`` wins):

    1. ``#### N`` -- lm-eval ``strict-match`` (``#### (\\-?[0-9\\.\\,]+)``, ``take_first``),
       whitespace-tolerant after ``####``.  The paper's ``#### The final answer is: N``
       (and ``#### Answer: N``) is accepted by the same rule.
    2. ``The final answer is: N`` / ``The answer is N`` (case-insensitive, optional
       ``**`` and ``$`` before the number) -- the CoT-style phrase.  First match,
       like lm-eval's ``take_first``.

    Within a rule the FIRST match is used (lm-eval convention).  No ``$`` is accepted
    right after ``####`` (as in lm-eval: ``#### $5`` fails strict, passes flexible).
    The returned string is raw (``"1,234."``); pass it through :func:`normalize_number`.
    """
    if not text:
        return None
    m = _STRICT_HASH_RE.search(text) or _STRICT_PHRASE_RE.search(text)
    return m.group("num") if m else None


def gsm8k_flexible(text: str) -> str | None:
    """Extract the LAST number in ``text`` (lm-eval ``flexible-extract``), or ``None``.

    lm-eval uses ``(-?[$0-9.,]{2,})|(-?[0-9]+)`` with ``group_select: -1``.  This is the
    same idea with these differences: a match must contain a digit (lm-eval's regex accepts
    ``"..."`` and reads ``"42..."`` as one token); a ``-`` glued to a preceding word or
    number is a minus operator, not a sign (``"5-3"`` ends in ``3``); and ``\u2212`` or an
    en dash touching the digits is a sign (``"\u221210"``, ``"\u201310"``).  Like lm-eval, a
    dash separated from its digits is no sign: a bullet ``"- 18 eggs"`` or a range
    ``"2 - 3 hours"`` ends in ``18`` / ``3``.  Returned raw (may contain ``$`` / ``,`` / a
    non-ASCII minus); pass it through :func:`normalize_number`.
    """
    if not text:
        return None
    last = None
    for m in _FLEX_RE.finditer(text):
        last = m.group(0)
    return last.strip() if last is not None else None


def gold_gsm8k(answer_field: str) -> str:
    """The gold answer of a GSM8K ``answer`` field: the text after ``####``, stripped.

    If there is no ``####`` the whole stripped field is returned, so that an
    already-extracted gold (or a synthetic item) can be passed straight through.
    """
    return answer_field.split("####")[-1].strip()


def score_gsm8k(completion: str, gold: str) -> Scored:
    """Score one completion against a GSM8K gold: the answer field (text after ``####`` is used) or the bare
    number. ``answer``/``correct`` = flexible-extract (last number); ``strict_answer``/``strict_correct`` =
    strict-match. Numbers are compared canonically (:func:`~xsteer.tasks.scoring.normalize_number`), so
    ``"5.0" == "5"``. Raises ``ValueError`` for a gold with no number."""
    gold_n = normalize_number(gold_gsm8k(gold))
    if gold_n is None:
        raise ValueError(f"gold answer has no number: {gold!r}")
    flex = normalize_number(gsm8k_flexible(completion))
    strict = normalize_number(gsm8k_strict(completion))
    return Scored(flex, flex == gold_n, strict, strict == gold_n)


class GSM8K(Task):
    name = "gsm8k"
    description = (
        "GSM8K grade-school math, 5-shot chain of thought (Wei et al. exemplars), strict and flexible"
    )
    system_prompt = SYSTEM

    def pool(self, split: str, data_dir: Path | None) -> list[Example]:
        file_split = "test" if split == "test" else "train"
        if data_dir is None:
            rows = hub_rows("openai/gsm8k", "main", file_split, self.name)
            return [row_to_example(r, f"gsm8k/{file_split}/{i}") for i, r in enumerate(rows)]
        path = data_file(data_dir, f"gsm8k/{file_split}.jsonl", self.name, split)
        return map_rows(path, lambda r, i: row_to_example(r, f"gsm8k/{file_split}/{i}"))

    def shots(
        self,
        n: int = 5,
        *,
        seed: int = 0,
        train: Sequence[Example] | None = None,
        data_dir: str | Path | None = None,
    ) -> list[Example]:
        """The first ``n`` (<= 8) Wei et al. exemplars; never GSM8K items, so nothing to exclude from pairs."""
        if not 0 <= n <= len(SHOTS):
            raise InputError(f"gsm8k: only {len(SHOTS)} Wei et al. exemplars exist, asked for {n}")
        return list(SHOTS[:n])

    def final_line(self, answer: str) -> str:
        return FINAL.format(answer=answer)

    def score(self, completion: str, example: Example) -> Scored:
        return score_gsm8k(completion, example.answer)


TASK = GSM8K()
