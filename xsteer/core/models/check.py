"""Is a loaded model safe to steer? The bridge against plain Hugging Face, steering, and the KV cache.

Everything xsteer measures rests on four assumptions about a loaded model; :func:`run_checks` tests each
and returns one :class:`CheckRow` per comparison:

1. ``resid L{l}``: ``blocks.{l}.hook_resid_post`` of the TransformerBridge equals the output of decoder
   block ``l`` of an untouched copy of the Hugging Face model (``hidden_states[l + 1]`` of
   ``output_hidden_states=True``; for the last block the block's own output, because Hugging Face reports
   the last hidden state after the final norm).
2. ``logits``: the bridge's logits equal the Hugging Face model's.
3. ``steer λ=0``: steering every layer with random vectors at λ = 0 leaves the logits bit for bit the same;
   ``steer λ·v L{l}``: steering one layer moves its ``hook_resid_post`` by exactly λ·v at every position.
4. ``generate {static,dynamic} cache``: greedy generation through xsteer's KV caches gives the text of a
   reference that re-runs the whole sequence through the bridge for every new token (no cache at all), the
   path checks 1 and 2 verified.

The reference must be a separate copy: wrapping a Hugging Face model in a bridge replaces its submodules with
hooked bridge components, so the wrapped model's own HF forward is no longer independent of the bridge.

Forward errors (checks 1, 2) are elementwise and relative, with a floor at the tensor's typical size:
``max_i |a_i - b_i| / (|b_i| + median |b|)``. Dividing by ``max |b|`` instead would let a few massive
activations (SmolLM2's residual reaches 2.5e4 in one or two dimensions, its median is ~2) hide an error in
all the ordinary dimensions; a plain elementwise relative error explodes where the reference is near zero.
Tolerances: 1e-4 in float32 (the paths differ in summation order only; SmolLM2 on a CPU agrees to ~1e-5). In
bfloat16/float16 the bridge and Hugging Face each lie several percent from exact arithmetic (SmolLM2 in bf16 on a
CPU: Hugging Face's own elementwise error is 6-30% over the layers, analysis/results/check_model_bf16.txt), so both are held against the same
weights in fp32 and the bridge may err up to :data:`LOW_PRECISION_FACTOR` times as much as Hugging Face does
(:func:`check_forward`).
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from xsteer.errors import ModelCheckError

if TYPE_CHECKING:  # annotations only: importing generate (tqdm, the KV cache) waits until a check runs
    from xsteer.core.generate import CacheKind

PROMPTS = (
    "The capital of France is",
    "def fibonacci(n):\n    ",
    "Question: Tom has 12 apples and eats 5. How many are left?\nAnswer:",
)

FORWARD_TOL = {torch.float32: 1e-4, torch.float64: 1e-8, torch.bfloat16: 3e-2, torch.float16: 3e-2}
#: In bf16/fp16 the bridge's error against fp32 may be this many times Hugging Face's own. The bridge's eager
#: attention rounds more often than HF's SDPA: SmolLM2 in bf16 on a CPU reaches 1.9x HF's error at one layer,
#: a tiny random model 2.4x at its logits; a broken layer is off by far more (tests/test_check_model.py).
LOW_PRECISION_FACTOR = 3


@dataclass(frozen=True)
class CheckRow:
    """One comparison: the largest absolute error, that error relative to the reference's scale, the
    tolerance on the relative error, and whether it holds."""

    check: str
    abs_err: float
    rel_err: float
    tol: float
    ok: bool
    detail: str = ""


def _row(
    check: str, abs_err: float, scale: float, tol: float, detail: str = "", rel: float | None = None
) -> CheckRow:
    if rel is None:
        rel = abs_err / scale if scale > 0 else (0.0 if abs_err == 0 else float("inf"))
    return CheckRow(check, abs_err, rel, tol, rel <= tol, detail)  # NaN compares False: it fails


def max_errors(got: Tensor, ref: Tensor) -> tuple[float, float]:
    """(max absolute error, max elementwise error relative to |ref| floored at median |ref|)."""
    got, ref = got.float(), ref.float()
    diff = (got - ref).abs()
    floor = ref.abs().median().clamp_min(torch.finfo(torch.float32).tiny)
    return float(diff.max()), float((diff / (ref.abs() + floor)).max())


def forward_tolerance(dtype: torch.dtype) -> float:
    return FORWARD_TOL.get(dtype, 3e-2)


def load_with_reference(
    spec: str, *, device: Any = None, dtype: torch.dtype | None = None
) -> tuple[Any, Any]:
    """Load ``spec`` as a TransformerBridge plus an untouched Hugging Face copy of it on the same device.

    The copy doubles the weights' memory for as long as it is kept.
    """
    from xsteer.core.models.load import default_dtype, load_hf, resolve_device, wrap

    dev = resolve_device(device)
    hf, tok, source = load_hf(spec, dtype=dtype or default_dtype(dev))
    reference = copy.deepcopy(hf)  # before wrap(): the bridge rewires `hf`'s submodules
    model = wrap(hf, tok, model_id=source.model_id, device=dev)
    return model, reference.to(dev).eval()


def _ids(model: Any, prompt: str) -> Tensor:
    from xsteer.core.models.load import encode

    return encode(model.tokenizer, [prompt]).input_ids.to(next(model.parameters()).device)


def _hf_outputs(reference: Any, ids: Tensor, n: int) -> list[Tensor]:
    """Every decoder block's output, then the logits, of a plain Hugging Face forward (the last block's own
    output: Hugging Face reports the last hidden state after the final norm)."""
    from xsteer.core.models.backend import decoder_layers

    blocks = decoder_layers(reference)
    if len(blocks) != n:
        raise ValueError(f"the bridge has {n} blocks but the Hugging Face model {len(blocks)}")
    last: list[Tensor] = []
    handle = blocks[-1].register_forward_hook(
        lambda _m, _i, out: last.append(out[0] if isinstance(out, tuple) else out)
    )
    try:
        out = reference(ids, output_hidden_states=True)
    finally:
        handle.remove()
    return [*out.hidden_states[1:n], last[-1], out.logits]


@torch.inference_mode()
def check_forward(
    model: Any, reference: Any, prompts: Sequence[str] = PROMPTS, *, exact: Any = None
) -> list[CheckRow]:
    """Checks 1 and 2: every layer's ``hook_resid_post`` and the logits, bridge against Hugging Face.

    With ``exact`` (the reference's weights in fp32), for a model in a low-precision dtype: there the bridge
    and Hugging Face round differently, and each lies several percent from the other in bf16 (an 8-bit
    mantissa), so each is held against ``exact`` instead. The bridge passes a layer where its error is at most
    :data:`LOW_PRECISION_FACTOR` times Hugging Face's own error in that dtype (plus the fp32 tolerance): it reads
    about as well as the model's own implementation does."""
    n = model.cfg.n_layers
    tol = forward_tolerance(next(model.parameters()).dtype)
    err, rel = [0.0] * (n + 1), [0.0] * (n + 1)
    own = [0.0] * (n + 1)  # Hugging Face's own error against ``exact``
    for prompt in prompts:
        ids = _ids(model, prompt)
        logits, cache = model.run_with_cache(ids, names_filter=lambda name: name.endswith("hook_resid_post"))
        got = [*(cache[f"blocks.{layer}.hook_resid_post"] for layer in range(n)), logits]
        want = _hf_outputs(reference, ids, n)
        truth = None if exact is None else _hf_outputs(exact, ids.to(next(exact.parameters()).device), n)
        for k in range(n + 1):
            a, r = max_errors(got[k], want[k] if truth is None else truth[k])
            err[k], rel[k] = max(err[k], a), max(rel[k], r)
            if truth is not None:
                own[k] = max(own[k], max_errors(want[k], truth[k])[1])
    if exact is None:
        tols, note = [tol] * (n + 1), f"{len(prompts)} prompts, vs HF hidden_states"
    else:
        tols = [LOW_PRECISION_FACTOR * o + FORWARD_TOL[torch.float32] for o in own]
        note = f"{len(prompts)} prompts, vs HF in fp32; tol = {LOW_PRECISION_FACTOR} x HF's own error in this dtype"
    rows = [
        _row(f"resid L{layer}", err[layer], 0.0, tols[layer], note if layer == 0 else "", rel=rel[layer])
        for layer in range(n)
    ]
    rows.append(_row("logits", err[n], 0.0, tols[n], "vs HF logits", rel=rel[n]))
    return rows


def _random_vectors(model: Any, seed: int) -> Any:
    from xsteer.core.models.load import model_id
    from xsteer.core.vectors import SteeringVectors

    g = torch.Generator().manual_seed(seed)
    v = torch.randn(model.cfg.n_layers, model.cfg.d_model, generator=g)
    v = v / v.norm(dim=-1, keepdim=True)
    return SteeringVectors(v, model_id(model), "random", tuple(range(model.cfg.n_layers)))


@torch.inference_mode()
def check_steering(
    model: Any, prompts: Sequence[str] = PROMPTS, *, layer: int | None = None, seed: int = 0
) -> list[CheckRow]:
    """Check 3: λ = 0 changes nothing, and λ·v planted at one layer moves that layer's residual by λ·v."""
    from xsteer.core.inject import steer

    sv = _random_vectors(model, seed)
    layer = model.cfg.n_layers // 2 if layer is None else layer
    name = f"blocks.{layer}.hook_resid_post"
    eps = torch.finfo(next(model.parameters()).dtype).eps
    zero_err = zero_scale = plant_err = plant_scale = 0.0
    plant_tol = 0.0
    for prompt in prompts:
        ids = _ids(model, prompt)
        clean_logits, clean = model.run_with_cache(ids, names_filter=name)
        with steer(model, sv, lam=0.0):
            zero_logits = model(ids)
        zero_err = max(zero_err, float((zero_logits - clean_logits).abs().max()))
        zero_scale = max(zero_scale, float(clean_logits.abs().max()))
        h = clean[name].float()
        # a displacement as long as the residual itself: large enough to see, small enough to stay in range
        lam = float(h.norm(dim=-1).mean())
        with steer(model, sv, lam=lam, layers=[layer]):
            _, steered = model.run_with_cache(ids, names_filter=name)
        want = lam * sv.vectors[layer].to(h.device)
        plant_err = max(plant_err, float((steered[name].float() - h - want).abs().max()))
        plant_scale = max(plant_scale, float(want.abs().max()))
        # (h + λv) rounds once in the model's dtype, and the difference once more
        plant_tol = max(
            plant_tol, 4 * eps * float(h.abs().max() + want.abs().max()) / float(want.abs().max())
        )
    return [
        _row("steer λ=0", zero_err, zero_scale, 0.0, "all layers, logits bit for bit"),
        _row(f"steer λ·v L{layer}", plant_err, plant_scale, plant_tol, "every position, |λv| = mean |h|"),
    ]


@torch.inference_mode()
def greedy_without_cache(model: Any, prompt: str, max_new_tokens: int) -> str:
    """Greedy completion computed the slow, obviously right way: one full forward of the whole sequence per
    new token, through the bridge's own attention, no KV cache."""
    return str(
        model.tokenizer.decode(_greedy_tokens(model, prompt, max_new_tokens), skip_special_tokens=True)
    )


def _greedy_tokens(model: Any, prompt: str, max_new_tokens: int) -> list[int]:
    from xsteer.core.models.backend import eos_ids

    ids, eos, out = _ids(model, prompt), eos_ids(model), []
    for _ in range(max_new_tokens):
        t = int(model(ids)[0, -1].argmax())
        if t in eos:
            break
        out.append(t)
        ids = torch.cat([ids, ids.new_tensor([[t]])], dim=1)
    return out


@torch.inference_mode()
def _margin_at_divergence(model: Any, prompt: str, want: list[int], got: str) -> float:
    """How far the no-cache path's token leads the cached path's, in logits, where their texts first part:
    a near tie is how rounding alone flips a greedy choice."""
    have = model.tokenizer(got, add_special_tokens=False).input_ids
    i = next(
        (k for k, (a, b) in enumerate(zip(want, have, strict=False)) if a != b), min(len(want), len(have))
    )
    if i >= len(want) or i >= len(have):
        return float("inf")  # one text ends where the other goes on: no single flipped choice to weigh
    ids = _ids(model, prompt)
    ids = torch.cat([ids, ids.new_tensor([want[:i]])], dim=1)
    logits = model(ids)[0, -1].float()
    return float(logits[want[i]] - logits[have[i]])


def check_generation(
    model: Any,
    prompts: Sequence[str] = PROMPTS,
    *,
    max_new_tokens: int = 16,
    caches: Sequence[CacheKind] = ("static", "dynamic"),
    tie: float = 0.0,
) -> list[CheckRow]:
    """Check 4: generation through each KV cache (batched, as xsteer generates) against the no-cache reference.

    The error is the number of prompts whose completion differs; the tolerance is zero. A near tie between
    the two best tokens could in principle flip under float rounding, which would show here as a mismatch
    to look at, not hide. In a low-precision dtype rounding does flip near ties (bf16 text changes with the
    batch shape): there a completion may part from the reference where the two tokens' logits lie within
    ``tie`` (the dtype's logit error, check 2), and nowhere else.
    """
    from xsteer.core.generate import generate

    want = [_greedy_tokens(model, p, max_new_tokens) for p in prompts]
    text = [str(model.tokenizer.decode(w, skip_special_tokens=True)) for w in want]
    rows = []
    for cache in caches:
        got = [g.text for g in generate(model, list(prompts), max_new_tokens=max_new_tokens, cache=cache)]
        differ = [i for i, (a, b) in enumerate(zip(got, text, strict=True)) if a != b]
        ties = [
            i for i in differ if tie > 0 and _margin_at_divergence(model, prompts[i], want[i], got[i]) <= tie
        ]
        bad = [i for i in differ if i not in ties]
        detail = f"{len(prompts)} prompts x {max_new_tokens} tokens, greedy"
        if ties:
            detail += f"; {len(ties)} part at a near tie (logits within {tie:.3g})"
        if bad:
            detail = f"prompt {bad[0]}: {got[bad[0]]!r} != {text[bad[0]]!r}"
        rows.append(_row(f"generate {cache} cache", float(len(bad)), float(len(prompts)), 0.0, detail))
    return rows


def run_checks(model: Any, reference: Any, *, max_new_tokens: int = 16) -> list[CheckRow]:
    """All four checks on a bridge and an untouched Hugging Face copy of the same weights. In a low-precision
    dtype the forward is held against the same weights in fp32 (a third copy, for the check's duration), and
    generation may part from the reference only at a near tie within the logit error that comparison
    measured."""
    low = next(model.parameters()).dtype in (torch.bfloat16, torch.float16)
    exact = copy.deepcopy(reference).float() if low else None
    forward = check_forward(model, reference, exact=exact)
    del exact
    # Both generations round in this dtype, so each may be off by the bridge's logit error.
    tie = 2 * forward[-1].abs_err if low else 0.0
    return [
        *forward,
        *check_steering(model),
        *check_generation(model, max_new_tokens=max_new_tokens, tie=tie),
    ]


def ensure_checked(
    spec: str,
    model: Any,
    *,
    log: Callable[[str], Any] = print,
    max_new_tokens: int = 16,
    cache: Path | None = None,
) -> Path:
    """Run :func:`run_checks` on a model the first time these weights are seen; return the stamp that says they
    passed. The stamp is keyed by the weights' fingerprint and dtype (:mod:`xsteer.core.models.fingerprint`), so
    every later load of the same checkpoint skips the check, and a new revision or fine-tune is checked again.
    The check loads an untouched Hugging Face copy of ``spec`` once (the weights' memory twice, for its duration).

    Raises:
        ModelCheckError: a check failed (the message holds the table); nothing is stamped.
    """
    from xsteer.core.io import write_text_atomic
    from xsteer.core.models.fingerprint import weights_fingerprint
    from xsteer.core.models.load import cache_dir, load_hf

    param = next(model.parameters())
    dtype = str(param.dtype).removeprefix("torch.")
    key = hashlib.sha256(f"{weights_fingerprint(model)}:{dtype}:{param.device.type}".encode()).hexdigest()[
        :24
    ]
    stamp = (cache or cache_dir()) / "checks" / f"{key}.json"
    if stamp.is_file():
        return stamp
    log(f"{spec}: new weights, checking that they are read and steered right (once; xsteer check-model)")
    reference = load_hf(spec, dtype=param.dtype)[0].to(param.device).eval()
    try:
        rows = run_checks(model, reference, max_new_tokens=max_new_tokens)
    finally:
        del reference
    failed = [r.check for r in rows if not r.ok]
    if failed:
        raise ModelCheckError(
            f"{spec} fails {len(failed)} of {len(rows)} model checks ({', '.join(failed)}); its steering results "
            f"would not mean what they say:\n{format_table(rows)}"
        )
    write_text_atomic(
        stamp,
        json.dumps(
            {"spec": spec, "weights": weights_fingerprint(model), "dtype": dtype, "checks": len(rows)}
        ),
    )
    return stamp


def format_table(rows: Sequence[CheckRow]) -> str:
    header = ("check", "max abs err", "rel err", "tol", "ok", "detail")
    body = [
        (r.check, f"{r.abs_err:.3g}", f"{r.rel_err:.3g}", f"{r.tol:.3g}", "ok" if r.ok else "FAIL", r.detail)
        for r in rows
    ]
    widths = [max(len(line[k]) for line in [header, *body]) for k in range(len(header) - 1)]
    lines = [
        "  ".join([*(cell.ljust(w) for cell, w in zip(line[:-1], widths, strict=True)), line[-1]]).rstrip()
        for line in [header, *body]
    ]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


__all__ = [
    "PROMPTS",
    "CheckRow",
    "check_forward",
    "check_generation",
    "check_steering",
    "ensure_checked",
    "format_table",
    "max_errors",
    "greedy_without_cache",
    "load_with_reference",
    "run_checks",
]
