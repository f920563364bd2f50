"""Time the fidelity instrument's readouts: many vectors per batched pass against one vector at a time.

    python benchmarks/fidelity_cell.py --child smollm2-135m --vectors 32 --repeats 3

Reads the sentiment readout (36 probes × the instrument's 4 λ) for ``--vectors`` random child directions on the
steered layers (the central third, as the study steers) at the child's residual norm, three ways, interleaved
``--repeats`` times:

* ``shared``: every row carrying its own vector in large batches, and the blocks below the first steered layer
  run once per distinct probe of a batch (:meth:`WordLogOdds.read_stack`, what the instrument does);
* ``stacked``: the same batches with every row run through every block (the instrument before the sharing);
* ``one at a time``: one vector per call with its batch of 32 rows (the instrument before that).

With ``--concept corrupted_answer`` (GSM8K probes from ``--data-dir``, ``--probes`` of them) it times the
answer readout, log p(gold) − log p(wrong) after a ~160-token solution:

* ``shared``: :meth:`AnswerLogOdds.read_stack`: the gold and the wrong answer of one (probe, vector, λ) read one
  prefill of the context from the KV cache, and the (vector, λ) of one probe share its blocks below the first
  steered layer;
* ``stacked``: every row, context and answer, run whole as one sequence through every block (the readout before
  either sharing);
* ``one at a time``: one vector per call (:func:`xsteer.core.likelihood.continuation_logprobs`).

Prints the medians, the ratios, rows per second, the projected time of one measurement's target readout
(``--cell-vectors`` vectors, 175 with K = 50 placebos, R = 20 replicates of both maps and two maps) and how far
the ways' readouts lie apart. ``--skip-one-at-a-time`` leaves out the slowest way (a Qwen child).
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any
from unittest import mock

import einops
import torch

from xsteer.app.fidelity import steered_layers
from xsteer.core.models import load_model
from xsteer.core.vectors import SteeringVectors
from xsteer.evaluation.fidelity import AnswerLogOdds, WordLogOdds, answer_concept
from xsteer.evaluation.instrument import LAMBDAS
from xsteer.tasks.concepts import load_concept


@torch.inference_mode()
def whole_rows(
    model, readout: AnswerLogOdds, stack: torch.Tensor, layers: list[int], batch_size: int
) -> torch.Tensor:
    """The answer readout with every row, context and answer, run as one sequence through every block."""
    from xsteer.core.inject import steer_rows
    from xsteer.core.models import native_attention

    tok, n_p, m = model.tokenizer, len(readout.probes), stack.shape[0]
    grid = [(p, v, j, a) for p in range(n_p) for v in range(m) for j in range(len(LAMBDAS)) for a in (0, 1)]
    seqs, ks = [], []
    for p, _, _, a in grid:
        probe = readout.probes[p]
        ans = tok((probe.gold, probe.wrong)[a], add_special_tokens=False).input_ids
        seqs.append(tok(probe.context).input_ids + ans)
        ks.append(len(ans))
    out = torch.empty(len(grid))
    with native_attention(model):
        for start in range(0, len(grid), batch_size):
            rows = range(start, min(start + batch_size, len(grid)))
            width = max(len(seqs[i]) for i in rows)
            ids = torch.zeros(len(rows), width, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for r, i in enumerate(rows):  # left padding: every row's last token is at -1
                ids[r, width - len(seqs[i]) :] = torch.tensor(seqs[i])
                mask[r, width - len(seqs[i]) :] = 1
            with steer_rows(
                model,
                stack[[grid[i][1] for i in rows]],
                lam=[LAMBDAS[grid[i][2]] for i in rows],
                layers=layers,
            ):
                logits = model(ids, attention_mask=mask)
            lp = torch.log_softmax(logits[:, :-1].float(), dim=-1).gather(-1, ids[:, 1:, None])[..., 0]
            for r, i in enumerate(rows):
                out[i] = lp[r, width - 1 - ks[i] :].sum()
    return einops.rearrange(out[0::2] - out[1::2], "(p m j) -> m j p", p=n_p, m=m, j=len(LAMBDAS))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", default="smollm2-135m")
    ap.add_argument("--vectors", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64, help="rows per forward of the stacked reading")
    ap.add_argument("--cell-vectors", type=int, default=175)
    ap.add_argument("--concept", default="sentiment", choices=["sentiment", "corrupted_answer"])
    ap.add_argument("--data-dir", default="../shared/data", help="GSM8K for --concept corrupted_answer")
    ap.add_argument("--probes", type=int, default=32, help="answer probes (--concept corrupted_answer)")
    ap.add_argument("--skip-one-at-a-time", action="store_true")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model(args.child)
    answers = args.concept == "corrupted_answer"
    if answers:
        readout: Any = AnswerLogOdds(answer_concept(data_dir=args.data_dir, n_probes=args.probes).probes)
    else:
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
        if answers:
            return whole_rows(model, readout, stack, layers, args.batch_size)
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
        + (", the corrupted_answer readout" if answers else "")
    )
    for _ in range(args.repeats):
        for name, fn in ways.items():
            t0 = time.perf_counter()
            outs[name] = fn()
            times[name].append(time.perf_counter() - t0)
    rows = args.vectors * len(LAMBDAS) * len(readout.probes) * (2 if answers else 1)
    med = {k: statistics.median(v) for k, v in times.items()}
    for k, v in med.items():
        print(
            f"{k}: {v:.1f} s for {args.vectors} vectors ({rows / v:.0f} rows/s; runs {[round(x, 1) for x in times[k]]})"
        )
    what = "the context prefill and " if answers else ""
    print(
        f"speed-up of sharing {what}the blocks below the steered layers: {med['stacked'] / med['shared']:.2f}x"
    )
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
