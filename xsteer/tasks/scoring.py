"""Answer handling every task shares: number normalisation, the scored answer, and the vote over λ.

Everything here is a pure function over strings (no model, no I/O). Each task scores its own completions
(:meth:`xsteer.tasks.Task.score`), with the conventions of lm-evaluation-harness where it has one:

* GSM8K and the synthetic problems (:mod:`xsteer.tasks.gsm8k`): ``strict-match`` (``#### N``, first match) and
  ``flexible-extract`` (last number in the text); ``,``, ``$`` and a trailing ``.`` are ignored when
  comparing (lm-eval ``regexes_to_ignore``).
* MATH (:mod:`xsteer.tasks.math_scoring`): last ``\\boxed{...}`` (Hendrycks ``last_boxed_only_string``/
  ``remove_boxed``) with Minerva's "The final answer is X" as a fallback, Hendrycks/Minerva-style string
  normalisation, then ``math_verify`` for symbolic equivalence.
* ARC-Challenge (:mod:`xsteer.tasks.arc_scoring`): generative letter extraction (``arc_challenge_chat``
  style) and the log-likelihood ``acc``/``acc_norm`` argmax used by the default task.

Every deliberate deviation from lm-eval is called out in the docstring that makes it and listed in
``docs/scoring-deviations.md``.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

__all__ = [
    "LEADING_SIGN",
    "SIGN",
    "UNSIGNED",
    "Scored",
    "ascii_minus",
    "decimal_to_str",
    "majority_vote",
    "normalize_number",
]


# --------------------------------------------------------------------------------------
# Numbers
# --------------------------------------------------------------------------------------

# Minus signs.  Models write U+2212 (MINUS SIGN) and U+2013 (EN DASH) for "-", but a dash
# is only a sign when it touches its digits ("-18", "\u221218", "-$5") and is not glued to a
# preceding operand ("5-3", "2\u20133 hours" are a subtraction / a range).  So a bullet
# ("- 18 eggs") or a spaced range ("2 - 3 hours") never makes a number negative.
SIGN = "[-\u2212\u2013]"
LEADING_SIGN = r"(?<![\w)\]])" + SIGN
# U+2212 is a minus wherever it stands (also between operands); an en dash only as a sign.
_EN_DASH_SIGN_RE = re.compile(r"(?<![\w)\]])\u2013(?=\$?\.?\d)")


def ascii_minus(s: str) -> str:
    return _EN_DASH_SIGN_RE.sub("-", s.replace("\u2212", "-"))


UNSIGNED = r"(?:\d[\d,]*(?:\.\d+)?|\.\d+)"

# The single numeric token inside an already-extracted answer string (after ascii_minus).
_NUMBER_TOKEN_RE = re.compile(r"(?:(?<![\w)\]])-)?" + UNSIGNED)


def normalize_number(s: str | None) -> str | None:
    """Canonical string for the (first) number in ``s``, or ``None`` if there is none.

    Removes ``$``, thousands separators (every ``,``, as lm-eval does), surrounding words
    and units, and a trailing ``.``; then prints the value in plain decimal notation with
    no trailing zeros.  So ``"1,000" -> "1000"``, ``"$1,234.00" -> "1234"``,
    ``"3.50" -> "3.5"``, ``"5.0" -> "5"``, ``"10 cm" -> "10"``, ``"-2" -> "-2"``,
    ``"\u22127" -> "-7"``.  A decimal point inside a number is never deleted (``"3.5"`` stays
    ``"3.5"``).  A minus sign must touch its digits: ``"- 18"`` is ``18``.
    """
    if s is None:
        return None
    # "$" may stand between sign and digits ("-$5", "-$ 5", "$-5"); dropping it with the
    # space after it joins them.
    t = re.sub(r"\\?\$\s*", "", ascii_minus(s))
    m = _NUMBER_TOKEN_RE.search(t)
    if m is None:
        return None
    token = m.group(0).replace(",", "")
    try:
        value = Decimal(token)
    except InvalidOperation:
        return None
    return decimal_to_str(value)


def decimal_to_str(value: Decimal) -> str:
    # normalize() drops trailing zeros; format "f" avoids "1E+3" for 1000.
    out = format(value.normalize(), "f")
    return "0" if out in ("-0", "0") else out


# --------------------------------------------------------------------------------------
# The scored answer and the vote
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scored:
    """The scored answer of one completion.

    ``answer`` is canonical (normalised), so two completions with the same answer have
    equal ``answer`` strings -- this is what :func:`majority_vote` counts.  ``None``
    means no valid answer (always incorrect).  ``strict_*`` hold the format-strict
    variant where the dataset has one (GSM8K: ``####``; MATH: ``\\boxed{}`` only).
    """

    answer: str | None
    correct: bool
    strict_answer: str | None = None
    strict_correct: bool | None = None


def majority_vote(answers: Sequence[str | None]) -> str | None:
    """The most frequent valid answer (the inference-time-scaling vote over λ).

    Rules: ``None`` (and ``""``) are invalid and never win -- they are dropped before
    counting, so 3 invalid + 1 valid answer returns the valid one.  Ties are broken by
    FIRST appearance in ``answers``; the evaluator passes answers in λ-grid order, so a
    tie goes to the answer produced at the smallest λ.  All invalid (or empty input) ->
    ``None``.  Mirrors lm-eval's ``majority_vote -> take_first`` with explicit tie and
    invalid handling.  Answers must already be canonical (:attr:`Scored.answer`).
    """
    valid = [a for a in answers if a is not None and a != ""]
    if not valid:
        return None
    counts = Counter(valid)
    top = max(counts.values())
    # valid preserves order, so the first with the top count is the earliest-seen one.
    return next(a for a in valid if counts[a] == top)
