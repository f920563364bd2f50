"""The transfer-fidelity study: parents × children × concepts × (layer map × width map), with nulls.

For one (parent, child) pair both models read every concept's pair texts once (last token, every layer).
For each concept:

* the parent's and the child's own vectors come from the concept's pairs (the same texts, each model's
  activations);
* every map is fitted on texts that never carry that concept — the OTHER concepts' pair texts plus
  built-in generic texts — so a map cannot learn the concept by fitting its own examples; ``cka_diff`` layer
  matching uses the concept's pair differences, which is the point of that method;
* every condition is brought to the child's ``resid_mean`` norm, so λ is a share of the child's residual;
* :func:`xsteer.evaluation.fidelity.fidelity` measures the dose-response on the concept's held-out probes.

Conditions per map ``L×W``: the mapped parent vector and a random parent direction through the same map
(``L×W/mapped-random``); plus ``random_draws`` random child directions of equal norm (``random``,
``random#2``, …): one draw's CI is over probes, not over directions, so a single direction that happens to
move the readout would pass for the null; the verdict compares against the 95% upper prediction bound of one
more random direction's fidelity, from the draws' spread (the largest of 8 draws is exceeded by chance 1 time
in 9, and a measurement tests several maps).
``truncate_pad`` is one of the width maps (the paper's literal reading, a control). Each (parent, child,
concept) result is one JSON file, so a killed study resumes where it stopped; a result with fewer maps or
random draws than the spec asks for gets the missing ones added (what it has is not measured again). The
child-side conditions (the child's own vector, the random child directions) steer with the same vectors whatever
the parent, so their readouts are read once per (child, concept) and reused by every parent (``out/readouts``).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import einops
import torch
import torch.nn.functional as F

from xsteer.app.grid import slug
from xsteer.core.activations import last_token_resid
from xsteer.core.io import atomic_path, write_json_atomic
from xsteer.core.models import load_model, model_id, parse_spec
from xsteer.core.progress import Progress
from xsteer.core.vectors import SteeringVectors
from xsteer.errors import InputError, TransferError
from xsteer.evaluation.evaluate import check_lambdas
from xsteer.evaluation.fidelity import (
    DEFAULT_LAMBDAS,
    NATIVE,
    AnswerConcept,
    FidelityResult,
    answer_concept,
    estimates,
    fidelity,
    readout_for,
    signed_effect,
)
from xsteer.extraction.extract import fit_directions
from xsteer.extraction.methods import get_method
from xsteer.extraction.pairs import ContrastivePair, pairs_hash
from xsteer.tasks import get_task
from xsteer.tasks.concepts import BUILTIN, Concept, load_concept
from xsteer.transfer.layermap import LAYER_MAPS
from xsteer.transfer.maps import TransferMap, fit_texts, fit_transfer_from_activations
from xsteer.transfer.widthmap import WIDTH_MAPS

ANSWER = "corrupted_answer"
#: What each map's fit report records of its vector's geometry against the child's own (see _build_conditions).
COSINES = ("cos_to_native", "std_cos_to_native", "mapped_random_cos_to_native")


@dataclass(frozen=True)
class FidelitySpec:
    """What a fidelity study measures (every field is a CLI option of ``xsteer fidelity``)."""

    parents: tuple[str, ...]
    children: tuple[str, ...]
    concepts: tuple[str, ...] = BUILTIN
    layer_maps: tuple[str, ...] = ("proportional",)
    width_maps: tuple[str, ...] = ("ridge",)
    lambdas: tuple[float, ...] = DEFAULT_LAMBDAS
    layers: str = "middle"  # which child layers are steered: "all", "middle" (the central third) or "a-b"
    method: str = "mean_diff"
    generic_texts: int = 128  # built-in synthetic texts added to every map's fit set
    generation_probes: int = 3
    random_draws: int = 8
    max_new_tokens: int = 32
    n_boot: int = 2000
    batch_size: int = 32
    seed: int = 0
    data_dir: str | None = None
    device: str | None = None
    maps: tuple[str, ...] = ()  # fitted TransferMap files used as they are (beside the fitted grid)

    def __post_init__(self) -> None:
        lams = check_lambdas(list(self.lambdas), where="the dose-response λ grid")
        if min(lams) > 0 or max(lams) < 0:
            raise InputError(
                f"the dose-response λ grid {list(lams)} has one sign only; the effect is read across the "
                "unsteered point from both sides, so give negative and positive values, e.g. -0.04,-0.02,0.02,0.04"
            )
        if self.random_draws < 1:
            raise InputError(f"random_draws must be at least 1, got {self.random_draws}")
        if 0.0 in lams:
            raise InputError(
                "the dose-response λ grid must not contain 0 (the unsteered baseline is always measured)"
            )
        for name in self.layer_maps:
            if name not in LAYER_MAPS or LAYER_MAPS[name].needs == "mapping":
                raise InputError(
                    f"layer map {name!r} cannot be used here; options: "
                    f"{', '.join(k for k, v in LAYER_MAPS.items() if v.needs != 'mapping')}"
                )
        for name in self.width_maps:
            if name not in WIDTH_MAPS or name == "identity":
                raise InputError(
                    f"width map {name!r} cannot be used here; options: {', '.join(k for k in WIDTH_MAPS if k != 'identity')}"
                )
        get_method(self.method)
        for c in self.concepts:
            if c != ANSWER:
                load_concept(c)
        if not self.parents or not self.children:
            raise InputError("a fidelity study needs at least one parent and one child")
        if ANSWER in self.concepts:
            get_task("gsm8k").load("validation", data_dir=self.data_dir, limit=1)
        ids = {parse_spec(p).model_id for p in self.parents}, {parse_spec(c).model_id for c in self.children}
        for path in self.maps:
            tmap = TransferMap.load(path)
            if tmap.parent_id not in ids[0] or tmap.child_id not in ids[1]:
                raise TransferError(
                    f"{path} maps {tmap.parent_id!r} -> {tmap.child_id!r}, but this study's parents are "
                    f"{sorted(ids[0])} and its children {sorted(ids[1])}; fit a map for them"
                )


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


def random_names(draws: int) -> list[str]:
    """Condition names of the random-direction null: ``random`` (the first draw, shown in plots and texts),
    then ``random#2`` … ``random#<draws>``."""
    return ["random", *(f"random#{i}" for i in range(2, draws + 1))]


def is_random_draw(condition: str) -> bool:
    return condition == "random" or condition.startswith("random#")


def _random_draws(native: SteeringVectors, names: Sequence[str], seed: int) -> dict[str, SteeringVectors]:
    # The first draw keeps the seed a one-draw study used, so old and new results share it.
    return {n: native.random_like(seed if n == "random" else seed + 1000 + int(n[7:])) for n in names}


def _concepts(spec: FidelitySpec) -> list[Concept | AnswerConcept]:
    return [
        answer_concept(data_dir=spec.data_dir, seed=spec.seed)
        if c == ANSWER
        else load_concept(c, min_pairs=8, min_probes=8)
        for c in spec.concepts
    ]


@dataclass
class _Acts:
    """One model's last-token activations of every concept's pair texts and of the generic texts, [n, L, d]."""

    pos: dict[str, torch.Tensor] = field(default_factory=dict)
    neg: dict[str, torch.Tensor] = field(default_factory=dict)
    generic: torch.Tensor | None = None


def _texts_key(texts: Any) -> str:
    return hashlib.sha256(json.dumps(texts, ensure_ascii=False).encode()).hexdigest()[:16]


def model_acts(
    spec_name: str,
    load: Any,
    concepts: Sequence[Any],
    generic: Sequence[str],
    out: Path,
    batch_size: int,
    log: Any,
) -> _Acts:
    """A model's activations of the study's texts, cached in ``out/acts`` per text set (one file per concept's
    pairs, one for the generic texts): they depend neither on the other model of a pair nor on which other
    concepts a study measures, and reading them is the slow part of a study. The model is loaded only if a
    text set is missing."""
    model = None

    def read(texts: list[str]) -> torch.Tensor:
        nonlocal model
        model = load() if model is None else model
        return last_token_resid(model, texts, batch_size=batch_size)

    def cached(name: str, texts: Any, compute: Any) -> Any:
        path = out / "acts" / f"{slug(spec_name)}__{name}__{_texts_key(texts)}.pt"
        if path.exists():
            return torch.load(path, weights_only=True)
        log(f"{spec_name}: reading the {name} texts")
        value = compute()
        with atomic_path(path) as tmp:
            torch.save(value, tmp)
        return value

    acts = _Acts()
    for c in concepts:
        pairs = [list(p) for p in c.pairs]
        acts.pos[c.name], acts.neg[c.name] = cached(
            c.name, pairs, lambda pairs=pairs: (read([p for p, _ in pairs]), read([n for _, n in pairs]))
        )
    if generic:
        acts.generic = cached("generic", list(generic), lambda: read(list(generic)))
    return acts


def _vectors(
    pos: torch.Tensor, neg: torch.Tensor, model: str, method: str, seed: int, pairs: Sequence[Any]
) -> SteeringVectors:
    directions, stats = fit_directions(pos, neg, method=method, seed=seed)
    return SteeringVectors(
        directions,
        model,
        method,
        tuple(range(directions.shape[0])),
        centring=get_method(method).centring,
        layer_stats=tuple(stats),
        pairs_hash=pairs_hash([ContrastivePair(p, n) for p, n in pairs]),
        extra={"n_pairs": len(pairs)},
    )


def run_pair(
    spec: FidelitySpec, parent_spec: str, child_spec: str, out: Path, *, log: Any = print
) -> list[Path]:
    """Every concept for one (parent, child); returns the result files (existing ones are kept)."""
    concepts = _concepts(spec)
    files = {
        c.name: out / "results" / f"{slug(parent_spec)}__{slug(child_spec)}__{c.name}.json" for c in concepts
    }
    stored = {c.name: json.loads(files[c.name].read_text()) for c in concepts if files[c.name].exists()}
    missing = {name: _missing(spec, doc) for name, doc in stored.items()}
    no_cos = {
        name
        for name, doc in stored.items()
        if doc["meta"].get("cosines_added") != list(COSINES)
        and any(
            "std_cos_to_native" not in fit and not m.endswith("×given")
            for m, fit in doc["meta"].get("maps", {}).items()
        )
    }
    todo = [c for c in concepts if not files[c.name].exists() or missing[c.name] or c.name in no_cos]
    if not todo:
        return list(files.values())
    t0 = time.time()
    generic = (
        fit_texts(get_task("synthetic").load("train", seed=spec.seed)[: spec.generic_texts], seed=spec.seed)
        if spec.generic_texts
        else []
    )
    # Every built-in concept's texts serve as fit texts for the maps of the others, measured or not.
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
    )
    acts_c = model_acts(child_spec, lambda: child, readers, generic, out, spec.batch_size, log)
    ids = (parse_spec(parent_spec).model_id, model_id(child))
    layers = steered_layers(spec.layers, child.cfg.n_layers)
    for concept in todo:
        if concept.name in stored:  # complete a stored result: nothing it already has is measured again
            doc = stored[concept.name]
            if concept.name in no_cos:
                log(
                    f"[{time.time() - t0:6.0f} s] {parent_spec} -> {child_spec}: {concept.name}: cosines to native"
                )
                grid = _grid_of(spec, doc)
                _add_cosines(doc, _build_conditions(grid, ids, concept, readers, acts_p, acts_c, layers))
            if missing[concept.name]:
                log(
                    f"[{time.time() - t0:6.0f} s] {parent_spec} -> {child_spec}: {concept.name}: adding "
                    f"{', '.join(missing[concept.name])}"
                )
                built = _build_conditions(spec, ids, concept, readers, acts_p, acts_c, layers)
                _add_conditions(spec, doc, built, child, concept, layers)
            write_json_atomic(files[concept.name], doc)
            continue
        partial = _Checkpoint(
            files[concept.name].with_suffix(".partial"), _texts_key([ids, concept.name, _measured(spec)])
        )
        resumed = len(partial)
        built = _build_conditions(spec, ids, concept, readers, acts_p, acts_c, layers)
        shared = partial.share(
            _ChildReadouts(out / "readouts" / f"{slug(child_spec)}__{concept.name}.json"),
            _child_side_keys(spec, ids[1], concept, built),
        )
        notes = [f"resumed: {resumed} conditions already measured"] if resumed else []
        notes += [f"{shared} child-side conditions taken from another parent's measurement"] if shared else []
        note = f" ({'; '.join(notes)})" if notes else ""
        log(f"[{time.time() - t0:6.0f} s] {parent_spec} -> {child_spec}: {concept.name}{note}")
        result = _one_concept(spec, child, concept, built, partial)
        result.meta.update(
            parent=parent_spec,
            child=child_spec,
            steered_layers=layers,
            seconds=round(time.time() - t0, 1),
            spec={k: v for k, v in asdict(spec).items() if k not in ("parents", "children")},
        )
        write_json_atomic(files[concept.name], result.to_json())
        partial.path.unlink(missing_ok=True)
        log(result.table())
    return list(files.values())


def _measured(spec: FidelitySpec) -> dict[str, Any]:
    """The fields of a spec that decide what one (pair, concept) measurement reads out."""
    skip = ("parents", "children", "concepts", "device", "batch_size", "n_boot", "generation_probes")
    return {k: v for k, v in asdict(spec).items() if k not in skip}


class _Checkpoint(dict[str, Any]):
    """The readouts by condition of a measurement under way, saved on every assignment, so that an interrupted
    measurement resumes at the condition it stopped at. One written for another spec is ignored."""

    def __init__(self, path: Path, key: str):
        self.path, self.key = path, key
        doc = json.loads(path.read_text()) if path.exists() else {}
        super().__init__(doc.get("readouts", {}) if doc.get("key") == key else {})
        self.store: _ChildReadouts | None = None
        self.shared: dict[str, str] = {}

    def share(self, store: _ChildReadouts, keys: Mapping[str, str]) -> int:
        """Take from ``store`` the readouts of the conditions named in ``keys`` (name -> content key) that
        another measurement read, and give it those this one reads; returns how many were taken."""
        self.store, self.shared = store, dict(keys)
        taken = {n: r for n, k in keys.items() if n not in self and (r := store.get(k)) is not None}
        if taken:
            super().update(taken)
            write_json_atomic(self.path, {"key": self.key, "readouts": dict(self)})
        return len(taken)

    def __setitem__(self, name: str, value: Any) -> None:
        super().__setitem__(name, value)
        write_json_atomic(self.path, {"key": self.key, "readouts": dict(self)})
        if self.store is not None and name in self.shared:
            self.store.put(self.shared[name], value)


class _ChildReadouts:
    """Readouts of the child-side conditions (the child's own vector and the random child directions) of one
    (child, concept), shared by the measurements of every parent: those conditions steer with the same vectors
    whatever the parent, and on the slow concepts they are 9 of 21 conditions. Keyed by content (see
    :func:`_child_side_keys`), so a readout is reused only where the very same vector would be read out."""

    def __init__(self, path: Path):
        self.path = path

    def _load(self) -> dict[str, Any]:
        return json.loads(self.path.read_text()) if self.path.exists() else {}

    def get(self, key: str) -> Any:
        return self._load().get(key)

    def put(self, key: str, readout: Any) -> None:
        doc = self._load()  # read again: another process may have added readouts since
        doc[key] = readout
        write_json_atomic(self.path, doc)


def _child_side_keys(spec: FidelitySpec, child_id: str, concept: Any, built: _Conditions) -> dict[str, str]:
    """Content keys of the conditions that do not depend on the parent: what decides a readout (the child, the
    concept's texts, the λ grid) and the vector's own values, layers and norm convention."""
    where = _texts_key([child_id, repr(concept), [float(x) for x in spec.lambdas]])
    out = {}
    for name in [NATIVE, *random_names(spec.random_draws)]:
        v = built.native if name == NATIVE else built.conditions[name]
        h = hashlib.sha256(where.encode())
        h.update(v.vectors.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
        h.update(json.dumps([list(v.layers), v.norm]).encode())
        out[name] = h.hexdigest()[:16]
    return out


@dataclass
class _Conditions:
    """What one concept's measurement steers with: the child's own vector (as fitted, and at the steered
    layers' ``resid_mean``), the parent's, every other condition, and each map's fit report."""

    v_parent: SteeringVectors
    v_native: SteeringVectors
    native: SteeringVectors
    conditions: dict[str, SteeringVectors]
    fits: dict[str, Any]


def _build_conditions(
    spec: FidelitySpec,
    ids: tuple[str, str],
    concept: Any,
    concepts: Sequence[Any],
    acts_p: _Acts,
    acts_c: _Acts,
    layers: list[int],
) -> _Conditions:
    parent_id, child_id = ids
    pp, np_ = acts_p.pos[concept.name], acts_p.neg[concept.name]
    pc, nc = acts_c.pos[concept.name], acts_c.neg[concept.name]
    v_parent = _vectors(pp, np_, parent_id, spec.method, spec.seed, concept.pairs)
    xp, yc = _fit_acts(concept, concepts, acts_p), _fit_acts(concept, concepts, acts_c)
    norms = yc.norm(dim=-1).mean(dim=-1)
    spread = yc.std(dim=1).clamp_min(1e-6)  # [layer, d]: each coordinate's spread over the fit texts
    diffs = (einops.rearrange(pp - np_, "n l d -> l n d"), einops.rearrange(pc - nc, "n l d -> l n d"))
    v_native, native = _native(spec, child_id, concept, acts_c, layers, norms)
    random_parent = v_parent.random_like(spec.seed + 1)
    conditions: dict[str, SteeringVectors] = _random_draws(native, random_names(spec.random_draws), spec.seed)
    fits: dict[str, Any] = {}
    cache: dict[tuple[str, int, int], Any] = {}

    def maps() -> Iterator[tuple[str, TransferMap]]:
        for path in spec.maps:  # given maps first, as they are
            tmap = TransferMap.load(path)
            if (tmap.parent_id, tmap.child_id) == ids:
                yield f"{Path(path).stem}×given", tmap
        for lm in spec.layer_maps:
            for wm in spec.width_maps:
                yield (
                    f"{lm}×{wm}",
                    fit_transfer_from_activations(
                        xp,
                        yc,
                        parent_id=parent_id,
                        child_id=child_id,
                        layer_map=lm,
                        width_map=wm,
                        diffs=diffs,
                        seed=spec.seed,
                        width_cache=cache,
                    ),
                )

    for name, tmap in maps():
        fits[name] = {
            "layer_map": tmap.info.get("layer_map"),
            "heldout_r2": {str(c): r["r2"] for c, r in tmap.report.items()},
            "heldout_cos_centred": {str(c): r["cosine_centred"] for c, r in tmap.report.items()},
        }
        for label, v in ((name, v_parent), (f"{name}/mapped-random", random_parent)):
            try:
                mapped = tmap.apply(v, norm="unit")
            except InputError:  # e.g. truncation dropped every coordinate the direction lived in
                continue
            steer = tuple(layer for layer in layers if layer in mapped.layers)
            if steer:
                conditions[label] = mapped.replace(layers=steer).scaled_to(norms, "resid_mean")
                # A large effect from a vector orthogonal to the child's own says the readout moved by
                # another route than the concept: worth seeing beside the fidelity. Raw cosines are ruled by a
                # few massive-activation coordinates (Qwen's mean differences put ~98% of their norm in three),
                # so the standardized one (each coordinate over the child's spread) is recorded too.
                idx = list(steer)
                a, b = mapped.vectors[idx], v_native.vectors[idx]
                prefix = "mapped_random_" if label != name else ""
                fits[name][f"{prefix}cos_to_native"] = F.cosine_similarity(a, b, dim=-1).mean().item()
                if not prefix:
                    std = F.cosine_similarity(a / spread[idx], b / spread[idx], dim=-1)
                    fits[name]["std_cos_to_native"] = std.mean().item()
    return _Conditions(v_parent, v_native, native, conditions, fits)


def _one_concept(
    spec: FidelitySpec, child: Any, concept: Any, built: _Conditions, checkpoint: _Checkpoint | None = None
) -> FidelityResult:
    result = fidelity(
        child,
        concept,
        built.conditions,
        native=built.native,
        lambdas=spec.lambdas,
        n_boot=spec.n_boot,
        seed=spec.seed,
        batch_size=spec.batch_size,
        generation_probes=spec.generation_probes,
        max_new_tokens=spec.max_new_tokens,
        checkpoint=checkpoint,
    )
    result.meta["maps"] = built.fits
    result.meta["vectors"] = {
        "parent_separation": [s.get("separation") for s in built.v_parent.layer_stats],
        "native_separation": [s.get("separation") for s in built.v_native.layer_stats],
    }
    return result


def _grid_of(spec: FidelitySpec, doc: Mapping[str, Any]) -> FidelitySpec:
    """``spec`` with the grid of fitted maps a stored result was measured with."""
    names = [n for n in doc["meta"].get("maps", {}) if not n.endswith("×given")]
    return replace(
        spec,
        layer_maps=tuple(dict.fromkeys(n.split("×")[0] for n in names)),
        width_maps=tuple(dict.fromkeys(n.split("×")[1] for n in names)),
        maps=(),
    )


def _add_cosines(doc: dict[str, Any], built: _Conditions) -> None:
    """Give a stored result measured before the cosines were recorded the ones of its maps, fitted again
    (nothing is steered)."""
    for name, fit in doc["meta"].get("maps", {}).items():
        for key in COSINES:
            if key in built.fits.get(name, {}):
                fit[key] = built.fits[name][key]
    doc["meta"]["cosines_added"] = list(COSINES)


def _native(
    spec: FidelitySpec, child_id: str, concept: Any, acts_c: _Acts, layers: list[int], norms: torch.Tensor
) -> tuple[SteeringVectors, SteeringVectors]:
    """The child's own vectors of ``concept``: as fitted (every layer, with their stats), and on the steered
    layers at ``resid_mean`` of ``norms`` (what is measured)."""
    pc, nc = acts_c.pos[concept.name], acts_c.neg[concept.name]
    v_native = _vectors(pc, nc, child_id, spec.method, spec.seed, concept.pairs)
    return v_native, v_native.replace(layers=tuple(layers)).scaled_to(norms, "resid_mean")


def _fit_acts(concept: Any, concepts: Sequence[Any], acts: _Acts) -> torch.Tensor:
    """[layer, n, d] activations of the texts a map of ``concept`` is fitted on: the other concepts' pair
    texts and the generic texts (never the concept's own)."""
    xs = [t for c in concepts if c.name != concept.name for t in (acts.pos[c.name], acts.neg[c.name])]
    if acts.generic is not None:
        xs.append(acts.generic)
    if not xs:
        raise InputError("a map needs fit texts without the concept: add concepts or generic texts")
    return einops.rearrange(torch.cat(xs), "n l d -> l n d")


def _missing(spec: FidelitySpec, doc: Mapping[str, Any]) -> list[str]:
    """What ``spec`` asks for that a stored result lacks: random draws, and fitted maps (a map counts as
    there once its fit is recorded, even where it had no vector to steer with)."""
    grid = [f"{lm}×{wm}" for lm in spec.layer_maps for wm in spec.width_maps]
    return [n for n in random_names(spec.random_draws) if n not in doc["conditions"]] + [
        n for n in grid if n not in doc["meta"].get("maps", {})
    ]


def _add_conditions(
    spec: FidelitySpec,
    doc: dict[str, Any],
    built: _Conditions,
    child: Any,
    concept: Any,
    layers: list[int],
) -> None:
    """Add to a stored result the conditions of ``built`` it lacks (missing random draws, missing maps with
    their mapped-random nulls and fit reports), measured as the study measured the rest: the same λ grid,
    probes and bootstrap seed, each effect read against the stored unsteered baseline and divided by the stored
    native effect. No example generations are added for them.

    Checked: the unsteered readout must come out as stored (else the model or probes changed), and the native
    readout within 5% of the native effect's size (the conditions are scaled to the child's residual norm on
    the study's current fit texts; a text set that changed since the result was measured moves that norm a
    little, and the drift is recorded)."""
    stored_spec = doc["meta"].get("spec", {})
    if (
        [float(x) for x in doc["lambdas"]] != [float(x) for x in spec.lambdas]
        or doc["meta"].get("steered_layers") not in (None, layers)
        or stored_spec.get("method", spec.method) != spec.method
    ):
        raise InputError(
            f"{concept.name}: the stored result used another λ grid, steered layers or method than this spec; "
            "add to it with the spec it was measured with, or measure it again in a new folder"
        )
    n_boot, seed = doc["meta"].get("n_boot", spec.n_boot), doc["meta"].get("seed", spec.seed)
    lams = doc["lambdas"]
    readout = readout_for(concept, child.tokenizer)
    base = torch.tensor(doc["baseline"])
    unsteered = readout(child, None, [0.0], batch_size=spec.batch_size)[0]
    if (off := float((unsteered - base).abs().max())) > 1e-3:
        raise TransferError(
            f"{concept.name}: the unsteered readout no longer matches the stored one (max |Δ| {off:.2g}): the "
            "model or the probes changed since it was measured; measure it again in a new folder"
        )
    stored_native = torch.tensor(doc["readouts"][NATIVE]) - base[None, :]
    now_native = readout(child, built.native, lams, batch_size=spec.batch_size) - base[None, :]
    drift = float((now_native - stored_native).abs().max())
    scale = float(stored_native.abs().mean())
    if drift > 0.05 * scale:
        raise TransferError(
            f"{concept.name}: the native readout moved by {drift:.2g} (its effects average {scale:.2g}) since it "
            "was measured: the vectors or fit texts changed; measure it again in a new folder"
        )
    new = {n: v for n, v in built.conditions.items() if n not in doc["conditions"]}
    t0 = time.time()
    effects = {NATIVE: signed_effect(stored_native, lams)}
    with Progress(len(new), f"dose-response {concept.name} (added)", unit="conditions") as bar:
        for n, v in new.items():
            r = readout(child, v, lams, batch_size=spec.batch_size)
            doc["readouts"][n] = r.tolist()
            effects[n] = signed_effect(r - base[None, :], lams)
            bar.update()
    _, effect_cis, fidelity_cis = estimates(effects, n_boot=n_boot, seed=seed)
    for n in new:
        doc["effects"][n] = effect_cis[n].as_list()
        doc["fidelity"][n] = None if (f := fidelity_cis[n]) is None else f.as_list()
    doc["conditions"] += list(new)
    for name, fit in built.fits.items():
        doc["meta"].setdefault("maps", {}).setdefault(name, fit)
    meta = doc["meta"]
    meta.setdefault("conditions_added", []).extend(new)
    meta["conditions_added_native_drift"] = max(drift, meta.get("conditions_added_native_drift", 0.0))
    meta["seconds_added"] = round(meta.get("seconds_added", 0.0) + time.time() - t0, 1)


def run_study(spec: FidelitySpec, out: str | Path, *, log: Any = print) -> list[Path]:
    """Every (parent, child) pair of the spec, skipping a child that is its own parent."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "spec.json", asdict(spec))
    files: list[Path] = []
    for p in spec.parents:
        for c in spec.children:
            if p == c:
                continue
            files += run_pair(spec, p, c, out, log=log)
    return files


def load_results(folder: str | Path) -> list[dict[str, Any]]:
    """Every result JSON of a study folder."""
    paths = sorted(Path(folder).glob("results/*.json"))
    if not paths:
        raise InputError(f"{folder} holds no fidelity results (results/*.json)")
    return [json.loads(p.read_text()) for p in paths]
