"""Steered generation throughput: xsteer steered vs unsteered (P2), and xsteer vs Hugging Face + hooks (P3).

One run, one model, the same GSM8K few-shot prompts, batches (longest first, left-padded, the same
token ids), greedy decoding and --max-new-tokens for every mode:

  xsteer            xsteer.core.generate.generate, no steering
  xsteer+steer      the same with a SteeringVectors on every layer at one λ, positions="all" (the paper's
                    and RepE/repeng's setting: prompt and generated tokens)
  xsteer+steer@gen  the same at positions="generated" (prompt prefilled once unsteered; --skip-generated drops it)
  hf                plain transformers `model.generate` on a separately loaded copy of the same weights
  hf+hook           the same with a forward hook on each decoder layer adding the same λ·v_l to the layer's
                    output (the repeng / steering-vectors approach); steers every position, like "all"

Both sides run sdpa attention: xsteer's default attention="native" swaps the bridge's step-by-step
attention for the model's own sdpa module inside generate(); the HF copy is set to attn_implementation
"sdpa". Generation stops at EOS or --max-new-tokens only (no stop strings: HF's `stop_strings` differs
from xsteer's); a row's tokens are its generated tokens before EOS. xsteer drops finished rows from the
batch; HF generate keeps computing them (padded) until the whole batch is done: that is part of what
is measured.

Vectors: a seeded random unit direction per layer (random is fine for throughput: a hook costs the same
whatever the direction), rescaled to that layer's mean last-token ‖h_l‖ over the prompts (the
"resid_mean" convention), so --lam 0.05 adds 5% of a typical residual at every layer.

Reports the median wall time of --repeats runs (the modes interleaved, their order rotated each repeat,
so background load hits all of them; each mode warmed up once on the first batch, untimed), generated
tokens, tok/s, achieved ÷ the roofline floor of the mode's own schedule (benchmarks/roofline.py), every
run, then a summary with the ratios against the targets:
  P2  xsteer steered / unsteered tok/s >= 0.95
  P3  xsteer steered / HF-hook steered tok/s >= 1.0
and how many texts agree between xsteer and HF (identical rows, mean common prefix in tokens). Small
floating-point differences may split long greedy generations late, so steered disagreement is only
reported; the script exits 1 if the unsteered xsteer and HF texts agree on less than --min-agreement of
their tokens (a comparison bug: other inputs, other positions, other weights) or a mode is not reproducible.

Full size (CPU):
  HF_HUB_OFFLINE=1 python benchmarks/generation.py --data-dir /work/shared/data
Full size (GPU):
  HF_HUB_OFFLINE=1 python benchmarks/generation.py --data-dir /work/shared/data --device cuda \\
      --items 64 --batch-size 32 --max-new-tokens 256 [--dtype bfloat16]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
from _common import gsm8k_prompts, setup
from roofline import ModelShape, Work, measure, sweep_rows, sweep_work, versus_floor

from xsteer.core.activations import last_token_resid
from xsteer.core.generate import Steering, generate, shared_prefix_len
from xsteer.core.models import encode, eos_ids, load_hf, model_id
from xsteer.core.models.backend import hf_config
from xsteer.core.vectors import SteeringVectors

Output = dict[int, tuple[str, int]]  # prompt index -> (completion text, generated tokens)

TARGET_P2, TARGET_P3 = 0.95, 1.0


def random_vectors(model: Any, prompts: list[str], seed: int, batch_size: int) -> SteeringVectors:
    """A seeded random direction per layer, scaled to the layer's mean last-token residual norm."""
    n_layers, d_model = model.cfg.n_layers, model.cfg.d_model
    v = torch.randn(n_layers, d_model, generator=torch.Generator().manual_seed(seed))
    sv = SteeringVectors(
        vectors=v, model_id=model_id(model), method=f"random(seed={seed})", layers=tuple(range(n_layers))
    )
    norms = last_token_resid(model, prompts, batch_size=batch_size).norm(dim=-1).mean(dim=0)
    return sv.scaled_to(norms, "resid_mean")


def decoder_layers(hf: Any) -> Sequence[Any]:
    decoder = hf.get_decoder() if hasattr(hf, "get_decoder") else hf.model
    return decoder.layers


@contextmanager
def hf_hooks(hf: Any, vectors: SteeringVectors, lam: float) -> Iterator[None]:
    """Forward hooks adding λ·v_l to each steered decoder layer's output (every position, every row)."""
    param = next(hf.parameters())
    layers = decoder_layers(hf)
    handles = []
    for layer in vectors.layers:
        # The displacement rounded exactly as xsteer.core.inject rounds it: λ and v_l cast to the model's dtype, then multiplied.
        delta = torch.tensor(lam).to(param.device, param.dtype) * vectors.vectors[layer].to(
            param.device, param.dtype
        )

        def add(module: Any, inputs: Any, output: Any, delta: torch.Tensor = delta) -> Any:
            if isinstance(output, tuple):  # older transformers: (hidden_states, ...)
                return (output[0] + delta, *output[1:])
            return output + delta

        handles.append(layers[layer].register_forward_hook(add))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def agreement(tok: Any, a: Output, b: Output) -> tuple[int, float, float, float]:
    """Identical rows, mean common prefix (tokens, texts re-tokenized), mean longer length, prefix share."""
    same, prefixes, longest = 0, [], []
    for i in a:
        same += a[i][0] == b[i][0]
        ta = tok(a[i][0], add_special_tokens=False).input_ids
        tb = tok(b[i][0], add_special_tokens=False).input_ids
        prefixes.append(common_prefix(ta, tb))
        longest.append(max(len(ta), len(tb)))
    share = sum(prefixes) / max(sum(longest), 1)
    return same, statistics.mean(prefixes), statistics.mean(longest), share


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--items", type=int, default=16, help="GSM8K test items (the first N)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--shots", type=int, default=5, help="few-shot exemplars (the paper: 5)")
    ap.add_argument("--lam", type=float, default=0.05, help="λ; vectors have each layer's mean residual norm")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random directions")
    ap.add_argument(
        "--dtype", choices=["float32", "bfloat16"], default="float32", help="bfloat16: the GPU option"
    )
    ap.add_argument("--skip-generated", action="store_true", help="leave out xsteer at positions='generated'")
    ap.add_argument(
        "--min-agreement",
        type=float,
        default=0.5,
        help="exit 1 if unsteered xsteer and HF texts share less than this fraction of their tokens",
    )
    args, model = setup(ap)
    cuda = args.device.startswith("cuda")
    tok = model.tokenizer
    dtype = next(model.parameters()).dtype
    shape = ModelShape.from_config(hf_config(model), dtype)
    peak = measure(args.device, dtype, shape=shape, rows=sweep_rows(args.batch_size, 1))
    print(peak.describe())

    items, prompts = gsm8k_prompts(tok, args.data_dir, args.items, args.shots)
    n, bs = len(prompts), args.batch_size
    sv = random_vectors(model, prompts, args.seed, bs)
    delta_norms = (args.lam * sv.vectors.norm(dim=-1)).tolist()

    hf, _, _ = load_hf(args.model, dtype=dtype)
    hf.set_attn_implementation("sdpa")
    hf.to(args.device)
    eos = eos_ids(model)

    # The batches xsteer.core.generate forms (longest first, then input order, chunks of bs): HF gets the same ones.
    lengths = [len(tok(p).input_ids) for p in prompts]
    order = sorted(range(n), key=lambda i: -lengths[i])
    batches = [order[s : s + bs] for s in range(0, n, bs)]

    print(
        f"{n} items in {len(batches)} batches of <= {bs}; prompt tokens {min(lengths)}..{max(lengths)}; "
        f"greedy, max_new_tokens {args.max_new_tokens}, stop at EOS {sorted(eos)} only; dtype {dtype}"
    )
    print(
        f"attention: sdpa on both sides (xsteer attention='native'; HF attn_implementation="
        f"{hf.config._attn_implementation!r})"
    )
    print(
        f"vectors: random unit direction per layer (seed {args.seed}) x layer mean last-token ‖h_l‖, all "
        f"{len(sv.layers)} layers; λ = {args.lam:g} -> ‖λ·v_l‖ = {min(delta_norms):.2f}..{max(delta_norms):.2f}"
    )

    def xsteer_mode(steering: Steering | None) -> Callable[[list[int]], Output]:
        def run(idx: list[int]) -> Output:
            gens = generate(
                model,
                [prompts[i] for i in idx],
                max_new_tokens=args.max_new_tokens,
                steering=steering,
                batch_size=bs,
            )
            return {i: (g.text, g.n_tokens) for i, g in zip(idx, gens, strict=True)}

        return run

    def hf_mode(steered: bool) -> Callable[[list[int]], Output]:
        def run(idx: list[int]) -> Output:
            out: Output = {}
            chosen = set(idx)
            with hf_hooks(hf, sv, args.lam) if steered else nullcontext(), torch.inference_mode():
                for batch in batches:
                    batch = [i for i in batch if i in chosen]
                    if not batch:
                        continue
                    enc = encode(tok, [prompts[i] for i in batch])
                    ids, mask = enc.input_ids.to(args.device), enc.attention_mask.to(args.device)
                    seqs = hf.generate(
                        input_ids=ids,
                        attention_mask=mask,
                        max_new_tokens=args.max_new_tokens,
                        do_sample=False,
                        eos_token_id=sorted(eos),
                        pad_token_id=tok.pad_token_id,
                    )
                    for i, row in zip(batch, seqs[:, ids.shape[1] :].tolist(), strict=True):
                        k = next((j for j, t in enumerate(row) if t in eos), len(row))
                        out[i] = (tok.decode(row[:k], skip_special_tokens=True), k)
            return out

        return run

    modes: dict[str, Callable[[list[int]], Output]] = {
        "xsteer": xsteer_mode(None),
        "xsteer+steer": xsteer_mode(Steering(sv, args.lam, positions="all")),
        "xsteer+steer@gen": xsteer_mode(Steering(sv, args.lam, positions="generated")),
        "hf": hf_mode(False),
        "hf+hook": hf_mode(True),
    }
    if args.skip_generated:
        del modes["xsteer+steer@gen"]
    names = list(modes)

    def timed(name: str, idx: list[int]) -> tuple[Output, float, float]:
        if cuda:
            torch.cuda.synchronize()
        t0, c0 = time.perf_counter(), time.process_time()
        with torch.inference_mode():
            out = modes[name](idx)
        if cuda:
            torch.cuda.synchronize()
        return out, time.perf_counter() - t0, time.process_time() - c0

    for name in names:  # warm-up, untimed: the first (longest) batch
        timed(name, batches[0])
    wall: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    outputs: dict[str, list[Output]] = {name: [] for name in names}
    everything = list(range(n))
    for r in range(args.repeats):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            out, w, c = timed(name, everything)
            outputs[name].append(out)
            wall[name].append(w)
            cpu[name].append(c)

    unstable = {
        name: sum(run[i][0] != runs[0][i][0] for run in runs[1:] for i in everything)
        for name, runs in outputs.items()
    }
    for name, count in unstable.items():
        if count:
            print(f"WARNING: {name} is not reproducible: {count} texts changed between repeats")

    # CPU seconds (all threads) as well as wall: on a shared machine wall time mostly measures the neighbours.
    first = {name: runs[0] for name, runs in outputs.items()}
    tokens = {name: sum(t for _, t in out.values()) for name, out in first.items()}
    tps = {name: tokens[name] / statistics.median(wall[name]) for name in names}
    tpc = {name: tokens[name] / statistics.median(cpu[name]) for name in names}
    # The floor of each mode's own schedule (benchmarks/roofline.py): xsteer shares the few-shot prefix of a
    # batch (and at "generated" the rest of each prompt is prefilled once); HF runs every padded prompt.
    ids = [encode(tok, [p]).input_ids[0] for p in prompts]
    work = {}
    for name in names:
        w = Work()
        for batch in batches:
            lens = [len(ids[i]) for i in batch]
            new = [first[name][i][1] + 1 for i in batch]
            schedule = "per_lambda" if name.startswith("hf") else "shared"
            positions = "all" if name == "xsteer+steer" else "generated"
            w += sweep_work(
                shape,
                prompt_tokens=lens,
                lambdas=1,
                new_tokens=new,
                positions=positions,
                shared_prefix=shared_prefix_len([ids[i] for i in batch]),
                schedule=schedule,
            )
        work[name] = w
    print(
        f"\n{'mode':<18}{'wall s':>9}{'cpu s':>9}{'tokens':>8}{'tok/s':>9}{'tok/cpu-s':>11}   achieved ÷ roofline floor"
        f"{'':<37}wall per run (s)"
    )
    for name in names:
        t = statistics.median(wall[name])
        print(
            f"{name:<18}{t:>9.2f}{statistics.median(cpu[name]):>9.2f}{tokens[name]:>8}"
            f"{tps[name]:>9.1f}{tpc[name]:>11.1f}   {versus_floor(t, work[name], peak):<100}"
            f"{', '.join(f'{x:.2f}' for x in wall[name])}"
        )

    changed = sum(first["xsteer"][i][0] != first["xsteer+steer"][i][0] for i in everything)
    print(f"\nsteering changed {changed}/{n} xsteer texts (λ = {args.lam:g}); item 0:")
    for name in ("xsteer", "xsteer+steer"):
        print(f"  {name:<13} {first[name][0][0][:160]!r}")

    print("\nxsteer vs HF texts     identical   mean common prefix / mean length (tokens)   share")
    agree = {}
    for label, a, b in [("unsteered", "xsteer", "hf"), ("steered (all)", "xsteer+steer", "hf+hook")]:
        same, prefix, longest, share = agree[label] = agreement(tok, first[a], first[b])
        print(f"  {label:<20}{same:>5}/{n:<5}{prefix:>24.1f} / {longest:<14.1f}{share:>12.2f}")
    for i in everything:
        if first["xsteer"][i][0] != first["hf"][i][0]:
            print(
                f"  first unsteered difference, item {i}:\n    xsteer: {first['xsteer'][i][0]!r}\n"
                f"    hf:     {first['hf'][i][0]!r}"
            )
            break

    def verdict(ratio: float, target: float) -> str:
        return f"{ratio:.3f}x wall ({'PASS' if ratio >= target else 'FAIL'} vs target >= {target:g})"

    print("\n== summary ==")
    p2 = [("xsteer+steer", "all")] + (
        [("xsteer+steer@gen", "generated")] if "xsteer+steer@gen" in modes else []
    )
    for name, pos in p2:
        print(
            f"P2 xsteer steered ({pos}) / unsteered tok/s:  {verdict(tps[name] / tps['xsteer'], TARGET_P2)}; "
            f"{tpc[name] / tpc['xsteer']:.3f}x cpu"
        )
    print(
        f"P3 xsteer steered / HF-hook steered tok/s:   {verdict(tps['xsteer+steer'] / tps['hf+hook'], TARGET_P3)}; "
        f"{tpc['xsteer+steer'] / tpc['hf+hook']:.3f}x cpu"
    )
    print(
        f"   (unsteered: xsteer / HF tok/s {tps['xsteer'] / tps['hf']:.3f}x wall; "
        f"HF hook cost: hf+hook / hf {tps['hf+hook'] / tps['hf']:.3f}x wall)"
    )
    bad_agreement = agree["unsteered"][3] < args.min_agreement
    for label, (same, prefix, longest, share) in agree.items():
        print(
            f"agreement xsteer vs HF, {label}: {same}/{n} identical, mean common prefix {prefix:.1f} of "
            f"{longest:.1f} tokens ({share:.2f})"
        )
    if bad_agreement:
        print(
            f"FAIL: unsteered xsteer and HF texts share {agree['unsteered'][3]:.2f} < {args.min_agreement:g} "
            "of their tokens: the two sides do not compute the same thing"
        )
    elif agree["steered (all)"][3] < args.min_agreement:
        print(
            f"WARNING: steered xsteer and HF texts share only {agree['steered (all)'][3]:.2f} of their tokens"
        )
    return 1 if bad_agreement or any(unstable.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
