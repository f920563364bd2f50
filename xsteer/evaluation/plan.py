"""One evaluation plan with one set of defaults.

Every entry point that evaluates a child (``xs.evaluate``, ``xsteer evaluate`` and ``tune``, the grid's jobs,
the analysis scripts) parses its input into an :class:`EvalPlan` and calls
:func:`xsteer.evaluation.run.run_evaluation` (or ``run_tune``, Algorithm 2 alone). Their defaults are read
from the plan's fields, and tests/test_plan.py fails when one drifts: two entry points with different
defaults give different numbers for what a user takes to be the same evaluation.

The defaults:

* ``positions="all"``: steer the prompt and every generated token, as the paper, RepE, repeng and
  steering-vectors do. ``"generated"`` (the last prompt token and every generated one) is the faster
  option: the unsteered prompt is prefilled once and shared by the whole λ grid.
* ``lambdas=PAPER_GRID`` (the paper's 19 values), 5 shots, 256 new tokens, seed 0.
* 32 validation items for the λ search, the whole test split.
* The random control and self-consistency on.

Named presets (:data:`PRESETS`, ``xsteer evaluate --preset NAME``) replace these defaults as a whole; an option
given explicitly still wins. ``paper`` (:meth:`EvalPlan.paper`) is the paper's Algorithms 2/3 as written, with
the transfer choices that go with it (unit-norm PCA, greedy n -> n, truncate/pad widths); every place where the
paper is silent and what the preset chooses is listed in docs/paper-literal.md.

This module imports no torch or model code, so the CLI can read its defaults when it starts.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import TYPE_CHECKING, Any, Literal, cast, get_args

from xsteer.errors import InputError

if TYPE_CHECKING:
    from xsteer.core.vectors import SteeringVectors
    from xsteer.tasks import Task

Mode = Literal["generate", "loglik"]
Positions = Literal["all", "generated"]

PAPER_GRID: tuple[float, ...] = tuple(round(0.01 * i, 2) for i in range(1, 10)) + tuple(
    round(0.1 * i, 1) for i in range(1, 11)
)

#: ``TASK:SPLIT:N`` texts the child's residual norms are measured on for ``--norm resid_mean`` when no map
#: brings them (``{dataset}`` is the evaluated task): the task's own train texts, never its evaluation items.
DEFAULT_NORM_TEXT = "{dataset}:train:128"


def check_lambdas(lambdas: Sequence[Any], *, where: str = "the λ grid") -> tuple[float, ...]:
    """The one validation of a λ grid (CLI, configs, API): non-empty, finite numbers, no value twice."""
    grid = list(lambdas) if isinstance(lambdas, (list, tuple)) else None
    if grid is None:
        raise InputError(f"{where} must be a list of numbers, got {type(lambdas).__name__} {lambdas!r}")
    if not grid:
        raise InputError(f"{where} is empty")
    if not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in grid):
        raise InputError(f"{where} must hold finite numbers, got {grid}")
    dupes = sorted({float(x) for x in grid if [float(y) for y in grid].count(float(x)) > 1})
    if dupes:
        raise InputError(f"{where} repeats {dupes}: each λ would be run and averaged twice")
    return tuple(float(x) for x in grid)


def check_mode(mode: str) -> Mode:
    """``mode`` as a :data:`Mode`, or a clear error (whether the task supports it is the task's question)."""
    if mode not in get_args(Mode):
        raise InputError(f"unknown mode {mode!r}; options: {', '.join(get_args(Mode))}")
    return cast(Mode, mode)


def check_positions(positions: str) -> Positions:
    """``positions`` as a :data:`Positions`, or a clear error."""
    if positions not in get_args(Positions):
        raise InputError(f"positions must be 'all' or 'generated', got {positions!r}")
    return cast(Positions, positions)


def check_settings(settings: EvalPlan | EvalConfig) -> None:
    """The one check of the settings an evaluation hashes, shared by EvalPlan and the EvalConfig it makes
    (the λ grid is stored as checked: a tuple of floats)."""
    object.__setattr__(settings, "lambdas", check_lambdas(settings.lambdas))
    check_mode(settings.mode)
    check_positions(settings.positions)
    for name, least in (("shots", 0), ("max_new_tokens", 1)):
        value = getattr(settings, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise InputError(f"{name} must be an integer >= {least}, got {value!r}")
    if not (isinstance(settings.sc_temperature, (int, float)) and settings.sc_temperature > 0):
        raise InputError(f"sc_temperature must be > 0, got {settings.sc_temperature!r}")


@dataclass(frozen=True)
class EvalPlan:
    """Every setting of an evaluation that changes its results, with THE defaults; checked when made."""

    mode: Mode = "generate"
    shots: int = 5
    lambdas: tuple[float, ...] = PAPER_GRID
    positions: Positions = "all"
    max_new_tokens: int = 256
    sc_temperature: float = 0.7
    seed: int = 0
    val_items: int = 32
    test_items: int | None = None  # None: the whole test split
    batch_size: int = 32
    random: bool = True
    self_consistency: bool = True

    def __post_init__(self) -> None:
        check_settings(self)
        for name, least in (("val_items", 0), ("test_items", 1), ("batch_size", 1), ("seed", 0)):
            value = getattr(self, name)
            if name == "test_items" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise InputError(f"{name} must be an integer >= {least}, got {value!r}")
        for name in ("random", "self_consistency"):
            if not isinstance(getattr(self, name), bool):
                raise InputError(f"{name} must be true or false, got {getattr(self, name)!r}")

    @classmethod
    def paper(cls, **changes: Any) -> EvalPlan:
        """The paper's Algorithms 2/3 as written (the ``paper`` preset), with ``changes`` applied."""
        return replace(PRESETS["paper"].plan, **changes)

    def config(self, dataset: str) -> EvalConfig:
        """What the records of this plan on ``dataset`` are hashed under (refuses a mode the task lacks)."""
        return EvalConfig(
            dataset=dataset,
            mode=self.mode,
            shots=self.shots,
            lambdas=self.lambdas,
            positions=self.positions,
            max_new_tokens=self.max_new_tokens,
            sc_temperature=self.sc_temperature,
            seed=self.seed,
        )


@dataclass(frozen=True)
class EvalConfig:
    """Everything that decides what a record means (hashed into every record). Entry points build it from an
    :class:`EvalPlan` (:meth:`EvalPlan.config`); its defaults equal the plan's (tests/test_plan.py), and its
    fields stay as they are, since records are found again by their hash."""

    dataset: str
    mode: Mode = EvalPlan.mode
    shots: int = EvalPlan.shots
    lambdas: tuple[float, ...] = EvalPlan.lambdas
    positions: Positions = EvalPlan.positions
    layers: tuple[int, ...] | None = None
    max_new_tokens: int = EvalPlan.max_new_tokens
    sc_temperature: float = EvalPlan.sc_temperature
    seed: int = EvalPlan.seed
    system_prompt: bool = True

    def __post_init__(self) -> None:
        check_settings(self)
        task = self.task
        if self.mode not in task.modes:
            raise InputError(
                f"mode {self.mode!r} is for multiple-choice tasks; {task.name!r} supports {', '.join(task.modes)}"
            )

    @property
    def task(self) -> Task:
        from xsteer.tasks import get_task  # here: the task registry loads torch, and this module must not

        return get_task(self.dataset)

    def hash(
        self,
        model_id: str,
        vectors: SteeringVectors | None,
        *,
        sampled: bool = False,
        dtype: str | None = None,
    ) -> str:
        """What made one condition's records: this configuration, the model (and its dtype where not fp32:
        :func:`xsteer.core.models.dtype_tag`) and that condition's vectors (and, for a vector condition decoded
        by sampling at ``sc_temperature``, that fact).
        Per condition, not over the set of conditions, so adding a parent to a study reuses the records of
        the conditions already run."""
        vec = (
            None if vectors is None else [vectors.model_id, vectors.method, vectors.pairs_hash, vectors.norm]
        )
        blob = json.dumps(
            {
                "cfg": asdict(self),
                "model": model_id,
                "vectors": vec,
                # 6 digits: the same direction scaled by another route differs in the last bits only.
                "norm": None if vectors is None else f"{float(vectors.vectors.norm()):.6g}",
                # only when set, so the hashes of every greedy record made before stay as they were
                **({"sampled": True} if sampled else {}),
                **({"dtype": dtype} if dtype else {}),
            },
            sort_keys=True,
            default=str,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Preset:
    """A named set of settings: the evaluation plan, the norm convention ``xsteer evaluate --norm`` uses, and
    the extraction and transfer choices that produce the vectors it expects (``xsteer extract --method``,
    ``xsteer transfer --layer-map/--width-map/--norm``; strings, so reading them loads no model code)."""

    name: str
    plan: EvalPlan
    norm: str
    method: str
    layer_map: str
    width_map: str
    summary: str

    def plan_with(self, given: Mapping[str, Any], explicit: Collection[str]) -> EvalPlan:
        """This preset's plan, with the fields named in ``explicit`` taken from ``given`` (options a user
        typed win over the preset; the rest of ``given`` is the front end's own defaults and is ignored)."""
        unknown = sorted(set(explicit) - {f.name for f in fields(EvalPlan)})
        if unknown:
            raise InputError(f"not settings of an evaluation plan: {unknown}")
        return replace(self.plan, **{k: given[k] for k in explicit})


#: The presets ``--preset`` offers. ``paper``: Tandon (2025) Algorithms 2/3 as written (§3.1, §4.3, Alg. 2/3,
#: App. A); where the paper is silent, the choice is the one docs/paper-literal.md gives with its reason.
PRESETS: dict[str, Preset] = {
    "paper": Preset(
        name="paper",
        plan=EvalPlan(
            mode="generate",
            shots=5,  # §4 Datasets: "5 few shots for each of the dataset"
            lambdas=PAPER_GRID,  # Alg. 2 line 2, Alg. 3 line 3, §4.3, §4.4
            positions="all",  # silent; RepE's control code [27] (which §3.1 says it uses) adds at every position
            max_new_tokens=512,  # silent
            seed=0,  # silent
            val_items=200,  # silent on the size of the validation set
            test_items=None,  # Table 1: the test split
            random=False,  # Alg. 2/3 run no controls
            self_consistency=False,
        ),
        norm="unit",  # PC1 is a unit vector (§2 RepE, Alg. 1 "same code as [27]")
        method="pca",  # §2: normalised differences, PCA, PC1
        layer_map="greedy",  # §3.1: "greedy layer-to-layer mapping (n -> n)"
        width_map="truncate_pad",  # silent; Alg. 2/3 add λ·S[layer] to a child layer as it is
        summary="Tandon (2025) Algorithms 2/3 as written: unit-norm PCA PC1, greedy n -> n layers, truncate/pad "
        "widths, every position, λ in {0.01..0.09} ∪ {0.1..1.0}, 5 shots, greedy decoding, no controls",
    ),
}


__all__ = [
    "DEFAULT_NORM_TEXT",
    "EvalConfig",
    "PAPER_GRID",
    "PRESETS",
    "EvalPlan",
    "Preset",
    "Mode",
    "Positions",
    "check_lambdas",
    "check_mode",
    "check_positions",
    "check_settings",
]
