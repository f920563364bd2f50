"""Concepts: what a steering vector is read from and what its effect is read on.

Every concept implements the :class:`Concept` protocol (pairs, held-out probes, ``readout_for(tokenizer)``)
and is found by the registry (:func:`load_concept`, :func:`register_concept`; :mod:`.registry`). Built in:

* lexicon concepts (:mod:`.lexicon`) — ``sentiment``, ``topic``, ``formality``, ``certainty``, or a ``.jsonl``
  file of the same format: next-token log-odds of pole words;
* the paper's answer concept (:mod:`.answer`) — ``corrupted_answer``: gold vs corrupted final answer;
* behavioural A/B concepts (:mod:`.ab`) — ``ab:NAME`` (in-house sets), ``ab:PATH`` (model-written-evals or
  CAA files), ``caa:BEHAVIOUR`` (Rimsky et al.'s files, downloaded): the behaviour-matching answer letter.
"""

from __future__ import annotations

from xsteer.tasks.concepts import ab, answer
from xsteer.tasks.concepts.base import Concept, ConceptError, ConceptOptions
from xsteer.tasks.concepts.lexicon import (
    BUILTIN,
    LexiconConcept,
    WordLogOdds,
    concept_names,
    final_word,
    lexicon_score,
    load_lexicon,
    pole_token_ids,
)
from xsteer.tasks.concepts.readouts import NextTokenLogOdds, Readout
from xsteer.tasks.concepts.registry import (
    check_concept,
    concept_specs,
    load_concept,
    register_concept,
    register_concept_file,
    register_concept_kind,
)


def _lexicon(name: str, options: ConceptOptions) -> LexiconConcept:
    return load_lexicon(name, min_pairs=options.min_pairs, min_probes=options.min_probes)


def _register_builtins() -> None:
    for name in BUILTIN:
        register_concept(name, _lexicon)
    register_concept(answer.NAME, answer.load, check=answer.check)
    register_concept_file("concept", _lexicon)  # the first format is the default for a .jsonl path
    register_concept_file("question", ab.load_file)
    register_concept_file("ab", ab.load_file)
    register_concept_kind("ab", ab.load, help=f"NAME ({', '.join(ab.INHOUSE)}) or ab:PATH")
    register_concept_kind("caa", ab.load_caa, help=f"BEHAVIOUR ({', '.join(ab.CAA_BEHAVIOURS)})")


_register_builtins()

__all__ = [
    "BUILTIN",
    "Concept",
    "ConceptError",
    "ConceptOptions",
    "LexiconConcept",
    "NextTokenLogOdds",
    "Readout",
    "WordLogOdds",
    "check_concept",
    "concept_names",
    "concept_specs",
    "final_word",
    "lexicon_score",
    "load_concept",
    "load_lexicon",
    "pole_token_ids",
    "register_concept",
    "register_concept_file",
    "register_concept_kind",
]
