"""The paper's 19-λ ITS sweep with xsteer vs what a repeng / steering-vectors user would run.

* **xsteer**: ONE ``generate`` call over items x λ (λ on the batch axis, per-row), static KV cache: the
  few-shot prefix is prefilled once per distinct λ (``--positions all``) or once in all (``generated``,
  where each prompt's rest is also prefilled once for all its λ), stored once and read once per decode step.
* **the prefix-cached alternative** (``--positions generated`` only): the same, but what a careful user of repeng
  or steering-vectors writes: the unsteered prompt (all but its last token) is prefilled once into a
  ``DynamicCache`` shared by every λ, each λ's ``generate`` starts from it and the cache is cropped back after.
  At ``--positions all`` every prompt token is steered, so it has nothing to share and is the alternative itself.
* **the user's alternative**: transformers ``model.generate`` on a plain copy of the same weights (sdpa
  attention, greedy, the same EOS ids, stop string and ``max_new_tokens``), with a forward hook on each
  steered decoder layer adding λ·v_l to its output (at every position for ``all``; for ``generated`` at
  the positions that produce new tokens: the prompt's last position and every generated one), one λ at a
  time, the items batched (left-padded: the same token ids as xsteer). A plain copy, not
  ``xsteer.core.models.backend.hf_model(bridge)``: the bridge has replaced that model's blocks, attention and
  norms by its hookable wrappers in place, which a repeng user's model does not have and which would slow
  the alternative down.

Prompts: GSM8K test items, 5-shot, rendered as ``xsteer.evaluation.evaluate.Evaluator.prompt`` renders them
(an Evaluator is built to render them). Both sides cut each completion before the first "Question:", as
the evaluator does, and score it with the GSM8K task.

Vector: SmolLM2's own, extracted (``xsteer.extraction.extract``) from --n-pairs GSM8K train pairs and
rescaled per layer to the mean last-token ‖h_l‖ of the pair texts (``resid_mean``), so λ is a share of
the residual norm and the paper grid means something. Steering all 30 layers at λ = 1 would add the whole
residual norm 30 times over, which turns SmolLM2's text into noise (both sides would then just race to
--max-new-tokens), so by default one middle layer is steered (--layers; see the coherence figures printed).

Same answers required: the script counts identical completions and differing extracted answers; it exits 1
if more than --max-answer-diff (a share of the rows) of the answers differ: beyond float noise (greedy
decoding can split late where two logits tie to ~1e-6; the two sides round differently, batch 8 vs 152 rows).

Timing: --repeats runs of each side, interleaved (so background load hits both), medians; the order
alternates every repeat. Each side is warmed up once (one item, one λ, a few tokens), untimed. The roofline
(benchmarks/roofline.py) is measured first; each side's wall time is printed against its own floor
(xsteer's: the least work the sweep needs; the alternative's: the work its schedule does).

Full size (CPU):
  HF_HUB_OFFLINE=1 python benchmarks/lambda_sweep.py --data-dir /work/shared/data --positions generated
  HF_HUB_OFFLINE=1 python benchmarks/lambda_sweep.py --data-dir /work/shared/data --positions all
Smoke run (~2 min on 2 cores):
  HF_HUB_OFFLINE=1 python benchmarks/lambda_sweep.py --data-dir /work/shared/data --items 2 --lambdas 4 \\
      --max-new-tokens 16 --repeats 1
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from _common import setup
from roofline import ModelShape, Peak, measure, sweep_rows, sweep_work, versus_floor
from transformers import StoppingCriteria, StoppingCriteriaList

from xsteer.core.activations import last_token_resid
from xsteer.core.generate import Generation, Steering, generate, shared_prefix_len
from xsteer.core.models import encode, eos_ids, load_hf
from xsteer.core.models.backend import hf_config
from xsteer.core.vectors import SteeringVectors
from xsteer.evaluation.evaluate import PAPER_GRID, EvalConfig, Evaluator
from xsteer.evaluation.records import RecordStore
from xsteer.extraction.extract import extract
from xsteer.extraction.pairs import build_pairs
from xsteer.tasks import get_task
from xsteer.tasks.data import load_examples

STOP = ["Question:"]  # what the evaluator stops at
#: How the profile groups aten ops: the projections, attention, and everything else (norms, RoPE, SwiGLU, the
#: steering add, sampling, cache writes).
GEMM = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")
Rows = list[tuple[int, int]]  # (item, λ index)


def steering_vectors(model: Any, args: argparse.Namespace) -> SteeringVectors:
    if args.vectors:
        return SteeringVectors.load(args.vectors)
    train = load_examples("gsm8k", "train", data_dir=args.data_dir, limit=args.n_pairs)
    pairs = build_pairs("corrupted_answer", train, model.tokenizer, task="gsm8k")
    sv = extract(model, pairs, progress=False)
    texts = [p.positive for p in pairs] + [p.negative for p in pairs]
    norms = last_token_resid(model, texts).norm(dim=-1).mean(dim=0)
    print(
        f"vectors: extracted from {len(pairs)} GSM8K train pairs; rescaled to the mean last-token ‖h_l‖ "
        f"({norms.min():.1f}..{norms.max():.1f}) of their texts (resid_mean)"
    )
    return sv.scaled_to(norms, "resid_mean")


def decoder_layers(hf: Any) -> Sequence[Any]:
    decoder = hf.get_decoder() if hasattr(hf, "get_decoder") else hf.model
    return decoder.layers


@contextmanager
def hf_hooks(
    hf: Any, vectors: SteeringVectors, layers: Sequence[int], lam: float, positions: str
) -> Iterator[None]:
    """The repeng / steering-vectors way: a forward hook per decoder layer adding λ·v_l to its output."""
    param = next(hf.parameters())
    handles = []
    for layer in layers:
        # λ and v_l cast to the model's dtype, then multiplied: as xsteer.core.inject rounds the displacement
        delta = torch.tensor(lam).to(param.device, param.dtype) * vectors.vectors[layer].to(
            param.device, param.dtype
        )

        def add(module: Any, inputs: Any, output: Any, delta: torch.Tensor = delta) -> Any:
            hidden = output[0] if isinstance(output, tuple) else output
            if positions == "generated" and hidden.shape[1] > 1:
                # prefill: only the last position produces a new token (the prompts are left-padded)
                hidden = torch.cat([hidden[:, :-1], hidden[:, -1:] + delta], dim=1)
            else:
                hidden = hidden + delta
            return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

        handles.append(decoder_layers(hf)[layer].register_forward_hook(add))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


class StopOnText(StoppingCriteria):
    """A ``StoppingCriteria`` ending a row once its generated text contains a stop string: what xsteer and the
    evaluator do. (transformers' own ``stop_strings`` gives the same text but rebuilds a vocabulary-wide
    table on every ``generate`` call: 30-60 s per call for SmolLM2's 49k tokens on this CPU.)"""

    def __init__(self, tok: Any, start: int, stop: Sequence[str], tail: int = 16):
        self.tok, self.start, self.stop, self.tail = tok, start, list(stop), tail

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        new = input_ids[:, self.start :][:, -self.tail :]
        texts = self.tok.batch_decode(new.tolist(), skip_special_tokens=True)
        return torch.tensor([any(s in t for s in self.stop) for t in texts], device=input_ids.device)


def cut(text: str) -> str:
    i = min((k for s in STOP if (k := text.find(s)) >= 0), default=-1)
    return text[:i] if i >= 0 else text


def profile_sweep(run: Any, timed: float, *, top: int = 10) -> None:
    """One more xsteer sweep under ``torch.profiler``: each aten op's self time, grouped, and the wall time no op
    accounts for (the Python of the generation loop and the bridge's hooks). ``timed`` is the median wall time
    of the unprofiled runs, printed beside the profiled one (the profiler adds its own overhead)."""
    from torch.profiler import ProfilerActivity, profile

    t0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run()
    wall = time.perf_counter() - t0
    ops = [e for e in prof.key_averages() if e.key.startswith("aten::")]
    self_s = {e.key: e.self_cpu_time_total / 1e6 for e in ops}
    calls = {e.key: e.count for e in ops}
    in_ops = sum(self_s.values())
    gemm = sum(v for k, v in self_s.items() if k in GEMM)
    attn = sum(v for k, v in self_s.items() if "attention" in k)
    print("\n== profile (xsteer, one more sweep under torch.profiler; self time of each aten op) ==")
    print(
        f"profile: {wall:.1f} s wall with the profiler on ({timed:.1f} s timed without); aten ops {in_ops:.1f} s "
        f"({in_ops / wall:.1%} of the wall): GEMM {gemm / wall:.1%}, attention {attn / wall:.1%}, other ops "
        f"{(in_ops - gemm - attn) / wall:.1%}; outside any op (Python: the generation loop, the hooks) "
        f"{1 - in_ops / wall:.1%}"
    )
    for key in sorted(self_s, key=self_s.get, reverse=True)[:top]:  # type: ignore[arg-type]
        print(f"profile op: {key} {self_s[key]:.2f} s {self_s[key] / wall:.1%} {calls[key]} calls")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--positions", choices=["all", "generated"], default="generated")
    ap.add_argument("--items", type=int, default=8, help="GSM8K test items (the first N)")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--shots", type=int, default=5)
    ap.add_argument("--lambdas", type=int, default=len(PAPER_GRID), help="the first N λ of the paper grid")
    ap.add_argument("--layers", default="15", help="steered layers, comma-separated, or 'all'")
    ap.add_argument("--n-pairs", type=int, default=16, help="GSM8K train pairs the vector is extracted from")
    ap.add_argument("--vectors", default=None, help="a steering-vector file instead of extracting one")
    ap.add_argument("--batch-size", default=None, help="xsteer rows per batch (default: all rows; or 'auto')")
    ap.add_argument("--cache", choices=["static", "dynamic"], default="static", help="xsteer's KV cache")
    ap.add_argument(
        "--dtype", choices=["float32", "bfloat16"], default=None, help="default: fp32 CPU, bf16 CUDA"
    )
    ap.add_argument(
        "--max-answer-diff",
        type=float,
        default=0.05,
        help="exit 1 if more than this share of the (item, λ) answers differ between the sides",
    )
    ap.add_argument(
        "--skip-roofline", action="store_true", help="use --peak-gflops/--peak-gbs instead of measuring"
    )
    ap.add_argument(
        "--profile",
        action="store_true",
        help="then one more xsteer sweep under torch.profiler (where time goes)",
    )
    ap.add_argument("--peak-gflops", type=float, default=None)
    ap.add_argument("--peak-gbs", type=float, default=None)
    args, model = setup(ap)
    cuda = args.device.startswith("cuda")
    tok = model.tokenizer
    dtype = next(model.parameters()).dtype

    shape = ModelShape.from_config(hf_config(model), dtype)
    if args.skip_roofline:
        peak = Peak(
            flops=args.peak_gflops * 1e9, bandwidth=args.peak_gbs * 1e9, dtype=str(dtype), device=args.device
        )
    else:
        peak = measure(args.device, dtype, shape=shape, rows=sweep_rows(args.items, args.lambdas))
    print(peak.describe())

    task = get_task("gsm8k")
    with tempfile.TemporaryDirectory() as tmp:
        ev = Evaluator(
            model,
            EvalConfig(dataset="gsm8k", shots=args.shots),
            RecordStore(f"{tmp}/r.jsonl"),
            {"baseline": None},
            progress=False,
            data_dir=args.data_dir,
        )
        items = task.load("test", data_dir=args.data_dir, limit=args.items)
        prompts = [ev.prompt(ex) for ex in items]
    sv = steering_vectors(model, args)
    layers = list(sv.layers) if args.layers == "all" else [int(x) for x in args.layers.split(",")]
    lams = list(PAPER_GRID[: args.lambdas])
    rows: Rows = [(i, j) for i in range(len(items)) for j in range(len(lams))]  # item-major, as the evaluator
    ids = [encode(tok, [p]).input_ids[0] for p in prompts]
    prompt_tokens = [len(x) for x in ids]
    shared = shared_prefix_len(ids)
    delta = [lams[-1] * float(sv.vectors[layer].norm()) for layer in layers]
    print(
        f"{len(items)} items x {len(lams)} λ = {len(rows)} rows; λ = {lams[0]:g}..{lams[-1]:g}; layers {layers} "
        f"(‖λ_max·v‖ = {min(delta):.1f}..{max(delta):.1f}); positions={args.positions}; prompt tokens "
        f"{prompt_tokens} ({shared} shared); greedy, max_new_tokens {args.max_new_tokens}, stop {STOP} and EOS"
    )

    hf, _, _ = load_hf(args.model, dtype=dtype)
    hf.set_attn_implementation("sdpa")
    hf.to(args.device).eval()
    eos = sorted(eos_ids(model))
    bs: int | str = (
        len(rows)
        if args.batch_size is None
        else (args.batch_size if args.batch_size == "auto" else int(args.batch_size))
    )

    def run_xsteer(sub: Rows, new: int) -> dict[tuple[int, int], Generation]:
        steering = Steering(sv, [lams[j] for _, j in sub], layers=layers, positions=args.positions)
        gens = generate(
            model,
            [prompts[i] for i, _ in sub],
            max_new_tokens=new,
            stop=STOP,
            steering=steering,
            batch_size=bs if isinstance(bs, str) else min(bs, len(sub)),
            cache=args.cache,
        )
        return dict(zip(sub, gens, strict=True))

    def run_alternative(
        sub: Rows, new: int, *, prefix_cached: bool = False
    ) -> dict[tuple[int, int], Generation]:
        out = {}
        by_lam: dict[int, list[int]] = {}
        for i, j in sub:
            by_lam.setdefault(j, []).append(i)
        prefills: dict[tuple[int, ...], Any] = {}
        for j, its in by_lam.items():
            enc = encode(tok, [prompts[i] for i in its])
            x, mask = enc.input_ids.to(args.device), enc.attention_mask.to(args.device)
            criteria = StoppingCriteriaList([StopOnText(tok, x.shape[1], STOP)])
            cache = None
            if prefix_cached:
                # What a careful user writes at positions=generated: every prompt token but the last is
                # unsteered, so prefill them once for all λ; generate() then runs only the last prompt token
                # (steered) and the new ones, and the cache is cropped back to the prompt for the next λ.
                if tuple(its) not in prefills:
                    # Left-padded rows: positions from the mask, as generate() numbers them (not 0..L-1).
                    pos = (mask.long().cumsum(-1) - 1).clamp_min(0)
                    with torch.inference_mode():
                        prefills[tuple(its)] = hf(
                            input_ids=x[:, :-1],
                            attention_mask=mask[:, :-1],
                            position_ids=pos[:, :-1],
                            use_cache=True,
                        ).past_key_values
                cache = prefills[tuple(its)]
            with hf_hooks(hf, sv, layers, lams[j], args.positions), torch.inference_mode():
                seqs = hf.generate(
                    input_ids=x,
                    attention_mask=mask,
                    max_new_tokens=new,
                    do_sample=False,
                    eos_token_id=eos,
                    pad_token_id=tok.pad_token_id,
                    stopping_criteria=criteria,
                    **({"past_key_values": cache} if cache is not None else {}),
                )
            if cache is not None:  # transformers 5 crops by the number of tokens removed, given negative
                cache.crop(-(cache.get_seq_length() - (x.shape[1] - 1)))
            ends = set(eos) | {tok.pad_token_id}  # a row stopped by its stop string is padded from there on
            for i, row in zip(its, seqs[:, x.shape[1] :].tolist(), strict=True):
                k = next((n for n, t in enumerate(row) if t in ends), len(row))
                text = tok.decode(row[:k], skip_special_tokens=True)
                cut_text = cut(text)
                # the generation's own bookkeeping, as xsteer reports it: tokens up to the stop string's end
                finish = "stop" if cut_text != text else ("eos" if k < len(row) else "length")
                out[i, j] = Generation(text=cut_text, n_tokens=k, finish=finish)  # type: ignore[arg-type]
        return out

    sides: dict[str, Any] = {"xsteer": run_xsteer, "alternative": run_alternative}
    if args.positions == "generated":  # at positions=all every prompt token is steered: nothing to share
        sides["prefix-cached"] = lambda sub, new: run_alternative(sub, new, prefix_cached=True)
    for fn in sides.values():  # warm-up, untimed
        fn([(0, len(lams) - 1)], 4)
    wall: dict[str, list[float]] = {k: [] for k in sides}
    cpu: dict[str, list[float]] = {k: [] for k in sides}
    outs: dict[str, list[dict]] = {k: [] for k in sides}
    for r in range(args.repeats):
        for name in list(sides) if r % 2 == 0 else list(sides)[::-1]:
            if cuda:
                torch.cuda.synchronize()
            t0, c0 = time.perf_counter(), time.process_time()
            outs[name].append(sides[name](rows, args.max_new_tokens))
            if cuda:
                torch.cuda.synchronize()
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
            print(f"  repeat {r + 1}: {name:<12} {wall[name][-1]:8.1f} s", flush=True)

    for name, runs in outs.items():
        unstable = sum(run[k].text != runs[0][k].text for run in runs[1:] for k in rows)
        if unstable:
            print(f"WARNING: {name} is not reproducible: {unstable} texts changed between repeats")
    xs, alt = outs["xsteer"][0], outs["alternative"][0]
    same_text = sum(xs[k].text == alt[k].text for k in rows)
    answers = {
        name: {k: task.score(out[k].text, items[k[0]]).answer for k in rows}
        for name, out in (("xsteer", xs), ("alternative", alt))
    }
    differ = [k for k in rows if answers["xsteer"][k] != answers["alternative"][k]]

    # Work: xsteer's floor is the least work of the sweep (its own schedule); the alternative's, its schedule.
    new_tokens = {
        name: [
            out[(i, j)].n_tokens + (out[(i, j)].finish == "eos")
            for j in range(len(lams))
            for i in range(len(items))
        ]
        for name, out in (("xsteer", xs), ("alternative", alt))
    }
    work = {
        "xsteer": sweep_work(
            shape,
            prompt_tokens=prompt_tokens,
            lambdas=len(lams),
            new_tokens=new_tokens["xsteer"],
            shared_prefix=shared,
            positions=args.positions,
        ),
        "alternative": sweep_work(
            shape,
            prompt_tokens=prompt_tokens,
            lambdas=len(lams),
            new_tokens=new_tokens["alternative"],
            shared_prefix=shared,
            positions=args.positions,
            schedule="per_lambda",
        ),
    }

    print(
        f"\n{'side':<13}{'wall s':>9}{'cpu s':>9}{'tokens':>8}{'tok/s':>8}   "
        f"{'achieved ÷ roofline floor':<100}wall per run (s)"
    )
    for name, out in (("xsteer", xs), ("alternative", alt)):
        t = statistics.median(wall[name])
        n_tok = sum(g.n_tokens for g in out.values())
        print(
            f"{name:<13}{t:>9.1f}{statistics.median(cpu[name]):>9.1f}{n_tok:>8}{n_tok / t:>8.1f}   "
            f"{versus_floor(t, work[name], peak):<100}{', '.join(f'{x:.1f}' for x in wall[name])}"
        )
    for name, w in work.items():
        print(f"  work ({name}): " + ", ".join(f"{k} {v:.3g}" for k, v in w.summary().items()))

    print(
        f"\ncompletions identical: {same_text}/{len(rows)}; extracted answers differing: {len(differ)}/{len(rows)}"
    )
    for i, j in differ[:3]:
        print(
            f"  item {i} λ={lams[j]:g}:\n    xsteer:      {xs[i, j].text[-160:]!r}\n"
            f"    alternative: {alt[i, j].text[-160:]!r}"
        )
    print(
        f"\n{'item':<6}{'gold':>8}{'vote':>8}{'ok':>4}{'texts':>7}{'answers':>9}   answer per λ (small to large)"
    )
    n_correct = 0
    for i, ex in enumerate(items):
        per_lam = [answers["xsteer"][i, j] for j in range(len(lams))]
        votes = [a for a in per_lam if a]
        vote = max(votes, key=votes.count) if votes else None  # mode; ties to the smallest λ (first seen)
        ok = vote is not None and task.score(vote, ex).correct
        n_correct += ok
        print(
            f"{i:<6}{ex.answer:>8}{vote or '-':>8}{'y' if ok else 'n':>4}{len({xs[i, j].text for j in range(len(lams))}):>7}"
            f"{len(set(per_lam)):>9}   {' '.join(a or '-' for a in per_lam)}"
        )
    print(
        f"ITS majority vote correct: {n_correct}/{len(items)} (texts/answers: distinct across the {len(lams)} λ)"
    )

    speedup = statistics.median(wall["alternative"]) / statistics.median(wall["xsteer"])
    t_x = statistics.median(wall["xsteer"])
    cached = "prefix-cached" if "prefix-cached" in wall else "alternative"
    if "prefix-cached" in outs:
        pc = outs["prefix-cached"][0]
        print(
            f"\nprefix-cached alternative: {statistics.median(wall['prefix-cached']):.1f} s "
            f"({', '.join(f'{x:.1f}' for x in wall['prefix-cached'])}); completions identical to xsteer's: "
            f"{sum(pc[k].text == xs[k].text for k in rows)}/{len(rows)}, to the alternative's: "
            f"{sum(pc[k].text == alt[k].text for k in rows)}/{len(rows)}"
        )
    print("\n== summary ==")
    print(f"speed-up vs the user's alternative: {speedup:.2f}x (positions={args.positions})")
    print(
        f"speed-up vs the prefix-cached alternative: {statistics.median(wall[cached]) / t_x:.2f}x "
        f"(positions={args.positions}"
        + (
            ""
            if cached == "prefix-cached"
            else "; every prompt token is steered, so the alternative can share no prefill"
        )
        + ")"
    )
    print(f"xsteer achieved ÷ roofline floor: {versus_floor(t_x, work['xsteer'], peak)}")
    print(
        f"answers: {len(rows) - len(differ)}/{len(rows)} identical, {same_text}/{len(rows)} completions identical"
    )
    if args.profile:
        profile_sweep(lambda: run_xsteer(rows, args.max_new_tokens), t_x)
    if len(differ) > args.max_answer_diff * len(rows):
        print(
            f"FAIL: {len(differ)} of {len(rows)} extracted answers differ between xsteer and the alternative "
            f"(more than {args.max_answer_diff:.0%}): beyond float noise, the two sides do not compute the same thing"
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
