"""MATH answers: extraction (last ``\\boxed{}``, Minerva's phrase), Hendrycks/Minerva normalisation and
equivalence (``math_verify``, a sympy fallback): what :meth:`xsteer.tasks.math.Math.score` uses.

Pure functions over strings; deviations from lm-eval are listed in ``docs/scoring-deviations.md``.
"""

from __future__ import annotations

import functools
import re
import threading
from decimal import Decimal

from xsteer.tasks.scoring import Scored, ascii_minus, decimal_to_str

__all__ = ["last_boxed", "math_answer", "math_equiv", "normalize_math", "score_math"]


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
    t = ascii_minus(t.replace("\n", " ")).strip()
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
    # "x \in [-2, 7]" -> "[-2, 7]": set membership of a single variable states the set, as "x = 3" states 3
    # (lm-eval's math_verify matches the two); "\infty" is not "\in".
    parts = re.split(r"\\in(?![a-zA-Z])", t)
    if len(parts) == 2 and _SHORT_LHS_RE.fullmatch(parts[0].strip()) and parts[1].strip():
        t = parts[1].strip()
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
        t = decimal_to_str(Decimal(t.replace(",", "")))
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


def score_math(completion: str, gold: str) -> Scored:
    """Score one completion against a MATH gold: the answer or a full solution (its last ``\\boxed{}`` is
    used). ``answer`` = :func:`normalize_math` of :func:`math_answer`; ``correct`` by :func:`math_equiv`;
    ``strict_*`` use the last ``\\boxed{}`` only. Raises ``ValueError`` for an unreadable gold."""
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
