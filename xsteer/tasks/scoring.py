"""Answer extraction and correctness for GSM8K, MATH and ARC-Challenge.

Everything here is a pure function over strings (no model, no I/O), so it can be
unit-tested exhaustively and reused by the evaluator, the λ-vote and the analysis
notebooks.  The conventions follow lm-evaluation-harness where it has one:

* GSM8K: ``strict-match`` (``#### N``, first match) and ``flexible-extract``
  (last number in the text); ``,``, ``$`` and a trailing ``.`` are ignored when
  comparing (lm-eval ``regexes_to_ignore``).
* MATH: last ``\\boxed{...}`` (Hendrycks ``last_boxed_only_string``/``remove_boxed``)
  with Minerva's "The final answer is X" as a fallback, Hendrycks/Minerva-style
  string normalisation, then ``math_verify`` for symbolic equivalence.
* ARC-Challenge: generative letter extraction (``arc_challenge_chat`` style) and
  the log-likelihood ``acc``/``acc_norm`` argmax used by the default task.

Every deliberate deviation from lm-eval is called out in the docstring that makes it and
listed in ``docs/scoring-deviations.md``.
"""

from __future__ import annotations

import functools
import re
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Literal

__all__ = [
    "Scored",
    "arc_loglik_choice",
    "extract_choice",
    "gold_gsm8k",
    "gsm8k_flexible",
    "gsm8k_strict",
    "last_boxed",
    "majority_vote",
    "math_answer",
    "math_equiv",
    "normalize_math",
    "normalize_number",
    "score",
]


# --------------------------------------------------------------------------------------
# GSM8K
# --------------------------------------------------------------------------------------

# Minus signs.  Models write U+2212 (MINUS SIGN) and U+2013 (EN DASH) for "-", but a dash
# is only a sign when it touches its digits ("-18", "\u221218", "-$5") and is not glued to a
# preceding operand ("5-3", "2\u20133 hours" are a subtraction / a range).  So a bullet
# ("- 18 eggs") or a spaced range ("2 - 3 hours") never makes a number negative.
_SIGN = "[-\u2212\u2013]"
_LEADING_SIGN = r"(?<![\w)\]])" + _SIGN
# U+2212 is a minus wherever it stands (also between operands); an en dash only as a sign.
_EN_DASH_SIGN_RE = re.compile(r"(?<![\w)\]])\u2013(?=\$?\.?\d)")


def _ascii_minus(s: str) -> str:
    return _EN_DASH_SIGN_RE.sub("-", s.replace("\u2212", "-"))


# A number as lm-eval's strict regex sees it ([0-9.,]+), but it must contain a digit,
# so that "#### ." or "#### ," is not an "answer".
_STRICT_NUM = _SIGN + r"?[0-9.,]*[0-9][0-9.,]*"

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

_UNSIGNED = r"(?:\d[\d,]*(?:\.\d+)?|\.\d+)"
# Flexible number: optional sign, optional "$" (a space may follow the "$", never the
# sign), digits with optional separators, optional decimal part; or a bare ".5".
_FLEX_RE = re.compile(r"(?:" + _LEADING_SIGN + r")?(?:\$\s?)?" + _UNSIGNED)

# The single numeric token inside an already-extracted answer string (after _ascii_minus).
_NUMBER_TOKEN_RE = re.compile(r"(?:(?<![\w)\]])-)?" + _UNSIGNED)


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
    t = re.sub(r"\\?\$\s*", "", _ascii_minus(s))
    m = _NUMBER_TOKEN_RE.search(t)
    if m is None:
        return None
    token = m.group(0).replace(",", "")
    try:
        value = Decimal(token)
    except InvalidOperation:
        return None
    return _decimal_to_str(value)


def _decimal_to_str(value: Decimal) -> str:
    # normalize() drops trailing zeros; format "f" avoids "1E+3" for 1000.
    out = format(value.normalize(), "f")
    return "0" if out in ("-0", "0") else out


def gold_gsm8k(answer_field: str) -> str:
    """The gold answer of a GSM8K ``answer`` field: the text after ``####``, stripped.

    If there is no ``####`` the whole stripped field is returned, so that an
    already-extracted gold (or a synthetic item) can be passed straight through.
    """
    return answer_field.split("####")[-1].strip()


# --------------------------------------------------------------------------------------
# MATH
# --------------------------------------------------------------------------------------

_BOX_CMD_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")


def _balanced_group(s: str, i: int) -> tuple[str, int] | None:
    """Content of the brace group opening at ``s[i] == "{"`` and the index after it.

    Escaped braces ``\\{``/``\\}`` are content, not structure (``\\left\\{ x \\right.``).
    Returns ``None`` when the group is never closed (truncated generation).
    """
    depth = 0
    j = i
    while j < len(s):
        c = s[j]
        if c == "\\":
            j += 2
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return s[i + 1 : j], j + 1
        j += 1
    return None


# Where a brace-less "\boxed 5 cm" argument ends: the end of the math ($, \], \), \end,
# an alignment "&" or row break "\\", a line break) or of the sentence (". ").
_BARE_BOX_STOP_RE = re.compile(r"\$|\n|&|\\[\])\\]|\\end(?![A-Za-z])|\.(?:\s|$)")


def _bare_box_argument(s: str, i: int) -> str:
    depth = 0
    j = i
    while j < len(s):
        if depth == 0 and _BARE_BOX_STOP_RE.match(s, j):
            break
        c = s[j]
        if c == "\\":
            j += 2
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            if depth == 0:  # closes a group the box sits in: "\text{is \boxed 5}"
                break
            depth -= 1
        j += 1
    return s[i:j].strip()


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` / ``\\fbox{...}`` in ``text``, or ``None``.

    This is the one extraction rule for gold solutions and predictions alike (the MATH
    task reads a gold answer out of a solution with it), so a gold and a prediction
    written the same way give the same answer.

    * Braces are balanced, and escaped braces ``\\{``/``\\}`` are content
      (``\\boxed{\\frac{1}{2}}`` -> ``\\frac{1}{2}``, ``\\boxed{\\{1,2\\}}`` -> ``\\{1,2\\}``).
    * Brace-less ``\\boxed 5 cm`` (whitespace after the command) yields everything up to
      the end of the math: the next ``$``, ``\\]``, ``\\)``, ``\\end``, ``&``, ``\\\\``,
      line break, sentence end (``". "``), unmatched ``}``, or end of text.  So
      ``$\\boxed 5 cm$`` -> ``"5 cm"`` (which :func:`normalize_math` reads as ``5``) and
      ``$\\boxed 2 \\pi$`` -> ``"2 \\pi"``.  This is Hendrycks' rule (to the next ``$``)
      bounded to one line; taking only the first token instead would turn ``2 \\pi`` into
      ``2``.  ``\\boxed5`` (no space) is not an argument form and gives ``None``.
    * Only the LAST box counts (``\\boxed`` and ``\\fbox`` alike): if it is unclosed (a
      truncated generation) the result is ``None`` rather than an earlier box.
    """
    if not text:
        return None
    matches = list(_BOX_CMD_RE.finditer(text))
    if not matches:
        return None
    end = matches[-1].end()
    rest = text[end:]
    stripped = rest.lstrip()
    start = end + (len(rest) - len(stripped))
    if stripped.startswith("{"):
        group = _balanced_group(text, start)
        return group[0].strip() if group is not None else None
    if rest[:1].isspace():
        return _bare_box_argument(text, start) or None
    return None


# Minerva: "Final Answer: The final answer is X. I hope it is correct."; also the paper's
# "The final answer is: X" on its own line.
_MINERVA_RE = re.compile(r"final answer is\s*:?\s*(.*?)\.?\s*I hope it is correct", re.IGNORECASE | re.DOTALL)
_FINAL_ANSWER_LINE_RE = re.compile(r"final answer is\s*:?\s*(.+)", re.IGNORECASE)


def math_answer(text: str) -> str | None:
    """Raw MATH answer of a completion: last ``\\boxed{}``; else the Minerva phrase.

    Order: (1) :func:`last_boxed`; (2) Minerva's "The final answer is X. I hope it is
    correct."; (3) the last "The final answer is: X" line (rest of that line).
    Returns ``None`` when nothing is found or the answer is empty.
    """
    if not text:
        return None
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed or None
    ms = _MINERVA_RE.findall(text)
    if ms:
        ans = ms[-1].strip()
    else:
        ml = _FINAL_ANSWER_LINE_RE.findall(text)
        if not ml:
            return None
        ans = ml[-1].strip()
    ans = ans.strip().strip("$").strip().rstrip(".").strip()
    return ans or None


# Unit words that may follow a number and be dropped ("10 cm", "5 square units").  Only
# KNOWN units: any other word after a number is mathematics ("2 pi", "2 sin x", "3 log x",
# "2 ab") and dropping it would make such answers equal to the bare number.  Single
# letters (m, s, h, g, L) are units only inside \text{}/\mathrm{} or after "/" ("km/h"):
# bare, they are variables.
_UNIT_WORDS = frozenset(
    """
    mm millimeter millimeters millimetre millimetres cm centimeter centimeters centimetre
    centimetres meter meters metre metres km kilometer kilometers kilometre kilometres
    in inch inches ft foot feet yd yard yards mile miles
    sq square cubic acre acres hectare hectares ml milliliter milliliters liter liters litre
    litres gallon gallons gal quart quarts pint pints cup cups cc
    sec secs second seconds min mins minute minutes hr hrs hour hours day days week weeks
    month months year years yr yrs decade decades
    dollar dollars cent cents penny pennies nickel nickels dime dimes euro euros
    degree degrees deg radian radians
    mg milligram milligrams gram grams kg kilogram kilograms lb lbs pound pounds ounce ounces
    oz ton tons tonne tonnes
    mph kph per percent
    unit units student students people person persons child children adult adults way ways
    integer integers point points digit digits edge edges vertex vertices face faces
    meal meals multiple multiples handshake handshakes game games page pages tile tiles
    marble marbles coin coins book books box boxes ball balls card cards seat seats
    apple apples egg eggs cookie cookies candy candies piece pieces slice slices
    stamp stamps flower flowers tree trees car cars chair chairs side sides diagonal diagonals
    triangle triangles rectangle rectangles letter letters word words term terms
    """.split()
)
_SHORT_UNITS = frozenset("m s h g l".split())
# A number: the head a bare unit tail may follow.
_NUMERIC_HEAD = r"[-+]?(?:\d[\d,]*(?:\.\d+)?|\.\d+|\\frac\{\d+\}\{\d+\})"
_UNIT_TAIL_RE = re.compile(
    r"(" + _NUMERIC_HEAD + r")((?:\s*(?:/\s*)?[a-zA-Z]+(?![a-zA-Z])\.?(?:\^\{?[23]\}?)?)+)"
)
_UNIT_TOKEN_RE = re.compile(r"(/?)\s*([a-zA-Z]+)")
# A trailing \text{ cm}, \mbox{ inches}, \mathrm{m}^2 after something non-empty.
_TRAILING_TEXT_RE = re.compile(
    r"(?<=\S)\s*\\(?P<cmd>text|textrm|textnormal|mbox|mathrm)\{\s*(?P<words>[a-zA-Z][a-zA-Z ./]*)\}"
    r"(?:\^\{?\d\}?)?$"
)


def _is_unit_phrase(words: str, *, short_ok: bool) -> bool:
    tokens = _UNIT_TOKEN_RE.findall(words)
    return bool(tokens) and all(
        w.lower() in _UNIT_WORDS or ((short_ok or slash) and w.lower() in _SHORT_UNITS) for slash, w in tokens
    )


def _strip_trailing_text_unit(t: str) -> str:
    m = _TRAILING_TEXT_RE.search(t)
    if m is None:
        return t
    # Text mode marks a label, whatever the word (Hendrycks drops any "\text{ ...}"); but
    # \mathrm{} is also upright math ("2\mathrm{i}", "\mathrm{e}"), so only units go.
    if m.group("cmd") == "mathrm" and not _is_unit_phrase(m.group("words"), short_ok=True):
        return t
    return t[: m.start()].strip()


_TEXT_WRAPPER_RE = re.compile(r"\\(?:text|textrm|textbf|textnormal|textit|mbox|mathrm|mathbf)\{([^{}]*)\}")
_PLAIN_DECIMAL_RE = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|-?\.\d+")
_SHORT_LHS_RE = re.compile(r"[a-zA-Z](?:_\{?[a-zA-Z0-9]+\}?)?")


def _fix_frac_args(s: str) -> str:
    """``\\frac12`` -> ``\\frac{1}{2}``, ``\\frac1{b}`` -> ``\\frac{1}{b}`` (LaTeX single-token args)."""
    out: list[str] = []
    i = 0
    while True:
        j = s.find("\\frac", i)
        if j < 0:
            out.append(s[i:])
            return "".join(out)
        out.append(s[i : j + 5])
        k = j + 5
        if k < len(s) and s[k].isalpha():  # \fracture-like command: not \frac
            i = k
            continue
        for _ in range(2):
            if k >= len(s):
                break
            if s[k] == "{":
                group = _balanced_group(s, k)
                if group is None:
                    break
                out.append("{" + group[0] + "}")
                k = group[1]
            elif s[k] == "\\":
                # a command argument: \frac\pi2 -> \frac{\pi}{2}
                m = re.match(r"\\[a-zA-Z]+", s[k:])
                if m is None:
                    break
                out.append("{" + m.group(0) + "}")
                k += len(m.group(0))
            else:
                out.append("{" + s[k] + "}")
                k += 1
        i = k


def normalize_math(s: str) -> str:
    """Hendrycks/Minerva-style canonical string for a MATH answer.

    Applied in order: unwrap a ``\\boxed{}``; ``\u2212`` (and an en dash used as a sign,
    ``\u201310``) -> ``-``; drop ``\\left``/``\\right``, ``\\displaystyle``, spacing commands
    (``\\!``, ``\\,``, ``\\;``, ``\\quad``...), degrees (``^\\circ``), ``$``/``\\$``,
    ``\\%``/``%``, LaTeX thousands ``{,}``; ``\\dfrac``/``\\tfrac`` -> ``\\frac``; remove a
    trailing unit -- any word in ``\\text{}``/``\\mbox{}`` (``10\\text{ cm}``), a known unit
    in ``\\mathrm{}``, and after a bare number only a known unit word (``10 cm``,
    ``5 square units``, but not ``2 pi``, ``2 sin x``, ``2 ab``) -- and unwrap other
    ``\\text{}``; a short left-hand side (``x=3`` -> ``3``, Hendrycks' rule: one variable,
    optionally subscripted); remove spaces; ``\\frac12`` -> ``\\frac{1}{2}``, ``\\sqrt3`` ->
    ``\\sqrt{3}``; integer ``a/b`` -> ``\\frac{a}{b}``; ``.5`` -> ``0.5``; trailing ``.``; and
    finally a plain decimal is printed canonically (``5.0`` -> ``5``, ``0.50`` -> ``0.5``,
    ``1,000`` -> ``1000``; commas are only treated as thousands separators in valid
    3-digit groups, so the tuple ``1,2`` is left alone).
    """
    if s is None:
        return ""
    t = s.strip()
    boxed = last_boxed(t)
    if boxed is not None and _BOX_CMD_RE.match(t):
        t = boxed
    t = _ascii_minus(t.replace("\n", " ")).strip()
    t = re.sub(r"\\(?:left|right)(?![a-zA-Z])", "", t)
    t = re.sub(r"\\displaystyle(?![a-zA-Z])", "", t)
    # (?<!\\) keeps a LaTeX row break "\\ " intact.
    t = re.sub(r"(?<!\\)\\(?:!|,|;|:|>| )|\\q?quad(?![a-zA-Z])", " ", t)
    t = re.sub(r"\^\s*\{?\s*\\circ\s*\}?|\\circ(?![a-zA-Z])|\\degree(?![a-zA-Z])|°", "", t)
    t = t.replace("\\$", "").replace("$", "")
    t = t.replace("\\%", "").replace("%", "")
    t = t.replace("{,}", "")
    t = re.sub(r"\\[dt]frac(?![a-zA-Z])", r"\\frac", t)
    t = t.strip().rstrip(".").strip()
    # Units: a trailing \text{...} unit (possibly repeated, e.g. "\text{ sq }\text{units}").
    prev = None
    while prev != t:
        prev = t
        t = _strip_trailing_text_unit(t)
    t = _TEXT_WRAPPER_RE.sub(r"\1", t).strip()
    m = _UNIT_TAIL_RE.fullmatch(t)
    if m and _is_unit_phrase(m.group(2), short_ok=False):
        t = m.group(1)
    # "x = 3" -> "3": only for a single (subscripted) variable on the left, so that
    # equations such as "y = 2x + 1" keep their meaning as a whole answer.
    if t.count("=") == 1:
        lhs, rhs = (p.strip() for p in t.split("="))
        if _SHORT_LHS_RE.fullmatch(lhs) and rhs:
            t = rhs
    # Remove spaces, but keep one where it ends a command ("2\pi r" must not become the
    # undefined "\pir"); \x00 marks those while the rest are deleted.
    t = re.sub(r"(\\[a-zA-Z]+)\s+(?=[a-zA-Z])", "\\1\x00", t)
    t = re.sub(r"\s+", "", t).replace("\x00", " ")
    t = re.sub(r"\\sqrt([^{\[\\])", r"\\sqrt{\1}", t)
    t = _fix_frac_args(t)
    m = re.fullmatch(r"(-?)(\d+)/(\d+)", t)
    if m:
        t = f"{m.group(1)}\\frac{{{m.group(2)}}}{{{m.group(3)}}}"
    t = re.sub(r"(?<![0-9a-zA-Z])\.(\d)", r"0.\1", t)
    t = t.rstrip(".")
    if _PLAIN_DECIMAL_RE.fullmatch(t):
        t = _decimal_to_str(Decimal(t.replace(",", "")))
    return t


def _on_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _math_verify_equiv(pred: str, gold: str) -> bool:
    """``math_verify`` equivalence of two answer strings (gold first: verify is asymmetric).

    math_verify's timeouts use ``signal.alarm``, which raises outside the main thread, so
    timeouts are switched off there (a pathological expression could then be slow; the
    main-thread path keeps the 5 s guard).
    """
    from math_verify import parse, verify

    timeout: int | None = 5 if _on_main_thread() else None

    def wrap(x: str) -> str:
        # Both sides go in as one inline-math expression; math_verify extracts $...$.
        return "$" + x.strip().strip("$").strip() + "$"

    gold_p = parse(wrap(gold), parsing_timeout=timeout)
    pred_p = parse(wrap(pred), parsing_timeout=timeout)
    if not gold_p or not pred_p:
        return False
    return bool(verify(gold_p, pred_p, timeout_seconds=timeout))


_SYMPY_ALLOWED_RE = re.compile(r"[0-9a-z+\-*/(). ]*")
_SYMPY_NAMES = {"sqrt", "pi"}


def _latex_to_sympy_src(s: str) -> str | None:
    """Tiny LaTeX -> sympy-source converter for the fallback (numbers, fracs, roots, pi)."""
    t = normalize_math(s)
    t = re.sub(r"\\(?:cdot|times)(?![a-zA-Z])", "*", t).replace("\\pi", "pi")
    # \frac{a}{b} -> ((a)/(b)) and \sqrt{a} -> sqrt(a), innermost first.
    for _ in range(20):
        new = re.sub(r"\\frac\{([^{}]*)\}\{([^{}]*)\}", r"((\1)/(\2))", t)
        new = re.sub(r"\\sqrt\{([^{}]*)\}", r"sqrt(\1)", new)
        if new == t:
            break
        t = new
    t = t.replace("^", "**").replace("{", "(").replace("}", ")")
    if "\\" in t or not _SYMPY_ALLOWED_RE.fullmatch(t):
        return None
    if set(re.findall(r"[a-z]+", t)) - _SYMPY_NAMES:
        return None  # only numeric expressions: parse_expr evaluates code, keep it boxed in
    if t.count("**") > 1 or any(len(d) > 12 for d in re.findall(r"\d+", t)):
        return None  # refuse towers/huge literals that would hang sympy
    return t


def _sympy_equiv(pred: str, gold: str) -> bool:
    """Numeric-expression fallback when math_verify is unavailable or errors."""
    try:
        import sympy
        from sympy.parsing.sympy_parser import (
            implicit_multiplication,
            parse_expr,
            standard_transformations,
        )

        a_src, b_src = _latex_to_sympy_src(pred), _latex_to_sympy_src(gold)
        if a_src is None or b_src is None:
            return False
        # "2sqrt(2)" / "2pi": LaTeX juxtaposition is multiplication.
        tr = (*standard_transformations, implicit_multiplication)
        names = {"sqrt": sympy.sqrt, "pi": sympy.pi}
        a = parse_expr(a_src, local_dict=names, transformations=tr)
        b = parse_expr(b_src, local_dict=names, transformations=tr)
        diff = complex(sympy.N(a - b))
        return abs(diff) <= 1e-9 * max(1.0, abs(complex(sympy.N(b))))
    except Exception:
        return False


_LATEX_NAME_RE = re.compile(r"\\(?:begin|end)\{[^{}]*\}|\\[a-zA-Z]+")


def _has_free_letters(norm: str) -> bool:
    """Whether the value side (after the last ``=``) of a normalised answer has a variable."""
    return re.search(r"[a-zA-Z]", _LATEX_NAME_RE.sub("", norm.rsplit("=", 1)[-1])) is not None


@functools.lru_cache(maxsize=65536)
def _math_equiv_cached(pred: str, gold: str) -> bool:
    p, g = normalize_math(pred), normalize_math(gold)
    if not p or not g:
        return False
    if p == g:
        return True
    # A variable on one side only cannot be equivalent.  math_verify drops some letters
    # after a number as units ("2ab", "2 ab", "5 m", "2\mathrm{i}" all parse as 2); the
    # normaliser already removed the known units, so what is left is mathematics.
    if _has_free_letters(p) != _has_free_letters(g):
        return False
    try:
        if _math_verify_equiv(pred, gold):
            return True
        # Normalisation can expose forms math_verify misses (e.g. "\frac12 cm").
        return (p, g) != (pred, gold) and _math_verify_equiv(p, g)
    except Exception:
        # ImportError, or math_verify raising despite raise_on_error=False (thread/signal
        # issues in exotic runtimes): a conservative numeric check is better than nothing.
        return _sympy_equiv(pred, gold)


def math_equiv(pred: str | None, gold: str | None) -> bool:
    """Whether a MATH prediction equals the gold answer.

    Normalised string equality (:func:`normalize_math`) first; if that fails,
    ``math_verify.parse``/``verify`` on the raw strings (each wrapped as ``$...$``), then
    on the normalised strings; if math_verify is unavailable or raises, a small
    sympy numeric comparison.  Hence ``\\frac{1}{2} == 0.5 == \\dfrac12`` and
    ``\\sqrt{4} == 2``.  An answer with a variable is never equal to one without (after
    the last ``=``): ``2ab != 2``, although math_verify alone says equal.  Convention:
    ``x=3`` is equivalent to ``3`` (Hendrycks strips a one-variable left-hand side;
    math_verify agrees).  ``None``/empty never matches.
    Safe to call from worker threads (math_verify's signal-based timeout is disabled there).
    """
    if pred is None or gold is None:
        return False
    return _math_equiv_cached(pred, gold)


# --------------------------------------------------------------------------------------
# ARC-Challenge
# --------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------
# Uniform interface
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


_ARC_LETTERS = ("A", "B", "C", "D", "E")
_ARC_DIGITS = ("1", "2", "3", "4", "5")


def score(dataset: str, completion: str, gold: str, *, labels: Sequence[str] | None = None) -> Scored:
    """Score one completion against its gold answer.

    ``dataset``:

    * ``"gsm8k"`` / ``"synthetic"``: ``gold`` is the GSM8K answer field (text after
      ``####`` is used) or the bare number.  ``answer``/``correct`` = flexible-extract
      (last number); ``strict_answer``/``strict_correct`` = strict-match.  Numbers are
      compared canonically (:func:`normalize_number`), so ``"5.0" == "5"``.
    * ``"math"``: ``gold`` is the answer or a full solution (its last ``\\boxed{}`` is
      used).  ``answer`` = :func:`normalize_math` of :func:`math_answer`; ``correct`` by
      :func:`math_equiv`.  ``strict_*`` use the last ``\\boxed{}`` only.
    * ``"arc_challenge"``: ``gold`` is the label; ``labels`` the item's labels (default
      A-E, or 1-5 when ``gold`` is a digit).  ``answer`` = :func:`extract_choice`.

    Raises ``ValueError`` for an unknown dataset or a gold answer that cannot be read.
    """
    ds = dataset.lower()
    if ds in ("gsm8k", "synthetic"):
        gold_n = normalize_number(gold_gsm8k(gold))
        if gold_n is None:
            raise ValueError(f"gold answer has no number: {gold!r}")
        flex = normalize_number(gsm8k_flexible(completion))
        strict = normalize_number(gsm8k_strict(completion))
        return Scored(flex, flex == gold_n, strict, strict == gold_n)
    if ds == "math":
        gold_raw = last_boxed(gold) if _BOX_CMD_RE.search(gold) else gold
        if gold_raw is None or not normalize_math(gold_raw):
            raise ValueError(f"unreadable MATH gold answer: {gold!r}")
        raw = math_answer(completion)
        answer = normalize_math(raw) if raw is not None else None
        answer = answer or None
        boxed = last_boxed(completion) if completion else None
        strict = normalize_math(boxed) if boxed is not None else None
        strict = strict or None
        correct = answer is not None and math_equiv(raw, gold_raw)
        if strict is None:
            strict_correct = False
        elif boxed == raw:
            strict_correct = correct
        else:
            strict_correct = math_equiv(boxed, gold_raw)
        return Scored(answer, correct, strict, strict_correct)
    if ds == "arc_challenge":
        g = gold.strip()
        labs = tuple(labels) if labels is not None else (_ARC_DIGITS if g.isdigit() else _ARC_LETTERS)
        by_lower = {str(lab).strip().lower(): str(lab).strip() for lab in labs}
        if g.lower() not in by_lower:
            raise ValueError(f"gold label {gold!r} not among labels {labs!r}")
        answer = extract_choice(completion, labs)
        return Scored(answer, answer == by_lower[g.lower()])
    raise ValueError(f"unknown dataset {dataset!r}; expected gsm8k, synthetic, math or arc_challenge")


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
