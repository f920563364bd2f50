"""The transfer-fidelity study: parents × children × concepts × maps, each measured by the instrument of
:mod:`xsteer.evaluation.instrument` (placebo null, whole-pipeline interval, specificity, known nulls).

For one (parent, child) pair both models read every concept's pair texts and the generic texts once (last
token, every layer; cached per text set in ``out/acts``, so a study reuses every other study's reads). For each
concept:

* the maps are fitted on texts that never carry that concept — the OTHER built-in concepts' pair texts plus
  built-in generic texts, whichever concepts share the run — so a map cannot learn the concept by fitting its
  own examples; the same texts, paired at matched length, make the neutral placebos;
* every vector is a mean difference brought to the child's ``resid_mean`` norm on the steered layers;
* the target readout reads the native and mapped vectors, the placebos, the known nulls and the pipeline
  replicates; every other built-in lexicon concept's readout reads the native and mapped vectors
  (specificity). The native and mapped vectors are read first: where the child's own vector does not steer
  the readout both ways, fidelity is undefined and nothing else is read.

One result file per (parent, child, concept), ``results/<parent>__<child>__<concept>.json``: the readouts
themselves (every vector, λ and probe), the spec, the verdicts and where its wall time went (``seconds``,
``phases``), so the tables regenerate from it with no model (:func:`xsteer.evaluation.instrument.analyze` is
pure). A measurement saves its readouts as they are read (``<cell>.partial.json``, keyed to the spec), so a
killed one resumes at its last chunk of vectors.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch

from xsteer.core.activations import last_token_resid
from xsteer.core.io import save_torch, slug, spec_slug, write_json_atomic, write_text_atomic
from xsteer.core.models import (
    ENV_DTYPE,
    ZOO,
    default_dtype,
    dtype_tag,
    load_model,
    model_id,
    parse_spec,
    resolve_device,
)
from xsteer.errors import InputError
from xsteer.evaluation.instrument import (
    CONTROLS,
    FORMAT,
    LAMBDAS,
    Cell,
    InstrumentSpec,
    ModelActs,
    analyze,
    build_cell,
    read_cell,
    reference_check,
)
from xsteer.evaluation.plan import check_lambdas
from xsteer.tasks import get_task
from xsteer.tasks.concepts import BUILTIN, Concept, ConceptError, Readout, check_concept, load_concept
from xsteer.transfer.layermap import LAYER_MAPS
from xsteer.transfer.maps import fit_texts
from xsteer.transfer.widthmap import WIDTH_MAPS


@dataclass(frozen=True)
class FidelitySpec:
    """What a fidelity study measures (every field is a CLI option of ``xsteer fidelity``)."""

    parents: tuple[str, ...]
    children: tuple[str, ...]
    concepts: tuple[str, ...] = BUILTIN
    layer_maps: tuple[str, ...] = ("proportional",)
    width_maps: tuple[str, ...] = ("ridge", "truncate_pad")
    lambdas: tuple[float, ...] = LAMBDAS
    layers: str = "middle"  # which child layers are steered: "all", "middle" (the central third) or "a-b"
    placebos: int = 50
    replicates: int = 20
    random_draws: int = 4
    # Placebos of each kind that get the pipeline replicates too (on candidate maps): the false-pass rate of the
    # rule a candidate faces, measured on placebos. 2 × 5 × R vectors a map: 200 at R = 20, read in about 6 min
    # on SmolLM2 in fp32 on this CPU, beside a measurement's hour.
    pipeline_placebos: int = 5
    norm: str = "resid_mean"  # what λ is a share of (instrument.NORMS)
    judge: str | None = None  # a model that is neither parent nor child reads the steered continuations
    judge_placebos: int = 10  # placebos per candidate map continued and judged (the judge's own null)
    judge_tokens: int = 24  # greedy tokens each probe is continued by
    generic_texts: int = 128  # built-in synthetic texts added to every map's fit set
    n_boot: int = 2000
    batch_size: int = 64
    seed: int = 0
    data_dir: str | None = None
    device: str | None = None

    def __post_init__(self) -> None:
        lams = check_lambdas(list(self.lambdas), where="the dose-response λ grid")
        if min(lams) > 0 or max(lams) < 0:
            raise InputError(
                f"the dose-response λ grid {list(lams)} has one sign only; the effect is read across the "
                "unsteered point from both sides, so give negative and positive values, e.g. -0.04,-0.02,0.02,0.04"
            )
        self.instrument()  # sizes and both signs of λ, checked before any model loads
        for name in self.layer_maps:
            if name not in LAYER_MAPS or LAYER_MAPS[name].needs in ("mapping", "cka_diff"):
                raise InputError(
                    f"layer map {name!r} cannot be used here; options: "
                    f"{', '.join(k for k, v in LAYER_MAPS.items() if v.needs not in ('mapping', 'cka_diff'))}"
                )
        for name in self.width_maps:
            if name not in WIDTH_MAPS or name == "identity":
                raise InputError(
                    f"width map {name!r} cannot be used here; options: {', '.join(k for k in WIDTH_MAPS if k != 'identity')}"
                )
        if not self.parents or not self.children:
            raise InputError("a fidelity study needs at least one parent and one child")
        if not 10 <= self.judge_placebos <= self.placebos:
            raise InputError(
                f"judge_placebos must be between 10 and --placebos ({self.placebos}), got {self.judge_placebos}"
            )
        if self.judge is not None:
            same = {parse_spec(self.judge).model_id} & {
                parse_spec(m).model_id for m in (*self.parents, *self.children)
            }
            if same:
                raise InputError(
                    f"the judge {self.judge!r} is also a parent or child of this study; a judge must be neither "
                    "(it would read its own steering), e.g. --judge qwen2.5-coder-0.5b for Gemma-3 -> SmolLM2"
                )
        for c in self.concepts:  # each kind checks what it can before any model loads (data, files)
            check_concept(c, data_dir=self.data_dir, seed=self.seed)

    def instrument(self) -> InstrumentSpec:
        return InstrumentSpec(
            placebos=self.placebos,
            replicates=self.replicates,
            random_draws=self.random_draws,
            pipeline_placebos=self.pipeline_placebos,
            lambdas=tuple(float(x) for x in self.lambdas),
            n_boot=self.n_boot,
            seed=self.seed,
            norm=self.norm,
        )

    @property
    def maps(self) -> list[tuple[str, str]]:
        return [(lm, wm) for lm in self.layer_maps for wm in self.width_maps]


def steered_layers(spec: str, n_layers: int) -> list[int]:
    """``all``, ``middle`` (the central third, where concepts are usually most steerable) or ``a-b``."""
    if spec == "all":
        return list(range(n_layers))
    if spec == "middle":
        return list(range(n_layers // 3, max(n_layers // 3 + 1, 2 * n_layers // 3)))
    lo, sep, hi = spec.partition("-")
    try:
        a, b = int(lo), int(hi) if sep else int(lo)
    except ValueError:
        raise InputError(f"layers must be 'all', 'middle' or 'a-b', got {spec!r}") from None
    if not 0 <= a <= b < n_layers:
        raise InputError(f"layers {spec!r} are outside 0..{n_layers - 1}")
    return list(range(a, b + 1))


def _concepts(spec: FidelitySpec) -> list[Concept]:
    return [
        load_concept(c, data_dir=spec.data_dir, seed=spec.seed, min_pairs=8, min_probes=8)
        for c in spec.concepts
    ]


@dataclass
class _Acts:
    """One model's last-token activations of every concept's pair texts and of the generic texts, [n, L, d]."""

    pos: dict[str, torch.Tensor] = field(default_factory=dict)
    neg: dict[str, torch.Tensor] = field(default_factory=dict)
    generic: torch.Tensor | None = None


def _key(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, ensure_ascii=False).encode()).hexdigest()[:16]


def model_acts(
    spec_name: str,
    load: Callable[[], Any],
    concepts: Sequence[Any],
    generic: Sequence[str],
    out: Path,
    batch_size: int,
    log: Callable[[str], Any],
    dtype: str | None = None,
) -> _Acts:
    """A model's activations of the study's texts, cached in ``out/acts`` per text set (one file per concept's
    pairs, one for the generic texts): they depend neither on the other model of a pair nor on which other
    concepts a study measures, and reading them is the slow part of setting up. The model is loaded only if a
    text set is missing."""
    model = None

    def read(texts: list[str]) -> torch.Tensor:
        nonlocal model
        model = load() if model is None else model
        return last_token_resid(model, texts, batch_size=batch_size)

    def cached(name: str, texts: Any, compute: Callable[[], Any]) -> Any:
        path = (
            out
            / "acts"
            / f"{spec_slug(spec_name)}{f'@{dtype}' if dtype else ''}__{slug(name)}__{_key(texts)}.pt"
        )
        if path.exists():
            return torch.load(path, weights_only=True)
        log(f"{spec_name}: reading the {name} texts")
        value = compute()
        save_torch(value, path)
        return value

    def both(pairs: list[list[str]]) -> Callable[[], tuple[torch.Tensor, torch.Tensor]]:
        return lambda: (read([p for p, _ in pairs]), read([n for _, n in pairs]))

    acts = _Acts()
    for c in concepts:
        pairs = [list(p) for p in c.pairs]
        acts.pos[c.name], acts.neg[c.name] = cached(c.name, pairs, both(pairs))
    if generic:
        acts.generic = cached("generic", list(generic), lambda: read(list(generic)))
    return acts


def _fit_concepts(concept: str, readers: Sequence[Any]) -> list[Any]:
    """The concepts whose pair texts a map of ``concept`` is fitted on: the built-in lexicon concepts other than
    ``concept``, in :data:`BUILTIN`'s order. Never the concepts measured beside it, so a measurement (its map,
    and the ridge penalty its cross-validation folds choose) is the same whichever concepts share its run."""
    by_name = {c.name: c for c in readers}
    return [by_name[n] for n in BUILTIN if n != concept]


def _fit_set(concept: str, readers: Sequence[Any], generic: Sequence[str], acts: _Acts) -> torch.Tensor:
    """[n, L, d] activations of the texts a map of ``concept`` is fitted on: the built-in concepts' pair texts
    and the generic texts (never the concept's own), in the order of :func:`_fit_lengths`."""
    xs = [t for c in _fit_concepts(concept, readers) for t in (acts.pos[c.name], acts.neg[c.name])]
    if acts.generic is not None:
        xs.append(acts.generic)
    return torch.cat(xs)


def _fit_lengths(concept: str, readers: Sequence[Any], generic: Sequence[str]) -> list[int]:
    lengths = [
        len(t) for c in _fit_concepts(concept, readers) for side in (0, 1) for t in (p[side] for p in c.pairs)
    ]
    return lengths + [len(t) for t in generic]


def _reader(readout: Readout, child: Any, layers: list[int], batch_size: int) -> Any:
    def read(stack: torch.Tensor, lams: Sequence[float]) -> torch.Tensor:
        return readout.read_stack(child, stack, lams, layers=layers, batch_size=batch_size)

    return read


def _has_readout(concept: Concept, tokenizer: Any, log: Callable[[str], Any]) -> bool:
    """Whether this tokenizer can read the concept (a character-level one gives a lexicon concept's readout
    words no distinct first tokens); a concept without a readout is left out of the specificity readouts, and
    said so."""
    try:
        concept.readout_for(tokenizer)
    except ConceptError as e:
        log(f"{concept.name}: no readout on this tokenizer, left out of specificity ({e})")
        return False
    return True


class _Partial(dict[str, Any]):
    """A measurement's readouts so far, ``{readout: {vector: [λ][probe]}}``, saved on every update; one
    written for another spec (its key differs) is ignored."""

    def __init__(self, path: Path, key: str):
        self.path, self.key = path, key
        doc = json.loads(path.read_text()) if path.exists() else {}
        super().__init__(doc.get("readouts", {}) if doc.get("key") == key else {})

    def store(self, readout: str) -> _Saving:
        return _Saving(self, self.setdefault(readout, {}))

    def save(self) -> None:
        doc = {"key": self.key, "readouts": dict(self)}
        write_text_atomic(self.path, json.dumps(doc, separators=(",", ":")) + "\n")


class _Saving(dict[str, Any]):
    """One readout's store: an update writes the whole partial file."""

    def __init__(self, owner: _Partial, data: dict[str, Any]):
        super().__init__(data)
        self.owner, self.data = owner, data

    def update(self, *args: Any, **kw: Any) -> None:  # type: ignore[override]
        super().update(*args, **kw)
        self.data.update(*args, **kw)
        self.owner.save()


def _stored(spec: FidelitySpec, files: dict[str, Path]) -> dict[str, dict[str, Any]]:
    """The finished measurements already in the study folder. One made with other settings would be returned as
    this one's: refused. Where the data lie is no setting, nor is the dtype a finished measurement was made in
    (it is kept, recording its own: every comparison lies within one measurement)."""
    stored = {name: json.loads(path.read_text()) for name, path in files.items() if path.exists()}
    how = ("data_dir", "dtype", "pipeline_placebos")
    asked = {k: v for k, v in json.loads(json.dumps(_measured(spec))).items() if k not in how}
    for name, doc in stored.items():
        kept = {k: v for k, v in doc["spec"].items() if not k.startswith("judge") and k not in how}
        if kept != asked:
            diff = ", ".join(
                f"{k}={kept.get(k)!r} (now {asked.get(k)!r})"
                for k in sorted({*kept, *asked})
                if kept.get(k) != asked.get(k)
            )
            raise InputError(
                f"{files[name]} was measured with other settings ({diff}); give another --out, or remove it to measure again"
            )
    return stored


@dataclass
class _PairRun:
    """What every concept of one (parent, child) shares: models, activations, steered layers, the judge."""

    spec: FidelitySpec
    parent_spec: str
    child_spec: str
    child: Any
    acts_p: _Acts
    acts_c: _Acts
    readers: list[Concept]
    generic: list[str]
    lexicon: list[Concept]
    layers: list[int]
    t0: float
    log: Callable[[str], Any]
    judge_model: Any = None
    setup_s: float = 0.0  # loading both models and reading their activations, shared by the pair's concepts

    @property
    def ids(self) -> tuple[str, str]:
        return parse_spec(self.parent_spec).model_id, model_id(self.child)

    def cells(self, name: str) -> dict[str, Any]:
        acts_p, acts_c, readers, generic = self.acts_p, self.acts_c, self.readers, self.generic
        return build_cell(
            ModelActs(acts_p.pos[name], acts_p.neg[name], _fit_set(name, readers, generic, acts_p)),
            ModelActs(acts_c.pos[name], acts_c.neg[name], _fit_set(name, readers, generic, acts_c)),
            lengths=_fit_lengths(name, readers, generic),
            maps=self.spec.maps,
            layers=self.layers,
            ids=self.ids,
            spec=self.spec.instrument(),
            off_target={
                c.name: ModelActs(acts_c.pos[c.name], acts_c.neg[c.name], acts_c.pos[c.name][:0])
                for c in self.lexicon
                if c.name != name
            },
        )


def run_pair(
    spec: FidelitySpec, parent_spec: str, child_spec: str, out: Path, *, log: Callable[[str], Any] = print
) -> list[Path]:
    """Every concept for one (parent, child); returns the result files (existing ones are kept)."""
    concepts = _concepts(spec)
    files = {
        c.name: out / "results" / f"{spec_slug(parent_spec)}__{spec_slug(child_spec)}__{slug(c.name)}.json"
        for c in concepts
    }
    stored = _stored(spec, files)
    # A finished measurement is kept; one read before the judge was asked for, or before the instrument built
    # some of its vectors (the control's replicates), gets only what it lacks read and added.
    todo = [
        c
        for c in concepts
        if c.name not in stored
        or (
            _defined(stored[c.name])
            and (
                (spec.judge is not None and c.open_ended and not stored[c.name].get("judged"))
                or _lacks_replicates(stored[c.name], spec)
            )
        )
    ]
    dtype = _dtype(spec)
    # The placebos' replicates only calibrate: one made in another dtype is kept without them, and said so.
    for c in concepts:
        if (
            c.name in stored
            and c not in todo
            and _defined(stored[c.name])
            and _lacks_placebo_replicates(stored[c.name], spec)
        ):
            made = stored[c.name]["spec"].get("dtype")
            if made == dtype:
                todo.append(c)
            else:
                log(
                    f"{files[c.name].name}: made in {made or 'float32'}, kept without its placebos' pipeline "
                    f"replicates (set {ENV_DTYPE}={made or 'float32'} to add them)"
                )
    mixed = sorted(c.name for c in todo if c.name in stored and stored[c.name]["spec"].get("dtype") != dtype)
    if mixed:
        made = stored[mixed[0]]["spec"].get("dtype") or "float32"
        raise InputError(
            f"{', '.join(mixed)}: made in {made}, and what it lacks would be read in {dtype or 'float32'}, mixing "
            f"two dtypes in one measurement; set {ENV_DTYPE}={made} to complete it"
        )
    if not todo:
        return list(files.values())
    t0 = time.time()
    generic = (
        fit_texts(get_task("synthetic").load("train", seed=spec.seed)[: spec.generic_texts], seed=spec.seed)
        if spec.generic_texts
        else []
    )
    # Every built-in lexicon concept serves as fit texts for the others' maps and as an off-target readout.
    readers = [*concepts, *(load_concept(n) for n in BUILTIN if n not in spec.concepts)]
    child = load_model(child_spec, device=spec.device)
    acts_p = model_acts(
        parent_spec,
        lambda: load_model(parent_spec, device=spec.device),
        readers,
        generic,
        out,
        spec.batch_size,
        log,
        dtype,
    )
    acts_c = model_acts(child_spec, lambda: child, readers, generic, out, spec.batch_size, log, dtype)
    run = _PairRun(
        spec,
        parent_spec,
        child_spec,
        child,
        acts_p,
        acts_c,
        readers,
        generic,
        [c for c in readers if c.open_ended and _has_readout(c, child.tokenizer, log)],
        steered_layers(spec.layers, child.cfg.n_layers),
        t0,
        log,
        setup_s=time.time() - t0,
    )
    for concept in todo:
        doc = _measure(run, concept, files[concept.name], stored.get(concept.name))
        # Compact: a measurement holds ~40k readouts, and the study's files are committed.
        write_text_atomic(
            files[concept.name], json.dumps(doc, separators=(",", ":"), ensure_ascii=False) + "\n"
        )
        files[concept.name].with_suffix(".partial.json").unlink(missing_ok=True)
        result = doc["result"]
        log(f"[{time.time() - t0:6.0f} s] {concept.name}: {result.get('verdict', result['reference'])}")
    return list(files.values())


@contextmanager
def _timed(phases: dict[str, float], phase: str) -> Iterator[None]:
    """Adds the block's wall time to ``phases[phase]``: where a measurement's time goes (issue #33's profile of
    the study)."""
    t = time.time()
    try:
        yield
    finally:
        phases[phase] = phases.get(phase, 0.0) + time.time() - t


def _lacks_placebo_replicates(doc: Mapping[str, Any], spec: FidelitySpec) -> bool:
    """Whether a stored measurement misses the pipeline replicates of the placebos ``spec`` asks for (a
    measurement made before placebos had them, or with fewer)."""
    target = doc["readouts"]["target"]
    return any(
        f"{lm}×{wm}/mapped" in target and f"{lm}×{wm}/placebo:{kind}#{i}@{r}" not in target
        for lm, wm in spec.maps
        if wm not in CONTROLS
        for kind in ("neutral", "flip")
        for i in range(spec.pipeline_placebos)
        for r in range(spec.replicates)
    )


def _lacks_replicates(doc: Mapping[str, Any], spec: FidelitySpec) -> bool:
    """Whether a stored measurement misses a map's whole-pipeline replicates (the control got none before
    controls were judged by the candidates' rule). A map that feeds no steered layer has no vectors at all."""
    target = doc["readouts"]["target"]
    return any(
        f"{lm}×{wm}/mapped" in target and f"{lm}×{wm}/mapped@{r}" not in target
        for lm, wm in spec.maps
        for r in range(spec.replicates)
    )


def _measure(run: _PairRun, concept: Concept, path: Path, stored: dict[str, Any] | None) -> dict[str, Any]:
    """One concept's measurement as the document its result file holds (resuming from its partial file)."""
    spec, name, child, layers = run.spec, concept.name, run.child, run.layers
    # The pair's set-up is charged to the first concept measured, so the files' seconds add up to the wall time.
    phases: dict[str, float] = {"setup": run.setup_s}
    run.setup_s = 0.0
    with _timed(phases, "vectors"):
        cells = run.cells(name)
    # What decides the readouts (the judge's settings live with its own scores, so asking for a judge later
    # does not discard readouts already made).
    measured = _measured(spec)
    partial = _Partial(path.with_suffix(".partial.json"), _key([run.ids, name, measured]))
    if spec.judge is not None:
        measured.update({k: v for k, v in asdict(spec).items() if k.startswith("judge")})
    # Recorded, not keyed: the placebos' replicates add vectors and change none already read.
    measured["pipeline_placebos"] = max(
        spec.pipeline_placebos, (stored or {}).get("spec", {}).get("pipeline_placebos", 0)
    )
    resumed = sum(len(v) for v in partial.values())
    run.log(
        f"[{time.time() - run.t0:6.0f} s] {run.parent_spec} -> {run.child_spec}: {name}: "
        f"{sum(len(c.names) for c in cells.values())} vectors on {len(cells)} readouts"
        + (f" ({resumed} read before, resumed)" if resumed else "")
    )
    # The child's own vector is read first: where it does not steer the readout both ways, fidelity is undefined
    # whatever the rest reads, so the placebos, replicates, off-target readouts and judge are not read at all
    # (hours on a 0.5B child).
    reads = (cells, concept, run.lexicon, child, layers, spec, partial, stored)
    with _timed(phases, "reference"):
        readouts, baselines = _read_all({"target": _reference_cell(cells["target"], spec.maps)}, *reads[1:])
    native = _rounded(readouts["target"]["native"]) - _rounded(baselines["target"])[None, :]
    reason = reference_check(native, spec.lambdas, n_boot=spec.n_boot, seed=spec.seed)
    if reason is None:
        readouts, baselines = _read_all(*reads, phases=phases)
    else:
        run.log(f"[{time.time() - run.t0:6.0f} s] {name}: no valid reference, so nothing else is read")
    judged = None
    if spec.judge is not None and concept.open_ended and reason is None:
        store = partial.store("__judge__")
        judged_before = (stored or {}).get("judged") or {}
        if "scores" not in store and judged_before.get("model") == spec.judge:
            store.update(judged_before)  # a stored measurement being supplemented keeps its judge readout
        if "scores" not in store or store.get("model") != spec.judge:
            run.log(
                f"[{time.time() - run.t0:6.0f} s] {name}: the judge ({spec.judge}) reads steered continuations"
            )
            with _timed(phases, "judge"):
                run.judge_model = run.judge_model or load_model(spec.judge, device=spec.device)
                store.update(_judge_cell(child, run.judge_model, concept, cells["target"], layers, spec))
        judged = dict(store)
    # The file keeps 4 decimals (0.1 milli-nats of log-odds, far below any effect), and the verdicts are read from
    # what the file keeps, so regenerating them from it gives the very same numbers.
    readouts = {k: {n: _rounded(r) for n, r in reads.items()} for k, reads in readouts.items()}
    baselines = {k: _rounded(v) for k, v in baselines.items()}
    return {
        "format": FORMAT,
        "parent": run.parent_spec,
        "child": run.child_spec,
        "concept": name,
        "readout": concept.readout_for(child.tokenizer).name,
        "ids": list(run.ids),
        "steered_layers": layers,
        "spec": measured,
        "n_probes": len(concept.probes),
        "fits": cells["target"].fits,
        "fit_texts": {
            "concepts": [c.name for c in _fit_concepts(name, run.readers)],
            "generic": len(run.generic),
        },
        "result": analyze(readouts, baselines, maps=spec.maps, spec=spec.instrument(), judged=judged),
        "baselines": {k: v.tolist() for k, v in baselines.items()},
        "readouts": {k: {n: r.tolist() for n, r in reads.items()} for k, reads in readouts.items()},
        "judged": judged,
        # This run's wall time (the pair's set-up and this concept's own phases, not the pair's other concepts)
        # plus what a supplemented measurement took before; a resumed partial's earlier chunks are not in it.
        "seconds": round(sum(phases.values()) + (stored["seconds"] if stored else 0.0), 1),
        "phases": {
            k: round(v + float((stored or {}).get("phases", {}).get(k, 0.0)), 1) for k, v in phases.items()
        },
    }


def _reference_cell(cell: Cell, maps: Sequence[tuple[str, str]]) -> Cell:
    """The vectors an undefined measurement still shows: the child's own and each map's mapped one."""
    shown = {"native", *(f"{lm}×{wm}/mapped" for lm, wm in maps)}
    idx = [i for i, n in enumerate(cell.names) if n in shown]
    return Cell([cell.names[i] for i in idx], cell.vectors[idx], cell.fits)


def _defined(doc: Mapping[str, Any]) -> bool:
    """Whether a stored measurement's reference is valid (an undefined one holds only its reference's readouts)."""
    return doc.get("result", {}).get("reference", "valid") == "valid"


def _read_all(
    cells: dict[str, Any],
    concept: Any,
    lexicon: Sequence[Concept],
    child: Any,
    layers: list[int],
    spec: FidelitySpec,
    partial: _Partial,
    stored: dict[str, Any] | None,
    *,
    phases: dict[str, float] | None = None,
) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
    """Every readout of one measurement: ``{readout: {vector: [λ, probe]}}`` and the unsteered ``{readout:
    [probe]}``, taken from a stored result where there is one, else read (resuming from the partial file).
    A vector the stored result lacks is read and added; the stored readouts are kept as they are. ``phases``
    gets the seconds spent on the target readout and on the off-target ones."""
    readouts, baselines = {}, {}
    clock: dict[str, float] = {} if phases is None else phases
    for key, cell in cells.items():
        with _timed(clock, "target" if key == "target" else "off_target"):
            target = concept if key == "target" else next(c for c in lexicon if c.name == key)
            readout = target.readout_for(child.tokenizer)
            store = partial.store(key)
            if stored and key in stored["readouts"]:
                kept = {n: r for n, r in stored["readouts"][key].items() if n not in store}
                if kept:
                    store.update({"__baseline__": stored["baselines"][key], **kept})
            if "__baseline__" not in store:
                base = readout.read_stack(child, cell.vectors[:1], [0.0], layers=layers)[0, 0]
                store.update({"__baseline__": base.tolist()})
            baselines[key] = torch.tensor(store["__baseline__"])
            readouts[key] = read_cell(
                cell,
                _reader(readout, child, layers, spec.batch_size),
                spec.instrument().lambdas,
                store=store,
                desc=f"{concept.name} on the {'target' if key == 'target' else key} readout",
            )
    return readouts, baselines


def _judge_cell(
    child: Any, judge_model: Any, concept: Concept, cell: Any, layers: list[int], spec: FidelitySpec
) -> dict[str, Any]:
    """Continue every probe at ±λ (the grid's largest) under the native vector, each map's mapped vector and
    ``judge_placebos`` placebos of each candidate map (half of each kind), and unsteered; the judge scores them.
    The placebos come second, and only where the judge's reference is valid: otherwise no placebo can change the
    verdict (undefined), and they are most of the judge's cost (on SmolLM2 and Gemma-3 only sentiment has a valid
    one)."""
    from xsteer.evaluation.instrument import CONTROLS
    from xsteer.evaluation.judge import (
        PROMPT,
        UNDEFINED,
        Judged,
        judge,
        reference_is_valid,
        steered_continuations,
    )

    half = spec.judge_placebos // 2
    first, placebos = ["native"], []
    for lm, wm in spec.maps:
        m = f"{lm}×{wm}"
        first.append(f"{m}/mapped")
        if wm not in CONTROLS:
            for kind, k in (("neutral", half), ("flip", spec.judge_placebos - half)):
                own = [nm for nm in cell.names if nm.startswith(f"{m}/placebo:{kind}#") and "@" not in nm]
                placebos += own[:k]
    first = [nm for nm in first if nm in cell.names]
    lam = max(abs(float(x)) for x in spec.lambdas)
    probes = list(concept.probes)
    n = len(probes)
    continue_ = partial(
        steered_continuations,
        child,
        layers=layers,
        max_new_tokens=spec.judge_tokens,
        batch_size=spec.batch_size,
    )

    def read(names: list[str], plain: list[str]) -> tuple[list[tuple[str, float, str]], list[str], Judged]:
        """Each condition continued at ±λ (the unsteered ``plain`` continuations after them), judged."""
        rows = [(nm, s, p) for nm in names for s in (1.0, -1.0) for p in probes]
        stack = cell.vectors[[cell.names.index(nm) for nm in names]]
        conts = continue_(
            [p for _, _, p in rows],
            stack,
            [names.index(nm) for nm, _, _ in rows],
            [s * lam for _, s, _ in rows],
            progress=True,
        )
        prompts = [p for _, _, p in rows] + probes[: len(plain)]
        j = judge(
            judge_model, prompts, conts + plain, concept.poles, batch_size=spec.batch_size, progress=True
        )
        return rows, conts, Judged(score=_rounded(j.score), nll=_rounded(j.nll))

    def by_condition(t: torch.Tensor, names: list[str]) -> dict[str, torch.Tensor]:
        return {nm: t[2 * v * n : 2 * (v + 1) * n].reshape(2, n) for v, nm in enumerate(names)}

    plain = continue_(probes, None, [], [])
    rows, conts, j = read(first, plain)
    scores, nlls = by_condition(j.score, first), by_condition(j.nll, first)
    base_score, base_nll = j.score[-n:], j.nll[-n:]
    ispec = spec.instrument()
    valid = reference_is_valid(scores["native"], base_score, n_boot=ispec.n_boot, seed=ispec.seed)
    if valid and placebos:
        _, _, jp = read(placebos, [])
        scores |= by_condition(jp.score, placebos)
        nlls |= by_condition(jp.nll, placebos)
    return {
        "model": spec.judge,
        "prompt": PROMPT,
        "poles": list(concept.poles),
        "lam": lam,
        "max_new_tokens": spec.judge_tokens,
        "scores": {nm: v.tolist() for nm, v in scores.items()},
        "nll": {nm: v.tolist() for nm, v in nlls.items()},
        "base_score": base_score.tolist(),
        "base_nll": base_nll.tolist(),
        **({} if valid or not placebos else {"placebos_not_read": UNDEFINED}),
        # For a reader: the first three probes' continuations, unsteered and under the native and mapped vectors.
        "examples": [
            {"condition": nm, "lam": s * lam, "probe": p, "text": c}
            for (nm, s, p), c in zip(rows, conts, strict=True)
            if probes.index(p) < 3
        ]
        + [
            {"condition": "unsteered", "lam": 0.0, "probe": p, "text": c}
            for p, c in zip(probes[:3], plain, strict=False)
        ],
    }


def _measured(spec: FidelitySpec) -> dict[str, Any]:
    """The spec fields that decide a measurement's readouts (the judge's settings live with its own scores, so
    asking for a judge later does not discard readouts already made), and the dtype the models load in. The
    default norm and fp32 are left out, so the keys and files of measurements made before either was a choice
    still match."""
    dtype = _dtype(spec)
    return {
        **{
            k: v
            for k, v in asdict(spec).items()
            if k not in ("parents", "children", "concepts", "device", "batch_size", "pipeline_placebos")
            and not k.startswith("judge")
            and not (k == "norm" and v == "resid_mean")
        },
        **({"dtype": dtype} if dtype else {}),
    }


def _dtype(spec: FidelitySpec) -> str | None:
    """The dtype this study's models load in, as results record it (None: fp32)."""
    return dtype_tag(default_dtype(resolve_device(spec.device)))


def _rounded(t: torch.Tensor) -> torch.Tensor:
    return torch.round(t.double(), decimals=4)


def reanalyze(doc: dict[str, Any]) -> dict[str, Any]:
    """A stored result's verdicts computed again from its readouts (no model): what regeneration runs."""
    spec = doc["spec"]
    ispec = InstrumentSpec(
        placebos=spec["placebos"],
        replicates=spec["replicates"],
        random_draws=spec["random_draws"],
        lambdas=tuple(spec["lambdas"]),
        n_boot=spec["n_boot"],
        seed=spec["seed"],
        norm=spec.get("norm", "resid_mean"),
    )
    maps = [(lm, wm) for lm in spec["layer_maps"] for wm in spec["width_maps"]]
    readouts = {
        k: {n: torch.tensor(r, dtype=torch.float64) for n, r in reads.items()}
        for k, reads in doc["readouts"].items()
    }
    baselines = {k: torch.tensor(v, dtype=torch.float64) for k, v in doc["baselines"].items()}
    return analyze(readouts, baselines, maps=maps, spec=ispec, judged=doc.get("judged"))


def run_study(spec: FidelitySpec, out: str | Path, *, log: Callable[[str], Any] = print) -> list[Path]:
    """Every (parent, child) pair of the spec, skipping a child that is its own parent."""
    # The judge loads after everything else a measurement reads (hours into a study on a CPU), so a missing zoo
    # judge is refused here, before any model loads, for every door into the study (CLI, demo, API).
    if spec.judge is not None and parse_spec(spec.judge).kind == "zoo" and not ZOO[spec.judge].installed():
        raise InputError(
            f"the judge {spec.judge!r} is not installed; `XSTEER_ZOO=full bash scripts/setup.sh` installs it"
        )
    dtype = _dtype(spec)  # a bad $XSTEER_DTYPE is refused here too, before any model loads
    if dtype:
        log(f"models load in {dtype} (${ENV_DTYPE}); each result records it")
    out = Path(out)
    files: list[Path] = []
    for p in spec.parents:
        for c in spec.children:
            if p == c:
                continue
            files += run_pair(spec, p, c, out, log=log)
            write_json_atomic(out / "spec.json", asdict(spec))  # written once something is measured
    return files


def load_results(folder: str | Path) -> list[dict[str, Any]]:
    """Every result JSON of a study folder."""
    paths = sorted(Path(folder).glob("results/*.json"))
    paths = [p for p in paths if not p.name.endswith(".partial.json")]
    if not paths:
        raise InputError(f"{folder} holds no fidelity results (results/*.json)")
    return [json.loads(p.read_text()) for p in paths]
