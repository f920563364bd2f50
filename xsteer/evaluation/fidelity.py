"""Transfer fidelity: how much of a concept's effect on the child survives the parent -> child map.

A concept (:mod:`xsteer.tasks.concepts`) is read out on held-out probes, cheaply and with low variance, by
the readout it builds (:meth:`~xsteer.tasks.concepts.Concept.readout_for`):

* **log-odds** of the concept's two word sets at the next token after each probe (lexicon concepts), of the
  gold vs a corrupted final answer (``corrupted_answer``, the paper's concept), or of the behaviour-matching
  vs the other answer letter (behavioural A/B concepts);
* **generation** (open-ended concepts): the share of short continuations whose lexicon score moves the
  concept's way, with the texts kept for a reader.

The effect of steering vectors ``v`` at λ on probe ``p`` is ``Δ(λ, p) = readout_λ(p) - readout_0(p)``, over a
grid of λ of both signs (a dose-response). **Fidelity** of a mapped parent vector is its mean signed effect
divided by the child-native vector's, at the same λ grid and norm convention::

    F = Σ_λ Σ_p sign(λ) Δ_mapped(λ, p)  /  Σ_λ Σ_p sign(λ) Δ_native(λ, p)

with a paired bootstrap CI over probes (the same resampled probes in numerator and denominator). F = 1: the
map carried the whole effect; 0: none; negative: the concept came out reversed. Beside it the nulls that
make a number honest — a random direction of equal norm, a random parent direction through the same map
(any fitted map pulls vectors toward the child's activation subspace), and the coordinate-copying
``truncate_pad`` map — each get the same F. When the native vector itself does not move the readout (its
effect's CI covers 0), fidelity is undefined and reported so.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from xsteer.core.generate import Steering, generate
from xsteer.core.progress import Progress
from xsteer.core.types import HookedModel
from xsteer.core.vectors import SteeringVectors
from xsteer.errors import InputError
from xsteer.evaluation.evaluate import check_norms
from xsteer.tasks.concepts import Concept, Readout, WordLogOdds
from xsteer.tasks.concepts.answer import AnswerConcept, AnswerLogOdds, AnswerProbe, answer_concept
from xsteer.tasks.concepts.readouts import sequence_logprobs

#: λ grid of the dose-response, relative to the child's residual norm per steered layer (``resid_mean``).
DEFAULT_LAMBDAS: tuple[float, ...] = (-0.08, -0.04, -0.02, 0.02, 0.04, 0.08)
NATIVE = "native"


# ---------------------------------------------------------------------------------------------- statistics
def signed_effect(delta: Float[Tensor, "lam probe"], lambdas: Sequence[float]) -> Float[Tensor, " probe"]:
    """Per probe, the effect averaged over the λ grid with each λ's sign (both directions count)."""
    sign = torch.tensor([math.copysign(1.0, float(x)) for x in lambdas], dtype=delta.dtype)
    return (delta * sign[:, None]).mean(dim=0)


@dataclass(frozen=True)
class Estimate:
    estimate: float
    low: float
    high: float

    @property
    def covers_zero(self) -> bool:
        return self.low <= 0.0 <= self.high

    def as_list(self) -> list[float]:
        return [self.estimate, self.low, self.high]


def effect_ci(
    effect: Float[Tensor, " probe"], *, n_boot: int = 2000, seed: int = 0, alpha: float = 0.05
) -> Estimate:
    """Mean effect over probes with a percentile bootstrap CI."""
    g = torch.Generator().manual_seed(seed)
    n = effect.shape[0]
    idx = torch.randint(0, n, (n_boot, n), generator=g)
    boots = effect.double()[idx].mean(dim=1)
    lo, hi = torch.quantile(boots, torch.tensor([alpha / 2, 1 - alpha / 2], dtype=torch.float64)).tolist()
    return Estimate(float(effect.double().mean()), lo, hi)


def fidelity_ci(
    mapped: Float[Tensor, " probe"],
    native: Float[Tensor, " probe"],
    *,
    n_boot: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
) -> Estimate:
    """mean(mapped) / mean(native) over probes, with a paired percentile bootstrap CI (the same probes are
    resampled for both), so probe-to-probe variation common to both cancels."""
    if mapped.shape != native.shape:
        raise InputError(f"effects over different probes: {tuple(mapped.shape)} vs {tuple(native.shape)}")
    g = torch.Generator().manual_seed(seed)
    n = native.shape[0]
    idx = torch.randint(0, n, (n_boot, n), generator=g)
    num, den = mapped.double()[idx].mean(dim=1), native.double()[idx].mean(dim=1)
    ratio = num / den
    ratio = ratio[torch.isfinite(ratio)]
    lo, hi = torch.quantile(ratio, torch.tensor([alpha / 2, 1 - alpha / 2], dtype=torch.float64)).tolist()
    return Estimate(float(mapped.double().mean() / native.double().mean()), lo, hi)


def estimates(
    effects: Mapping[str, Float[Tensor, " probe"]], *, n_boot: int, seed: int
) -> tuple[Estimate, dict[str, Estimate], dict[str, Estimate | None]]:
    """Each condition's signed effect over probes → the native effect, every effect and every fidelity with
    their CIs; fidelity is None for all when the native effect's CI covers 0."""
    native = effect_ci(effects[NATIVE], n_boot=n_boot, seed=seed)
    steers = native.low > 0
    return (
        native,
        {k: effect_ci(e, n_boot=n_boot, seed=seed) for k, e in effects.items()},
        {
            k: fidelity_ci(e, effects[NATIVE], n_boot=n_boot, seed=seed) if steers else None
            for k, e in effects.items()
        },
    )


def monotone_lambdas(lambdas: Sequence[float], native_delta: Float[Tensor, "lam probe"]) -> list[float]:
    """The widest symmetric part of the λ grid on which the native vector's mean effect rises with λ (the
    baseline, 0, included). Past it, steering harder breaks the child (the native curve turns over) and every
    condition's effect there says more about breaking than about the concept. The range is chosen from the
    native curve alone, so it cannot favour a map; at least the smallest |λ| of each sign is kept."""
    mean = dict(zip([float(x) for x in lambdas], native_delta.double().mean(dim=1).tolist(), strict=True))
    keep: list[float] = []
    for m in sorted({abs(x) for x in mean}):
        grid = sorted([x for x in mean if abs(x) <= m] + [0.0])
        curve = [mean.get(x, 0.0) for x in grid]
        if keep and any(b < a for a, b in zip(curve, curve[1:], strict=False)):
            break
        keep = [x for x in grid if x != 0.0]
    return keep


def restrict(
    doc: Mapping[str, Any], lambdas: Sequence[float], *, n_boot: int = 2000, seed: int = 0
) -> dict[str, Any]:
    """A stored result document read again on a part of its λ grid (effects, fidelity and whether the native
    steers recomputed from its readouts; nothing is rerun). Generations are dropped: they were made at one λ."""
    index = [doc["lambdas"].index(x) for x in lambdas]
    base = torch.tensor(doc["baseline"])
    readouts = {c: [doc["readouts"][c][i] for i in index] for c in doc["conditions"]}
    effects = {c: signed_effect(torch.tensor(r) - base[None, :], lambdas) for c, r in readouts.items()}
    native, effect_cis, fidelity_cis = estimates(effects, n_boot=n_boot, seed=seed)
    return {
        **doc,
        "lambdas": list(lambdas),
        "readouts": readouts,
        "native_effect": native.as_list(),
        "native_steers": native.low > 0,
        "effects": {c: e.as_list() for c, e in effect_cis.items()},
        "fidelity": {c: f.as_list() if f is not None else None for c, f in fidelity_cis.items()},
        "generations": [],
    }


# ---------------------------------------------------------------------------------------------- the measurement
@dataclass
class FidelityResult:
    """A concept's dose-response for every condition on one child, and what it says about transfer."""

    concept: str
    readout: str
    lambdas: list[float]
    conditions: list[str]
    baseline: list[float]  # readout at λ = 0, per probe
    readouts: dict[str, list[list[float]]]  # condition -> [λ][probe]
    native_effect: Estimate
    effects: dict[str, Estimate]  # condition -> mean signed effect over probes [CI]
    fidelity: dict[str, Estimate | None]  # condition -> F [CI]; None when the native effect is not there
    generations: list[dict[str, Any]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def native_steers(self) -> bool:
        """Whether the child's own vector moves the readout at all (its effect's CI excludes 0)."""
        return self.native_effect.low > 0

    def delta(self, condition: str) -> Float[Tensor, "lam probe"]:
        return torch.tensor(self.readouts[condition]) - torch.tensor(self.baseline)[None, :]

    def to_json(self) -> dict[str, Any]:
        return {
            "concept": self.concept,
            "readout": self.readout,
            "lambdas": self.lambdas,
            "conditions": self.conditions,
            "baseline": self.baseline,
            "readouts": self.readouts,
            "native_effect": self.native_effect.as_list(),
            "native_steers": self.native_steers,
            "effects": {k: v.as_list() for k, v in self.effects.items()},
            "fidelity": {k: (v.as_list() if v is not None else None) for k, v in self.fidelity.items()},
            "generations": self.generations,
            "meta": self.meta,
        }

    def table(self) -> str:
        lines = [
            f"concept: {self.concept} ({self.readout}); native effect {_fmt(self.native_effect)}"
            + ("" if self.native_steers else " — the native vector does not steer: fidelity undefined"),
            "",
            "| condition | effect [95% CI] | fidelity [95% CI] |",
            "|---|---|---|",
        ]
        for c in self.conditions:
            f = self.fidelity.get(c)
            lines.append(f"| {c} | {_fmt(self.effects[c])} | {_fmt(f) if f is not None else '—'} |")
        return "\n".join(lines)


def _fmt(e: Estimate) -> str:
    return f"{e.estimate:+.3f} [{e.low:+.3f}, {e.high:+.3f}]"


def fidelity(
    child: HookedModel,
    concept: Concept,
    conditions: Mapping[str, SteeringVectors],
    *,
    native: SteeringVectors,
    lambdas: Sequence[float] = DEFAULT_LAMBDAS,
    layers: Sequence[int] | None = None,
    generation_lam: float | None = None,
    generation_probes: int = 0,
    max_new_tokens: int = 32,
    n_boot: int = 2000,
    seed: int = 0,
    batch_size: int = 32,
    progress: bool = True,
    checkpoint: MutableMapping[str, list[list[float]]] | None = None,
) -> FidelityResult:
    """Measure how much of ``concept``'s effect each of ``conditions`` (child-space vectors: mapped parents,
    nulls) carries, relative to the child's own ``native`` vector, on one λ grid and norm convention.

    ``generation_probes`` > 0 also generates ``max_new_tokens``-token continuations of that many probes at
    ``+generation_lam`` and ``-generation_lam`` (lexicon concepts): unsteered, with the native vector, the
    ``random`` null and the condition of highest fidelity.

    ``checkpoint`` holds readouts by condition already measured (reused, not measured again); each readout
    measured here is stored into it as soon as it is read, so a mapping that saves itself on assignment makes
    a long measurement resumable condition by condition.
    """
    lambdas = [float(x) for x in lambdas]
    if not lambdas or any(x == 0 or not math.isfinite(x) for x in lambdas):
        raise InputError(
            f"the dose-response grid must be finite non-zero λ values (0 is the baseline), got {lambdas}"
        )
    if NATIVE in conditions:
        raise InputError(f"{NATIVE!r} is the reference condition; pass it as native=")
    all_vectors = {NATIVE: native, **conditions}
    check_norms(all_vectors)
    for v in all_vectors.values():
        v.check_compatible(child.cfg.n_layers, child.cfg.d_model, child.cfg.model_name)
    readout = concept.readout_for(child.tokenizer)
    if len(readout.probes) < 2:
        raise InputError(f"concept {concept.name!r} has {len(readout.probes)} probes; a CI needs at least 2")
    base = readout(child, None, [0.0], batch_size=batch_size)[0]
    done = checkpoint if checkpoint is not None else {}
    readouts: dict[str, Tensor] = {}
    # The bar counts only the conditions read here: counting stored ones, a resumed measurement's rate and time
    # left came out many times too optimistic (~44 s left with 13 min to go on Qwen 0.5B).
    stored = sum(name in done for name in all_vectors)
    desc = f"dose-response {concept.name}" + (
        f" ({stored} of {len(all_vectors)} conditions stored)" if stored else ""
    )
    with Progress(len(all_vectors) - stored, desc, unit="conditions", enabled=progress) as bar:
        for name, v in all_vectors.items():
            if name in done:
                readouts[name] = torch.tensor(done[name], dtype=base.dtype)
            else:
                readouts[name] = readout(child, v, lambdas, layers=layers, batch_size=batch_size)
                done[name] = readouts[name].tolist()
                bar.update()
    effects = {name: signed_effect(r - base[None, :], lambdas) for name, r in readouts.items()}
    native_est, effect_cis, fidelity_cis = estimates(effects, n_boot=n_boot, seed=seed)
    result = FidelityResult(
        concept=concept.name,
        readout=readout.name,
        lambdas=lambdas,
        conditions=list(all_vectors),
        baseline=base.tolist(),
        readouts={k: v.tolist() for k, v in readouts.items()},
        native_effect=native_est,
        effects=effect_cis,
        fidelity=fidelity_cis,
        meta={
            "n_probes": len(readout.probes),
            "norm": native.norm,
            "layers": list(layers) if layers else "all mapped",
            "n_boot": n_boot,
            "seed": seed,
        },
    )
    if generation_probes and concept.open_ended:
        lam = generation_lam if generation_lam is not None else max(abs(x) for x in lambdas)
        # Texts for a reader: the reference, the null, and the condition that carried the most of the concept.
        shown = [NATIVE, *(c for c in ("random",) if c in all_vectors)]
        defined = {k: v for k, v in result.fidelity.items() if v is not None and k not in shown}
        if defined:
            shown.append(max(defined, key=lambda k: defined[k].estimate))
        result.generations = generation_readout(
            child,
            concept,
            {k: all_vectors[k] for k in shown},
            lam,
            n_probes=generation_probes,
            max_new_tokens=max_new_tokens,
            layers=layers,
            batch_size=batch_size,
        )
    return result


def generation_readout(
    child: HookedModel,
    concept: Concept,
    conditions: Mapping[str, SteeringVectors],
    lam: float,
    *,
    n_probes: int,
    max_new_tokens: int = 32,
    layers: Sequence[int] | None = None,
    batch_size: int = 32,
) -> list[dict[str, Any]]:
    """Greedy continuations of the first ``n_probes`` probes, unsteered and at ±``lam`` per condition, each
    with its lexicon score and whether it moved the concept's way relative to the unsteered text."""
    probes = list(concept.probes[:n_probes])
    plain = generate(child, probes, max_new_tokens=max_new_tokens, batch_size=batch_size)
    out = [
        {
            "condition": "unsteered",
            "lam": 0.0,
            "probe": p,
            "text": g.text,
            "score": concept.score_text(g.text),
            "moved": None,
        }
        for p, g in zip(probes, plain, strict=True)
    ]
    base = {p: concept.score_text(g.text) for p, g in zip(probes, plain, strict=True)}
    for name, v in conditions.items():
        lams = [s * lam for s in (1.0, -1.0) for _ in probes]
        gens = generate(
            child,
            probes * 2,
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            steering=Steering(v, lams, layers, "all"),
        )
        for p, lm, g in zip(probes * 2, lams, gens, strict=True):
            score = concept.score_text(g.text)
            out.append(
                {
                    "condition": name,
                    "lam": lm,
                    "probe": p,
                    "text": g.text,
                    "score": score,
                    "moved": (score - base[p]) * math.copysign(1.0, lm) > 0,
                }
            )
    return out


def moved_share(generations: Sequence[Mapping[str, Any]], condition: str) -> float | None:
    """Share of a condition's continuations whose lexicon score moved the concept's way."""
    moved = [g["moved"] for g in generations if g["condition"] == condition and g["moved"] is not None]
    return sum(moved) / len(moved) if moved else None


__all__ = [
    "DEFAULT_LAMBDAS",
    "NATIVE",
    "AnswerConcept",
    "AnswerLogOdds",
    "AnswerProbe",
    "Estimate",
    "FidelityResult",
    "WordLogOdds",
    "effect_ci",
    "estimates",
    "fidelity",
    "fidelity_ci",
    "monotone_lambdas",
    "restrict",
    "generation_readout",
    "moved_share",
    "Readout",
    "answer_concept",
    "sequence_logprobs",
    "signed_effect",
]
