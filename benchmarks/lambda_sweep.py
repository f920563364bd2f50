"""The paper's 19-λ grid as ONE batched generate call (λ on the batch axis) vs 19 sequential calls.

Both modes must give identical text for every (item, λ); the script exits 1 if any differ.
It reports wall time (median of --repeats, the two modes interleaved so background load hits both),
tokens generated, tok/s, the speed-up (target >= 8x on CPU), how many distinct answers the grid gives
per item (steering must actually change something), and the per-item majority vote over λ.

Steering vectors are extracted from --n-pairs GSM8K train pairs on the same model (or read from
--vectors). Unit vectors at λ <= 1 barely move the residual, so by default (--norm resid_mean) each
layer's vector is rescaled to the mean last-token residual norm of that layer on the pair texts.

Full size (CPU):
  HF_HUB_OFFLINE=1 python benchmarks/lambda_sweep.py --data-dir /work/shared/data
  HF_HUB_OFFLINE=1 python benchmarks/lambda_sweep.py --data-dir /work/shared/data --positions generated
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any

import torch
from _common import gsm8k_prompts, setup

from xsteer.core.activations import last_token_resid
from xsteer.core.generate import Generation, Steering, generate
from xsteer.core.vectors import SteeringVectors
from xsteer.evaluation.evaluate import PAPER_GRID
from xsteer.extraction.extract import extract
from xsteer.extraction.pairs import build_pairs
from xsteer.tasks.data import load_examples
from xsteer.tasks.scoring import majority_vote, score

# {0.01, ..., 0.09} ∪ {0.1, ..., 1.0}; rounded so the values are the decimals they look like.
GRID = list(PAPER_GRID)
STOP = ["Question:"]


def steering_vectors(model: Any, args: argparse.Namespace) -> SteeringVectors:
    examples = load_examples("gsm8k", "train", data_dir=args.data_dir, limit=args.n_pairs)
    pairs = build_pairs("corrupted_answer", examples, model.tokenizer, dataset="gsm8k")
    sv = SteeringVectors.load(args.vectors) if args.vectors else extract(model, pairs, progress=False)
    if args.norm == "unit":
        return sv.unit()
    texts = [p.positive for p in pairs] + [p.negative for p in pairs]
    norms = last_token_resid(model, texts).norm(dim=-1).mean(dim=0)
    print(f"mean last-token ‖h_l‖ over {len(texts)} pair texts: {norms.min():.1f}..{norms.max():.1f}")
    return sv.scaled_to(norms, "resid_mean")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--items", type=int, default=4, help="GSM8K test items (the first N)")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--shots", type=int, default=5, help="few-shot exemplars (the paper: 5; fewer for a quick smoke run)")
    ap.add_argument("--positions", choices=["all", "generated"], default="all")
    ap.add_argument("--lam-scale", type=float, default=1.0, help="multiplies every λ of the grid")
    ap.add_argument("--norm", choices=["resid_mean", "unit"], default="resid_mean")
    ap.add_argument("--vectors", default=None, help="a steering-vector file (default: extract on this model)")
    ap.add_argument("--n-pairs", type=int, default=16, help="GSM8K train pairs to extract (and measure norms) from")
    ap.add_argument("--batch-size", type=int, default=None, help="rows per forward (default: the whole grid)")
    args, model = setup(ap)
    sv = steering_vectors(model, args)
    items, prompts = gsm8k_prompts(model.tokenizer, args.data_dir, args.items, args.shots)
    lams = [lam * args.lam_scale for lam in GRID]
    rows = [(i, j) for j in range(len(lams)) for i in range(len(items))]  # (item, λ index), λ-major
    batch_size = args.batch_size or len(rows)
    common = dict(max_new_tokens=args.max_new_tokens, stop=STOP, batch_size=batch_size)
    print(f"{len(items)} items x {len(lams)} λ = {len(rows)} rows; λ = {lams[0]:g}..{lams[-1]:g}; "
          f"prompt tokens: {[len(model.tokenizer(p).input_ids) for p in prompts]}")

    def batched() -> dict[tuple[int, int], Generation]:
        lam_rows = torch.tensor([lams[j] for _, j in rows])
        gens = generate(model, [prompts[i] for i, _ in rows],
                        steering=Steering(sv, lam_rows, positions=args.positions), **common)
        return dict(zip(rows, gens, strict=True))

    def sequential() -> dict[tuple[int, int], Generation]:
        out = {}
        for j, lam in enumerate(lams):
            gens = generate(model, prompts, steering=Steering(sv, lam, positions=args.positions), **common)
            out.update({(i, j): g for i, g in enumerate(gens)})
        return out

    modes = {"batched": batched, "sequential": sequential}
    wall: dict[str, list[float]] = {name: [] for name in modes}
    cpu: dict[str, list[float]] = {name: [] for name in modes}
    outputs: dict[str, list[dict]] = {name: [] for name in modes}
    for _ in range(args.repeats):
        for name, fn in modes.items():
            t0, c0 = time.perf_counter(), time.process_time()
            outputs[name].append(fn())
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)

    for name, runs in outputs.items():
        unstable = sum(run[r].text != runs[0][r].text for run in runs[1:] for r in rows)
        if unstable:
            print(f"WARNING: {name} is not reproducible: {unstable} (item, λ) texts changed between repeats")
    bat, seq = outputs["batched"][0], outputs["sequential"][0]
    differ = [r for r in rows if bat[r].text != seq[r].text]

    # CPU seconds (all threads) as well as wall: on a shared machine wall time mostly measures the neighbours.
    print(f"\n{'mode':<12}{'wall s':>9}{'cpu s':>9}{'tokens':>8}{'tok/s':>8}   wall per run (s)")
    for name, run in [("batched", bat), ("sequential", seq)]:
        t, c = statistics.median(wall[name]), statistics.median(cpu[name])
        n_tok = sum(g.n_tokens for g in run.values())
        print(f"{name:<12}{t:>9.2f}{c:>9.2f}{n_tok:>8}{n_tok / t:>8.1f}   {', '.join(f'{x:.2f}' for x in wall[name])}")
    speedup = statistics.median(wall["sequential"]) / statistics.median(wall["batched"])
    cpu_ratio = statistics.median(cpu["sequential"]) / statistics.median(cpu["batched"])
    print(f"speed-up sequential/batched: {speedup:.2f}x wall, {cpu_ratio:.2f}x cpu "
          f"(target >= 8x on CPU: {'PASS' if speedup >= 8 else 'FAIL'})")
    print(f"(item, λ) texts differing between batched and sequential: {len(differ)} of {len(rows)} (must be 0)")
    for i, j in differ[:3]:
        print(f"  item {i} λ={lams[j]:g}:\n    batched:    {bat[i, j].text!r}\n    sequential: {seq[i, j].text!r}")

    print(f"\n{'item':<6}{'gold':>8}{'vote':>8}{'ok':>4}{'texts':>7}{'answers':>9}   answer per λ (small to large)")
    n_correct = 0
    for i, ex in enumerate(items):
        texts = [bat[i, j].text for j in range(len(lams))]
        answers = [score("gsm8k", t, ex.answer).answer for t in texts]
        vote = majority_vote(answers)
        ok = score("gsm8k", vote or "", ex.answer).correct
        n_correct += ok
        print(f"{i:<6}{ex.answer:>8}{vote or '-':>8}{'y' if ok else 'n':>4}{len(set(texts)):>7}"
              f"{len(set(answers)):>9}   {' '.join(a or '-' for a in answers)}")
    print(f"majority vote correct: {n_correct}/{len(items)}  (texts/answers = distinct across the {len(lams)} λ)")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
