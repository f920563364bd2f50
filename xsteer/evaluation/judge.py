"""The second readout of the fidelity instrument: a judge model reads what the steered child *writes*.

The first readout (next-token log-odds of readout words) looks one token ahead, at the position the maps are fitted
on. This one lets the child continue each held-out probe for a few greedy tokens under steering, then asks a
model that is neither parent nor child how far each continuation sits towards the concept's positive pole:

    judge score = log p(" <positive pole>") - log p(" <negative pole>") after a fixed prompt naming both poles

and how fluent it is: the judge's mean negative log-likelihood per token of the continuation after the probe
(the fluency cost of a condition is its NLL minus the unsteered continuation's). A concept's effect under the
judge is the mean signed change of the judge score over probes at ±λ, and fidelity is the mapped vector's effect
over the child's own, as for the first readout. The two readouts are reported side by side; where they disagree,
the disagreement is the result (AxBench reads concept and fluency the same way, with an LLM judge).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from xsteer.core.likelihood import continuation_logprobs
from xsteer.core.models import encode, native_attention
from xsteer.core.progress import Progress
from xsteer.core.types import HookedModel
from xsteer.errors import InputError

#: The judge's prompt (recorded in every result): the text, then a question naming both poles.
PROMPT = (
    'Text: "{text}"\nQuestion: Is the text above {positive} or {negative}? Answer with one word.\nAnswer:'
)


@dataclass(frozen=True)
class Judged:
    """Per continuation: the judge's pole log-odds and the continuation's NLL per token under the judge."""

    score: Float[Tensor, " n"]
    nll: Float[Tensor, " n"]


@torch.inference_mode()
def steered_continuations(
    model: HookedModel,
    prompts: Sequence[str],
    stack: Float[Tensor, "m layer d_model"] | None,
    which: Sequence[int],
    lam: Sequence[float],
    *,
    layers: Sequence[int],
    max_new_tokens: int = 24,
    batch_size: int = 32,
    progress: bool = False,
) -> list[str]:
    """Greedy continuations, row ``i`` steered at every position by ``lam[i] · stack[which[i]]`` (unsteered with
    ``stack`` None). Rows run to ``max_new_tokens`` (short continuations; an EOS ends the decoded text)."""
    from xsteer.core.inject import steer_rows

    tok = model.tokenizer
    device = next(model.parameters()).device
    eos = tok.eos_token_id
    out: list[str] = []
    bar = Progress(len(prompts), "steered continuations", unit="texts", enabled=progress)
    with native_attention(model), bar:
        for start in range(0, len(prompts), batch_size):
            rows = list(range(start, min(start + batch_size, len(prompts))))
            enc = encode(tok, [prompts[i] for i in rows])
            ids, mask = enc.input_ids.to(device), enc.attention_mask.to(device)
            pos = (mask.cumsum(dim=1) - 1).clamp_min(0)
            manager = (
                steer_rows(
                    model,
                    stack[torch.as_tensor([which[i] for i in rows])],
                    lam=[lam[i] for i in rows],
                    layers=layers,
                )
                if stack is not None
                else nullcontext()
            )
            tokens: list[list[int]] = [[] for _ in rows]
            with manager:
                logits, past = model(
                    ids,
                    attention_mask=mask,
                    position_ids=pos,
                    use_cache=True,
                    return_type="logits_and_cache",
                    logits_to_keep=1,
                )
                last = pos[:, -1]
                for step in range(max_new_tokens):
                    nxt = logits[:, -1, :].argmax(dim=-1)
                    for r, t in enumerate(nxt.tolist()):
                        tokens[r].append(t)
                    if step == max_new_tokens - 1:
                        break
                    mask = torch.cat([mask, mask.new_ones(len(rows), 1)], dim=1)
                    last = last + 1
                    logits, past = model(
                        nxt[:, None],
                        attention_mask=mask,
                        past_key_values=past,
                        position_ids=last[:, None],
                        return_type="logits_and_cache",
                    )
            for ts in tokens:
                cut = ts.index(eos) if eos is not None and eos in ts else len(ts)
                out.append(tok.decode(ts[:cut], skip_special_tokens=True))
            bar.update(len(rows))
    return out


def judge(
    judge_model: HookedModel,
    probes: Sequence[str],
    continuations: Sequence[str],
    poles: tuple[str, str],
    *,
    batch_size: int = 32,
    progress: bool = False,
) -> Judged:
    """The judge's pole log-odds for each probe + continuation (each pole name scored whole, so poles that share
    a first token still differ), and the continuation's NLL per token after its probe. ``progress``: a line
    every 30 s for each of the two passes (a long study's log)."""
    if len(probes) != len(continuations):
        raise InputError(f"{len(probes)} probes but {len(continuations)} continuations")
    texts = [
        PROMPT.format(text=(p + c).strip(), positive=poles[0], negative=poles[1])
        for p, c in zip(probes, continuations, strict=True)
    ]
    # Consecutive rows with one context share its prefill (continuation_logprobs groups them).
    both = continuation_logprobs(
        judge_model,
        [t for t in texts for _ in poles],
        [f" {p}" for _ in texts for p in poles],
        batch_size=batch_size,
        progress="the judge scores the poles" if progress else None,
    )
    lp = torch.tensor(both).reshape(len(texts), 2)
    # An empty continuation (EOS at once) has no tokens to score: it gets the NLL of one space.
    conts = [c if c.strip() else " " for c in continuations]
    total = torch.tensor(
        continuation_logprobs(
            judge_model,
            list(probes),
            conts,
            batch_size=batch_size,
            progress="the judge scores fluency" if progress else None,
        )
    )
    n_tok = torch.tensor([len(judge_model.tokenizer(c, add_special_tokens=False).input_ids) for c in conts])
    return Judged(score=lp[:, 0] - lp[:, 1], nll=-total / n_tok.clamp_min(1))


UNDEFINED = "undefined: the child's own vector does not move the judge's score its way"


def _effect(s: Float[Tensor, "sign probe"], base_score: Float[Tensor, " probe"]) -> np.ndarray:
    """Per probe, the signed change of the judge score at ±λ (half the +λ minus −λ difference)."""
    s = s.double()
    return ((s[0] - base_score) - (s[1] - base_score)).numpy() / 2


def _native_bootstrap(
    native: Float[Tensor, "sign probe"], base_score: Float[Tensor, " probe"], *, n_boot: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The child's own effect per probe, the bootstrap's probe draws (the maps reuse them) and its means."""
    nat = _effect(native, base_score)
    idx = np.random.default_rng(seed).integers(0, len(nat), size=(n_boot, len(nat)))
    return nat, idx, nat[idx].mean(axis=1)


def reference_is_valid(
    native: Float[Tensor, "sign probe"], base_score: Float[Tensor, " probe"], *, n_boot: int, seed: int
) -> bool:
    """Whether the child's own vector moves the judge's score its way: the same draws and rule as
    :func:`judge_analysis`, so a measurement can stop before its placebos when they could change nothing."""
    return _moves(_native_bootstrap(native, base_score, n_boot=n_boot, seed=seed)[2])


def _moves(boot_nat: np.ndarray) -> bool:
    """The reference rule: the bootstrap's 2.5% quantile of the child's own effect lies above 0."""
    return bool(np.quantile(boot_nat, 0.025) > 0)


def judge_analysis(
    scores: dict[str, Float[Tensor, "sign probe"]],
    nll: dict[str, Float[Tensor, "sign probe"]],
    base_score: Float[Tensor, " probe"],
    base_nll: Float[Tensor, " probe"],
    *,
    maps: Sequence[str],
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[str, object]:
    """Fidelity under the judge (rows: +λ, −λ), its placebo bar, and each condition's fluency cost (mean NLL per
    token above the unsteered continuation's). Pure: the result file keeps the scores."""
    from xsteer.evaluation.nulls import placebo_threshold

    def effect(name: str) -> np.ndarray:
        return _effect(scores[name], base_score)

    nat, idx, boot_nat = _native_bootstrap(scores["native"], base_score, n_boot=n_boot, seed=seed)
    out: dict[str, object] = {
        "native_effect": [
            float(nat.mean()),
            float(np.quantile(boot_nat, 0.025)),
            float(np.quantile(boot_nat, 0.975)),
        ],
        "fluency_cost": {n: float((v.double() - base_nll.double()).mean()) for n, v in nll.items()},
    }
    if not _moves(boot_nat):
        out["reference"] = UNDEFINED
        return out
    out["reference"] = "valid"
    rows = {}
    for m in maps:
        if f"{m}/mapped" not in scores:
            continue
        e = effect(f"{m}/mapped")
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = e[idx].mean(axis=1) / boot_nat
        placebos = [float(effect(n).mean() / nat.mean()) for n in scores if n.startswith(f"{m}/placebo:")]
        row: dict[str, object] = {
            "fidelity": float(e.mean() / nat.mean()),
            "ci": [float(np.quantile(ratio, 0.025)), float(np.quantile(ratio, 0.975))],
            "placebos": placebos,
        }
        if len(placebos) >= 10:
            row["placebo_q95"] = placebo_threshold(placebos)
            row["beats_placebo"] = bool(row["ci"][0] > row["placebo_q95"])  # type: ignore[index]
        rows[m] = row
    out["maps"] = rows
    return out


__all__ = [
    "PROMPT",
    "UNDEFINED",
    "Judged",
    "judge",
    "judge_analysis",
    "reference_is_valid",
    "steered_continuations",
]
