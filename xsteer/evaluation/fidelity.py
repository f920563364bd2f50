"""Transfer fidelity: how much of a concept's effect on the child survives the parent -> child map.

A concept (:mod:`xsteer.tasks.concepts`) is read out on held-out probes, cheaply and with low variance:

* **log-odds** of the concept's two word sets at the next token after each probe (lexicon concepts), or of
  the gold vs a corrupted final answer (``corrupted_answer``, the paper's concept);
* **generation**: the share of short continuations whose lexicon score moves the concept's way, with the
  texts kept for a reader.

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

import einops
import torch
from jaxtyping import Float
from torch import Tensor

from xsteer.core.activations import next_token_logprobs
from xsteer.core.generate import Steering, generate
from xsteer.core.likelihood import continuation_logprobs
from xsteer.core.progress import Progress
from xsteer.core.types import HookedModel
from xsteer.core.vectors import SteeringVectors
from xsteer.errors import InputError
from xsteer.evaluation.evaluate import check_norms
from xsteer.tasks.concepts import Concept, lexicon_score, pole_token_ids

#: λ grid of the dose-response, relative to the child's residual norm per steered layer (``resid_mean``).
DEFAULT_LAMBDAS: tuple[float, ...] = (-0.08, -0.04, -0.02, 0.02, 0.04, 0.08)
NATIVE = "native"


@dataclass(frozen=True)
class AnswerProbe:
    """A probe of the ``corrupted_answer`` concept: a context ending where the final answer goes, the gold
    continuation and a wrong one (the concept's positive pole is the gold answer)."""

    context: str
    gold: str
    wrong: str


# ---------------------------------------------------------------------------------------------- readouts
class Readout:
    """``readout(model, vectors, lams)`` -> one value per (λ, probe): the concept's position on its axis."""

    name = "readout"
    probes: Sequence[Any] = ()

    def __call__(
        self,
        model: HookedModel,
        vectors: SteeringVectors | None,
        lambdas: Sequence[float],
        *,
        layers: Sequence[int] | None = None,
        batch_size: int = 32,
    ) -> Float[Tensor, "lam probe"]:
        raise NotImplementedError


class WordLogOdds(Readout):
    """log Σ p(+ pole word) - log Σ p(- pole word) at the next token after each probe."""

    name = "next-token log-odds of the pole words"

    def __init__(self, concept: Concept, tokenizer: Any):
        self.concept, self.probes = concept, list(concept.probes)
        self.pos, self.neg = pole_token_ids(tokenizer, concept)

    def __call__(
        self,
        model: HookedModel,
        vectors: SteeringVectors | None,
        lambdas: Sequence[float],
        *,
        layers: Sequence[int] | None = None,
        batch_size: int = 32,
    ) -> Float[Tensor, "lam probe"]:
        texts = [p for _ in lambdas for p in self.probes]
        lam = [float(x) for x in lambdas for _ in self.probes]
        lp = next_token_logprobs(
            model,
            texts,
            self.pos + self.neg,
            vectors=vectors,
            lam=lam if vectors is not None else None,
            layers=layers,
            batch_size=batch_size,
        )
        k = len(self.pos)
        odds = torch.logsumexp(lp[:, :k], dim=-1) - torch.logsumexp(lp[:, k:], dim=-1)
        return odds.reshape(len(lambdas), len(self.probes))

    def read_stack(
        self,
        model: HookedModel,
        stack: Float[Tensor, "m layer d_model"],
        lambdas: Sequence[float],
        *,
        layers: Sequence[int],
        batch_size: int = 64,
    ) -> Float[Tensor, "m lam probe"]:
        """The readout of many vectors at once: rows are (vector, λ, probe), each steered by its own vector,
        ordered probe-major so a batch holds few distinct probe lengths (little padding)."""
        m, n_lam, n_p = stack.shape[0], len(lambdas), len(self.probes)
        grid = [(p, v, j) for p in range(n_p) for v in range(m) for j in range(n_lam)]
        lp = next_token_logprobs(
            model,
            [self.probes[p] for p, _, _ in grid],
            self.pos + self.neg,
            vectors=stack,
            which=[v for _, v, _ in grid],
            lam=[float(lambdas[j]) for _, _, j in grid],
            layers=layers,
            batch_size=batch_size,
        )
        k = len(self.pos)
        odds = torch.logsumexp(lp[:, :k], dim=-1) - torch.logsumexp(lp[:, k:], dim=-1)
        return einops.rearrange(odds, "(p m j) -> m j p", p=n_p, m=m, j=n_lam)


class AnswerLogOdds(Readout):
    """log p(gold answer) - log p(corrupted answer) after each probe's context (summed over tokens)."""

    name = "log-odds of the gold vs a corrupted final answer"

    def __init__(self, probes: Sequence[AnswerProbe]):
        self.probes = list(probes)

    def __call__(
        self,
        model: HookedModel,
        vectors: SteeringVectors | None,
        lambdas: Sequence[float],
        *,
        layers: Sequence[int] | None = None,
        batch_size: int = 32,
    ) -> Float[Tensor, "lam probe"]:
        ctx = [p.context for _ in lambdas for p in self.probes for _ in (0, 1)]
        cont = [c for _ in lambdas for p in self.probes for c in (p.gold, p.wrong)]
        lam = [float(x) for x in lambdas for _ in self.probes for _ in (0, 1)]
        steering = Steering(vectors, lam, layers) if vectors is not None else None
        lp = torch.tensor(continuation_logprobs(model, ctx, cont, steering=steering, batch_size=batch_size))
        return (lp[0::2] - lp[1::2]).reshape(len(lambdas), len(self.probes))

    def read_stack(
        self,
        model: HookedModel,
        stack: Float[Tensor, "m layer d_model"],
        lambdas: Sequence[float],
        *,
        layers: Sequence[int],
        batch_size: int = 64,
    ) -> Float[Tensor, "m lam probe"]:
        """The readout of many vectors at once, each row (vector, λ, probe, answer) steered by its own vector:
        context and answer run as one sequence (no shared prefill, so rows need not share a vector)."""
        m, n_lam, n_p = stack.shape[0], len(lambdas), len(self.probes)
        grid = [(p, v, j, a) for p in range(n_p) for v in range(m) for j in range(n_lam) for a in (0, 1)]
        lp = sequence_logprobs(
            model,
            [self.probes[p].context for p, _, _, _ in grid],
            [(self.probes[p].gold, self.probes[p].wrong)[a] for p, _, _, a in grid],
            stack=stack,
            which=[v for _, v, _, _ in grid],
            lam=[float(lambdas[j]) for _, _, j, _ in grid],
            layers=layers,
            batch_size=batch_size,
        )
        return einops.rearrange(lp[0::2] - lp[1::2], "(p m j) -> m j p", p=n_p, m=m, j=n_lam)


@torch.inference_mode()
def sequence_logprobs(
    model: HookedModel,
    contexts: Sequence[str],
    continuations: Sequence[str],
    *,
    stack: Float[Tensor, "m layer d_model"],
    which: Sequence[int],
    lam: Sequence[float],
    layers: Sequence[int],
    batch_size: int = 32,
) -> Float[Tensor, " n"]:
    """Sum of log p(continuation | context) per row, row ``i`` steered at every position by
    ``lam[i] · stack[which[i]]``. Context and continuation are tokenized apart (exact boundary, as lm-eval)."""
    from xsteer.core.inject import steer_rows
    from xsteer.core.models import native_attention

    tok = model.tokenizer
    device = next(model.parameters()).device
    ctx = [tok(c).input_ids for c in contexts]  # the BOS, where the tokenizer adds one, leads the context
    cont = [tok(c, add_special_tokens=False).input_ids for c in continuations]
    out = torch.empty(len(contexts))
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    with native_attention(model):
        for start in range(0, len(contexts), batch_size):
            rows = range(start, min(start + batch_size, len(contexts)))
            seqs = [ctx[i] + cont[i] for i in rows]
            width = max(len(x) for x in seqs)
            ids = torch.full((len(seqs), width), pad, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for r, x in enumerate(seqs):  # left padding: every row's last token is at -1
                ids[r, width - len(x) :] = torch.tensor(x)
                mask[r, width - len(x) :] = 1
            index = torch.as_tensor([which[i] for i in rows])
            with steer_rows(model, stack[index], lam=[lam[i] for i in rows], layers=layers):
                logits = model(ids.to(device), attention_mask=mask.to(device))
            lp = torch.log_softmax(logits[:, :-1].float(), dim=-1).gather(-1, ids[:, 1:, None].to(device))[
                ..., 0
            ]
            for r, i in enumerate(rows):
                out[i] = lp[r, width - 1 - len(cont[i]) :].sum().cpu()
    return out


def readout_for(concept: Any, tokenizer: Any) -> Readout:
    """The log-odds readout of a lexicon concept, or of ``corrupted_answer`` probes."""
    if isinstance(concept, Concept):
        return WordLogOdds(concept, tokenizer)
    if isinstance(concept, AnswerConcept):
        return AnswerLogOdds(concept.probes)
    raise InputError(f"no readout for {type(concept).__name__}")


@dataclass(frozen=True)
class AnswerConcept:
    """The paper's concept: "this reasoning ends in the right answer" (pairs: gold vs corrupted answer)."""

    name: str
    pairs: tuple[tuple[str, str], ...]
    probes: tuple[AnswerProbe, ...]
    description: str = "correct vs corrupted final answer after the same reasoning (GSM8K)"


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
    concept: Concept | AnswerConcept,
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
    readout = readout_for(concept, child.tokenizer)
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
    if generation_probes and isinstance(concept, Concept):
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
            "score": lexicon_score(g.text, concept),
            "moved": None,
        }
        for p, g in zip(probes, plain, strict=True)
    ]
    base = {p: lexicon_score(g.text, concept) for p, g in zip(probes, plain, strict=True)}
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
            score = lexicon_score(g.text, concept)
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
    "readout_for",
    "sequence_logprobs",
    "signed_effect",
]


def answer_concept(
    *, data_dir: Any = None, n_pairs: int = 64, n_probes: int = 32, seed: int = 0, task: str = "gsm8k"
) -> AnswerConcept:
    """The paper's concept as a fidelity concept: ``corrupted_answer`` pairs from the task's train split, in
    the plain ``Question:/Answer:`` form both models read alike, and held-out probes from its validation
    split, each read out on its gold vs a corrupted final answer."""
    import random

    from xsteer.extraction.pairs import build_pairs, strip_final, wrong_answer
    from xsteer.tasks import get_task

    t = get_task(task)
    pairs = build_pairs(
        "corrupted_answer",
        t.pair_examples("train", n_pairs, data_dir=data_dir, seed=seed),
        None,
        task=t,
        seed=seed,
    )
    rng = random.Random(seed)
    items = t.load("validation", data_dir=data_dir, limit=n_probes, seed=seed)
    answers = [e.answer for e in items]
    probes = []
    for ex in items:
        if not ex.solution:
            continue
        context = f"Question: {ex.question}\nAnswer: {strip_final(ex.solution)}\n{t.answer_prefix()}"
        probes.append(AnswerProbe(context, f" {ex.answer}", f" {wrong_answer(ex.answer, rng, answers)}"))
    return AnswerConcept("corrupted_answer", tuple((p.positive, p.negative) for p in pairs), tuple(probes))
