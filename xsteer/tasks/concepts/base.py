"""What every concept is: the :class:`Concept` protocol, and the options its loaders take.

A concept is what a steering vector is read from and what its effect is read on:

* ``pairs`` — contrastive (positive, negative) texts that differ in the concept only (vectors are read at the
  last token);
* ``probes`` — held-out items, never among the pairs, that :meth:`Concept.readout_for` reads the concept on;
* ``readout_for(tokenizer)`` — the :class:`~xsteer.tasks.concepts.readouts.Readout` of this concept on that
  tokenizer: one number per (λ, probe), the concept's position on its axis.

Three kinds implement it: the lexicon concepts (:mod:`~xsteer.tasks.concepts.lexicon`: next-token log-odds of
pole words), the paper's answer concept (:mod:`~xsteer.tasks.concepts.answer`: gold vs corrupted final answer)
and the behavioural A/B concepts (:mod:`~xsteer.tasks.concepts.ab`: the behaviour-matching answer letter).
Code that uses a concept asks it; it never tests which kind it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from xsteer.errors import InputError

if TYPE_CHECKING:
    from xsteer.tasks.concepts.readouts import Readout


class ConceptError(InputError):
    """A concept file (or name) that cannot be used; the message names the file and line at fault."""


@runtime_checkable
class Concept(Protocol):
    """A concept: contrastive pairs, held-out probes and the readout that reads it on them."""

    @property
    def name(self) -> str: ...

    @property
    def description(self) -> str: ...

    @property
    def source(self) -> str:
        """Where it came from: a file path, ``builtin:<name>``, a hub address."""
        ...

    @property
    def poles(self) -> tuple[str, str]:
        """The names of its two poles, positive first."""
        ...

    @property
    def pairs(self) -> tuple[tuple[str, str], ...]:
        """(positive text, negative text) pairs that differ in the concept only."""
        ...

    @property
    def probes(self) -> Sequence[Any]:
        """Held-out items its readout reads (prompts, answer probes, A/B items); never among the pairs."""
        ...

    @property
    def open_ended(self) -> bool:
        """Whether its probes are open prompts whose steered continuations say where the text sits between
        the poles (:meth:`score_text`): the generation readout and the judge read those, and the fidelity study
        reads every open-ended concept as an off-target readout of the others (specificity)."""
        ...

    def readout_for(self, tokenizer: Any) -> Readout:
        """Its readout on this tokenizer; :class:`ConceptError` when the tokenizer cannot read it."""
        ...

    def score_text(self, text: str) -> int:
        """How far a generated text sits towards the positive pole (open-ended concepts only)."""
        ...


@dataclass(frozen=True)
class ConceptOptions:
    """What a concept loader may use besides the name: benchmark data, a seed, and the sizes a caller needs."""

    data_dir: str | Path | None = None
    seed: int = 0
    min_pairs: int = 1
    min_probes: int = 1


def check_sizes(concept: Concept, options: ConceptOptions) -> None:
    """Refuse a concept with fewer pairs or probes than the caller needs."""
    for what, have, need in (
        ("pairs", len(concept.pairs), options.min_pairs),
        ("probes", len(concept.probes), options.min_probes),
    ):
        if have < need:
            raise ConceptError(
                f"{concept.source}: concept {concept.name!r} has {have} {what}, fewer than the {need} required"
            )


__all__ = ["Concept", "ConceptError", "ConceptOptions", "check_sizes"]
