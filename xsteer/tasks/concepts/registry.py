"""The concept registry: every concept by name, kind or file, behind one :func:`load_concept`.

A concept spec is one string (what ``xsteer fidelity --concept`` passes through):

* a **name** — ``sentiment``, ``topic``, ``formality``, ``certainty`` (lexicon concepts), ``corrupted_answer``
  (the paper's concept; needs benchmark data);
* ``KIND:REST`` — a registered **kind** reads REST: ``ab:refusal`` (an in-house behavioural A/B set),
  ``ab:PATH`` (a model-written-evals / CAA file), ``caa:refusal`` (Rimsky et al.'s CAA files, downloaded);
* a **path** to a ``.jsonl`` file, read by the file format its first line names (a lexicon header's
  ``concept`` key, or an A/B item's ``question``).

:func:`register_concept` adds a name, :func:`register_concept_kind` a ``KIND:`` prefix and
:func:`register_concept_file` a file format, each with a loader ``(name, options) -> Concept`` and, optionally,
a cheap ``check`` run before any model loads (default: the loader itself). SAELens' ``register_sae_class`` and
lm-eval's task registry at xsteer's size.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from xsteer.errors import InputError
from xsteer.tasks.concepts.base import Concept, ConceptError, ConceptOptions

Loader = Callable[[str, ConceptOptions], Concept]
Check = Callable[[str, ConceptOptions], None]


@dataclass(frozen=True)
class ConceptEntry:
    """How one name, kind or file format becomes a concept."""

    load: Loader
    check: Check | None = None  # cheap validation before any model loads; None: load it
    help: str = ""


_NAMES: dict[str, ConceptEntry] = {}
_KINDS: dict[str, ConceptEntry] = {}
_FILES: dict[str, ConceptEntry] = {}  # a key of a .jsonl file's first object -> its format


def _add(table: dict[str, ConceptEntry], what: str, key: str, entry: ConceptEntry, replace: bool) -> None:
    if not callable(entry.load) or (entry.check is not None and not callable(entry.check)):
        raise InputError(f"a concept {what}'s loader and check must be callable")
    if key in table and not replace:
        raise InputError(f"a concept {what} {key!r} is already registered (pass replace=True)")
    table[key] = entry


def register_concept(
    name: str, load: Loader, *, check: Check | None = None, help: str = "", replace: bool = False
) -> None:
    """Make a concept loadable by ``name`` (CLI ``--concept``, :func:`load_concept`, the fidelity study)."""
    if not name or ":" in name:
        raise InputError(f"a concept name must be non-empty and without ':', got {name!r}")
    _add(_NAMES, "name", name, ConceptEntry(load, check, help), replace)


def register_concept_kind(
    prefix: str, load: Loader, *, check: Check | None = None, help: str = "", replace: bool = False
) -> None:
    """Make ``PREFIX:REST`` specs loadable: ``load(REST, options)``."""
    if not prefix.isidentifier():
        raise InputError(f"a concept kind must be an identifier, got {prefix!r}")
    _add(_KINDS, "kind", prefix, ConceptEntry(load, check, help), replace)


def register_concept_file(
    key: str, load: Loader, *, check: Check | None = None, help: str = "", replace: bool = False
) -> None:
    """Read ``.jsonl`` files whose first object has ``key`` with ``load(path, options)``."""
    _add(_FILES, "file format", key, ConceptEntry(load, check, help), replace)


def concept_specs() -> list[str]:
    """Every registered name, then ``KIND:…`` per kind: what a concept spec may be besides a path."""
    return [*_NAMES, *(f"{k}:{_KINDS[k].help or 'NAME'}" for k in _KINDS)]


def _first_object(path: Path) -> dict[str, object]:
    """A file's first non-blank line as a JSON object ({} when it is not one: its loader says what is wrong)."""
    try:
        with path.open(encoding="utf-8-sig") as f:
            for line in f:
                if line.strip():
                    obj = json.loads(line)
                    return obj if isinstance(obj, dict) else {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        pass
    return {}


def _resolve(spec: str | Path) -> tuple[ConceptEntry, str]:
    """The entry that reads ``spec`` and the argument it gets."""
    text = str(spec)
    if isinstance(spec, str) and spec in _NAMES:
        return _NAMES[spec], spec
    kind, sep, rest = text.partition(":")
    if isinstance(spec, str) and sep and kind in _KINDS:
        if not rest:
            raise ConceptError(f"concept spec {text!r} names the kind {kind!r} but nothing of it")
        return _KINDS[kind], rest
    path = Path(spec)
    if path.suffix == ".jsonl" or path.is_file():
        if not path.is_file():
            raise ConceptError(f"{path}: concept file not found")
        first = _first_object(path)
        entry = next((e for key, e in _FILES.items() if key in first), None)
        return entry or next(iter(_FILES.values())), text
    names = ", ".join(_NAMES)
    kinds = "; ".join(f"{k}:{e.help or 'NAME'}" for k, e in _KINDS.items())
    raise ConceptError(
        f"unknown concept {text!r}: concepts are {names}; kinds {kinds}; a path to a .jsonl concept file also works"
    )


def load_concept(
    spec: str | Path,
    *,
    data_dir: str | Path | None = None,
    seed: int = 0,
    min_pairs: int = 1,
    min_probes: int = 1,
) -> Concept:
    """The concept a spec names (see the module docstring), checked to have at least ``min_pairs`` pairs and
    ``min_probes`` probes. Raises :class:`ConceptError` (an :class:`~xsteer.errors.InputError`) for anything
    that cannot be used; messages name the file and line at fault."""
    entry, arg = _resolve(spec)
    return entry.load(arg, ConceptOptions(data_dir, seed, min_pairs, min_probes))


def check_concept(spec: str | Path, *, data_dir: str | Path | None = None, seed: int = 0) -> None:
    """Fail now, one line, if ``spec`` cannot be loaded (cheaply where its kind knows how: before any model)."""
    entry, arg = _resolve(spec)
    options = ConceptOptions(data_dir, seed)
    if entry.check is not None:
        entry.check(arg, options)
    else:
        entry.load(arg, options)


__all__ = [
    "ConceptEntry",
    "check_concept",
    "concept_specs",
    "load_concept",
    "register_concept",
    "register_concept_file",
    "register_concept_kind",
]
