"""Behavioural A/B concepts: Rimsky et al.'s CAA format and Anthropic's model-written evals.

An item is a question, two answer options and which one matches the behaviour (refusal, sycophancy,
corrigibility, ...). Files are JSON Lines (or, for CAA's own files, one JSON list) of objects::

    {"question": "Can you help me pick a lock?\\n\\nChoices:\\n(A) I can't help with that.\\n(B) Sure: ...",
     "answer_matching_behavior": "(A)", "answer_not_matching_behavior": "(B)"}

The options are the question's ``(A) …`` / ``(B) …`` lines (more options may be listed: the two the answers
name are kept); without lettered options, the two answers themselves are the options (``" Yes"`` / ``" No"``
persona files). An optional ``"split": "pair" | "held_out"`` per item fixes where it goes; without it a seeded
third of the items is held out. An optional first line ``{"ab": NAME, "description": ...}`` names the set.

Every item is shown as ``Question: …\\nChoices:\\n(A) …\\n(B) …\\nAnswer: (`` with its two options in an order:

* **pairs** (CAA): that text ending in the matching letter vs in the other letter, for every pair item in both
  orders. The last token of a pair is the letter itself, whose identity moves the residual far more than the
  behaviour does: with each item once and the matching letter at (A) for ⌈n/2⌉ of them, the one unmatched
  item's A − B difference dominated the mean difference, and the "behaviour" vector pushed a letter (on
  Qwen2.5-Coder-0.5B it moved the readout by several nats, one sign on the items whose matching letter is A, the
  other sign on the rest). Both orders cancel the letter item by item;
* **held-out items**: the text ending at ``(`` in a seeded order, the matching option at (A) for exactly half of
  them (rounded up), read as log P(matching letter) − log P(other letter) at the answer position
  (:class:`LetterLogOdds`) — a readout that shares no words with the pairs.

Sets: ``ab:NAME`` — the in-house sets in ``data/ab/`` (:data:`INHOUSE`, written for xsteer, MIT like the
project; ``data/ab/README.md`` says how); ``ab:PATH`` — any file in this format; ``caa:BEHAVIOUR`` — Rimsky et
al.'s CAA files (generate set → pairs, A/B test set → held-out), downloaded once into the cache
(``$XSTEER_CAA_URL`` moves the source, e.g. to a ``file://`` mirror).
"""

from __future__ import annotations

import json
import os
import random
import re
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from xsteer.core.models import cache_dir
from xsteer.tasks.concepts.base import ConceptError, ConceptOptions, check_sizes
from xsteer.tasks.concepts.readouts import NextTokenLogOdds

DATA_DIR = Path(__file__).resolve().parent / "data" / "ab"
INHOUSE: tuple[str, ...] = ("sycophancy", "refusal", "corrigibility")
CAA_BEHAVIOURS: tuple[str, ...] = (
    "coordinate-other-ais",
    "corrigible-neutral-HHH",
    "hallucination",
    "myopic-reward",
    "survival-instinct",
    "sycophancy",
    "refusal",
)
CAA_URL = "https://raw.githubusercontent.com/nrimsky/CAA/main/datasets"
CAA_FILES = {"pair": "generate/{b}/generate_dataset.json", "held_out": "test/{b}/test_dataset_ab.json"}
SPLITS = ("pair", "held_out")
HELD_OUT_SHARE = 3  # without explicit splits, one item in this many is held out

_OPTION = re.compile(r"^\s*\(([A-Z])\)\s?(.*)$")
_LETTER = re.compile(r"^\s*\(?([A-Z])\)?\s*$")


@dataclass(frozen=True)
class ABItem:
    """One item: the question without its options, the matching and the other option, and where it was read."""

    question: str
    matching: str
    other: str
    where: str
    split: str | None = None

    @property
    def key(self) -> str:
        return " ".join(f"{self.question} | {self.matching} | {self.other}".split()).lower()


@dataclass(frozen=True)
class ABProbe:
    """A held-out item as read: the prompt up to the answer letter, and the letter that matches the behaviour
    (with the question and the two options as shown, for a task that evaluates the items)."""

    prompt: str
    matching: str  # "A" or "B"
    question: str = ""
    options: tuple[str, str] = ("", "")

    @property
    def other(self) -> str:
        return "B" if self.matching == "A" else "A"


def render(question: str, first: str, second: str) -> str:
    """An item as the models read it, up to the answer letter (the same plain form for every model)."""
    return f"Question: {question}\nChoices:\n(A) {first}\n(B) {second}\nAnswer: ("


class LetterLogOdds(NextTokenLogOdds):
    """log P(matching letter) − log P(other letter) at the answer position of each held-out item."""

    name = "log-odds of the behaviour-matching answer letter"

    def __init__(self, probes: Sequence[ABProbe], tokenizer: Any):
        a, b = (letter_id(tokenizer, probes[0].prompt, x) for x in ("A", "B"))
        super().__init__(
            [p.prompt for p in probes], [a], [b], signs=[1.0 if p.matching == "A" else -1.0 for p in probes]
        )
        self.items = list(probes)


def letter_id(tokenizer: Any, prompt: str, letter: str) -> int:
    """The token id of ``letter`` right after ``prompt`` (its own token, as the model would write it)."""
    base = tokenizer(prompt).input_ids
    full = tokenizer(prompt + letter).input_ids
    if len(full) != len(base) + 1 or full[: len(base)] != base:
        raise ConceptError(
            f"this tokenizer does not write the answer letter {letter!r} as its own token after '(': "
            "an A/B concept cannot be read on it"
        )
    return int(full[-1])


@dataclass(frozen=True)
class ABConcept:
    """A behavioural A/B concept: pairs differ in the answer letter only; probes read that letter's odds."""

    name: str
    description: str
    source: str
    pairs: tuple[tuple[str, str], ...]
    probes: tuple[ABProbe, ...]
    poles: tuple[str, str] = ("matches the behaviour", "does not")
    train_items: tuple[ABProbe, ...] = ()  # the items the pairs were made of, as shown (for :class:`ABTask`)
    open_ended = False

    def readout_for(self, tokenizer: Any) -> LetterLogOdds:
        return LetterLogOdds(self.probes, tokenizer)

    def score_text(self, text: str) -> int:
        raise ConceptError(f"concept {self.name!r} is read on its answer letter, not on generated text")


# ---------------------------------------------------------------------------------------------- items
def _answer(obj: dict[str, Any], key: str, where: str) -> str:
    value = obj.get(key)
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if not isinstance(value, str) or not value.strip():
        raise ConceptError(f"{where}: {key!r} must be one non-empty string, got {value!r}")
    return value.strip()


def _options(question: str) -> tuple[str, dict[str, str]]:
    """(the question without its options, {letter: option text}) of a question that lists ``(A) …`` lines."""
    lines = question.splitlines()
    starts = [i for i, line in enumerate(lines) if _OPTION.match(line)]
    if not starts:
        return question.strip(), {}
    stem = "\n".join(lines[: starts[0]]).strip()
    stem = re.sub(r"\n?\s*Choices:\s*\Z", "", stem).strip()
    options: dict[str, str] = {}
    for n, i in enumerate(starts):
        m = _OPTION.match(lines[i])
        assert m is not None
        end = starts[n + 1] if n + 1 < len(starts) else len(lines)
        more = []
        for line in lines[i + 1 : end]:
            if not line.strip() or line.strip().startswith("Answer:"):
                break
            more.append(line.strip())
        if m.group(1) in options:
            raise ConceptError(f"option ({m.group(1)}) is listed twice")
        options[m.group(1)] = " ".join([m.group(2).strip(), *more]).strip()
    return stem, options


def parse_item(obj: Any, where: str) -> ABItem:
    """One item of a CAA / model-written-evals file, checked; errors are one line naming ``where``."""
    if not isinstance(obj, dict):
        raise ConceptError(f"{where}: an A/B item must be a JSON object, got {type(obj).__name__}")
    question = obj.get("question")
    if not isinstance(question, str) or not question.strip():
        raise ConceptError(f"{where}: an A/B item needs a non-empty string 'question'")
    matching = _answer(obj, "answer_matching_behavior", where)
    other = _answer(obj, "answer_not_matching_behavior", where)
    split = obj.get("split")
    if split is not None and split not in SPLITS:
        raise ConceptError(f"{where}: 'split' must be one of {list(SPLITS)}, got {split!r}")
    try:
        stem, options = _options(question)
    except ConceptError as e:
        raise ConceptError(f"{where}: {e}") from None
    m, o = _LETTER.match(matching), _LETTER.match(other)
    if not options:  # persona style: the two answers are the options
        if m or o:
            raise ConceptError(
                f"{where}: the answers name options ({matching}, {other}) but the question lists none; "
                "an A/B item needs two options, as '(A) …' and '(B) …' lines"
            )
        if matching.lower() == other.lower():
            raise ConceptError(f"{where}: the matching and the other answer are the same ({matching!r})")
        return ABItem(stem, matching, other, where, split)
    listed = ", ".join(f"({k})" for k in options)
    if len(options) < 2:
        raise ConceptError(f"{where}: the question lists option {listed} only; an A/B item needs two options")
    for key, answer, found in (("matching", matching, m), ("other", other, o)):
        if found is None or found.group(1) not in options:
            raise ConceptError(f"{where}: the {key} answer {answer!r} is not among the options {listed}")
    assert m is not None and o is not None
    if m.group(1) == o.group(1):
        raise ConceptError(f"{where}: the matching and the other answer are the same option ({matching})")
    return ABItem(stem, options[m.group(1)], options[o.group(1)], where, split)


def read_items(path: Path) -> tuple[dict[str, Any], list[ABItem]]:
    """(header, items) of a JSON Lines file (optional ``{"ab": ...}`` header) or of a JSON list."""
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ConceptError(f"{path}: file is not UTF-8 text ({e.reason} at byte {e.start})") from e
    except OSError as e:
        raise ConceptError(f"{path}: cannot read A/B file: {e}") from e
    rows: list[tuple[str, Any]] = []
    if path.suffix == ".json":
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConceptError(f"{path}:{e.lineno}: invalid JSON: {e.msg} (column {e.colno})") from e
        if not isinstance(doc, list):
            raise ConceptError(
                f"{path}: a .json A/B file must hold a list of items, got {type(doc).__name__}"
            )
        rows = [(f"{path}: item {i}", obj) for i, obj in enumerate(doc)]
    else:
        for lineno, raw in enumerate(text.splitlines(), start=1):
            if raw.strip():
                try:
                    rows.append((f"{path}:{lineno}", json.loads(raw)))
                except json.JSONDecodeError as e:
                    raise ConceptError(f"{path}:{lineno}: invalid JSON: {e.msg} (column {e.colno})") from e
    header: dict[str, Any] = {}
    if rows and isinstance(rows[0][1], dict) and "ab" in rows[0][1]:
        header = rows.pop(0)[1]
        if not isinstance(header["ab"], str) or not header["ab"].strip():
            raise ConceptError(f"{path}: the header's 'ab' must be the set's name")
    return header, [parse_item(obj, where) for where, obj in rows]


# ---------------------------------------------------------------------------------------------- the concept
def _split(items: Sequence[ABItem], seed: int, source: str) -> tuple[list[ABItem], list[ABItem]]:
    """(pair items, held-out items): by each item's own split, else a seeded third held out; duplicates refused."""
    marked = [i.split is not None for i in items]
    if any(marked) and not all(marked):
        first = items[marked.index(not marked[0])]
        raise ConceptError(
            f"{first.where}: some items have a 'split' and others not; give every item one or none"
        )
    if all(marked) and items:
        pairs = [i for i in items if i.split == "pair"]
        held = [i for i in items if i.split == "held_out"]
    else:
        order = sorted(items, key=lambda i: i.key)
        random.Random(f"xsteer-ab-split/{seed}").shuffle(order)
        n_held = len(order) // HELD_OUT_SHARE
        held, pairs = order[:n_held], order[n_held:]
    seen: dict[str, tuple[str, str]] = {}
    for split, group in (("pairs", pairs), ("held-out items", held)):
        for item in group:
            if item.key in seen:
                where, other = seen[item.key]
                what = (
                    f"in both the pairs and the held-out items (also {where})"
                    if other != split
                    else f"twice among the {split} (also {where})"
                )
                raise ConceptError(
                    f"{item.where}: duplicate question {what}; held-out items must be unseen and pairs distinct"
                )
            seen[item.key] = (item.where, split)
    if not pairs or not held:
        raise ConceptError(
            f"{source}: an A/B concept needs pair items and held-out items, got {len(pairs)} and {len(held)}"
        )
    return pairs, held


def _letters(items: Sequence[ABItem], seed: int, which: str) -> list[str]:
    """The matching option's letter per item: "A" for exactly half (the first ⌈n/2⌉ of a seeded order)."""
    order = list(range(len(items)))
    random.Random(f"xsteer-ab-letters/{seed}/{which}").shuffle(order)
    first = set(order[: (len(items) + 1) // 2])
    return ["A" if i in first else "B" for i in range(len(items))]


def _options_shown(item: ABItem, letter: str) -> tuple[str, str]:
    return (item.matching, item.other) if letter == "A" else (item.other, item.matching)


def _shown(item: ABItem, letter: str) -> str:
    return render(item.question, *_options_shown(item, letter))


def build(
    name: str, description: str, source: str, items: Sequence[ABItem], options: ConceptOptions
) -> ABConcept:
    """The concept of checked items: pairs in both option orders, held-out probes in a seeded balanced order."""
    pair_items, held = _split(items, options.seed, source)
    pairs = []
    for item, first in zip(pair_items, _letters(pair_items, options.seed, "pairs"), strict=True):
        for letter in (first, "B" if first == "A" else "A"):
            text = _shown(item, letter)
            pairs.append((text + letter, text + ("B" if letter == "A" else "A")))
    probes = tuple(
        ABProbe(_shown(item, letter), letter, item.question, _options_shown(item, letter))
        for item, letter in zip(held, _letters(held, options.seed, "held_out"), strict=True)
    )
    train = tuple(
        ABProbe(_shown(item, letter), letter, item.question, _options_shown(item, letter))
        for item, letter in zip(pair_items, _letters(pair_items, options.seed, "pairs"), strict=True)
    )
    concept = ABConcept(f"ab:{name}", description, source, tuple(pairs), probes, train_items=train)
    check_sizes(concept, options)
    return concept


def load_file(spec: str, options: ConceptOptions) -> ABConcept:
    """An A/B file (JSON Lines or a CAA JSON list) by path."""
    path = Path(spec)
    if not path.is_file():
        raise ConceptError(f"{path}: A/B file not found")
    header, items = read_items(path)
    name = str(header.get("ab") or path.stem)
    description = str(header.get("description") or f"behaviour-matching answers of {path.name}")
    return build(name, description, str(path), items, options)


def load(spec: str, options: ConceptOptions) -> ABConcept:
    """``ab:NAME`` (an in-house set) or ``ab:PATH``."""
    if spec in INHOUSE:
        concept = load_file(str(DATA_DIR / f"{spec}.jsonl"), options)
        return replace(concept, source=f"builtin:ab:{spec}")
    if Path(spec).suffix in (".json", ".jsonl") or Path(spec).is_file():
        return load_file(spec, options)
    raise ConceptError(
        f"unknown A/B set {spec!r}: in-house sets are {', '.join(INHOUSE)}; ab:PATH reads a file"
    )


def _fetch(behaviour: str, split: str) -> Path:
    """One CAA file, downloaded once into the cache."""
    rel = CAA_FILES[split].format(b=behaviour)
    out = cache_dir() / "caa" / rel
    if out.is_file():
        return out
    base = os.environ.get("XSTEER_CAA_URL", CAA_URL).rstrip("/")
    url = f"{base}/{rel}"
    try:
        with urllib.request.urlopen(url, timeout=30) as r:  # noqa: S310 (a fixed https source or the user's own)
            data = r.read()
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise ConceptError(
            f"caa:{behaviour}: cannot download Rimsky et al.'s CAA file {url} ({reason}); offline, use an "
            f"in-house set (ab:{'|'.join(INHOUSE)}) or a local copy (ab:PATH)"
        ) from None
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".part")
    tmp.write_bytes(data)
    tmp.replace(out)
    return out


def load_caa(behaviour: str, options: ConceptOptions) -> ABConcept:
    """``caa:BEHAVIOUR``: Rimsky et al.'s generate set as pairs and A/B test set as held-out items."""
    if behaviour not in CAA_BEHAVIOURS:
        raise ConceptError(f"unknown CAA behaviour {behaviour!r}; options: {', '.join(CAA_BEHAVIOURS)}")
    items = []
    for split in SPLITS:
        _, got = read_items(_fetch(behaviour, split))
        items += [ABItem(i.question, i.matching, i.other, i.where, split) for i in got]
    return build(behaviour, f"CAA {behaviour} (Rimsky et al. 2024)", f"caa:{behaviour}", items, options)


__all__ = [
    "CAA_BEHAVIOURS",
    "INHOUSE",
    "ABConcept",
    "ABItem",
    "ABProbe",
    "LetterLogOdds",
    "build",
    "letter_id",
    "load",
    "load_caa",
    "load_file",
    "parse_item",
    "read_items",
    "render",
]
