"""What bf16 buys on this CPU, and what it changes: one model loaded in fp32 and in bf16 (``XSTEER_DTYPE``).

    HF_HUB_OFFLINE=1 python benchmarks/dtype.py --model smollm2-135m --threads 2

Two workloads, each timed in both dtypes, interleaved ``--repeats`` times (medians printed):

* the fidelity instrument's target readout (:meth:`WordLogOdds.read_stack`): the sentiment readout's probes × the
  instrument's 4 λ for a stack of the model's own sentiment vector (mean difference of its pairs), ``--vectors``
  random directions and a zero vector (the unsteered baseline), each at the model's mean residual norm on the
  steered layers, as the study scales them;
* greedy generation (:func:`xsteer.core.generate.generate`) of ``--new-tokens`` tokens for ``--prompts``
  synthetic-task prompts in one batch, as the ITS study decodes.

Then what bf16 changes: the largest readout difference, each vector's signed effect (the quantity fidelity
divides) in both dtypes, and the share of greedy texts that come out identical.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch
from _common import setup

from xsteer.app.fidelity import steered_layers
from xsteer.core.activations import last_token_resid
from xsteer.core.generate import generate
from xsteer.core.models import load_model
from xsteer.evaluation.fidelity import WordLogOdds, signed_effect
from xsteer.evaluation.instrument import LAMBDAS, mean_diff, scaled
from xsteer.tasks import get_task
from xsteer.tasks.concepts import load_concept
from xsteer.tasks.prompts import render


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--vectors", type=int, default=15, help="random directions read beside the model's own")
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=48)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.set_defaults(dtype="float32")  # _common.setup loads the reference in it, whatever $XSTEER_DTYPE says
    args, ref = setup(ap)
    models = {"float32": ref, "bfloat16": load_model(args.model, device=args.device, dtype=torch.bfloat16)}
    concept = load_concept("sentiment")
    readout = WordLogOdds(concept, ref.tokenizer)
    n_layers, d = ref.cfg.n_layers, ref.cfg.d_model
    layers = steered_layers("middle", n_layers)
    # The vectors come from the fp32 model, so both dtypes read the very same stack.
    pos = last_token_resid(ref, [p for p, _ in concept.pairs])
    neg = last_token_resid(ref, [n for _, n in concept.pairs])
    g = torch.Generator().manual_seed(0)
    raw = torch.cat(
        [
            mean_diff(pos, neg)[None],
            torch.randn(args.vectors, n_layers, d, generator=g),
            torch.zeros(1, n_layers, d),  # scaled keeps it zero: the unsteered baseline
        ]
    )
    stack = scaled(raw, layers, torch.cat([pos, neg]), "resid_mean")
    task = get_task("synthetic")
    prompts = [
        render(ref.tokenizer, task.messages(ex, task.shots(2), system=False))
        for ex in task.load("test", limit=args.prompts)
    ]

    def read(model: Any) -> torch.Tensor:
        return readout.read_stack(model, stack, LAMBDAS, layers=layers, batch_size=args.batch_size)

    def decode(model: Any) -> list[str]:
        out = generate(model, prompts, max_new_tokens=args.new_tokens, batch_size=len(prompts))
        return [x.text for x in out]

    times: dict[tuple[str, str], list[float]] = {}
    outs: dict[tuple[str, str], Any] = {}
    for _ in range(args.repeats):
        for work, fn in (("readout", read), ("generation", decode)):
            for name, model in models.items():
                t0 = time.perf_counter()
                outs[work, name] = fn(model)
                times.setdefault((work, name), []).append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    rows = stack.shape[0] * len(LAMBDAS) * len(readout.probes)
    print(f"{args.model}: layers {layers[0]}..{layers[-1]} of {n_layers} steered")
    for work, unit in (
        ("readout", f"{rows} rows"),
        ("generation", f"{args.prompts} x {args.new_tokens} tokens"),
    ):
        a, b = med[work, "float32"], med[work, "bfloat16"]
        print(f"{work} ({unit}): fp32 {a:.1f} s, bf16 {b:.1f} s, bf16 {a / b:.2f}x as fast")
    r32, r16 = outs["readout", "float32"], outs["readout", "bfloat16"]
    print(f"readout: max |bf16 - fp32| {float((r16 - r32).abs().max()):.3f} nats")
    for name, r in (("fp32", r32), ("bf16", r16)):
        effects = [float(signed_effect(r[i] - r[-1], LAMBDAS).mean()) for i in range(stack.shape[0] - 1)]
        print(
            f"signed effect ({name}): own sentiment vector {effects[0]:+.3f}; random directions "
            f"{' '.join(f'{e:+.3f}' for e in effects[1:])}"
        )
    t32, t16 = outs["generation", "float32"], outs["generation", "bfloat16"]
    print(
        f"generation: {sum(a == b for a, b in zip(t32, t16, strict=True))} of {len(t32)} greedy texts identical"
    )


if __name__ == "__main__":
    main()
