"""Time the fidelity instrument's readouts: many vectors per batched pass against one vector at a time.

    python benchmarks/fidelity_cell.py --child smollm2-135m --vectors 32 --repeats 3

Reads the sentiment readout (36 probes × the instrument's 4 λ) for ``--vectors`` random child directions on the
steered layers (the central third, as the study steers) at the child's residual norm, three ways, interleaved
``--repeats`` times:

* ``shared``: every row carrying its own vector in large batches, and the blocks below the first steered layer
  run once per distinct probe of a batch (:meth:`WordLogOdds.read_stack`, what the instrument does);
* ``stacked``: the same batches with every row run through every block (the instrument before the sharing);
* ``one at a time``: one vector per call with its batch of 32 rows (the instrument before that).

Prints the medians, the ratios, rows per second, the projected time of one measurement's target readout
(``--cell-vectors`` vectors, 155 with K = 50 placebos, R = 20 replicates and two maps) and how far the three
ways' readouts lie apart. ``--skip-one-at-a-time`` leaves out the slowest way (a Qwen child).
"""

from __future__ import annotations

import argparse
import statistics
import time
from unittest import mock

import torch

from xsteer.app.fidelity import steered_layers
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
    ap.add_argument("--cell-vectors", type=int, default=155)
    ap.add_argument("--skip-one-at-a-time", action="store_true")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model(args.child)
    readout = WordLogOdds(load_concept("sentiment"), model.tokenizer)
    n_layers, d = model.cfg.n_layers, model.cfg.d_model
    layers = steered_layers("middle", n_layers)
    g = torch.Generator().manual_seed(0)
    stack = torch.zeros(args.vectors, n_layers, d)
    stack[:, layers] = torch.randn(args.vectors, len(layers), d, generator=g)
    stack = stack / stack.norm(dim=-1, keepdim=True).clamp_min(1e-30) * 20.0

    def shared() -> torch.Tensor:
        return readout.read_stack(model, stack, LAMBDAS, layers=layers, batch_size=args.batch_size)

    def stacked() -> torch.Tensor:
        with mock.patch(
            "xsteer.core.activations._entering", lambda *a: None
        ):  # every row through every block
            return readout.read_stack(model, stack, LAMBDAS, layers=layers, batch_size=args.batch_size)

    def one_at_a_time() -> torch.Tensor:
        return torch.stack(
            [
                readout(model, SteeringVectors(stack[i], model.cfg.model_name, "x", tuple(layers)), LAMBDAS)
                for i in range(args.vectors)
            ]
        )

    ways = {"shared": shared, "stacked": stacked, "one at a time": one_at_a_time}
    if args.skip_one_at_a_time:
        del ways["one at a time"]
    times: dict[str, list[float]] = {k: [] for k in ways}
    outs = {}
    print(
        f"{args.child}: {args.vectors} vectors x {len(LAMBDAS)} λ x {len(readout.probes)} probes, layers "
        f"{layers[0]}..{layers[-1]} of {n_layers}, batch {args.batch_size}, {torch.get_num_threads()} threads"
    )
    for _ in range(args.repeats):
        for name, fn in ways.items():
            t0 = time.perf_counter()
            outs[name] = fn()
            times[name].append(time.perf_counter() - t0)
    rows = args.vectors * len(LAMBDAS) * len(readout.probes)
    med = {k: statistics.median(v) for k, v in times.items()}
    for k, v in med.items():
        print(
            f"{k}: {v:.1f} s for {args.vectors} vectors ({rows / v:.0f} rows/s; runs {[round(x, 1) for x in times[k]]})"
        )
    print(f"speed-up of sharing the blocks below the steered layers: {med['stacked'] / med['shared']:.2f}x")
    if "one at a time" in med:
        print(f"speed-up of many vectors per pass: {med['one at a time'] / med['stacked']:.2f}x")
        print(f"speed-up of both over one at a time: {med['one at a time'] / med['shared']:.2f}x")
    per_vector = med["shared"] / args.vectors
    print(
        f"one measurement's target readout ({args.cell_vectors} vectors) projected: {per_vector * args.cell_vectors / 60:.1f} min"
    )
    for other in [k for k in outs if k != "shared"]:
        print(
            f"max |difference| shared vs {other}: {float((outs['shared'] - outs[other]).abs().max()):.2e} nats"
        )


if __name__ == "__main__":
    main()
