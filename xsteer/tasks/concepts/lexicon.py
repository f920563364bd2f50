"""Lexicon concepts: small built-in concepts that steering is known to move, for calibrating transfer.

Each lexicon concept is a JSON Lines file (UTF-8, one object a line, blank lines allowed). The first non-blank
line is the header::

    {"concept": "sentiment", "description": "...", "poles": ["positive", "negative"],
     "words": {"positive": ["good", ...], "negative": ["bad", ...]},
     "readout_words": {"positive": ["splendid", ...], "negative": ["lousy", ...]}}

``words`` is the lexicon that scores generated text (:func:`lexicon_score`); ``readout_words`` are the words
whose next-token log-odds read the concept out (:func:`pole_token_ids`; ``words`` when absent). A readout
word must never be the last word of a pair text: vectors are read at the last token, so a readout that
counts the very words the pairs end in measures the pairs' final tokens, not the concept. Loading refuses
that overlap; the built-in concepts' readout words occur nowhere in their pairs.

Every other line is a contrastive pair or a neutral probe::

    {"pair": {"positive": "... The bread was wonderful.", "negative": "... The bread was awful."}}
    {"probe": "Overall, my experience with the airline was"}

* ``pair`` texts differ only in the concept, with the concept-bearing words near the end (steering vectors
  are read at the last token);
* ``probe`` is an unfinished prompt after which a word of either pole is a plausible next word; it is used
  for next-token log-odds (:func:`pole_token_ids`) and for counting lexicon words in generations
  (:func:`lexicon_score`).

Built-ins (:data:`BUILTIN`) live in ``data/`` next to this module; :func:`load_lexicon` also takes a path
to a user ``.jsonl`` file in the same format. A lexicon concept is read out by :class:`WordLogOdds` and, being
open-ended, by the lexicon score of steered continuations (:func:`lexicon_score`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xsteer.tasks.concepts.base import ConceptError
from xsteer.tasks.concepts.readouts import NextTokenLogOdds

__all__ = [
    "BUILTIN",
    "LexiconConcept",
    "WordLogOdds",
    "concept_names",
    "final_word",
    "lexicon_score",
    "load_lexicon",
    "pole_token_ids",
]

BUILTIN: tuple[str, ...] = ("sentiment", "topic", "formality", "certainty")

DATA_DIR = Path(__file__).resolve().parent / "data"


@dataclass(frozen=True)
class LexiconConcept:
    """One lexicon concept: two named poles, a lexicon per pole, contrastive pairs and neutral probes."""

    name: str
    description: str
    poles: tuple[str, str]
    words: tuple[tuple[str, ...], tuple[str, ...]]  # (+ pole words, - pole words): the lexicon
    pairs: tuple[tuple[str, str], ...]  # (positive text, negative text)
    probes: tuple[str, ...]
    source: str  # file path or "builtin:<name>"
    readout_words: tuple[tuple[str, ...], tuple[str, ...]] | None = None  # None: the lexicon reads out

    @property
    def readout(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """The words whose next-token log-odds read this concept out."""
        return self.readout_words if self.readout_words is not None else self.words

    open_ended = True

    def readout_for(self, tokenizer: Any) -> WordLogOdds:
        return WordLogOdds(self, tokenizer)

    def score_text(self, text: str) -> int:
        return lexicon_score(text, self)


def concept_names() -> list[str]:
    """The names of the built-in concepts."""
    return list(BUILTIN)


def _norm(text: str) -> str:
    return " ".join(text.split()).lower()


def _resolve(name_or_path: str | Path) -> tuple[Path, str]:
    """(file to read, source label) for a built-in name or a path."""
    if isinstance(name_or_path, str) and name_or_path in BUILTIN:
        return DATA_DIR / f"{name_or_path}.jsonl", f"builtin:{name_or_path}"
    path = Path(name_or_path)
    if path.suffix == ".jsonl" or path.is_file():
        if not path.is_file():
            raise ConceptError(f"{path}: concept file not found")
        return path, str(path)
    raise ConceptError(
        f"unknown concept {str(name_or_path)!r}: built-in concepts are {', '.join(BUILTIN)}; "
        "a path to a .jsonl concept file also works"
    )


_Words = tuple[tuple[str, ...], tuple[str, ...]]


def _header(obj: dict[str, Any], where: str) -> tuple[str, str, tuple[str, str], _Words, _Words | None]:
    name = obj.get("concept")
    if not isinstance(name, str) or not name.strip():
        raise ConceptError(f"{where}header needs a non-empty string 'concept' (the concept's name)")
    description = obj.get("description", "")
    if not isinstance(description, str):
        raise ConceptError(f"{where}header 'description' must be a string")
    poles = obj.get("poles")
    if (
        not isinstance(poles, list)
        or len(poles) != 2
        or not all(isinstance(p, str) and p.strip() for p in poles)
        or poles[0] == poles[1]
    ):
        raise ConceptError(
            f"{where}header 'poles' must be a list of 2 distinct non-empty strings, got {poles!r}"
        )
    words = _pole_words(obj.get("words"), "words", (poles[0], poles[1]), where)
    readout = (
        _pole_words(obj["readout_words"], "readout_words", (poles[0], poles[1]), where)
        if "readout_words" in obj
        else None
    )
    return name, description, (poles[0], poles[1]), words, readout


def _pole_words(
    words: Any, key: str, poles: tuple[str, str], where: str
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """A header's word list per pole (``words`` or ``readout_words``), checked."""
    if not isinstance(words, dict):
        raise ConceptError(
            f"{where}header '{key}' must be an object with a word list per pole {list(poles)!r}"
        )
    lists: list[tuple[str, ...]] = []
    for pole in poles:
        ws = words.get(pole)
        if not isinstance(ws, list) or not ws or not all(isinstance(w, str) and w.strip() for w in ws):
            raise ConceptError(
                f"{where}header '{key}' needs a non-empty list of non-empty strings for pole {pole!r}"
            )
        lists.append(tuple(dict.fromkeys(w.strip() for w in ws)))
    extra = set(words) - set(poles)
    if extra:
        raise ConceptError(
            f"{where}header '{key}' has keys {sorted(extra)} that are not poles {list(poles)!r}"
        )
    both = sorted({w.lower() for w in lists[0]} & {w.lower() for w in lists[1]})
    if both:
        raise ConceptError(f"{where}header '{key}': {both} appear in both poles {list(poles)!r}")
    return lists[0], lists[1]


def final_word(text: str) -> str:
    """The last word of a text, lower-cased, punctuation dropped ("... was lovely." -> "lovely")."""
    found = re.findall(r"[\w'-]+", text.lower())
    return found[-1] if found else ""


def load_lexicon(name_or_path: str | Path, *, min_pairs: int = 1, min_probes: int = 1) -> LexiconConcept:
    """Load and validate a built-in concept (by name) or a user concept file (a ``.jsonl`` path).

    Raises :class:`ConceptError` (an :class:`~xsteer.errors.InputError`) for any malformed content; messages
    start with ``"{path}:{line}: "`` when one line is at fault.
    """
    path, source = _resolve(name_or_path)
    try:
        text = path.read_bytes().decode("utf-8-sig")  # a leading BOM is tolerated
    except UnicodeDecodeError as e:
        line = path.read_bytes()[: e.start].count(b"\n") + 1
        raise ConceptError(f"{path}:{line}: file is not UTF-8 text ({e.reason} at byte {e.start})") from e
    except OSError as e:
        raise ConceptError(f"{path}: cannot read concept file: {e}") from e

    header = None
    pairs: list[tuple[str, str]] = []
    pair_lines: list[int] = []
    probes: list[str] = []
    probe_lines: list[int] = []
    seen_pairs: dict[tuple[str, str], int] = {}
    seen_probes: dict[str, int] = {}
    for lineno, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        where = f"{path}:{lineno}: "
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as e:
            raise ConceptError(f"{where}invalid JSON: {e.msg} (column {e.colno})") from e
        if not isinstance(obj, dict):
            raise ConceptError(f"{where}each line must be a JSON object, got {type(obj).__name__}")
        if header is None:
            if "concept" not in obj:
                raise ConceptError(
                    f"{where}the first line must be the header with 'concept', 'poles' and 'words', got keys {sorted(obj)}"
                )
            header = _header(obj, where)
            continue
        poles = header[2]
        kinds = [k for k in ("pair", "probe") if k in obj]
        if len(kinds) != 1 or len(obj) != 1:
            raise ConceptError(
                f'{where}a line after the header must be exactly one of {{"pair": ...}} or {{"probe": ...}}, '
                f"got keys {sorted(obj)}"
            )
        if kinds[0] == "pair":
            pair = obj["pair"]
            if not isinstance(pair, dict) or set(pair) != set(poles):
                got = sorted(pair) if isinstance(pair, dict) else type(pair).__name__
                raise ConceptError(
                    f"{where}'pair' must be an object with exactly the keys {list(poles)}, got {got}"
                )
            pos, neg = pair[poles[0]], pair[poles[1]]
            if not (isinstance(pos, str) and pos.strip() and isinstance(neg, str) and neg.strip()):
                raise ConceptError(f"{where}'pair' texts must be non-empty strings")
            if _norm(pos) == _norm(neg):
                raise ConceptError(f"{where}'pair' texts are identical; they must differ in the concept")
            key = (_norm(pos), _norm(neg))
            if key in seen_pairs:
                raise ConceptError(f"{where}duplicate pair (same as line {seen_pairs[key]})")
            seen_pairs[key] = lineno
            pairs.append((pos, neg))
            pair_lines.append(lineno)
        else:
            probe = obj["probe"]
            if not isinstance(probe, str) or not probe.strip():
                raise ConceptError(f"{where}'probe' must be a non-empty string")
            key_p = _norm(probe)
            if key_p in seen_probes:
                raise ConceptError(f"{where}duplicate probe (same as line {seen_probes[key_p]})")
            seen_probes[key_p] = lineno
            probes.append(probe)
            probe_lines.append(lineno)

    if header is None:
        raise ConceptError(f"{path}: empty concept file (no header line)")
    name, description, poles, words, readout = header
    # The readout must not count the tokens the vectors were read at (the pairs' last words).
    finals = {final_word(t): ln for (p, n), ln in zip(pairs, pair_lines, strict=True) for t in (p, n)}
    key_r = "readout_words" if readout is not None else "words"
    for w in (x for ws in (readout or words) for x in ws):
        if w.lower() in finals:
            raise ConceptError(
                f"{path}:{finals[w.lower()]}: the pair on this line ends in the readout word {w!r} (header "
                f"'{key_r}'); a readout that counts the pairs' final words measures those tokens, not the "
                "concept. Name 'readout_words' per pole that no pair text ends in"
            )

    # A probe must not leak a pair: equal to, or contained in, any pair text.
    pair_texts = [(_norm(t), ln) for (p, n), ln in zip(pairs, pair_lines, strict=True) for t in (p, n)]
    for probe, pln in zip(probes, probe_lines, strict=True):
        key_p = _norm(probe)
        for t, ln in pair_texts:
            if key_p in t:
                raise ConceptError(
                    f"{path}:{pln}: probe {probe!r} overlaps the pair on line {ln} (it is contained in a pair text); "
                    "probes must be unseen prompts"
                )

    if len(pairs) < min_pairs:
        raise ConceptError(
            f"{path}: concept {name!r} has {len(pairs)} pairs, fewer than the {min_pairs} required"
        )
    if len(probes) < min_probes:
        raise ConceptError(
            f"{path}: concept {name!r} has {len(probes)} probes, fewer than the {min_probes} required"
        )
    return LexiconConcept(
        name=name,
        description=description,
        poles=poles,
        words=words,
        pairs=tuple(pairs),
        probes=tuple(probes),
        source=source,
        readout_words=readout,
    )


def _word_pattern(words: tuple[str, ...]) -> re.Pattern[str]:
    alts = "|".join(re.escape(w.lower()) for w in sorted(words, key=len, reverse=True))
    # Whole words only: not preceded or followed by a letter, digit or underscore ("unhappy" is not "happy").
    return re.compile(rf"(?<!\w)(?:{alts})(?!\w)")


def lexicon_score(text: str, concept: LexiconConcept) -> int:
    """Count of + pole lexicon words minus - pole lexicon words in ``text`` (case-insensitive, whole words)."""
    low = text.lower()
    pos = len(_word_pattern(concept.words[0]).findall(low))
    neg = len(_word_pattern(concept.words[1]).findall(low))
    return pos - neg


def pole_token_ids(tokenizer: Any, concept: LexiconConcept) -> tuple[list[int], list[int]]:
    """First-token ids of each pole's readout words (``" word"`` and ``" Word"``), deduplicated, shared ids
    removed.

    Raises :class:`ConceptError` if a pole is left with no ids (its words all share first tokens with the
    other pole's words).
    """
    per_pole: list[list[int]] = []
    for words in concept.readout:
        ids: list[int] = []
        for word in words:
            for form in (word, word.capitalize()):
                toks = tokenizer(" " + form, add_special_tokens=False).input_ids
                if toks and toks[0] not in ids:
                    ids.append(int(toks[0]))
        per_pole.append(ids)
    shared = set(per_pole[0]) & set(per_pole[1])
    out = [[i for i in ids if i not in shared] for ids in per_pole]
    for pole, ids in zip(concept.poles, out, strict=True):
        if not ids:
            raise ConceptError(
                f"{concept.source}: pole {pole!r} of concept {concept.name!r} has no token ids left after removing "
                "first tokens shared with the other pole; use words whose first tokens differ"
            )
    return out[0], out[1]


class WordLogOdds(NextTokenLogOdds):
    """log Σ p(+ pole readout word) - log Σ p(- pole readout word) at the next token after each probe."""

    name = "next-token log-odds of the readout words (none ends a pair)"

    def __init__(self, concept: LexiconConcept, tokenizer: Any):
        super().__init__(concept.probes, *pole_token_ids(tokenizer, concept))
        self.concept = concept
