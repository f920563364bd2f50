"""The whole pipeline on the embedded default: offline zoo + built-in synthetic data, on a CPU.

Gemma-3-270M (parent) → SmolLM2-135M-Instruct (child) on templated multi-step arithmetic word problems:

1. Algorithm 1 on the parent (``corrupted_answer`` pairs) and on the child (the child-native control);
2. a proportional layer map × ridge width map fitted on shared plain text, with its held-out fit;
3. Algorithms 2 and 3 with ITS and all controls, on small splits, λ relative to the residual norm;
4. an HTML report with tables and figures.

Every step writes into the run folder, so a rerun reuses what is already there.
"""

from __future__ import annotations

import html
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import click


@dataclass(frozen=True)
class DemoConfig:
    parent: str = "gemma3-270m"
    child: str = "smollm2-135m"
    dataset: str = "synthetic"
    n_pairs: int = 48
    n_fit_texts: int = 160
    val_items: int = 8
    test_items: int = 32
    lambdas: tuple[float, ...] = (0.02, 0.05, 0.1, 0.2)
    shots: int = 2
    max_new_tokens: int = 80
    positions: str = "generated"
    batch_size: int = 32
    seed: int = 0


def run_demo(out: str | Path, cfg: DemoConfig = DemoConfig(), *, device: str | None = None) -> Path:
    from xsteer.data import load_examples
    from xsteer.evaluate import EvalConfig, Evaluator, RecordStore, summarize, summary_markdown
    from xsteer.extract import extract
    from xsteer.models import load_model
    from xsteer.pairs import build_pairs
    from xsteer.report import write_report
    from xsteer.transfer import TransferMap, fit_texts, fit_transfer, report_table
    from xsteer.vectors import SteeringVectors

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()

    def step(msg: str) -> None:
        click.echo(f"[{time.time() - t0:6.0f} s] {msg}")

    train = load_examples(cfg.dataset, "train", seed=cfg.seed)
    parent_path, native_path, map_path = out / "parent.safetensors", out / "child_native.safetensors", out / "transfer.map.safetensors"
    parent = child = None
    if not parent_path.exists() or not map_path.exists():
        step(f"loading parent {cfg.parent}")
        parent = load_model(cfg.parent, device=device)
    step(f"loading child {cfg.child}")
    child = load_model(cfg.child, device=device)

    if not parent_path.exists():
        step(f"Algorithm 1 on the parent: {cfg.n_pairs} corrupted_answer pairs")
        pairs = build_pairs("corrupted_answer", train[: cfg.n_pairs], parent.tokenizer, dataset=cfg.dataset, seed=cfg.seed)
        extract(parent, pairs, seed=cfg.seed, extra={"source": f"{cfg.dataset}:train"}).save(parent_path)
    if not native_path.exists():
        step("Algorithm 1 on the child (child-native control, same examples)")
        pairs = build_pairs("corrupted_answer", train[: cfg.n_pairs], child.tokenizer, dataset=cfg.dataset, seed=cfg.seed)
        extract(child, pairs, seed=cfg.seed, extra={"source": f"{cfg.dataset}:train"}).save(native_path)
    if not map_path.exists():
        texts = fit_texts(train[cfg.n_pairs : cfg.n_pairs + cfg.n_fit_texts], seed=cfg.seed)
        step(f"fitting proportional/ridge transfer map on {len(texts)} shared texts")
        fit_transfer(parent, child, texts, layer_map="proportional", width_map="ridge", seed=cfg.seed,
                     info={"fit_text": f"{cfg.dataset}:train"}).save(map_path)
    del parent
    tmap = TransferMap.load(map_path)
    native = SteeringVectors.load(native_path)
    conditions = {
        "baseline": None,
        "parent": tmap.apply(SteeringVectors.load(parent_path), norm="resid_mean"),
        # The child-native vectors under the same norm rule, so λ means the same for both.
        "native": native.scaled_to(tmap.child_resid_norm, "resid_mean"),
    }
    conditions["random"] = conditions["parent"].random_like(cfg.seed)
    ecfg = EvalConfig(dataset=cfg.dataset, shots=cfg.shots, lambdas=cfg.lambdas, positions=cfg.positions,
                      max_new_tokens=cfg.max_new_tokens, seed=cfg.seed)
    ev = Evaluator(child, ecfg, RecordStore(out / "records.jsonl"), conditions, batch_size=cfg.batch_size)
    vec = ["parent", "native", "random"]
    step(f"Algorithm 2: λ search over {list(cfg.lambdas)} on {cfg.val_items} validation items")
    lam_star = ev.tune(load_examples(cfg.dataset, "validation", limit=cfg.val_items, seed=cfg.seed), vec)
    step(f"λ* = {lam_star}; Algorithm 3 on {cfg.test_items} test items (ITS, controls, self-consistency)")
    ev.test(load_examples(cfg.dataset, "test", limit=cfg.test_items, seed=cfg.seed), vec, lambda_star=lam_star)
    records = ev.store.load(ev.config_hash)
    summaries = {m: summarize(records, lam_star, metric=m, seed=cfg.seed) for m in ("correct", "strict_correct")}
    import json

    (out / "summary.json").write_text(json.dumps({"config": asdict(ecfg), "demo": asdict(cfg), "config_hash": ev.config_hash,
                                                   "summaries": summaries}, indent=2, default=str))
    (out / "summary.md").write_text(summary_markdown(summaries["correct"]) + "\n")
    click.echo(summary_markdown(summaries["correct"]))
    report = write_report(out, title=f"xsteer demo: {cfg.parent} → {cfg.child} on {cfg.dataset}",
                          sections=[("Transfer map: held-out fit per child layer (R², cosine)", f"<pre>{html.escape(report_table(tmap))}</pre>")])
    step(f"report: {report}")
    return report
