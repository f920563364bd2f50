"""The paper's ITS claim, tested on a child above the floor: the λ-vote against self-consistency.

One evaluation of the child with every condition on one λ grid (so the baseline, the child's own vector, the
random control and self-consistency are run once, not once per parent):

* two parents' mapped vectors (same family: Qwen2.5-Coder-1.5B; other family: Gemma-3-270M), each through a
  proportional × ridge map fitted on the task's train texts, and the child's own vector, all at
  ``resid_mean`` (λ is a share of the child's residual norm at each steered layer);
* a random direction of equal norm, voted over the same grid;
* self-consistency: as many T = 0.7 samples as λ values, voted the same way (equal compute);
* Algorithm 2 (λ* on validation) and Algorithm 3 (test at λ*, ITS over the grid), greedy, steering at
  positions=generated (one prefill per item shared by the whole grid).

Resumable (records on disk; hashed per condition, so a parent added to a finished folder runs only its own
rows); progress lines go to stderr, so `nohup ... > log` shows them. Then
`python analysis/its_report.py FOLDER` writes the tables and the votes figure.

    python analysis/its_study.py --child qwen2.5-coder-0.5b --task synthetic --test-items 384 --out runs/its-synthetic
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from xsteer.app import steps
from xsteer.app.config import PairsSpec, TransferSpec
from xsteer.core.io import write_json_atomic
from xsteer.core.models import load_model, runtime
from xsteer.core.vectors import SteeringVectors
from xsteer.evaluation.conditions import build_conditions
from xsteer.evaluation.plan import EvalPlan
from xsteer.transfer.maps import TransferMap


def geometric_grid(lo: float, hi: float, n: int) -> tuple[float, ...]:
    """``n`` λ values from ``lo`` to ``hi``, evenly spaced on a log scale (3 significant digits)."""
    return tuple(float(f"{lo * (hi / lo) ** (i / (n - 1)):.3g}") for i in range(n))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", default="qwen2.5-coder-0.5b")
    ap.add_argument("--parents", nargs="+", default=["qwen2.5-coder-1.5b", "gemma3-270m"])
    ap.add_argument("--task", default="synthetic")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--shots", type=int, default=2)
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--lam-lo", type=float, default=0.002)
    ap.add_argument("--lam-hi", type=float, default=0.2)
    ap.add_argument("--n-lambdas", type=int, default=19)
    ap.add_argument("--layers", default="middle", help="steered child layers: all, middle or a-b")
    ap.add_argument("--val-items", type=int, default=48)
    ap.add_argument("--test-items", type=int, default=384)
    ap.add_argument("--n-pairs", type=int, default=64)
    ap.add_argument(
        "--fit-text", default=None, help="TASK:SPLIT:N (default: the task's train split, 384 texts)"
    )
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--native",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the child-native vector's ITS control (--no-native saves a quarter of a 19-λ run)",
    )
    ap.add_argument(
        "--device",
        default=None,
        help="cpu, cuda, cuda:N (default: a GPU when there is one; bf16 there, fp32 on CPU)",
    )
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    from xsteer.app.fidelity import steered_layers

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    lambdas = geometric_grid(args.lam_lo, args.lam_hi, args.n_lambdas)
    # The study's recorded settings, positions="generated" among them (not the plan's default "all"): its
    # records were made so, and a rerun into the same folder must hash the same to resume.
    plan = EvalPlan(
        shots=args.shots,
        lambdas=lambdas,
        positions="generated",
        max_new_tokens=args.max_new_tokens,
        seed=args.seed,
        val_items=args.val_items,
        test_items=args.test_items,
        batch_size=args.batch_size,
    )
    pairs_spec = PairsSpec(builder="corrupted_answer", n=args.n_pairs, split="train", method="pca")
    transfer = TransferSpec(
        layer_map="proportional",
        width_map="ridge",
        fit_text=args.fit_text or f"{args.task}:train:384",
        norm="resid_mean",
    )

    def log(msg: str) -> None:
        print(f"[{time.time() - t0:7.0f} s] {msg}", flush=True)

    child = load_model(args.child, device=args.device)
    vecs_dir = out / "vectors"
    native_path = vecs_dir / "native.safetensors"
    if args.native and not native_path.exists():
        pairs = steps.make_pairs(
            child, args.task, pairs_spec, data_dir=args.data_dir, seed=args.seed, shots=args.shots
        )
        steps.make_vectors(child, pairs, seed=args.seed, progress=False).save(native_path)
        log(f"native vectors: {native_path}")
    vectors: dict[str, SteeringVectors] = {}
    norms = None
    for parent_spec in args.parents:
        name = parent_spec
        vpath, mpath = vecs_dir / f"{name}.safetensors", vecs_dir / f"{name}.map.safetensors"
        if not (vpath.exists() and mpath.exists()):
            parent = load_model(parent_spec, device=args.device)
            pairs = steps.make_pairs(
                parent, args.task, pairs_spec, data_dir=args.data_dir, seed=args.seed, shots=args.shots
            )
            steps.make_vectors(parent, pairs, seed=args.seed, progress=False).save(vpath)
            steps.make_map(parent, child, transfer, data_dir=args.data_dir, seed=args.seed).save(mpath)
            del parent
            log(f"{parent_spec}: vectors and map")
        tmap = TransferMap.load(mpath)
        vectors[name] = tmap.apply(SteeringVectors.load(vpath), norm="resid_mean")
        norms = tmap.child_resid_norm
    layers = steered_layers(args.layers, child.cfg.n_layers)
    if args.native:
        vectors["native"] = SteeringVectors.load(native_path)
    vectors = {k: v.replace(layers=tuple(x for x in layers if x in v.layers)) for k, v in vectors.items()}
    conditions = build_conditions(vectors, random=plan.random, seed=args.seed, norm="resid_mean", norms=norms)
    val, test = steps.load_splits(args.task, plan, data_dir=args.data_dir)
    n_gen = len(val) * len(lambdas) * (len(conditions) - 1) + len(test) * (1 + len(lambdas) * len(conditions))
    write_json_atomic(
        out / "study.json",
        {
            **vars(args),
            "lambdas": lambdas,
            "steered_layers": layers,
            "conditions": list(conditions),
            "planned_generations": n_gen,
            "runtime": runtime(child),
        },
    )
    log(
        f"{len(val)} validation and {len(test)} test items, {len(lambdas)} λ from {lambdas[0]} to {lambdas[-1]}, "
        f"conditions {list(conditions)} + self_consistency: {n_gen} generations"
    )
    summary = steps.run_evaluation(
        child,
        conditions,
        plan,
        task=args.task,
        data_dir=args.data_dir,
        out=out / "eval",
        splits=(val, test),
        extra={"child": args.child, "parents": args.parents},
    )
    write_json_atomic(out / "eval" / "wall.json", {"seconds": round(time.time() - t0, 1)})
    log(f"done: λ* = {summary.lambda_star}")
    print((out / "eval" / "summary.md").read_text())


if __name__ == "__main__":
    main()
