"""The pipeline, wired once: pairs → vectors → map → conditions → evaluation (the last step is
:mod:`xsteer.evaluation.run`'s, re-exported here: an :class:`~xsteer.evaluation.plan.EvalPlan` and one call).

The CLI, the grid, the demo and notebooks parse their input into these calls and nothing else, so there is
one place where a rule lives: which items pairs come from (a task's few-shot exemplars never double as
pairs), how λ's norm convention is set (every condition of one evaluation shares one, or the run refuses),
which vectors the random control copies (the first vector condition), and that a transfer map is used only
for the child it was fitted for. Rules that hold for notebooks too live in the objects and are only called
here: the map refuses another parent's vectors itself (:meth:`~xsteer.transfer.maps.TransferMap.check`), and
``resid_mean``'s norms have one definition (:func:`xsteer.core.activations.resid_norms`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jaxtyping import Float
from torch import Tensor

from xsteer.app.config import ExperimentConfig, PairsSpec, TextSpec, TransferSpec
from xsteer.core import activations
from xsteer.core.activations import last_token_resid
from xsteer.core.models.fingerprint import weights_fingerprint
from xsteer.core.types import HookedModel
from xsteer.core.vectors import SteeringVectors
from xsteer.errors import TransferError
from xsteer.evaluation.conditions import Conditions, build_conditions
from xsteer.evaluation.plan import DEFAULT_NORM_TEXT
from xsteer.evaluation.run import load_splits, run_evaluation, run_tune
from xsteer.extraction.extract import extract
from xsteer.extraction.pairs import ContrastivePair, build_pairs, concept_pairs, load_pairs_jsonl
from xsteer.tasks import get_task
from xsteer.transfer.maps import TransferMap, fit_texts, fit_transfer, layer_major_resid, texts_hash


# ---------------------------------------------------------------------------------------------- pairs, vectors
def make_pairs(
    model: HookedModel,
    task: str,
    spec: PairsSpec,
    *,
    data_dir: str | Path | None = None,
    seed: int = 0,
    shots: int = 5,
) -> list[ContrastivePair]:
    """Contrastive pairs from a task split, rendered for ``model``'s tokenizer; the task's ``shots``
    few-shot exemplars are kept out whatever the split."""
    examples = get_task(task).pair_examples(spec.split, spec.n, data_dir=data_dir, seed=seed, shots=shots)
    return build_pairs(spec.builder, examples, model.tokenizer, task=task, seed=seed)


def read_pairs(path: str | Path) -> list[ContrastivePair]:
    """A user's pair file (JSON Lines of ``{"positive", "negative"}``), used verbatim; or, when ``path`` is no
    file but a concept spec (``sentiment``, ``ab:refusal``, ``caa:sycophancy``), that concept's pairs."""
    from xsteer.tasks.concepts import load_concept

    if Path(path).suffix in (".jsonl", ".json") or Path(path).exists():
        return load_pairs_jsonl(path)
    return concept_pairs(load_concept(str(path)))


def make_vectors(
    model: HookedModel,
    pairs: Sequence[ContrastivePair],
    *,
    method: str = "pca",
    seed: int = 0,
    batch_size: int = 16,
    progress: bool = True,
    source: Mapping[str, Any] | None = None,
) -> SteeringVectors:
    """Algorithm 1 on ``model`` (``source`` records where the pairs came from)."""
    return extract(
        model,
        pairs,
        method=method,
        seed=seed,
        batch_size=batch_size,
        progress=progress,
        extra=dict(source or {}),
    )


# ---------------------------------------------------------------------------------------------- maps
def shared_texts(spec: str | TextSpec, *, data_dir: str | Path | None = None, seed: int = 0) -> list[str]:
    """The plain texts of a ``TASK:SPLIT:N`` spec that two models are run on (map fits, CKA, norms)."""
    spec = TextSpec.parse(spec) if isinstance(spec, str) else spec
    examples = get_task(spec.task).load(spec.split, data_dir=data_dir, seed=seed)[: spec.n]
    return fit_texts(examples, seed=seed)


def make_map(
    parent: HookedModel,
    child: HookedModel,
    spec: TransferSpec,
    *,
    data_dir: str | Path | None = None,
    seed: int = 0,
    batch_size: int = 16,
    progress: bool = False,
    pairs: Sequence[ContrastivePair] | None = None,
    heldout: float = 0.2,
    cache: dict[tuple[str, str], Tensor] | None = None,
) -> TransferMap:
    """Fit the parent -> child map ``spec`` names on its shared texts (and, for ``cka_diff``, on pairs).
    ``cache`` (a dict the caller keeps) holds each model's activations of each fit-text set, so that maps fitted
    on the same texts (several width maps; one child under several parents) read every model once."""
    texts = shared_texts(spec.fit_text, data_dir=data_dir, seed=seed)
    pair_texts = [(p.positive, p.negative) for p in pairs] if pairs else None
    activations = None
    if cache is not None:

        def read(model: HookedModel) -> Tensor:
            key = (weights_fingerprint(model), texts_hash(texts))  # two models of one name differ
            if key not in cache:
                cache[key] = layer_major_resid(model, texts, batch_size=batch_size, progress=progress)
            return cache[key]

        activations = (read(parent), read(child))
    return fit_transfer(
        parent,
        child,
        texts,
        activations=activations,
        layer_map=spec.layer_map,
        width_map=spec.width_map,
        mapping=spec.mapping,
        pairs=pair_texts,
        heldout=heldout,
        seed=seed,
        batch_size=batch_size,
        progress=progress,
        info={"fit_text": str(spec.fit_text)},
    )


def check_map(
    tmap: TransferMap,
    *,
    vectors: SteeringVectors | None = None,
    child_id: str | None = None,
    child_shape: tuple[int, int] | None = None,
) -> None:
    """Refuse a map used with vectors of another parent (the map's own rule), or for another child than it
    was fitted for."""
    if vectors is not None:
        tmap.check(vectors)
    if child_id is not None and child_id != tmap.child_id:
        raise TransferError(
            f"the map was fitted for child {tmap.child_id!r}, not {child_id!r}: it would write vectors "
            f"labelled for the wrong model; fit a map for {child_id!r}"
        )
    if child_shape is not None:
        tmap.check_child(child_id or tmap.child_id, child_shape)


def resid_norms(child: HookedModel, texts: Sequence[str], *, batch_size: int = 16) -> Float[Tensor, " layer"]:
    """The child's mean ‖h_l‖ per layer on ``texts``: what ``resid_mean`` scales λ by (the same numbers a map
    fitted on these texts stores as ``child_resid_norm``)."""
    return activations.resid_norms(last_token_resid(child, texts, batch_size=batch_size))


@dataclass(frozen=True)
class NormSource:
    """Where ``resid_mean`` takes the child's residual norms from: the map the vectors came through (it stored
    the child's norms on its fit texts), else the child measured on texts; the other conventions need none."""

    tmap: TransferMap | None = None
    texts: Sequence[str] | None = None

    @classmethod
    def choose(
        cls,
        norm: str | None,
        *,
        task: str,
        tmap: TransferMap | None = None,
        text_spec: str | None = None,
        data_dir: str | Path | None = None,
        seed: int = 0,
    ) -> NormSource:
        """The source for ``norm`` on ``task`` (``text_spec`` defaults to the task's own train texts). The
        texts are read here, so missing data fails before the child loads."""
        if norm != "resid_mean":
            return cls()
        if tmap is not None:
            return cls(tmap=tmap)
        spec = text_spec or DEFAULT_NORM_TEXT.format(dataset=task)
        return cls(texts=shared_texts(spec, data_dir=data_dir, seed=seed))

    def norms(self, child: HookedModel, *, batch_size: int = 16) -> Float[Tensor, " layer"] | None:
        if self.tmap is not None:
            return self.tmap.child_resid_norm
        if self.texts is not None:
            return resid_norms(child, self.texts, batch_size=batch_size)
        return None


# ---------------------------------------------------------------------------------------------- conditions
def job_conditions(
    cfg: ExperimentConfig,
    tmap: TransferMap,
    parent_vectors: SteeringVectors,
    native_vectors: SteeringVectors | None,
) -> Conditions:
    """A grid job's conditions: the mapped parent, the child's own vectors, the random control, all under
    the config's norm convention (the map's residual norms for ``resid_mean``)."""
    vectors = {"parent": tmap.apply(parent_vectors, norm=cfg.transfer.norm)}
    if native_vectors is not None:
        vectors["native"] = native_vectors
    return build_conditions(
        vectors,
        random=cfg.controls.random,
        seed=cfg.seed,
        norm=cfg.transfer.norm,
        norms=tmap.child_resid_norm,
    )


__all__ = [
    "Conditions",
    "NormSource",
    "build_conditions",
    "check_map",
    "job_conditions",
    "load_splits",
    "make_map",
    "make_pairs",
    "make_vectors",
    "read_pairs",
    "resid_norms",
    "run_evaluation",
    "run_tune",
    "shared_texts",
]
