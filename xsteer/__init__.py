"""xsteer: transfer concepts (steering vectors) from a parent language model into smaller children of other
families, and measure what crosses.

The notebook-sized API::

    import xsteer as xs

    parent, child = xs.load("gemma3-270m"), xs.load("smollm2-135m")
    concept = xs.load_concept("sentiment")
    v_parent = xs.extract(parent, xs.concept_pairs(concept))
    tmap = xs.fit_transfer(parent, child, xs.fit_texts(xs.load_examples("synthetic", "train")[:128]))
    mapped = tmap.apply(v_parent, norm="resid_mean")
    with mapped.apply(child, lam=0.05):
        ...                                             # the child, steered
    xs.fidelity(child, concept, {"mapped": mapped}, native=...)   # how much of the concept crossed
    xs.evaluate(child, {"parent": mapped}, task="synthetic")      # the paper's protocol, with CIs

Everything else lives in the packages, one idea per module: ``core`` (models, vectors, injection,
generation), ``tasks`` (benchmarks and the concept suite), ``extraction``, ``transfer``, ``evaluation``,
``interop`` (llama.cpp, lm-eval) and ``app`` (CLI, configs, grid, reports).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"

# name -> module; loaded on first use, so `import xsteer` (and the CLI's start) stays fast.
_API = {
    "load": ("xsteer.core.models", "load_model"),
    "SteeringVectors": ("xsteer.core.vectors", "SteeringVectors"),
    "steer": ("xsteer.core.inject", "steer"),
    "generate": ("xsteer.core.generate", "generate"),
    "Steering": ("xsteer.core.generate", "Steering"),
    "get_task": ("xsteer.tasks", "get_task"),
    "load_examples": ("xsteer.tasks.data", "load_examples"),
    "load_concept": ("xsteer.tasks.concepts", "load_concept"),
    "build_pairs": ("xsteer.extraction.pairs", "build_pairs"),
    "concept_pairs": ("xsteer.extraction.pairs", "concept_pairs"),
    "extract": ("xsteer.extraction.extract", "extract"),
    "fit_texts": ("xsteer.transfer.maps", "fit_texts"),
    "fit_transfer": ("xsteer.transfer.maps", "fit_transfer"),
    "TransferMap": ("xsteer.transfer.maps", "TransferMap"),
    "evaluate": ("xsteer.evaluation.api", "evaluate"),
    "fidelity": ("xsteer.evaluation.fidelity", "fidelity"),
    "XsteerError": ("xsteer.errors", "XsteerError"),
}

__all__ = [
    "Steering",
    "SteeringVectors",
    "TransferMap",
    "XsteerError",
    "build_pairs",
    "concept_pairs",
    "evaluate",
    "extract",
    "fidelity",
    "fit_texts",
    "fit_transfer",
    "generate",
    "get_task",
    "load",
    "load_concept",
    "load_examples",
    "steer",
]


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'xsteer' has no attribute {name!r}")
    module, attr = _API[name]
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])


if TYPE_CHECKING:
    from xsteer.core.generate import Steering, generate
    from xsteer.core.inject import steer
    from xsteer.core.models import load_model as load
    from xsteer.core.vectors import SteeringVectors
    from xsteer.errors import XsteerError
    from xsteer.evaluation.api import evaluate
    from xsteer.evaluation.fidelity import fidelity
    from xsteer.extraction.extract import extract
    from xsteer.extraction.pairs import build_pairs, concept_pairs
    from xsteer.tasks import get_task
    from xsteer.tasks.concepts import load_concept
    from xsteer.tasks.data import load_examples
    from xsteer.transfer.maps import TransferMap, fit_texts, fit_transfer
