"""Two long jobs on a 2-core CPU: one process on both cores, or one process a core? (study scheduling)

The fidelity study and the ITS study each take CPU hours. Run one after the other, each would use both cores;
run side by side, each should get one thread (an OpenMP team that loses a core to another process waits at
every barrier). Which order does more work in an hour depends on how well a model's forward scales from one
thread to two, so this measures it: the same forward (``--rows`` random sequences of ``--tokens`` tokens, fp32)
in one process of ``--cores`` threads, in one process of one thread, and in ``--cores`` processes of one thread
at once, and prints each one's tokens/s and the side-by-side total over the single process's:

    python benchmarks/threads.py --model smollm2-135m
    python benchmarks/threads.py --model qwen2.5-coder-0.5b --rows 40 --tokens 1   # a decode-sized step

Nothing else should run meanwhile (pause other jobs with ``kill -STOP``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time


def worker(model: str, threads: int, rows: int, tokens: int, seconds: float) -> None:
    """Load, say ready, wait for the go line, then run forwards for ``seconds`` and print tokens/s as JSON."""
    import torch

    from xsteer.core.models import load_model

    torch.set_num_threads(threads)
    m = load_model(model, device="cpu")
    ids = torch.randint(100, 5000, (rows, tokens))
    with torch.inference_mode():
        m(ids, return_type="logits")  # warm-up
        print("ready", flush=True)
        sys.stdin.readline()
        n, t0 = 0, time.perf_counter()
        while n == 0 or time.perf_counter() - t0 < seconds:
            m(ids, return_type="logits")
            n += 1
        dt = time.perf_counter() - t0
    print(json.dumps({"tokens_per_s": n * rows * tokens / dt, "forwards": n, "seconds": dt}), flush=True)


def run_together(args: argparse.Namespace, threads: list[int]) -> list[float]:
    """One worker per entry of ``threads``, started together once all have loaded; their tokens/s."""
    cmd = [sys.executable, __file__, "--worker", "--model", args.model, "--rows", str(args.rows)]
    cmd += ["--tokens", str(args.tokens), "--seconds", str(args.seconds)]
    procs = [
        subprocess.Popen(
            cmd + ["--threads", str(t)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        for t in threads
    ]
    for p in procs:  # each prints "ready" once its model is loaded and warm
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    out = [json.loads(p.communicate()[0].strip().splitlines()[-1])["tokens_per_s"] for p in procs]
    if any(p.returncode for p in procs):
        raise SystemExit("a worker failed")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--rows", type=int, default=32)
    ap.add_argument("--tokens", type=int, default=96)
    ap.add_argument("--seconds", type=float, default=60.0, help="timed forwards per configuration")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.model, args.threads, args.rows, args.tokens, args.seconds)
        return
    print("config:", json.dumps({k: v for k, v in vars(args).items() if k not in ("worker", "threads")}))
    (whole,) = run_together(args, [args.cores])
    (single,) = run_together(args, [1])
    side = run_together(args, [1] * args.cores)
    print("| configuration | tokens/s | over one process of all cores |")
    print("|---|---|---|")
    print(f"| one process, {args.cores} threads | {whole:.0f} | 1.00 |")
    print(f"| one process, 1 thread | {single:.0f} | {single / whole:.2f} |")
    each = ", ".join(f"{r:.0f}" for r in side)
    print(
        f"| {args.cores} processes of 1 thread at once (each: {each}) | {sum(side):.0f} | {sum(side) / whole:.2f} |"
    )


if __name__ == "__main__":
    main()
