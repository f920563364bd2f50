"""Benchmark datasets as lists of :class:`Example`.

Datasets (``DATASETS``) and their splits ("train", "validation", "test"):

``gsm8k``
    train/test from ``gsm8k/{train,test}.jsonl`` (hub: ``openai/gsm8k``, config ``main``).
    ``validation`` is a seeded carve of :data:`VALIDATION_SIZE` problems out of the train file, and
    ``train`` EXCLUDES them, so contrastive pairs are never built from validation items.
    ``answer`` is the number after ``####`` with thousands separators removed ("1,080" -> "1080");
    ``solution`` is the text before ``####`` with the ``<<48/2=24>>`` calculator annotations removed.
``math``
    The full MATH benchmark: test = all 5,000 test problems (``math/test.jsonl``), train = the official
    7,500-problem train split minus a seeded validation carve. Offline, the train split is only read
    from ``math/train.jsonl`` if someone provides it (the shipped data lacks it); otherwise asking for
    ``math`` train/validation raises ``FileNotFoundError`` pointing to ``math500``. With the hub, train
    and test come from a maintained mirror (:data:`MATH_HUB_MIRRORS`), since ``hendrycks/competition_math``
    was taken down in January 2025.
``math500``
    The PRM800K split of MATH: test = MATH-500 (``math/math500.jsonl``; hub ``HuggingFaceH4/MATH-500``);
    train and validation come from the other 4,500 problems of the 5,000-problem test set (matched on
    ``unique_id`` offline, on the normalised problem text with the hub mirror, which has no ids), with a
    seeded validation carve of :data:`VALIDATION_SIZE`. Few-shot exemplars and contrastive pairs must
    come from this train split, so MATH-500 is never seen before evaluation.
``arc_challenge``
    train/validation/test files as given (hub: ``allenai/ai2_arc``, config ``ARC-Challenge``).
    Choice labels are kept as given: mostly A-D, some rows 1-4, a few rows have 3 or 5 choices.
``synthetic``
    Built-in templated multi-step arithmetic word problems (see :func:`synthetic_examples`); no data
    files needed. Useful for smoke tests and tiny models.

Ordering and ``limit``
    ``test`` keeps the file (or hub) order, so ``limit=n`` is a prefix that other tools can reproduce.
    ``train`` and ``validation`` are returned in a seeded shuffled order (``seed``), so ``limit=n`` is a
    random subset; this matters for MATH, whose files are sorted by subject. The validation carve also
    depends on ``seed``: load train and validation with the SAME seed or they may overlap.

Data location
    ``data_dir=None`` means :func:`default_data_dir` (the ``XSTEER_DATA_DIR`` environment variable); if
    that is unset too, the Hugging Face hub is used via ``datasets.load_dataset``. Hub rows are mapped
    to :class:`Example` by the same functions as the JSONL rows. Benchmark data is read in place and
    never copied into this repository.
"""

from __future__ import annotations

import json
import os
import random
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "DATASETS",
    "MATH_HUB_MIRRORS",
    "SPLITS",
    "SYNTHETIC_SIZES",
    "VALIDATION_SIZE",
    "Example",
    "default_data_dir",
    "exclude_examples",
    "last_boxed",
    "load_examples",
    "read_jsonl",
    "synthetic_examples",
]

DATASETS: tuple[str, ...] = ("gsm8k", "math", "math500", "arc_challenge", "synthetic")
SPLITS: tuple[str, ...] = ("train", "validation", "test")

#: Size of the validation carve taken out of a train pool (gsm8k, math, math500).
VALIDATION_SIZE = 500

#: Default split sizes of the built-in synthetic dataset.
SYNTHETIC_SIZES: dict[str, int] = {"train": 512, "validation": 64, "test": 128}

#: Hub mirrors of the full MATH dataset (train 7,500 / test 5,000), tried in order.
#: Each entry is (repo id, list of configs to concatenate).
MATH_HUB_MIRRORS: tuple[tuple[str, tuple[str | None, ...]], ...] = (
    (
        "EleutherAI/hendrycks_math",
        (
            "algebra",
            "counting_and_probability",
            "geometry",
            "intermediate_algebra",
            "number_theory",
            "prealgebra",
            "precalculus",
        ),
    ),
    ("DigitalLearningGmbH/MATH-lighteval", ("default",)),
)

ENV_DATA_DIR = "XSTEER_DATA_DIR"


@dataclass(frozen=True)
class Example:
    """One benchmark item.

    ``answer`` is the gold FINAL answer as a string (GSM8K number, MATH ``answer`` field, ARC label).
    ``solution`` is reference reasoning (GSM8K/MATH) or None (ARC). ``choices``/``labels`` are set for
    multiple choice only. ``meta`` carries extra fields (subject, level, ...) and is excluded from
    equality and hashing.
    """

    id: str
    question: str
    answer: str
    solution: str | None = None
    choices: tuple[str, ...] | None = None
    labels: tuple[str, ...] | None = None
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def answer_index(self) -> int | None:
        """Index of the gold answer among ``labels`` (multiple choice), else None."""
        if self.labels is None or self.answer not in self.labels:
            return None
        return self.labels.index(self.answer)


# --------------------------------------------------------------------------------------------------
# Generic helpers
# --------------------------------------------------------------------------------------------------


def default_data_dir() -> Path | None:
    """The offline data directory from ``$XSTEER_DATA_DIR``, or None (meaning: use the hub)."""
    value = os.environ.get(ENV_DATA_DIR, "").strip()
    return Path(value).expanduser() if value else None


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Read a JSON Lines file into a list of objects.

    Blank lines are skipped. A line that is not valid JSON, or not a JSON object, raises
    ``ValueError("{path}:{lineno}: ...")`` with the 1-based line number, so a user can fix
    hand-written files (this is also used for contrastive-pair files).
    """
    path = Path(path)
    rows: list[dict[str, Any]] = []
    # utf-8-sig: tolerate a byte-order mark written by some editors.
    with path.open(encoding="utf-8-sig") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: invalid JSON: {exc.msg} (column {exc.colno})") from exc
            if not isinstance(obj, dict):
                raise ValueError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
            rows.append(obj)
    return rows


def exclude_examples(examples: Iterable[Example], drop: Iterable[Example | str]) -> list[Example]:
    """``examples`` without the items in ``drop`` (Examples or ids), order kept.

    Used to keep few-shot exemplars out of the contrastive-pair set, as the paper does for MATH.
    """
    drop_ids = {d if isinstance(d, str) else d.id for d in drop}
    return [e for e in examples if e.id not in drop_ids]


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``, ``\\boxed x``) in ``text``, else None.

    Braces are matched, so nested groups such as ``\\boxed{\\frac{1}{2}}`` come back whole. This is the
    rule that produced the ``answer`` field of the offline MATH files.
    """
    idx = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if idx < 0:
        return None
    rest = text[idx:]
    rest = rest[len("\\boxed") :] if rest.startswith("\\boxed") else rest[len("\\fbox") :]
    if rest.startswith(" "):
        # "\boxed 5$" form: the argument runs to the next "$" or whitespace.
        m = re.match(r"\s+([^\s$]+)", rest)
        return m.group(1) if m else None
    if not rest.startswith("{"):
        return None
    depth = 0
    for i, ch in enumerate(rest):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return rest[1:i]
    return None  # unbalanced braces


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")


def _carve(pool: Sequence[Example], split: str, seed: int, n_val: int = VALIDATION_SIZE) -> list[Example]:
    """Seeded train/validation carve of ``pool``: validation = n_val items, train = the rest.

    Both come back in the seeded shuffled order so that ``limit`` gives a random subset. The
    permutation is computed on ids sorted, so it does not depend on how ``pool`` was ordered.
    """
    if len(pool) <= n_val:
        raise ValueError(f"pool of {len(pool)} items is too small for a validation carve of {n_val}")
    items = sorted(pool, key=lambda e: e.id)
    rng = random.Random(f"xsteer-carve/{seed}")
    rng.shuffle(items)
    return items[:n_val] if split == "validation" else items[n_val:]


def _shuffled(items: Sequence[Example], seed: int) -> list[Example]:
    """Seeded shuffle used for non-test splits that are not carved (ARC train/validation)."""
    out = list(items)
    random.Random(f"xsteer-order/{seed}").shuffle(out)
    return out


def _file(data_dir: Path, rel: str, name: str, split: str, available: Sequence[str]) -> Path:
    path = data_dir / rel
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found (dataset {name!r}, split {split!r}); "
            f"splits available for {name!r}: {', '.join(available)}"
        )
    return path


# --------------------------------------------------------------------------------------------------
# Row -> Example mappers (shared by the JSONL and the hub paths)
# --------------------------------------------------------------------------------------------------

_CALC_ANNOTATION = re.compile(r"<<.*?>>")


def _gsm8k_example(row: dict[str, Any], ex_id: str) -> Example:
    raw = str(row["answer"])
    if "####" not in raw:
        raise ValueError(f"GSM8K row {ex_id}: answer has no '####' marker")
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


def _parse_level(level: Any) -> int | None:
    if isinstance(level, int):
        return level
    m = re.search(r"\d+", str(level))  # hub mirrors say "Level 3"; some train rows say "Level ?"
    return int(m.group()) if m else None


def _math_example(row: dict[str, Any], ex_id: str | None = None) -> Example:
    solution = str(row["solution"])
    answer = row.get("answer")
    if answer is None:  # hub mirrors carry no answer field: same rule as the offline conversion
        answer = last_boxed(solution)
        if answer is None:
            raise ValueError(f"MATH row {ex_id or row.get('unique_id')}: no \\boxed answer in solution")
    subject = row.get("subject", row.get("type"))
    uid = row.get("unique_id") or ex_id
    if uid is None:
        raise ValueError("MATH row without unique_id needs an explicit id")
    return Example(
        id=str(uid),
        question=str(row["problem"]),
        answer=str(answer),
        solution=solution,
        meta={"subject": subject, "level": _parse_level(row.get("level")), "unique_id": row.get("unique_id")},
    )


def _arc_example(row: dict[str, Any]) -> Example:
    choices = row["choices"]
    texts = tuple(str(t) for t in choices["text"])
    labels = tuple(str(label) for label in choices["label"])
    answer = str(row["answerKey"])
    if answer not in labels:
        raise ValueError(f"ARC row {row.get('id')}: answerKey {answer!r} not among labels {labels}")
    return Example(
        id=str(row["id"]),
        question=str(row["question"]),
        answer=answer,
        solution=None,
        choices=texts,
        labels=labels,
        meta={"n_choices": len(texts)},
    )


def _norm_problem(text: str) -> str:
    return " ".join(text.split())


# --------------------------------------------------------------------------------------------------
# Hub loading (needs network; guarded so import never touches it)
# --------------------------------------------------------------------------------------------------


def _hub_split(repo: str, config: str | None, split: str, name: str) -> list[dict[str, Any]]:
    """Rows of one hub split; a missing split raises ValueError listing the available ones."""
    try:
        import datasets
    except ImportError as exc:  # pragma: no cover - datasets is a dependency
        raise ImportError("loading from the hub needs the `datasets` package") from exc
    try:
        dsd = datasets.load_dataset(repo, config) if config else datasets.load_dataset(repo)
    except Exception as exc:
        raise RuntimeError(
            f"could not load {repo!r} (config {config!r}) for dataset {name!r} from the hub: {exc}. "
            f"Offline, pass data_dir= or set ${ENV_DATA_DIR}."
        ) from exc
    if split not in dsd:
        raise ValueError(
            f"hub dataset {repo!r} (config {config!r}) has no split {split!r} for dataset {name!r}; "
            f"available splits: {', '.join(dsd.keys())}"
        )
    return [dict(r) for r in dsd[split]]


def _hub_math_full(split: str) -> list[Example]:
    """Full MATH train or test split from the first mirror that loads."""
    errors: list[str] = []
    for repo, configs in MATH_HUB_MIRRORS:
        try:
            out: list[Example] = []
            for config in configs:
                counters: dict[str, int] = {}
                for row in _hub_split(repo, config, split, "math"):
                    subject = str(row.get("type", config))
                    slug = re.sub(r"[^a-z]+", "_", subject.lower().replace("&", "and")).strip("_")
                    k = counters.get(slug, 0)
                    counters[slug] = k + 1
                    # The mirrors drop the original file names, so ids are positional and marked "hub".
                    out.append(_math_example(row, ex_id=f"hub/{split}/{slug}/{k}"))
            return out
        except (RuntimeError, ValueError) as exc:
            errors.append(f"{repo}: {exc}")
    raise RuntimeError("no MATH hub mirror could be loaded:\n  " + "\n  ".join(errors))


def _load_hub(name: str, split: str) -> list[Example]:
    if name == "gsm8k":
        file_split = "test" if split == "test" else "train"
        rows = _hub_split("openai/gsm8k", "main", file_split, name)
        return [_gsm8k_example(r, f"gsm8k/{file_split}/{i}") for i, r in enumerate(rows)]
    if name == "arc_challenge":
        return [_arc_example(r) for r in _hub_split("allenai/ai2_arc", "ARC-Challenge", split, name)]
    if name == "math500":
        test500 = [_math_example(r) for r in _hub_split("HuggingFaceH4/MATH-500", None, "test", name)]
        if split == "test":
            return test500
        held_out = {_norm_problem(e.question) for e in test500}
        full = _hub_math_full("test")
        pool = [e for e in full if _norm_problem(e.question) not in held_out]
        if len(full) - len(pool) != len(test500):
            warnings.warn(
                f"math500: matched {len(full) - len(pool)} of {len(test500)} MATH-500 problems in the hub "
                "mirror by text; unmatched ones may leak into train/validation",
                stacklevel=3,
            )
        return pool
    if name == "math":
        return _hub_math_full("test" if split == "test" else "train")
    raise AssertionError(name)  # pragma: no cover


# --------------------------------------------------------------------------------------------------
# Offline loading
# --------------------------------------------------------------------------------------------------


def _load_offline(name: str, split: str, data_dir: Path) -> list[Example]:
    """Raw pool for ``split``: the test split itself, or the train pool to carve (or ARC's own file)."""
    if name == "gsm8k":
        file_split = "test" if split == "test" else "train"
        path = _file(data_dir, f"gsm8k/{file_split}.jsonl", name, split, SPLITS)
        return [_gsm8k_example(r, f"gsm8k/{file_split}/{i}") for i, r in enumerate(read_jsonl(path))]
    if name == "arc_challenge":
        path = _file(data_dir, f"arc_challenge/{split}.jsonl", name, split, SPLITS)
        return [_arc_example(r) for r in read_jsonl(path)]
    if name == "math500":
        path500 = _file(data_dir, "math/math500.jsonl", name, split, SPLITS)
        test500 = [_math_example(r) for r in read_jsonl(path500)]
        if split == "test":
            return test500
        held_out = {e.id for e in test500}
        full = read_jsonl(_file(data_dir, "math/test.jsonl", name, split, SPLITS))
        pool = [_math_example(r) for r in full if r.get("unique_id") not in held_out]
        if len(full) - len(pool) != len(held_out):
            raise ValueError(
                f"{data_dir / 'math/test.jsonl'}: only {len(full) - len(pool)} of {len(held_out)} MATH-500 "
                "unique_ids found; refusing to build a train split that could contain test problems"
            )
        return pool
    if name == "math":
        if split == "test":
            path = _file(data_dir, "math/test.jsonl", name, split, SPLITS)
            return [_math_example(r) for r in read_jsonl(path)]
        path = data_dir / "math/train.jsonl"
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found (dataset 'math', split {split!r}): the MATH train split is not available "
                "offline, only split 'test' (full 5,000). Use dataset 'math500' (test = MATH-500, "
                "train/validation from the other 4,500 test problems, as PRM800K does), or the hub."
            )
        rows = read_jsonl(path)
        # A user-provided train file may lack unique_id: give positional ids that cannot clash with test.
        return [_math_example(r, ex_id=f"train/{i}") for i, r in enumerate(rows)]
    raise AssertionError(name)  # pragma: no cover


# --------------------------------------------------------------------------------------------------
# Synthetic arithmetic word problems
# --------------------------------------------------------------------------------------------------

_NAMES: tuple[tuple[str, str, str], ...] = (
    ("Ava", "she", "her"),
    ("Liam", "he", "his"),
    ("Maya", "she", "her"),
    ("Noah", "he", "his"),
    ("Zoe", "she", "her"),
    ("Omar", "he", "his"),
    ("Lena", "she", "her"),
    ("Ravi", "he", "his"),
)
_OBJECTS: tuple[str, ...] = (
    "apples",
    "pencils",
    "stickers",
    "marbles",
    "cookies",
    "books",
    "stamps",
    "oranges",
)
_CONTAINERS: tuple[tuple[str, str], ...] = (
    ("bags", "bag"),
    ("boxes", "box"),
    ("packs", "pack"),
    ("jars", "jar"),
)
_CONNECTIVES: tuple[str, ...] = ("Then", "After that,", "Next,", "Later,")


def _synthetic_problem(
    rng: random.Random,
) -> tuple[str, str, int, tuple[tuple[Any, ...], ...], dict[str, str]]:
    """One problem: (question, GSM8K-style answer text ending '#### N', N, ops, names).

    ``ops`` records the computation, e.g. (("start", 12), ("buy", 5), ("multiply", 3, 4), ("share", 2)),
    so tests can recompute the answer independently of the text.
    """
    name, pron, poss = rng.choice(_NAMES)
    obj = rng.choice(_OBJECTS)
    x = rng.randint(5, 40)
    ops: list[tuple[Any, ...]] = [("start", x)]
    q = [f"{name} has {x} {obj}."]
    sol = [f"{name} starts with {x} {obj}."]
    n_steps = rng.randint(2, 3)  # short enough for a 135M child to finish its chain of thought in 64 tokens
    shared = False
    connectives = rng.sample(_CONNECTIVES, n_steps)  # no connective repeats within a problem
    for step in range(n_steps):
        conn = connectives[step]
        last = step == n_steps - 1
        divisors = [k for k in range(2, 7) if x % k == 0]
        # Sharing changes what is counted (per friend), so it may only be the final step.
        kinds = ["buy", "sell", "multiply"] + (["share"] if last and divisors else [])
        if x < 2:
            kinds.remove("sell")
        kind = rng.choice(kinds)
        if kind == "buy":
            k = rng.randint(2, 30)
            q.append(f"{conn} {pron} buys {k} more {obj}.")
            sol.append(f"After buying {k} more, {pron} has {x} + {k} = {x + k} {obj}.")
            x += k
            ops.append(("buy", k))
        elif kind == "sell":
            k = rng.randint(1, min(x - 1, 25))
            q.append(f"{conn} {pron} sells {k} {obj}.")
            sol.append(f"After selling {k}, {pron} has {x} - {k} = {x - k} {obj}.")
            x -= k
            ops.append(("sell", k))
        elif kind == "multiply":
            plural, singular = rng.choice(_CONTAINERS)
            m, n = rng.randint(2, 6), rng.randint(2, 12)
            q.append(f"{conn} {pron} buys {m} {plural} of {obj} with {n} {obj} in each {singular}.")
            sol.append(
                f"The {m} {plural} hold {m} * {n} = {m * n} {obj}, so {pron} has {x} + {m * n} = {x + m * n} {obj}."
            )
            x += m * n
            ops.append(("multiply", m, n))
        else:
            k = rng.choice(divisors)
            q.append(f"{conn} {pron} shares all of {poss} {obj} equally among {k} friends.")
            sol.append(f"Each of the {k} friends gets {x} / {k} = {x // k} {obj}.")
            x //= k
            ops.append(("share", k))
            shared = True
    q.append(f"How many {obj} does each friend get?" if shared else f"How many {obj} does {name} have now?")
    answer_text = "\n".join(sol) + f"\n#### {x}"
    return " ".join(q), answer_text, x, tuple(ops), {"name": name, "object": obj}


def synthetic_examples(split: str, *, seed: int = 0, n: int | None = None) -> list[Example]:
    """Deterministic synthetic split (default sizes :data:`SYNTHETIC_SIZES`).

    Splits are generated from different seeds and made disjoint by question text: test is generated
    first, validation avoids test, train avoids both. Each raw problem is GSM8K-shaped
    (``{"question", "answer": "... #### N"}``) and mapped exactly like a GSM8K row, so ``solution``
    excludes the ``####`` line; ``meta["ops"]`` records the computation for verification.
    """
    _check_split(split)
    taken: set[str] = set()
    out: list[Example] = []
    for s in ("test", "validation", "train"):
        size = n if (n is not None and s == split) else SYNTHETIC_SIZES[s]
        rng = random.Random(f"xsteer-synthetic/{s}/{seed}")
        out = []
        attempts = 0
        while len(out) < size:
            attempts += 1
            if attempts > 100 * size + 1000:  # the template space is huge; this only guards bugs
                raise RuntimeError(f"synthetic: could not generate {size} unique problems for {s!r}")
            question, raw, value, ops, names = _synthetic_problem(rng)
            if question in taken:
                continue
            taken.add(question)
            ex = _gsm8k_example({"question": question, "answer": raw}, f"synthetic/{s}/{len(out)}")
            out.append(
                Example(
                    id=ex.id,
                    question=ex.question,
                    answer=ex.answer,
                    solution=ex.solution,
                    meta={**ex.meta, "ops": ops, "value": value, **names, "seed": seed},
                )
            )
        if s == split:
            return out
    raise AssertionError(split)  # pragma: no cover


# --------------------------------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------------------------------


def load_examples(
    name: str,
    split: str,
    *,
    data_dir: str | Path | None = None,
    limit: int | None = None,
    seed: int = 0,
) -> list[Example]:
    """Load ``split`` of dataset ``name`` as a deterministic list of :class:`Example`.

    ``data_dir`` (default :func:`default_data_dir`) points at the offline JSONL tree; if it is None
    the Hugging Face hub is used. ``limit`` keeps the first ``limit`` items of the split's order
    (file order for test, seeded order for train/validation; see the module docstring). ``seed``
    fixes the validation carve and the train/validation order.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {DATASETS}")
    _check_split(split)
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0 or None, got {limit}")

    if name == "synthetic":
        items = synthetic_examples(split, seed=seed)
        return items if limit is None else items[:limit]

    root = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    pool = _load_offline(name, split, root) if root is not None else _load_hub(name, split)

    if split == "test":
        items = pool
    elif name == "arc_challenge":
        items = _shuffled(pool, seed)  # ARC ships its own validation file: nothing to carve
    else:
        items = _carve(pool, split, seed)
    return items if limit is None else items[:limit]
