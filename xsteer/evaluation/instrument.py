"""The fidelity instrument: does a concept cross from parent to child, or does the map only push the readout?

For one (parent, child, concept) and a set of maps, from both models' last-token activations (no model is run
until the readouts), every vector the verdict needs is built the same way and read in a few large batched
forwards (:meth:`WordLogOdds.read_stack`: each batch row carries its own vector and λ):

* the child's own vector (``native``) and, per map, the mapped parent vector: mean differences of the
  concept's pairs (the parent's through the map), at the child's norm on the steered layers (:data:`NORMS`);
* **placebo null** (:mod:`xsteer.evaluation.nulls`): K placebo parent vectors, half neutral pairings and half
  balanced label flips, through the *same* fitted map; a map crosses when its fidelity interval's lower bound
  clears the placebos' 95th percentile, and the (pair, concept) verdict over several candidate maps uses the
  placebos' maximum over those maps (family-wise 5%);
* **whole-pipeline interval**: R bootstrap replicates resample the concept's pairs and the map's fit texts,
  re-extract both vectors, re-fit the map and read again; each replicate's ratio is then read on resampled
  probes, and the pooled percentiles are the headline interval (the probe-only interval is shown beside it);
* **specificity**: the mapped vector read on every other concept's readout, each effect as a share of that
  concept's own native effect there; specificity = on-target fidelity − the largest |off-target| share;
* **reference validity**: fidelity is defined only where the child's own vector moves the readout the
  concept's way at both signs of the smallest λ (each mean with a CI that excludes 0);
* **known nulls for calibration**: the control map (``truncate_pad``, which cannot carry a concept across
  families), random parent directions through each map, and random child directions drawn from the child's
  activation covariance. The control is judged by the candidates' own rule (its whole-pipeline interval's lower
  bound against its placebos' 95th percentile), so its false-pass rate is the rate a candidate map would show
  were it a null; the other nulls are single directions, counted when their point fidelity exceeds the placebo
  95th percentile (an upper bound on their false-pass rate). A few placebos of each kind get the R pipeline
  replicates too (:attr:`InstrumentSpec.pipeline_placebos`), so that placebos used as if they were concepts are
  judged by exactly the rule a candidate faces: the measured false-pass rate of that rule.

Control maps get placebos and replicates like the candidates, but never enter the (pair, concept) verdict.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import einops
import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from xsteer.core.progress import Progress
from xsteer.errors import InputError
from xsteer.evaluation.fidelity import signed_effect
from xsteer.evaluation.nulls import (
    covariance_directions,
    exceed_rate,
    flip_placebos,
    isotropic_directions,
    max_threshold,
    neutral_placebos,
    placebo_threshold,
)
from xsteer.transfer.maps import TransferMap, fit_transfer_from_activations

#: Width maps that cannot carry a concept across families: read as known nulls, never as candidates.
CONTROLS = ("truncate_pad",)
FORMAT = "xsteer.fidelity/2"
#: The instrument's dose-response grid, a share of the child's residual norm: within the range where the
#: children's own vectors act monotonically (at ±0.08 several break: Qwen 0.5B's curves turn over), and 4 values
#: where 6 cost half as much again on every one of a measurement's ~170 vectors.
LAMBDAS: tuple[float, ...] = (-0.04, -0.02, 0.02, 0.04)
#: What λ is a share of. ``resid_mean``: the child's mean ‖h_l‖, so λ = 0.02 moves the residual by 2% of its
#: typical length. ``whitened``: the child's spread per coordinate, ‖λ·v ⊘ σ_l‖ = λ·√d, so "equal norm" is the same
#: push in units of each coordinate's own spread, and a direction along a massive-activation coordinate (σ in the
#: hundreds on some children) is not starved next to one along quiet coordinates. The two agree where the residual
#: is isotropic.
NORMS = ("resid_mean", "whitened")
#: Vectors read per chunk: what a killed measurement loses at most (one chunk is a few batched forwards).
CHUNK = 16


@dataclass(frozen=True)
class InstrumentSpec:
    """How hard the instrument looks: sizes of the nulls and of the pipeline bootstrap."""

    placebos: int = 50  # K: half neutral pairings, half balanced label flips
    replicates: int = 20  # R: whole-pipeline bootstrap replicates (candidate maps only)
    random_draws: int = 4  # random parent directions through each map; covariance child directions
    # Placebos of each kind (the first ones) that get the R replicates too, on the candidate maps: a placebo judged
    # by a whole-pipeline interval, as a candidate is (calibration only; each costs R vectors a map).
    pipeline_placebos: int = 0
    lambdas: tuple[float, ...] = LAMBDAS
    probe_boot: int = 100  # probe resamples per replicate (pooled over replicates)
    n_boot: int = 2000  # probe-only bootstrap
    seed: int = 0
    norm: str = "resid_mean"  # a key of NORMS

    def __post_init__(self) -> None:
        if self.norm not in NORMS:
            raise InputError(f"unknown norm convention {self.norm!r}; options: {', '.join(NORMS)}")
        if self.placebos < 10:
            raise InputError(f"a placebo null needs at least 10 placebos (--placebos), got {self.placebos}")
        if self.replicates < 2:
            raise InputError(
                f"a pipeline interval needs at least 2 replicates (--replicates), got {self.replicates}"
            )
        if self.random_draws < 1:
            raise InputError(f"random_draws must be at least 1, got {self.random_draws}")
        if not 0 <= self.pipeline_placebos <= self.placebos // 2:
            raise InputError(
                f"pipeline_placebos counts placebos of each kind, between 0 and {self.placebos // 2} (half of "
                f"--placebos), got {self.pipeline_placebos}"
            )
        lams = [float(x) for x in self.lambdas]
        if not any(x > 0 for x in lams) or not any(x < 0 for x in lams) or 0.0 in lams:
            raise InputError(
                f"the dose-response λ grid needs non-zero values of both signs (a concept is read both ways), got {lams}"
            )


@dataclass
class ModelActs:
    """One model's last-token activations [n, layer, d]: a concept's pairs, and the map's fit texts."""

    pos: Float[Tensor, "n layer d"]
    neg: Float[Tensor, "n layer d"]
    fit: Float[Tensor, "m layer d"]


@dataclass
class Cell:
    """What one (parent, child, concept) measurement reads: named child-space vectors, per readout."""

    names: list[str]
    vectors: Float[Tensor, "k layer d"]
    fits: dict[str, dict[str, Any]] = field(default_factory=dict)


def mean_diff(pos: Tensor, neg: Tensor) -> Float[Tensor, "layer d"]:
    """The concept's unit mean difference per layer (CAA; the placebos are built the same way)."""
    v = (pos - neg).double().mean(dim=0)
    return (v / v.norm(dim=-1, keepdim=True).clamp_min(1e-30)).float()


def scaled(
    stack: Float[Tensor, "k layer d"], layers: Sequence[int], fit: Float[Tensor, "m layer d"], norm: str
) -> Float[Tensor, "k layer d"]:
    """Each vector's steered layers at the child's ``norm`` (:data:`NORMS`), read from the child's activations
    ``fit``; every other layer zero, so λ means the same push for every vector of a measurement."""
    out = torch.zeros_like(stack)
    idx = list(layers)
    v = stack[:, idx]
    if norm == "resid_mean":
        norms = fit.norm(dim=-1).mean(dim=0)
        out[:, idx] = v / v.norm(dim=-1, keepdim=True).clamp_min(1e-30) * norms[idx].reshape(1, -1, 1)
    elif norm == "whitened":
        sigma = fit[:, idx].std(dim=0).clamp_min(1e-12)  # [layer, d]; a dead coordinate must not divide by 0
        out[:, idx] = v / (v / sigma).norm(dim=-1, keepdim=True).clamp_min(1e-30) * stack.shape[-1] ** 0.5
    else:
        raise InputError(f"unknown norm convention {norm!r}; options: {', '.join(NORMS)}")
    return out


def _replicates(
    parent: ModelActs,
    child: ModelActs,
    xp: Float[Tensor, "p_layer n d_parent"],
    yc: Float[Tensor, "c_layer n d_child"],
    *,
    lengths: Sequence[int],
    maps: Sequence[tuple[str, str]],
    tmaps: Mapping[str, TransferMap],
    layers: Sequence[int],
    ids: tuple[str, str],
    spec: InstrumentSpec,
) -> tuple[list[str], list[Tensor]]:
    """The whole-pipeline bootstrap: per replicate, the pairs and the fit texts resampled, both vectors
    extracted again and every map fitted again (the control too: its false-pass rate is read by the same rule
    as a candidate's verdict), named ``native@r`` and ``<map>/mapped@r``; on each candidate map, the first
    ``spec.pipeline_placebos`` placebos of each kind used as if they were concepts, named
    ``<map>/placebo:<kind>#i@r``: each placebo's own pairs (its pairing of neutral texts, or its signed concept
    pairs, resampled within each sign so that it stays balanced) resampled with replacement, as a concept's
    pairs are, through the replicate's re-fitted map."""
    names: list[str] = []
    vecs: list[Tensor] = []
    n_pairs = parent.pos.shape[0]
    g = spec.seed
    rng = torch.Generator().manual_seed(g + 15)
    for r in range(spec.replicates):
        pi = torch.randint(0, n_pairs, (n_pairs,), generator=rng)
        fi = torch.randint(0, parent.fit.shape[0], (parent.fit.shape[0],), generator=rng)
        names.append(f"native@{r}")
        vecs.append(mean_diff(child.pos[pi], child.neg[pi])[None])
        vp = mean_diff(parent.pos[pi], parent.neg[pi])[None]
        k = spec.pipeline_placebos
        # The placebos' own pairs are resampled by generators of their own, so that the shared one draws the
        # same pairs and fit texts for every replicate whether placebos get replicates or not.
        placebos = _placebos(parent, lengths, k, k, g, resample=g + 1000 * (r + 1)) if k else vp[:0]
        for lm, wm in maps:
            point = tmaps[f"{lm}×{wm}"]
            rmap = fit_transfer_from_activations(
                xp[:, fi],
                yc[:, fi],
                parent_id=ids[0],
                child_id=ids[1],
                layer_map=lm,
                width_map=wm,
                seed=g + r,
                heldout=0.0,
                child_layers=layers,
                # The penalty the full fit chose by cross-validation: choosing it again costs a 5-fold CV per
                # layer and replicate (the interval is conditional on it).
                layer_options={
                    c: {"alpha": w.params["alpha"]}
                    for c, w in point.width_maps.items()
                    if "alpha" in w.params
                },
            )
            names.append(f"{lm}×{wm}/mapped@{r}")
            if wm in CONTROLS or not k:
                vecs.append(rmap.map_stack(vp))
                continue
            names += [f"{lm}×{wm}/{p}@{r}" for p in _placebo_names(k, k)]
            vecs.append(rmap.map_stack(torch.cat([vp, placebos])))
    return names, vecs


def _neutral_pairs(n_pairs: int, n_fit: int) -> int:
    """How many pairs a neutral placebo draws: as many as the concept has, as far as the fit texts allow."""
    return min(n_pairs, (n_fit - 1) // 2)


def _placebos(
    parent: ModelActs,
    lengths: Sequence[int],
    n_neutral: int,
    n_flip: int,
    seed: int,
    *,
    resample: int | None = None,
) -> Float[Tensor, "k layer d"]:
    """The placebo parent vectors (neutral pairings of the fit texts, then balanced flips of the concept's pairs),
    on a bootstrap of their own pairs where ``resample`` seeds one; a generator per kind, so the first ``k`` of
    a kind are the same whatever the count."""
    n_pairs = _neutral_pairs(parent.pos.shape[0], parent.fit.shape[0])
    return torch.cat(
        [
            neutral_placebos(
                parent.fit,
                lengths,
                n_neutral,
                n_pairs,
                seed=seed + 11,
                resample=None if resample is None else resample + 1,
            ),
            flip_placebos(
                parent.pos,
                parent.neg,
                n_flip,
                seed=seed + 12,
                resample=None if resample is None else resample + 2,
            ),
        ]
    )


def _placebo_names(n_neutral: int, n_flip: int) -> list[str]:
    return [f"placebo:neutral#{i}" for i in range(n_neutral)] + [f"placebo:flip#{i}" for i in range(n_flip)]


def build_cell(
    parent: ModelActs,
    child: ModelActs,
    *,
    lengths: Sequence[int],
    maps: Sequence[tuple[str, str]],
    layers: Sequence[int],
    ids: tuple[str, str],
    spec: InstrumentSpec,
    off_target: Mapping[str, ModelActs] | None = None,
) -> dict[str, Cell]:
    """Every vector one concept's measurement reads, grouped by the readout it is read on (``"target"`` and
    each off-target concept's name), at the child's ``spec.norm`` on ``layers``.

    ``lengths`` are the fit texts' lengths (neutral placebos pair texts of matched length); ``off_target`` the
    child's activations of the other concepts' pairs (their native vectors normalise the off-target shares).
    """
    g = spec.seed
    xp = einops.rearrange(parent.fit, "n l d -> l n d")
    yc = einops.rearrange(child.fit, "n l d -> l n d")
    half = spec.placebos // 2
    placebos = _placebos(parent, lengths, half, spec.placebos - half, g)
    placebo_names = _placebo_names(half, spec.placebos - half)
    random_parent = isotropic_directions(spec.random_draws, *parent.pos.shape[1:], seed=g + 13)
    v_parent = mean_diff(parent.pos, parent.neg)[None]
    v_native = mean_diff(child.pos, child.neg)[None]

    names = ["native"]
    vecs = [v_native]
    fits: dict[str, dict[str, Any]] = {}
    tmaps: dict[str, TransferMap] = {}
    cache: dict[tuple[str, int, int], Any] = {}
    for lm, wm in maps:
        name = f"{lm}×{wm}"
        tmap = fit_transfer_from_activations(
            xp,
            yc,
            parent_id=ids[0],
            child_id=ids[1],
            layer_map=lm,
            width_map=wm,
            seed=g,
            width_cache=cache,
            child_layers=layers,
        )
        tmaps[name] = tmap
        fits[name] = {
            "control": wm in CONTROLS,
            "heldout_r2": float(np.mean([r["r2"] for r in tmap.report.values()])) if tmap.report else None,
        }
        block = tmap.map_stack(torch.cat([v_parent, placebos, random_parent]))
        names += [f"{name}/mapped"] + [f"{name}/{p}" for p in placebo_names]
        names += [f"{name}/random-parent#{i}" for i in range(spec.random_draws)]
        vecs.append(block)
    names += [f"random-child#{i}" for i in range(spec.random_draws)]
    vecs.append(covariance_directions(child.fit, spec.random_draws, seed=g + 14))

    # Whole-pipeline replicates: resample the pairs and the fit texts, extract and fit again.
    rep_names, rep_vecs = _replicates(
        parent, child, xp, yc, lengths=lengths, maps=maps, tmaps=tmaps, layers=layers, ids=ids, spec=spec
    )
    names += rep_names
    vecs += rep_vecs
    stack = torch.cat(vecs)
    alive = stack[:, list(layers)].norm(dim=-1).amax(dim=-1) > 0  # a map may feed no steered layer
    cells = {
        "target": Cell(
            [n for n, ok in zip(names, alive.tolist(), strict=True) if ok],
            scaled(stack[alive], layers, child.fit, spec.norm),
            fits,
        )
    }
    for concept, acts in (off_target or {}).items():
        own = mean_diff(acts.pos, acts.neg)[None]
        mapped = [tmaps[f"{lm}×{wm}"].map_stack(v_parent) for lm, wm in maps]
        # The child's own vector of the target concept is read there too: concepts are not orthogonal (negative
        # sentiment leans towards doubt), so a transfer is judged against the off-target profile of the child's
        # own vector, not against zero.
        cells[concept] = Cell(
            ["native", "target-native"] + [f"{lm}×{wm}/mapped" for lm, wm in maps],
            scaled(torch.cat([own, v_native, *mapped]), layers, child.fit, spec.norm),
        )
    return cells


Reader = Callable[[Float[Tensor, "k layer d"], Sequence[float]], Float[Tensor, "k lam probe"]]


def read_cell(
    cell: Cell,
    read: Reader,
    lambdas: Sequence[float],
    *,
    store: MutableMapping[str, Any],
    chunk: int | None = None,
    desc: str = "readouts",
    progress: bool = True,
) -> dict[str, Float[Tensor, "lam probe"]]:
    """Each vector's readout [λ, probe], read ``chunk`` vectors at a time; ``store`` holds those already read
    (reused) and takes each chunk as soon as it is read, so a killed measurement resumes at its last chunk."""
    chunk = chunk or CHUNK
    todo = [i for i, n in enumerate(cell.names) if n not in store]
    stored = len(cell.names) - len(todo)
    label = desc + (f" ({stored} of {len(cell.names)} vectors stored)" if stored else "")
    with Progress(len(todo), label, unit="vectors", enabled=progress) as bar:
        for start in range(0, len(todo), chunk):
            idx = todo[start : start + chunk]
            out = read(cell.vectors[idx], lambdas)
            store.update({cell.names[i]: out[j].tolist() for j, i in enumerate(idx)})
            bar.update(len(idx))
    return {n: torch.tensor(store[n]) for n in cell.names}


# ---------------------------------------------------------------------------------------------- statistics
def reference_check(
    native_delta: Float[Tensor, "lam probe"], lambdas: Sequence[float], *, n_boot: int = 2000, seed: int = 0
) -> str | None:
    """None when the child's own vector moves the readout the concept's way at both signs of the smallest |λ|
    (each mean Δ with a probe-bootstrap CI that excludes 0, the right side); otherwise the reason it does not."""
    from xsteer.evaluation.fidelity import effect_ci

    lams = [float(x) for x in lambdas]
    small = min(abs(x) for x in lams)
    for sign, word in ((1.0, "raise"), (-1.0, "lower")):
        if sign * small not in lams:
            return f"the λ grid lacks {sign * small:+g}"
        e = effect_ci(native_delta[lams.index(sign * small)] * sign, n_boot=n_boot, seed=seed)
        if e.low <= 0:
            return (
                f"undefined: the child's own vector does not {word} the readout at λ = {sign * small:+g} "
                f"(Δ {sign * e.estimate:+.3f} [{min(sign * e.low, sign * e.high):+.3f}, {max(sign * e.low, sign * e.high):+.3f}])"
            )
    return None


def _ratio_boot(num: np.ndarray, den: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    idx = rng.integers(0, num.shape[-1], size=(n, num.shape[-1]))
    with np.errstate(divide="ignore", invalid="ignore"):
        return num[idx].mean(axis=1) / den[idx].mean(axis=1)


def _interval(values: np.ndarray) -> list[float]:
    v = values[np.isfinite(values)]
    return [float(np.quantile(v, 0.025)), float(np.quantile(v, 0.975))]


def analyze(
    readouts: Mapping[str, Mapping[str, Tensor]],
    baselines: Mapping[str, Tensor],
    *,
    maps: Sequence[tuple[str, str]],
    spec: InstrumentSpec,
    judged: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The verdicts of one measurement from its readouts (pure; what the result file stores is enough to run it
    again). ``readouts[readout][vector]`` is [λ, probe]; ``baselines[readout]`` the unsteered [probe];
    ``judged`` the judge readout's scores (:mod:`xsteer.evaluation.judge`), when one was read."""
    lams = list(spec.lambdas)
    rng = np.random.default_rng(spec.seed)
    low_rng = np.random.default_rng([spec.seed, 1])

    def effect(readout: str, name: str) -> np.ndarray:
        delta = readouts[readout][name] - baselines[readout][None, :]
        return signed_effect(delta, lams).double().numpy()

    target = readouts["target"]
    native_delta = target["native"] - baselines["target"][None, :]
    reason = reference_check(native_delta, lams, n_boot=spec.n_boot, seed=spec.seed)
    nat = effect("target", "native")
    out: dict[str, Any] = {
        "native_effect": [
            float(nat.mean()),
            *_interval(_ratio_boot(nat, np.ones_like(nat), spec.n_boot, rng)),
        ],
        "reference": reason or "valid",
        "curves": {
            n: (r - baselines["target"][None, :]).mean(dim=1).tolist()
            for n, r in target.items()
            if "#" not in n and "@" not in n
        },
        "maps": {},
    }
    if reason is not None:
        return out

    def fid(name: str) -> float:
        return float(effect("target", name).mean() / nat.mean())

    def low(name: str) -> float:
        # A placebo judged as a concept is: by its (probe-only) interval's lower bound, not its point. Its own
        # generator keeps every other interval's draws as they were.
        return _interval(_ratio_boot(effect("target", name), nat, spec.n_boot, low_rng))[0]

    def pipeline(name: str, reps: Sequence[int], gen: np.random.Generator) -> list[float]:
        # Each replicate's ratio on resampled probes, pooled.
        return _interval(
            np.concatenate(
                [
                    _ratio_boot(
                        effect("target", f"{name}@{r}"),
                        effect("target", f"native@{r}"),
                        spec.probe_boot,
                        gen,
                    )
                    for r in reps
                ]
            )
        )

    # Placebos' pipeline intervals draw from a generator of their own, so the candidates' and controls'
    # intervals are the same with or without them.
    placebo_rng = np.random.default_rng([spec.seed, 2])
    candidates = [f"{lm}×{wm}" for lm, wm in maps if wm not in CONTROLS]
    placebo_fids: dict[str, list[float]] = {}
    for lm, wm in maps:
        m = f"{lm}×{wm}"
        if f"{m}/mapped" not in target:
            out["maps"][m] = {"note": "the map feeds no steered layer"}
            continue
        # A placebo's pipeline replicates (``…@r``) are not placebos of their own.
        kinds = {
            kind: [n for n in target if n.startswith(f"{m}/placebo:{kind}#") and "@" not in n]
            for kind in ("neutral", "flip")
        }
        placebo_fids[m] = [fid(n) for n in kinds["neutral"] + kinds["flip"]]
        threshold = placebo_threshold(placebo_fids[m])
        mapped = effect("target", f"{m}/mapped")
        row: dict[str, Any] = {
            "control": wm in CONTROLS,
            "fidelity": float(mapped.mean() / nat.mean()),
            "probe_ci": _interval(_ratio_boot(mapped, nat, spec.n_boot, rng)),
            "placebo_q95": threshold,
            "placebo": _summary(placebo_fids[m]),
            "placebo_neutral": [fid(n) for n in kinds["neutral"]],
            "placebo_flip": [fid(n) for n in kinds["flip"]],
            "placebo_neutral_low": [low(n) for n in kinds["neutral"]],
            "placebo_flip_low": [low(n) for n in kinds["flip"]],
            "random_parent": [fid(n) for n in target if n.startswith(f"{m}/random-parent#")],
        }
        for kind, names in kinds.items():
            # Only placebos with every replicate read: a partial interval is not the candidates' rule.
            every = range(spec.replicates)
            full = [n for n in names if all(f"{n}@{r}" in target for r in every)]
            if full:
                row[f"placebo_{kind}_pipeline_low"] = [pipeline(n, every, placebo_rng)[0] for n in full]
        reps = [r for r in range(spec.replicates) if f"{m}/mapped@{r}" in target]
        if reps:
            row["pipeline_ci"] = pipeline(f"{m}/mapped", reps, rng)
            row["replicates"] = len(reps)
            row["beats_placebo"] = row["pipeline_ci"][0] > threshold
        else:
            # A control measured before controls had replicates: its point value (an upper bound).
            row["beats_placebo"] = row["fidelity"] > threshold
        row["specificity"] = _specificity(readouts, baselines, m, mapped, nat, lams, rng, spec)
        out["maps"][m] = row
    usable = [m for m in candidates if m in placebo_fids]
    if usable:
        bar = max_threshold({m: placebo_fids[m] for m in usable})
        crossing = [m for m in usable if out["maps"][m]["pipeline_ci"][0] > bar]
        out["family_q95"] = bar
        out["crosses"] = crossing
        specific = [m for m in crossing if (s := out["maps"][m]["specificity"]) is None or s["specific"]]
        out["verdict"] = (
            "crosses, as specific as the child's own vector"
            if specific
            else "crosses, less specific than the child's own vector (a push)"
            if crossing
            else "does not cross"
        )
    out["random_child"] = [fid(n) for n in target if n.startswith("random-child#")]
    out["calibration"] = calibration(out)
    if judged is not None:
        out["judge"] = _judge(judged, out, maps, spec)
    return out


def _judge(
    judged: Mapping[str, Any], out: Mapping[str, Any], maps: Sequence[tuple[str, str]], spec: InstrumentSpec
) -> dict[str, Any]:
    """The judge readout's verdicts, and whether each candidate map's two readouts agree on "crosses"."""
    from xsteer.evaluation.judge import judge_analysis

    def t(x: Any) -> Tensor:
        return torch.tensor(x, dtype=torch.float64)

    res: dict[str, Any] = judge_analysis(
        {n: t(v) for n, v in judged["scores"].items()},
        {n: t(v) for n, v in judged["nll"].items()},
        t(judged["base_score"]),
        t(judged["base_nll"]),
        maps=[f"{lm}×{wm}" for lm, wm in maps],
        n_boot=spec.n_boot,
        seed=spec.seed,
    )
    for m, row in res.get("maps", {}).items():
        first = out["maps"].get(m, {})
        if "beats_placebo" in row and "beats_placebo" in first and not first.get("control"):
            row["agrees"] = bool(row["beats_placebo"] == first["beats_placebo"])
    return res


def _summary(values: Sequence[float]) -> dict[str, Any]:
    v = np.asarray(values, dtype=float)
    return {
        "n": len(v),
        "median": float(np.median(v)),
        "q95": float(np.quantile(v, 0.95)),
        "max": float(v.max()),
    }


def _specificity(
    readouts: Mapping[str, Mapping[str, Tensor]],
    baselines: Mapping[str, Tensor],
    m: str,
    on_target: np.ndarray,
    nat: np.ndarray,
    lams: Sequence[float],
    rng: np.random.Generator,
    spec: InstrumentSpec,
) -> dict[str, Any] | None:
    """Specificity index = on-target fidelity − the largest |off-target share|, each off-target effect over
    that concept's own native effect on its readout (readouts where the child's own vector of that concept does
    not steer are left out). Concepts overlap (negative sentiment leans towards doubt), so the verdict compares
    the mapped vector's largest off-target share per unit of its on-target fidelity with the child's own vector's
    largest off-target share: "as specific as the child's own" unless the first is clearly larger (its CI above
    the other's), "a push" when it is."""
    shares: dict[str, float] = {}
    native_shares: dict[str, float] = {}
    boots: list[np.ndarray] = []
    native_boots: list[np.ndarray] = []
    skipped: list[str] = []
    n = spec.n_boot
    idx_t = rng.integers(0, len(nat), size=(n, len(nat)))
    with np.errstate(divide="ignore", invalid="ignore"):
        on_boot = on_target[idx_t].mean(axis=1) / nat[idx_t].mean(axis=1)
    for concept, reads in readouts.items():
        if concept == "target" or f"{m}/mapped" not in reads:
            continue
        keys = [k for k in ("native", "target-native", f"{m}/mapped") if k in reads]
        delta = {k: reads[k] - baselines[concept][None, :] for k in keys}
        if reference_check(delta["native"], lams, n_boot=spec.n_boot, seed=spec.seed) is not None:
            skipped.append(concept)
            continue
        own = signed_effect(delta["native"], lams).double().numpy()
        idx = rng.integers(0, len(own), size=(n, len(own)))
        for key, store, bstore in (
            (f"{m}/mapped", shares, boots),
            ("target-native", native_shares, native_boots),
        ):
            if key not in delta:
                continue
            e = signed_effect(delta[key], lams).double().numpy()
            store[concept] = float(e.mean() / own.mean())
            with np.errstate(divide="ignore", invalid="ignore"):
                bstore.append(np.abs(e[idx].mean(axis=1) / own[idx].mean(axis=1)))
    if not shares:
        return None
    off_boot = np.max(np.stack(boots), axis=0)
    on = float(on_target.mean() / nat.mean())
    out: dict[str, Any] = {
        "index": on - max(abs(x) for x in shares.values()),
        "ci": _interval(on_boot - off_boot),
        "off_target": shares,
        "skipped": skipped,
    }
    if native_shares:
        # What decides "a push" is how far off target a vector moves per unit of its own on-target effect,
        # against the child's own vector (whose on-target fidelity is 1 by definition).
        with np.errstate(divide="ignore", invalid="ignore"):
            out["off_ratio"] = max(abs(x) for x in shares.values()) / on
            out["off_ratio_ci"] = _interval(off_boot / on_boot)
        out["native_off"] = max(abs(x) for x in native_shares.values())
        out["native_off_ci"] = _interval(np.max(np.stack(native_boots), axis=0))
        out["native_off_target"] = native_shares
        out["specific"] = bool(out["off_ratio_ci"][0] <= out["native_off_ci"][1])
    else:
        out["specific"] = bool(out["ci"][0] > 0)
    return out


def calibration(result: Mapping[str, Any]) -> dict[str, list[int]]:
    """False passes of known nulls against each map's placebo 95th percentile: the control map's mapped vector
    (where it has replicates: by the candidates' placebo rule, ``control``, and by the whole verdict, crossing and
    as specific as the child's own vector, ``control_specific``; by its point value, ``control_point``, an upper
    bound, always), random parent directions through every map, and the placebos of one kind judged by the other
    kind's: by their point values, ``placebo_cross_kind``, by their probe-only CI's lower bound,
    ``placebo_cross_kind_ci`` (the rule a candidate faces, with a narrower interval than its whole-pipeline
    one), and, for the placebos that have pipeline replicates, by their whole-pipeline CI's lower bound,
    ``placebo_cross_kind_pipeline``: exactly the rule a candidate faces."""
    counts: dict[str, list[int]] = {
        "control": [0, 0],
        "control_specific": [0, 0],
        "control_point": [0, 0],
        "random_parent": [0, 0],
        "placebo_cross_kind": [0, 0],
        "placebo_cross_kind_ci": [0, 0],
        "placebo_cross_kind_pipeline": [0, 0],
    }
    for row in result.get("maps", {}).values():
        if "placebo_q95" not in row:
            continue
        if row["control"]:
            if "pipeline_ci" in row:
                specific = row["specificity"] is None or row["specificity"]["specific"]
                counts["control"][0] += int(row["beats_placebo"])
                counts["control"][1] += 1
                counts["control_specific"][0] += int(row["beats_placebo"] and specific)
                counts["control_specific"][1] += 1
            counts["control_point"][0] += int(row["fidelity"] > row["placebo_q95"])
            counts["control_point"][1] += 1
        for key, values, q95 in (
            ("random_parent", row["random_parent"], row["placebo_q95"]),
            ("placebo_cross_kind", row["placebo_neutral"], _q95(row["placebo_flip"])),
            ("placebo_cross_kind", row["placebo_flip"], _q95(row["placebo_neutral"])),
            ("placebo_cross_kind_ci", row.get("placebo_neutral_low", []), _q95(row["placebo_flip"])),
            ("placebo_cross_kind_ci", row.get("placebo_flip_low", []), _q95(row["placebo_neutral"])),
            (
                "placebo_cross_kind_pipeline",
                row.get("placebo_neutral_pipeline_low", []),
                _q95(row["placebo_flip"]),
            ),
            (
                "placebo_cross_kind_pipeline",
                row.get("placebo_flip_pipeline_low", []),
                _q95(row["placebo_neutral"]),
            ),
        ):
            k, n = exceed_rate(values, q95)
            counts[key][0] += k
            counts[key][1] += n
    return counts


def replicated_probe_only(row: Mapping[str, Any]) -> tuple[int, int]:
    """The placebos given pipeline replicates, judged by the probe-only rule instead: their probe-only CI's lower
    bound against the other kind's 95th percentile, as ``placebo_cross_kind_ci`` judges every placebo. Beside
    ``placebo_cross_kind_pipeline`` (the same placebos and bar, the whole-pipeline bound) it shows what the wider
    interval changes. Replicates go to the first placebos of each kind (``#0``, ``#1``, …: the names
    :func:`_placebo_names` gives), so their probe-only bounds lead each kind's list."""
    passes = trials = 0
    for kind, other in (("neutral", "flip"), ("flip", "neutral")):
        given = len(row.get(f"placebo_{kind}_pipeline_low", []))
        if given:
            k, n = exceed_rate(row[f"placebo_{kind}_low"][:given], _q95(row[f"placebo_{other}"]))
            passes, trials = passes + k, trials + n
    return passes, trials


def _q95(values: Sequence[float]) -> float:
    return float(np.quantile(np.asarray(values, dtype=float), 0.95))


__all__ = [
    "CONTROLS",
    "FORMAT",
    "Cell",
    "InstrumentSpec",
    "LAMBDAS",
    "ModelActs",
    "analyze",
    "build_cell",
    "calibration",
    "mean_diff",
    "read_cell",
    "reference_check",
    "replicated_probe_only",
]
