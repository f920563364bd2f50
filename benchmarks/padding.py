"""What batching texts by length saves when reading activations: the fidelity study's 128 generic fit texts.

``last_token_resid`` pads each batch to its longest text. It now forms batches of like length (longest first);
before, it batched in input order. Calling it once per input-order batch reproduces the old padding exactly (a
single batch has nothing to reorder), so both sides run the current code on the same rows. Prints the real
tokens, the padded tokens of each order (deterministic) and the median wall time of --repeats interleaved runs.

Then the size of a pass: ``last_token_resid`` also caps a pass at ``max_tokens`` padded tokens. Timed here with
rows capped at the fidelity study's batch size (FidelitySpec.batch_size) and each token budget of --budgets,
against a budget that never binds.

  HF_HUB_OFFLINE=1 python benchmarks/padding.py --model smollm2-135m --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from _common import setup

from xsteer.app.fidelity import FidelitySpec
from xsteer.core.activations import last_token_resid
from xsteer.core.models import encode
from xsteer.tasks import get_task
from xsteer.transfer.maps import fit_texts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--budgets", default="512,1024,2048", help="max_tokens values to time, comma-separated")
    args, model = setup(ap)
    n = FidelitySpec.generic_texts
    texts = fit_texts(get_task("synthetic").load("train", seed=0)[:n], seed=0)
    lengths = encode(model.tokenizer, texts).attention_mask.sum(dim=1).tolist()
    bs = args.batch_size
    batches = [list(range(s, min(s + bs, n))) for s in range(0, n, bs)]
    by_length = sorted(range(n), key=lambda i: (-lengths[i], i))

    def padded(order: list[int]) -> int:
        return sum(
            max(lengths[i] for i in order[s : s + bs]) * len(order[s : s + bs]) for s in range(0, n, bs)
        )

    print(
        f"{args.model}, {n} generic fit texts, batches of {bs}: {sum(lengths)} real tokens; padded "
        f"{padded(list(range(n)))} in input order, {padded(by_length)} by length"
    )
    times: dict[str, list[float]] = {"input order": [], "by length": []}
    for _ in range(args.repeats):
        t = time.perf_counter()
        old = torch.cat([last_token_resid(model, [texts[i] for i in b], batch_size=bs) for b in batches])
        times["input order"].append(time.perf_counter() - t)
        t = time.perf_counter()
        new = last_token_resid(model, texts, batch_size=bs, max_tokens=10**9)
        times["by length"].append(time.perf_counter() - t)
    for name, ts in times.items():
        print(f"{name}: {statistics.median(ts):.1f} s (median of {len(ts)})")
    rel = float((new - old).norm() / old.norm())
    print(f"activations agree to {rel:.1e} relative (max abs {float((new - old).abs().max()):.1e})")

    rows = FidelitySpec.batch_size
    budgets = {"none": 10**9, **{b: int(b) for b in args.budgets.split(",")}}
    runs: dict[str, list[float]] = {b: [] for b in budgets}
    for _ in range(args.repeats):
        for name, budget in budgets.items():
            t = time.perf_counter()
            acts = last_token_resid(model, texts, batch_size=rows, max_tokens=budget)
            runs[name].append(time.perf_counter() - t)
            if name == "none":
                ref = acts
    for name, ts in runs.items():
        print(
            f"at most {rows} texts a pass, token budget {name}: {statistics.median(ts):.1f} s (median of {len(ts)})"
        )
    print(f"the last budget's activations agree to {float((acts - ref).norm() / ref.norm()):.1e} relative")


if __name__ == "__main__":
    main()
