"""Time the fidelity instrument's readouts: many vectors per batched pass against one vector at a time.

    python benchmarks/fidelity_cell.py --child smollm2-135m --vectors 32 --repeats 3

Reads the sentiment readout (36 probes × the instrument's 4 λ) for ``--vectors`` random child directions at the
child's residual norm, two ways, interleaved ``--repeats`` times: every row carrying its own vector in large
batches (:meth:`WordLogOdds.read_stack`, what the instrument does), and one vector per call (the previous
instrument's loop, with its batch of 32 rows). Prints both medians, the ratio, rows per second, the projected
time of one measurement (``--cell-vectors`` vectors, ~167 with K = 50 placebos and R = 20 replicates) and that
the two ways give the same readouts.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from xsteer.core.models import load_model
from xsteer.core.vectors import SteeringVectors
from xsteer.evaluation.fidelity import WordLogOdds
from xsteer.evaluation.instrument import LAMBDAS
from xsteer.tasks.concepts import load_concept


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", default="smollm2-135m")
    ap.add_argument("--vectors", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64, help="rows per forward of the stacked reading")
    ap.add_argument("--cell-vectors", type=int, default=167)
    args = ap.parse_args()
    model = load_model(args.child)
    readout = WordLogOdds(load_concept("sentiment"), model.tokenizer)
    n_layers, d = model.cfg.n_layers, model.cfg.d_model
    layers = list(range(n_layers // 3, 2 * n_layers // 3))
    g = torch.Generator().manual_seed(0)
    stack = torch.zeros(args.vectors, n_layers, d)
    stack[:, layers] = torch.randn(args.vectors, len(layers), d, generator=g)
    stack = stack / stack.norm(dim=-1, keepdim=True).clamp_min(1e-30) * 20.0

    def stacked() -> torch.Tensor:
        return readout.read_stack(model, stack, LAMBDAS, layers=layers, batch_size=args.batch_size)

    def one_at_a_time() -> torch.Tensor:
        return torch.stack(
            [
                readout(model, SteeringVectors(stack[i], model.cfg.model_name, "x", tuple(layers)), LAMBDAS)
                for i in range(args.vectors)
            ]
        )

    times: dict[str, list[float]] = {"stacked": [], "one at a time": []}
    outs = {}
    for _ in range(args.repeats):
        for name, fn in (("stacked", stacked), ("one at a time", one_at_a_time)):
            t0 = time.perf_counter()
            outs[name] = fn()
            times[name].append(time.perf_counter() - t0)
    rows = args.vectors * len(LAMBDAS) * len(readout.probes)
    med = {k: statistics.median(v) for k, v in times.items()}
    for k, v in med.items():
        print(
            f"{k}: {v:.1f} s for {args.vectors} vectors ({rows / v:.0f} rows/s; runs {[round(x, 1) for x in times[k]]})"
        )
    print(f"speed-up of many vectors per pass: {med['one at a time'] / med['stacked']:.2f}x")
    per_vector = med["stacked"] / args.vectors
    print(
        f"one measurement's target readout ({args.cell_vectors} vectors) projected: {per_vector * args.cell_vectors / 60:.1f} min"
    )
    print(
        f"max |difference| between the two ways: {float((outs['stacked'] - outs['one at a time']).abs().max()):.2e}"
    )


if __name__ == "__main__":
    main()
