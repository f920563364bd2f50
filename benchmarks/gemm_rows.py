"""How fast a decode step's matrix products run, by the rows the step carries (CPU planning for long studies).

A decode step multiplies [rows × d_model] activations by the model's weights; on a CPU the rate of those
products grows with the rows, so the batch a study decodes sets its speed more than anything else. This prints
GFLOP/s of ``F.linear`` at a model's MLP and unembedding shapes for each row count (random weights: the rate
does not depend on the values). The defaults are Qwen2.5-Coder-0.5B's shapes, the ITS study's child:

    python benchmarks/gemm_rows.py --threads 2
    python benchmarks/gemm_rows.py --threads 2 --d-model 576 --d-mlp 1536 --vocab 49152   # SmolLM2-135M
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F


def rate(rows: int, weight: torch.Tensor, repeats: int) -> float:
    """GFLOP/s of one [rows × in] @ [in × out] product, the median of ``repeats`` timed calls after a warm-up."""
    x = torch.randn(rows, weight.shape[1])
    F.linear(x, weight)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        F.linear(x, weight)
        times.append(time.perf_counter() - t)
    return 2 * rows * weight.numel() / sorted(times)[len(times) // 2] / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--d-model", type=int, default=896)
    ap.add_argument("--d-mlp", type=int, default=4864)
    ap.add_argument("--vocab", type=int, default=151936)
    ap.add_argument("--rows", default="8,40,64,80,128,160,256")
    ap.add_argument("--repeats", type=int, default=11)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"machine: torch {torch.__version__}, {torch.get_num_threads()} threads")
    shapes = {
        f"MLP ({args.d_model} -> {args.d_mlp})": torch.randn(args.d_mlp, args.d_model),
        f"unembedding ({args.d_model} -> {args.vocab})": torch.randn(args.vocab, args.d_model),
    }
    rows = [int(r) for r in args.rows.split(",")]
    print("| rows | " + " | ".join(str(r) for r in rows) + " |")
    print("|---" * (len(rows) + 1) + "|")
    for name, w in shapes.items():
        print(f"| {name} GFLOP/s | " + " | ".join(f"{rate(r, w, args.repeats):.0f}" for r in rows) + " |")


if __name__ == "__main__":
    main()
