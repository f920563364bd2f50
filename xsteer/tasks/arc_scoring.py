"""ARC-Challenge answers: the label a generative answer commits to, and lm-eval's log-likelihood argmax;
what :meth:`xsteer.tasks.arc.ArcChallenge.score` and the evaluator's log-likelihood mode use.

Pure functions over strings; deviations from lm-eval are listed in ``docs/scoring-deviations.md``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import Literal

from xsteer.tasks.scoring import Scored

__all__ = ["arc_loglik_choice", "extract_choice", "score_arc"]


# Words that may follow an undelimited "A" in an answer statement ("The answer is A
# because ..."); any other word means "A" is the article ("Answer: A plant ...").
_CONTINUATION_WORDS = frozenset("because since as is was which and or but for given due with it this".split())


class _ChoiceMatcher:
    """Compiled regexes for one label set (built once per distinct ``labels``)."""

    def __init__(self, labels: tuple[str, ...]) -> None:
        self.canon = {lab.strip().lower(): lab.strip() for lab in labels}
        alt = "|".join(re.escape(k) for k in sorted(self.canon, key=len, reverse=True))
        # A label token: not glued to letters/digits, and a digit label is not part of a
        # decimal ("3.5") or a thousands group ("3,000").
        lab = rf"(?<![A-Za-z0-9])(?P<lab>{alt})(?![A-Za-z0-9])(?![.,]\d)"
        tok = rf"[\(\[]?\s*{lab}\s*[\)\]]?"
        verbs = r"(?:\s+(?:is|would\s+be|should\s+be|will\s+be|must\s+be))?"
        self.patterns = [
            # "The (best|correct) answer is (B)", "Answer: B", "**Answer:** B", "[answer]: B",
            # "the correct option is C", "answer is option (3)".
            re.compile(
                r"(?:\banswer\b\]?(?:\s+to\s+(?:this|the)\s+question)?"
                r"|\b(?:option|choice)\b(?=\s+(?:is|would|should|will|must)\b))"
                + verbs
                + r"\s*(?:\*\*|__)?\s*[:=\-]?\s*(?:\*\*|__)?\s*(?:(?:option|choice|letter)\s+)?"
                + tok,
                re.IGNORECASE,
            ),
            # "I choose B", "I would select (C)", "I'll go with D".
            re.compile(
                r"\b(?:choose|select|pick|go\s+with)\s+(?:(?:option|choice|answer|letter)\s+)?" + tok,
                re.IGNORECASE,
            ),
            # The paper's bracket format "[B]".
            re.compile(rf"\[\s*{lab}\s*\]", re.IGNORECASE),
            # Bold "**B**", "**(B)**", "**B) photosynthesis**".
            re.compile(rf"\*\*\s*[\(\[]?\s*{lab}\s*(?:[\)\].:][^*\n]*)?\*\*", re.IGNORECASE),
            # "\boxed{B}", "\boxed{\text{B}}".
            re.compile(rf"\\boxed\{{\s*(?:\\text(?:bf)?\{{)?\s*{tok}", re.IGNORECASE),
        ]
        # Bare answer at the very start: "B", "B.", "(B)", "B)", "b", "(3)", "B: because".
        cont = "|".join(sorted(_CONTINUATION_WORDS))
        self.leading = re.compile(
            rf"\s*(?:\*\*)?\s*[\(\[]?\s*{lab}\s*(?:[\)\].:]|\*\*|\s*(?:\n|$)|(?=(?:{cont})\b))",
            re.IGNORECASE,
        )
        # Another label right after / before a chosen one: "A or B", "A, B", "[A] and [B]".
        conj = r"(?:,|/|&|\bor\b|\band\b)"
        self.after = re.compile(
            rf"[\)\]\*.]*\s*{conj}\s*(?:option\s+)?[\(\[\*]*\s*(?<![A-Za-z0-9])(?P<lab>{alt})(?![A-Za-z0-9])",
            re.IGNORECASE,
        )
        self.before = re.compile(
            rf"(?<![A-Za-z0-9])(?P<lab>{alt})(?![A-Za-z0-9])[\)\]\*]*\s*{conj}\s*[\(\[\*]*\s*$",
            re.IGNORECASE,
        )

    @staticmethod
    def _acceptable(text: str, start: int, end: int) -> bool:
        """Whether the label-like letter at ``text[start:end]`` is really a label.

        A lowercase letter counts only when delimited -- "(b)", "[b]", "b)", "b.", end of
        line -- so "the answer is a plant" is not answer "A".  "A"/"a" is also the
        English article: undelimited and followed by a word, it counts only if that word
        continues an answer statement ("A because ...", "A or B"), not a noun phrase.
        """
        raw = text[start:end]
        if not raw.isalpha():
            return True
        prev = text[start - 1] if start > 0 else ""
        nxt = text[end:].lstrip(" \t")
        delimited = (prev != "" and prev in "([*") or nxt == "" or nxt[0] in ".,;:!?)]*\n"
        if delimited:
            return True
        if raw.islower():
            return False
        if raw.lower() == "a" and nxt[:1].isalpha():
            word = re.match(r"[A-Za-z]+", nxt)
            return word is not None and word.group(0).lower() in _CONTINUATION_WORDS
        return True

    def _ambiguous(self, text: str, start: int, end: int) -> bool:
        """The chosen label is listed together with a different one ("A or B")."""
        chosen = text[start:end].lower()
        m = self.after.match(text, end)
        if m and m.group("lab").lower() != chosen and self._acceptable(text, *m.span("lab")):
            return True
        window = text[max(0, start - 40) : start]
        m = self.before.search(window)
        return bool(m and m.group("lab").lower() != chosen and self._acceptable(window, *m.span("lab")))

    def extract(self, text: str) -> str | None:
        found: dict[int, tuple[int, int]] = {}
        for pat in self.patterns:
            for m in pat.finditer(text):
                s, e = m.span("lab")
                if self._acceptable(text, s, e):
                    found[s] = (s, e)
        if found:
            s, e = found[max(found)]  # the last explicit statement wins
        else:
            lead = self.leading.match(text)
            if lead is None or not self._acceptable(text, *lead.span("lab")):
                return None
            s, e = lead.span("lab")
        if self._ambiguous(text, s, e):
            return None
        return self.canon[text[s:e].lower()]


@functools.lru_cache(maxsize=64)
def _matcher(labels: tuple[str, ...]) -> _ChoiceMatcher:
    return _ChoiceMatcher(labels)


def extract_choice(text: str, labels: Sequence[str]) -> str | None:
    """The multiple-choice label a generative answer commits to, or ``None``.

    Rule: collect every *explicit answer statement* and return the label of the LAST one
    (a model that reconsiders ends with its final choice):

    * an answer phrase: "The answer is (B)", "The best answer is B", "Answer: B",
      "**Answer:** B", "The answer to the question is B", "the correct option is C",
      "[answer]: B", "answer is option 3", "I choose B", "I'll go with (C)";
    * the paper's bracket format ``[B]``;
    * a bold label ``**B**`` / ``**(B)**`` / ``**B) text**``;
    * ``\\boxed{B}``.

    Only if there is none, a bare label at the very START of the response counts:
    ``"B"``, ``"B."``, ``"(B)"``, ``"B)"``, ``"b"``, ``"(3)"``, ``"B: because..."``
    (an option list echoed later in a chain of thought is never read as an answer).

    Labels match case-insensitively and come back in the spelling of ``labels``, but a
    lowercase *letter* must be delimited (``(b)``, ``b)``, ``b.``, end of line) so that
    the article in "the answer is a plant" is not read as "A".  Numeric labels (1-4)
    work the same way; "3.5" or "3,000" never count as label 3.  The chosen statement
    is *ambiguous* -> ``None`` when it names two labels ("A or B", "A, B", "[A] and [B]").
    ``None`` also when nothing is found.
    """
    if not text or not labels:
        return None
    return _matcher(tuple(str(lab) for lab in labels)).extract(text)


def arc_loglik_choice(
    logprobs: Sequence[float],
    choice_texts: Sequence[str],
    *,
    unit: Literal["chars", "bytes"] = "chars",
) -> tuple[int, int]:
    """``(argmax for acc, argmax for acc_norm)`` over per-choice log-likelihoods.

    ``acc`` ranks by the summed log-likelihood of each continuation.  ``acc_norm`` divides
    it by the length of the choice text.  lm-eval's code computes that length as
    ``len(choice)`` on the Python string, i.e. in characters (its docs say "bytes"; for
    ASCII they coincide), so ``unit="chars"`` is the default; ``unit="bytes"`` uses the
    UTF-8 byte length.  Pass the choice text WITHOUT the leading target delimiter space
    (lm-eval scores ``" " + choice`` but measures ``choice``).  Ties go to the lowest
    index, as with ``numpy.argmax``.
    """
    if len(logprobs) != len(choice_texts) or not logprobs:
        raise ValueError("logprobs and choice_texts must be non-empty and of equal length")

    def length(t: str) -> int:
        n = len(t.encode("utf-8")) if unit == "bytes" else len(t)
        return max(n, 1)  # an empty choice would divide by zero

    lps = [float(x) for x in logprobs]
    normed = [lp / length(t) for lp, t in zip(lps, choice_texts, strict=True)]
    return max(range(len(lps)), key=lambda i: (lps[i], -i)), max(
        range(len(normed)), key=lambda i: (normed[i], -i)
    )


_ARC_LETTERS = ("A", "B", "C", "D", "E")
_ARC_DIGITS = ("1", "2", "3", "4", "5")


def score_arc(completion: str, gold: str, *, labels: Sequence[str] | None = None) -> Scored:
    """Score one completion against an ARC gold label; ``labels`` are the item's labels (default A-E, or 1-5
    when ``gold`` is a digit). ``answer`` = :func:`extract_choice`. Raises ``ValueError`` for a gold label
    not among the labels."""
    g = gold.strip()
    labs = tuple(labels) if labels is not None else (_ARC_DIGITS if g.isdigit() else _ARC_LETTERS)
    by_lower = {str(lab).strip().lower(): str(lab).strip() for lab in labs}
    if g.lower() not in by_lower:
        raise ValueError(f"gold label {gold!r} not among labels {labs!r}")
    answer = extract_choice(completion, labs)
    return Scored(answer, answer == by_lower[g.lower()])
