"""Is a batch with one λ per row the same as one λ at a time, on this device? (part of scripts/gpu_check.sh)

    python benchmarks/per_row_check.py --model smollm2-135m --device cuda

Checks, each one line, exit 1 on any failure (λ = 0 bit for bit and a planted λ·v are `xsteer check-model`'s,
which scripts/gpu_check.sh runs first):
* the parameters are on the requested device (a model silently left on the CPU makes every GPU timing a lie);
* a batch whose rows carry different λ gives each row's log-probabilities as a batch of that λ alone does,
  within the dtype's tolerance (bf16 on CUDA: batch shape changes the kernels' summation order), and the same
  greedy continuations (in float32; in bf16 the continuations are reported, since a near-tie may break either way).
"""

from __future__ import annotations

import argparse
import sys

import torch
from _common import setup

from xsteer.core.activations import next_token_logprobs
from xsteer.core.generate import Steering, generate
from xsteer.core.models.check import forward_tolerance, max_errors

PROMPTS = [
    "The capital of France is",
    "Question: 12 apples, 5 eaten. How many left?\nAnswer:",
    "def add(a, b):",
]
LAMS = [-0.1, 0.0, 0.05, 0.1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--max-new-tokens", type=int, default=16)
    args, model = setup(ap)
    failed = []

    def report(name: str, ok: bool, detail: str) -> None:
        print(f"{'ok  ' if ok else 'FAIL'} {name}: {detail}")
        if not ok:
            failed.append(name)

    want = torch.device(args.device)
    devices = {p.device.type for p in model.parameters()}
    report("placement", devices == {want.type}, f"parameters on {sorted(devices)}, asked for {want.type}")

    from xsteer.core.vectors import SteeringVectors

    n, d = model.cfg.n_layers, model.cfg.d_model
    g = torch.Generator().manual_seed(0)
    v = torch.randn(n, d, generator=g)
    mid = [n // 3, n // 2]
    sv = SteeringVectors(
        vectors=v / v.norm(dim=-1, keepdim=True) * 50.0,
        model_id=str(model.cfg.model_name),
        method="random",
        layers=tuple(mid),
    )
    ids = list(range(0, 2000, 97))

    texts = [p for p in PROMPTS for _ in LAMS]
    lam = [x for _ in PROMPTS for x in LAMS]
    mixed = next_token_logprobs(model, texts, ids, vectors=sv, lam=lam)
    alone = torch.cat(
        [next_token_logprobs(model, [p], ids, vectors=sv, lam=[x]) for p in PROMPTS for x in LAMS]
    )
    tol = forward_tolerance(next(model.parameters()).dtype)
    err = max_errors(mixed, alone)[1]
    report("per-row λ, log p", err <= tol, f"relative error {err:.3g} (tolerance {tol:.3g})")

    rows = generate(
        model, texts, max_new_tokens=args.max_new_tokens, steering=Steering(sv, lam, positions="all")
    )
    one = [
        generate(model, [p], max_new_tokens=args.max_new_tokens, steering=Steering(sv, [x], positions="all"))[
            0
        ]
        for p in PROMPTS
        for x in LAMS
    ]
    same = sum(a.text == b.text for a, b in zip(rows, one, strict=True))
    exact = next(model.parameters()).dtype in (torch.float32, torch.float64)
    if exact:
        report("per-row λ, greedy text", same == len(rows), f"{same}/{len(rows)} continuations identical")
    else:  # in bf16 a near-tie between two logits can break either way across batch shapes: reported, not failed
        print(f"info per-row λ, greedy text: {same}/{len(rows)} continuations identical (reduced precision)")
    checks = 3 if exact else 2
    print(f"{len(failed)} of {checks} checks failed" if failed else f"all {checks} checks passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
