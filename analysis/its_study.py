"""The paper's ITS claim (Tandon 2025, §4.3), tested so that its author would accept the test (issue #30).

One child, one task, item-major: each chunk of test items runs every arm before the next chunk starts, so a
study stopped at any point holds complete, paired items for all arms. The arms:

* ``paper:<parent>`` — the paper-literal arm (the ``paper`` preset, ``EvalPlan.paper()``): the parent's
  unit-norm PCA PC1 through greedy n -> n layers and truncate/pad widths, at every position, voted over the
  paper's 19 λ; λ* (Algorithm 2) on the validation items;
* ``<parent>`` — the greedy λ-vote over the parent's vector through proportional × ridge at ``resid_mean``
  (λ a share of the child's residual norm, a geometric grid of K values over the steered layers);
* ``<parent>@T0.7`` — the same vote with each λ sampled at T = 0.7;
* ``self_consistency`` — K samples at T = 0.7, unsteered;
* ``random``, ``random#1`` … — the λ-vote over R random directions of the parent vector's norm per layer (each
  its own arm; the report pools them);
* ``native`` — the λ-vote over the child's own PCA vector;
* ``baseline`` — one greedy unsteered generation.

Every vote arm has K generations per item (the paper arm 19); generated tokens are recorded per slot.

Results as data: ``--results`` (default ``analysis/results/its_study/<name>``) gets ``study.json`` (settings,
λ grids, λ*), ``items.jsonl`` (one compact line per item and arm: answers, correctness, tokens; no
completions), ``timing.jsonl`` (seconds, generations and tokens per chunk and arm) and ``validation.jsonl``
(the paper arm's validation generations, from which λ* resumes on another machine). Lines are appended
and fsynced per chunk, a torn last line is dropped on the next start, and a rerun skips the (item, arm)
lines already there: nothing is lost or written twice on a kill. The generations themselves (completions)
go to ``--work`` (default ``runs/its/<name>``, not committed), one record file per chunk, so a chunk killed
half-way resumes from its last batch. Progress: ``<work>/progress.log``. Then
``python analysis/its_report.py RESULTS`` writes the report.

    python analysis/its_study.py --name synthetic-qwen0.5b --child qwen2.5-coder-0.5b --task synthetic \\
        --test-items 384 --n-lambdas 19
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path
from typing import Any

import torch

from xsteer.app import steps
from xsteer.app.config import PairsSpec, TransferSpec
from xsteer.core.io import write_json_atomic
from xsteer.core.models import load_model, runtime
from xsteer.core.vectors import SteeringVectors
from xsteer.evaluation.conditions import build_conditions, random_controls
from xsteer.evaluation.evaluate import Evaluator
from xsteer.evaluation.its import compact
from xsteer.evaluation.plan import PRESETS, EvalPlan
from xsteer.evaluation.records import RecordStore
from xsteer.evaluation.summary import BASELINE, SELF_CONSISTENCY
from xsteer.transfer.maps import TransferMap

ROOT = Path(__file__).resolve().parents[1]


def geometric_grid(lo: float, hi: float, n: int) -> tuple[float, ...]:
    """``n`` λ values from ``lo`` to ``hi``, evenly spaced on a log scale (3 significant digits)."""
    if n == 1:
        return (lo,)
    return tuple(float(f"{lo * (hi / lo) ** (i / (n - 1)):.3g}") for i in range(n))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--name", required=True, help="the study's name: its results and work folders")
    ap.add_argument("--child", default="qwen2.5-coder-0.5b")
    ap.add_argument("--parents", nargs="+", default=["qwen2.5-coder-1.5b", "gemma3-270m"])
    ap.add_argument("--task", default="synthetic")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--shots", type=int, default=5, help="the paper's 5 (§4)")
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--lam-lo", type=float, default=0.002)
    ap.add_argument("--lam-hi", type=float, default=0.2)
    ap.add_argument(
        "--n-lambdas", type=int, default=19, help="K: votes per item of every arm but the paper's"
    )
    ap.add_argument("--positions", choices=["all", "generated"], default="all")
    ap.add_argument("--layers", default="middle", help="steered child layers of the resid_mean arms")
    ap.add_argument("--random-draws", type=int, default=5)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--paper", action=argparse.BooleanOptionalAction, default=True, help="the paper arm")
    ap.add_argument("--val-items", type=int, default=32, help="Algorithm 2's items for the paper arm's λ*")
    ap.add_argument("--test-items", type=int, default=None, help="default: the whole test split")
    ap.add_argument("--chunk", type=int, default=8, help="test items per chunk (all arms run per chunk)")
    ap.add_argument("--n-pairs", type=int, default=64)
    ap.add_argument("--fit-text", default=None, help="TASK:SPLIT:N (default: the task's train split, 384)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: a GPU when there is one)")
    ap.add_argument("--results", default=None, help="default: analysis/results/its_study/NAME")
    ap.add_argument("--work", default=None, help="default: runs/its/NAME")
    return ap.parse_args(argv)


class Study:
    """Builds the arms once, then runs chunks of test items through all of them."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.results = Path(args.results or ROOT / "analysis" / "results" / "its_study" / args.name)
        self.work = Path(args.work or ROOT / "runs" / "its" / args.name)
        self.results.mkdir(parents=True, exist_ok=True)
        (self.work / "chunks").mkdir(parents=True, exist_ok=True)
        self.items = RecordStore(self.results / "items.jsonl")  # drops a torn last line
        self.timing = RecordStore(self.results / "timing.jsonl")
        self.t0 = time.time()
        self.lambdas = geometric_grid(args.lam_lo, args.lam_hi, args.n_lambdas)
        common = dict(
            shots=args.shots,
            max_new_tokens=args.max_new_tokens,
            seed=args.seed,
            test_items=args.test_items,
            batch_size=args.batch_size,
        )
        self.plan = EvalPlan(
            lambdas=self.lambdas,
            positions=args.positions,
            sc_temperature=args.temperature,
            val_items=0,
            **common,
        )
        # The paper's plan at the study's shots and length, so that the study's baseline is the paper arm's too.
        self.paper_plan = EvalPlan.paper(val_items=args.val_items, **common)

    def log(self, msg: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')} {time.time() - self.t0:7.0f} s] {msg}"
        print(line, flush=True)
        with open(self.work / "progress.log", "a", encoding="utf-8") as f:
            f.write(line + "\n")

    # -- vectors and arms
    def _parent_vectors(self, spec: str, pairs_spec: PairsSpec, child: Any) -> tuple[Path, dict[str, Path]]:
        a, vecs = self.args, self.work / "vectors"
        stem = re.sub(r"[^\w.-]+", "_", spec)  # hub ids and paths have slashes
        vpath = vecs / f"{stem}.safetensors"
        maps = {
            "ridge": vecs / f"{stem}.map.safetensors",
            "paper": vecs / f"{stem}.paper-map.safetensors",
        }
        todo = not vpath.exists() or not maps["ridge"].exists() or (a.paper and not maps["paper"].exists())
        if todo:
            parent = load_model(spec, device=a.device)
            if not vpath.exists():
                pairs = steps.make_pairs(
                    parent, a.task, pairs_spec, data_dir=a.data_dir, seed=a.seed, shots=a.shots
                )
                steps.make_vectors(parent, pairs, seed=a.seed, progress=False).save(vpath)
            fit = a.fit_text or f"{a.task}:train:384"
            specs = {"ridge": TransferSpec("proportional", "ridge", fit, "resid_mean")}
            if a.paper:
                paper = PRESETS["paper"]
                specs["paper"] = TransferSpec(paper.layer_map, paper.width_map, fit, paper.norm)
            for key, tspec in specs.items():
                if not maps[key].exists():
                    # Both maps, and every parent, share the fit texts: each model reads them once.
                    steps.make_map(
                        parent, child, tspec, data_dir=a.data_dir, seed=a.seed, cache=self.fit_acts
                    ).save(maps[key])
            del parent
            self.log(f"{spec}: vectors and maps")
        return vpath, maps

    def build(self) -> None:
        a = self.args
        self.child = child = load_model(a.child, device=a.device)
        self.fit_acts: dict[tuple[str, str], Any] = {}
        pairs_spec = PairsSpec(builder="corrupted_answer", n=a.n_pairs, split="train", method="pca")
        native_path = self.work / "vectors" / "native.safetensors"
        native_path.parent.mkdir(parents=True, exist_ok=True)
        if not native_path.exists():
            pairs = steps.make_pairs(
                child, a.task, pairs_spec, data_dir=a.data_dir, seed=a.seed, shots=a.shots
            )
            steps.make_vectors(child, pairs, seed=a.seed, progress=False).save(native_path)
            self.log(f"native vectors: {native_path}")
        from xsteer.app.fidelity import steered_layers

        layers = steered_layers(a.layers, child.cfg.n_layers)
        vectors: dict[str, SteeringVectors] = {}
        paper_vectors: dict[str, SteeringVectors] = {}
        norms = None
        for spec in a.parents:
            vpath, maps = self._parent_vectors(spec, pairs_spec, child)
            tmap = TransferMap.load(maps["ridge"])
            vectors[spec] = tmap.apply(SteeringVectors.load(vpath), norm="resid_mean")
            norms = tmap.child_resid_norm
            if a.paper:
                paper_vectors[f"paper:{spec}"] = TransferMap.load(maps["paper"]).apply(
                    SteeringVectors.load(vpath), norm=PRESETS["paper"].norm
                )
        vectors["native"] = SteeringVectors.load(native_path)
        vectors = {k: v.replace(layers=tuple(x for x in layers if x in v.layers)) for k, v in vectors.items()}
        conditions = build_conditions(vectors, random=False, seed=a.seed, norm="resid_mean", norms=norms)
        first = conditions[a.parents[0]]
        assert first is not None
        conditions.update(random_controls(first, a.random_draws, a.seed))
        self.sampled = {f"{p}@T{a.temperature:g}": p for p in a.parents}
        for name, parent in self.sampled.items():
            conditions[name] = conditions[parent]
        self.ev = Evaluator(
            child,
            self.plan.config(a.task),
            RecordStore(self.work / "chunks" / "setup.jsonl"),
            conditions,
            batch_size=a.batch_size,
            progress=False,
            data_dir=a.data_dir,
            sampled=frozenset(self.sampled),
        )
        self.paper_ev = None
        if a.paper:
            self.paper_ev = Evaluator(
                child,
                self.paper_plan.config(a.task),
                # Committed with the results: λ* takes hours on a CPU, and a study spanning sessions on machines
                # that do not outlive them resumes it from these records instead of starting it again.
                RecordStore(self.results / "validation.jsonl"),
                build_conditions(paper_vectors, random=False, norm=PRESETS["paper"].norm),
                batch_size=a.batch_size,
                progress=True,  # λ* is hours of generation before the first chunk logs a line
                data_dir=a.data_dir,
            )
        self.kinds = {BASELINE: "baseline", SELF_CONSISTENCY: "self_consistency"}
        self.kinds.update({f"paper:{p}": "paper" for p in a.parents if a.paper})
        self.kinds.update({p: "parent" for p in a.parents})
        self.kinds.update({s: "parent_sampled" for s in self.sampled})
        self.kinds.update({n: "random" for n in conditions if n.startswith("random")})
        self.kinds["native"] = "native"
        self.steered_layers = layers

    # -- Algorithm 2 for the paper arm
    def tune_paper(self) -> dict[str, Any]:
        if self.paper_ev is None:
            return {}
        val, _ = steps.load_splits(self.args.task, self.paper_plan, data_dir=self.args.data_dir, test=False)
        arms = [n for n, v in self.paper_ev.conditions.items() if v is not None]
        t = time.time()
        doc = self.paper_ev.tune_and_summarize(val, arms, baseline=True)
        self.log(
            f"paper arm, Algorithm 2 on {len(val)} validation items: λ* = {doc['lambda_star']} ({time.time() - t:.0f} s)"
        )
        return {
            "lambda_star": doc["lambda_star"],
            "val_items": len(val),
            "accuracy_by_lambda": doc["accuracy_by_lambda"],
        }

    # -- the test chunks
    def arms(self) -> list[str]:
        return list(self.kinds)

    def run_chunk(self, index: int, chunk: list[Any], done: set[tuple[str, str]]) -> int:
        """Every arm on these items; returns the number of new lines. Records go to this chunk's own file."""
        store = RecordStore(self.work / "chunks" / f"{index:05d}.jsonl")
        self.ev.store = store
        if self.paper_ev is not None:
            self.paper_ev.store = store
        new = 0
        for arm in self.arms():
            todo = [ex for ex in chunk if (ex.id, arm) not in done]
            if not todo:
                continue
            ev = self.paper_ev if self.kinds[arm] == "paper" else self.ev
            assert ev is not None
            t, cpu = time.time(), time.process_time()
            if arm == SELF_CONSISTENCY:
                ev.run("test", todo, arm, samples=len(self.lambdas))
            elif arm == BASELINE:
                ev.run("test", todo, arm)
            else:
                ev.run("test", todo, arm, ev.cfg.lambdas)
            rows = [r for r in store.load(ev.config_hash) if r["condition"] == arm and r["split"] == "test"]
            lines = [compact([r for r in rows if r["item"] == ex.id], arm) for ex in todo]
            # One fsynced append per (chunk, arm): a kill loses none of the lines already written, and a
            # torn last line is dropped on the next start, so that (chunk, arm) is redone from its records.
            self.items.append(lines)
            done.update((ex.id, arm) for ex in todo)
            self.timing.append(
                [
                    {
                        "chunk": index,
                        "arm": arm,
                        "items": len(todo),
                        "seconds": round(time.time() - t, 2),
                        # The process's own CPU time (all its threads). A pause of the process adds wall time,
                        # not CPU time; other jobs on the cores add to both (waiting OpenMP threads spin), so
                        # CPU s / wall s well below `threads` marks a line that shared the cores.
                        "cpu_seconds": round(time.process_time() - cpu, 2),
                        "threads": torch.get_num_threads(),
                        "generations": sum(len(line["n_tokens"]) for line in lines),
                        "tokens": sum(sum(line["n_tokens"]) for line in lines),
                    }
                ]
            )
            new += len(todo)
        return new

    def run(self) -> None:
        a = self.args
        self.build()
        _, test = steps.load_splits(a.task, self.plan, data_dir=a.data_dir)
        doc = {
            **{k: v for k, v in vars(a).items() if k not in ("results", "work")},
            "lambdas": self.lambdas,
            "paper_lambdas": self.paper_plan.lambdas if a.paper else None,
            "paper_preset": {
                k: getattr(PRESETS["paper"], k) for k in ("norm", "method", "layer_map", "width_map")
            },
            "steered_layers": self.steered_layers,
            "paper_steered_layers": {
                n: list(v.layers) for n, v in (self.paper_ev.conditions if self.paper_ev else {}).items() if v
            },
            "arms": self.kinds,
            "config_hash": self.ev.config_hash,
            "paper_config_hash": self.paper_ev.config_hash if self.paper_ev else {},
            "runtime": runtime(self.child),
            "test_items": len(test),
        }
        path = self.results / "study.json"
        old = json.loads(path.read_text()) if path.exists() else {}
        for key in ("config_hash", "paper_config_hash"):
            changed = sorted(k for k, h in old.get(key, {}).items() if doc[key].get(k, h) != h)
            if changed:
                raise SystemExit(
                    f"{path}: the records of {changed} were made with other settings or vectors; resume with "
                    "the same arguments, or give the study another --name"
                )
        doc["paper"] = old["paper"] if old.get("paper") else self.tune_paper()
        write_json_atomic(path, doc)
        done = {(r["item"], r["arm"]) for r in self.items.load()}
        total = len(test) * len(self.arms())
        self.log(
            f"{len(test)} test items x {len(self.arms())} arms ({len(done)} item-arm lines already done); "
            f"K = {len(self.lambdas)} λ from {self.lambdas[0]} to {self.lambdas[-1]}; arms {self.arms()}"
        )
        start = time.time()
        new = 0
        for index in range(0, len(test), a.chunk):
            chunk = test[index : index + a.chunk]
            n = self.run_chunk(index // a.chunk, chunk, done)
            if n:
                new += n
                rate = new / len(self.arms()) / ((time.time() - start) / 60)
                self.log(f"{len(done)}/{total} item-arm lines; {rate:.2f} items/min (all arms) this run")
        self.log("done")


def main(argv: list[str] | None = None) -> None:
    Study(parse_args(argv)).run()


if __name__ == "__main__":
    main()
