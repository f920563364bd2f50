"""The ``xsteer`` command line: each command parses its options and calls :mod:`xsteer.app.steps`.

Everything a user can get wrong is checked before a model loads (option ranges, λ grids, file formats,
output paths), and an expected error is one line and exit code 1; an unexpected one keeps its traceback,
since it is a bug. No output file is half-written (every write is atomic), and no output may overwrite an
input.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, get_args

import click
from click.core import ParameterSource

from xsteer.app.cli_check import check_model_cmd
from xsteer.app.cli_common import (
    NonNegative,
    Positive,
    check_output,
    check_spec,
    friendly_errors,
    parse_lambdas,
    removed_on_failure,
)
from xsteer.app.cli_interop import export_cmd, export_model_cmd, import_cmd
from xsteer.evaluation.plan import DEFAULT_NORM_TEXT, PAPER_GRID, PRESETS, EvalPlan, Mode, Positions
from xsteer.transfer.maps import DEFAULT_FIT_TEXT

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="xsteer")
def main() -> None:
    """Transfer steering vectors (concepts) from a parent LM into smaller child LMs, and measure what crosses."""


# ---------------------------------------------------------------------------------------------- models, info
@main.command("models")
@click.option(
    "--prepare",
    "prepare",
    multiple=True,
    metavar="NAME",
    help="Assemble, verify (sha256) and convert a zoo model once, so later loads take seconds (repeatable; 'installed' = all installed).",
)
@friendly_errors
def models_cmd(prepare: Sequence[str]) -> None:
    """List the offline zoo and whether each model is installed; optionally prepare models for fast loading.

    \b
    Examples:
      xsteer models
      xsteer models --prepare installed
    """
    import time

    from xsteer.core.models import ZOO, load_hf

    names = [e.name for e in ZOO.values() if e.installed()] if "installed" in prepare else list(prepare)
    for name in names:
        if name not in ZOO:
            raise click.BadParameter(
                f"{name!r} is not a zoo model; options: {', '.join(ZOO)}, installed", param_hint="--prepare"
            )
        t0 = time.time()
        load_hf(name)
        click.echo(f"prepared {name} in {time.time() - t0:.0f} s")
    click.echo(f"{'name':<20} {'architecture':<20} {'layers':>6} {'d_model':>7}  {'installed':<9} hub id")
    for e in ZOO.values():
        click.echo(
            f"{e.name:<20} {e.architecture:<20} {e.n_layers:>6} {e.d_model:>7}  {'yes' if e.installed() else 'no':<9} {e.hub_id}"
        )


EXTRACT_STATS = ("explained_variance", "separation", "effect_size", "mean_diff_norm")


def layer_table(stats: Any, layers: Any) -> str:
    """The per-layer statistics of a vector file: the fit table printed after extraction, or, for vectors
    made otherwise (transferred ones carry the map's fit), whatever numbers each layer records."""
    if all(all(k in stats[layer] for k in EXTRACT_STATS) for layer in layers):
        lines = [f"{'layer':>5}  {'expl.var':>8}  {'separation':>10}  {'effect':>7}  {'|mean Δ|':>9}"]
        for layer in layers:
            s = stats[layer]
            lines.append(
                f"{layer:>5}  {s['explained_variance']:>8.3f}  {s['separation']:>10.3f}  {s['effect_size']:>7.2f}  {s['mean_diff_norm']:>9.3f}"
            )
        return "\n".join(lines)
    keys = list(dict.fromkeys(k for layer in layers for k in stats[layer]))
    width = {k: max(len(k), 8) for k in keys}
    lines = [f"{'layer':>5}  " + "  ".join(f"{k:>{width[k]}}" for k in keys)]
    for layer in layers:
        cells = []
        for k in keys:
            v = stats[layer].get(k)
            text = "" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)
            cells.append(f"{text:>{width[k]}}")
        lines.append(f"{layer:>5}  " + "  ".join(cells))
    return "\n".join(lines)


@main.command("info")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@friendly_errors
def info_cmd(path: str) -> None:
    """Print what a file xsteer writes holds: a vector file (extracted or transferred), a transfer map
    (.map.safetensors), a llama.cpp control vector (.gguf), an lm-eval steering file or an activation
    file (.pt).

    \b
    Example:
      xsteer info gemma.safetensors
    """
    from xsteer.errors import InputError

    with open(path, "rb") as f:
        head = f.read(8)
    if head[:4] == b"GGUF":
        _info_gguf(path)
    elif head[:2] == b"PK":  # torch.save's zip archive
        _info_torch(path)
    elif len(head) < 8:
        raise InputError(f"{path} is empty or truncated ({len(head)} bytes); it is no file xsteer writes")
    elif _safetensors_kind(path) == "xsteer_transfer":
        _info_map(path)
    else:
        _info_vectors(path)


def _safetensors_kind(path: str) -> str | None:
    from safetensors import safe_open

    try:
        with safe_open(path, framework="pt") as f:
            meta = f.metadata() or {}
    except Exception:  # not safetensors: the vector loader names the problem
        return None
    return "xsteer_transfer" if "xsteer_transfer" in meta else None


def _info_vectors(path: str) -> None:
    from xsteer.core.vectors import SteeringVectors

    sv = SteeringVectors.load(path)
    meta = sv.metadata()
    for k in (
        "model_id",
        "n_layers",
        "d_model",
        "method",
        "centring",
        "hook",
        "position",
        "norm",
        "pairs_hash",
    ):
        click.echo(f"{k:>10}: {meta[k]}")
    click.echo(f"{'layers':>10}: {list(sv.layers)}")
    if meta["extra"]:
        click.echo(f"{'extra':>10}: {meta['extra']}")
    shown = [layer for layer in sv.layers if layer < len(sv.layer_stats) and sv.layer_stats[layer]]
    if shown:
        click.echo(layer_table(sv.layer_stats, shown))


def _info_map(path: str) -> None:
    from xsteer.transfer.maps import TransferMap, report_table

    tmap = TransferMap.load(path)
    click.echo(f"{'kind':>10}: transfer map")
    click.echo(f"{'parent':>10}: {tmap.parent_id} {list(tmap.parent_shape)} (layers x d_model)")
    click.echo(f"{'child':>10}: {tmap.child_id} {list(tmap.child_shape)}")
    click.echo(f"{'maps':>10}: {tmap.layer_map_name} x {tmap.width_map_name}")
    click.echo(f"{'fit text':>10}: {tmap.info.get('fit_text')}")
    click.echo(report_table(tmap))


def _info_gguf(path: str) -> None:
    from xsteer.interop.gguf import read_gguf_control_vector

    cv = read_gguf_control_vector(path)
    click.echo(f"{'kind':>10}: llama.cpp control vector (GGUF)")
    click.echo(f"{'model hint':>10}: {cv.model_hint}")
    click.echo(f"{'layers':>10}: {list(cv.layers)} (direction.L is added to block L's output)")
    click.echo(f"{'d_model':>10}: {cv.vectors.shape[1]}")
    for k, v in cv.meta.items():
        click.echo(f"{k:>10}: {v}")


def _info_torch(path: str) -> None:
    from xsteer.core.io import load_torch

    obj = load_torch(path, what="an lm-eval steering file or an activation file")
    if isinstance(obj, (tuple, list)) and len(obj) == 2 and all(getattr(t, "ndim", 0) == 3 for t in obj):
        click.echo(f"{'kind':>10}: paired activations (parent, child), [layer, text, d_model]")
        click.echo(f"{'parent':>10}: {list(obj[0].shape)}")
        click.echo(f"{'child':>10}: {list(obj[1].shape)}")
        return
    from xsteer.interop.lmeval import load_lmeval

    sv = load_lmeval(path)
    click.echo(f"{'kind':>10}: lm-eval steering file")
    click.echo(f"{'layers':>10}: {list(sv.layers)} (hook points layers.N)")
    click.echo(f"{'d_model':>10}: {sv.d_model}")
    click.echo(f"{'λ':>10}: {sv.extra.get('lam')} ({'folded' if sv.extra.get('folded') else 'as written'})")


def _defaults(cls: Any) -> Any:
    """A dataclass's field defaults as attributes, so a command's click defaults are read from the one place
    that holds them."""
    from dataclasses import MISSING, fields
    from types import SimpleNamespace

    return SimpleNamespace(**{f.name: f.default for f in fields(cls) if f.default is not MISSING})


def _fidelity_defaults() -> Any:
    from xsteer.app.fidelity import FidelitySpec

    return _defaults(FidelitySpec)


FIDELITY_DEFAULTS = _fidelity_defaults()


# ---------------------------------------------------------------------------------------------- extract, transfer
def _choices(registry: Any) -> click.Choice:
    return click.Choice(list(registry))


def _methods() -> click.Choice:
    from xsteer.extraction.methods import METHODS

    return _choices(METHODS)


def _builders() -> click.Choice:
    from xsteer.extraction.pairs import BUILDERS

    return _choices(BUILDERS)


def _layer_maps() -> click.Choice:
    from xsteer.transfer.layermap import LAYER_MAPS

    return _choices(
        [k for k in LAYER_MAPS if k != "cka_diff"]
    )  # cka_diff needs a concept's pairs: `fidelity`


def _width_maps() -> click.Choice:
    from xsteer.transfer.widthmap import WIDTH_MAPS

    return _choices(WIDTH_MAPS)


@main.command("extract")
@click.option(
    "--parent", "model_spec", required=True, help="Model spec: zoo name, .gguf path, local HF dir or hub id."
)
@click.option(
    "--dataset",
    default=None,
    help="Build pairs from this task (gsm8k, math500, arc_challenge, synthetic ...).",
)
@click.option("--split", default="train", show_default=True, help="Task split the pairs come from.")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Local JSON Lines data (default: $XSTEER_DATA_DIR, else the hub).",
)
@click.option(
    "--pairs",
    "pairs_file",
    type=click.Path(dir_okay=False),
    default=None,
    help='User pairs: JSON Lines of {"positive", "negative"}.',
)
@click.option(
    "--builder", type=_builders(), default="corrupted_answer", show_default=True, help="Pair builder."
)
@click.option(
    "--n-pairs", type=Positive, default=64, show_default=True, help="Number of pairs built from the task."
)
@click.option(
    "--shots",
    type=NonNegative,
    default=EvalPlan.shots,
    show_default=True,
    help="Few-shot exemplars kept out of the pairs.",
)
@click.option("--method", type=_methods(), default="pca", show_default=True)
@click.option("--batch-size", type=Positive, default=16, show_default=True)
@click.option("--seed", type=NonNegative, default=0, show_default=True)
@click.option("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available).")
@click.option(
    "--out", required=True, type=click.Path(dir_okay=False), help="Output vector file (.safetensors)."
)
@friendly_errors
def extract_cmd(
    model_spec: str,
    dataset: str | None,
    split: str,
    data_dir: str | None,
    pairs_file: str | None,
    builder: str,
    n_pairs: int,
    shots: int,
    method: str,
    batch_size: int,
    seed: int,
    device: str | None,
    out: str,
) -> None:
    """Algorithm 1: extract one steering vector per layer of a model from contrastive pairs.

    \b
    Examples:
      xsteer extract --parent gemma3-270m --dataset gsm8k --data-dir ../shared/data \\
          --split train --n-pairs 64 --out gemma.safetensors
      xsteer extract --parent smollm2-135m --pairs my_pairs.jsonl --method mean_diff --out v.safetensors
    """
    from xsteer.app import steps
    from xsteer.app.config import PairsSpec
    from xsteer.core.models import load_model, resolve_device

    if (dataset is None) == (pairs_file is None):
        raise click.UsageError("give exactly one of --dataset or --pairs")
    out_path = check_output(out, inputs=[pairs_file])
    check_spec(model_spec)
    resolve_device(device)
    spec = PairsSpec(builder=builder, n=n_pairs, split=split, method=method)
    if pairs_file is not None:
        pairs = steps.read_pairs(pairs_file)  # everything that can fail cheaply fails before the model loads
    elif dataset is not None:
        from xsteer.tasks import get_task

        get_task(dataset).pair_examples(split, 1, data_dir=data_dir, seed=seed, shots=shots)
    model = load_model(model_spec, device=device)
    if dataset is not None:
        pairs = steps.make_pairs(model, dataset, spec, data_dir=data_dir, seed=seed, shots=shots)
    click.echo(
        f"{len(pairs)} pairs -> {model_spec} ({model.cfg.n_layers} layers x d_model {model.cfg.d_model}), method {method}"
    )
    sv = steps.make_vectors(
        model,
        pairs,
        method=method,
        seed=seed,
        batch_size=batch_size,
        source={"source": pairs_file or f"{dataset}:{split}", "builder": None if pairs_file else builder},
    )
    click.echo(layer_table(sv.layer_stats, sv.layers))
    sv.save(out_path)
    click.echo(f"wrote {out_path}")


@main.command("transfer")
@click.option(
    "--vectors",
    "vectors_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="Parent vector file.",
)
@click.option("--child", "child_spec", required=True, help="Child model spec.")
@click.option(
    "--parent", "parent_spec", default=None, help="Parent model spec (default: the vectors' model id)."
)
@click.option("--layer-map", type=_layer_maps(), default="proportional", show_default=True)
@click.option(
    "--mapping",
    default=None,
    help="For --layer-map explicit: 'child:parent,...', negatives count from the end.",
)
@click.option("--width-map", type=_width_maps(), default="ridge", show_default=True)
@click.option(
    "--fit-text",
    default=DEFAULT_FIT_TEXT,
    show_default=True,
    help="TASK:SPLIT:N texts the maps are fitted on.",
)
@click.option("--data-dir", type=click.Path(file_okay=False), default=None)
@click.option(
    "--heldout",
    type=click.FloatRange(0.0, 0.9),
    default=0.2,
    show_default=True,
    help="Share of fit texts held out for the fit report.",
)
@click.option(
    "--norm",
    type=click.Choice(["unit", "resid_mean"]),
    default="unit",
    show_default=True,
    help="Norm convention of the mapped vectors.",
)
@click.option(
    "--map",
    "map_path",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Reuse a fitted map instead of fitting one.",
)
@click.option("--batch-size", type=Positive, default=16, show_default=True)
@click.option("--seed", type=NonNegative, default=0, show_default=True)
@click.option("--device", default=None)
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False),
    help="Child-space vector file; the map goes to OUT's stem + '.map.safetensors'.",
)
@friendly_errors
def transfer_cmd(
    vectors_path: str,
    child_spec: str,
    parent_spec: str | None,
    layer_map: str,
    mapping: str | None,
    width_map: str,
    fit_text: str,
    data_dir: str | None,
    heldout: float,
    norm: str,
    map_path: str | None,
    batch_size: int,
    seed: int,
    device: str | None,
    out: str,
) -> None:
    """Map parent vectors into a child's residual space (layer map x width map) and report the fit.

    \b
    Examples:
      xsteer transfer --vectors gemma.safetensors --child smollm2-135m --layer-map proportional \\
          --width-map ridge --fit-text gsm8k:train:512 --data-dir ../shared/data --out g2s.safetensors
      xsteer transfer --vectors gemma.safetensors --child smollm2-135m --map g2s.map.safetensors --out again.safetensors
    """
    from xsteer.app import steps
    from xsteer.app.config import TextSpec, TransferSpec
    from xsteer.core.models import ZOO, load_model, parse_spec, resolve_device
    from xsteer.core.vectors import SteeringVectors
    from xsteer.transfer.maps import TransferMap, report_table

    out_path = check_output(out, inputs=[vectors_path, map_path])
    map_out = out_path.with_name(out_path.stem + ".map.safetensors")
    if map_path is None:
        check_output(map_out, inputs=[vectors_path], option="--out (its .map.safetensors)")
    vectors = SteeringVectors.load(vectors_path)
    child_id = parse_spec(child_spec).model_id
    if map_path is not None:
        tmap = TransferMap.load(map_path)
        shape = (ZOO[child_spec].n_layers, ZOO[child_spec].d_model) if child_spec in ZOO else None
        steps.check_map(tmap, vectors=vectors, child_id=child_id, child_shape=shape)
    else:
        if layer_map == "explicit" and not mapping:
            raise click.UsageError("--layer-map explicit needs --mapping 'child:parent,...'")
        spec = TransferSpec(
            layer_map=layer_map, width_map=width_map, fit_text=fit_text, norm=norm, mapping=mapping
        )
        TextSpec.parse(fit_text)
        resolve_device(device)
        steps.shared_texts(fit_text, data_dir=data_dir, seed=seed)  # the data exists before any model loads
        parent = load_model(parent_spec or vectors.model_id, device=device)
        vectors.check_compatible(parent.cfg.n_layers, parent.cfg.d_model, parent.cfg.model_name)
        child = load_model(child_spec, device=device)
        click.echo(
            f"fitting {layer_map}/{width_map}: {parent.cfg.model_name} -> {child.cfg.model_name} on {fit_text}"
        )
        tmap = steps.make_map(
            parent,
            child,
            spec,
            data_dir=data_dir,
            seed=seed,
            batch_size=batch_size,
            progress=True,
            heldout=heldout,
        )
        del parent
        tmap.save(map_out)
        click.echo(report_table(tmap))
    mapped = tmap.apply(vectors, norm=norm)
    mapped.save(out_path)
    click.echo(f"steered child layers: {list(mapped.layers)}")
    click.echo(f"wrote {out_path}" + ("" if map_path else f" and {map_out}"))


# ---------------------------------------------------------------------------------------------- evaluation
def grid_text(lambdas: Sequence[float]) -> str:
    """A λ grid as ``--lambdas`` reads it ('paper' for the paper's grid)."""
    return "paper" if tuple(lambdas) == PAPER_GRID else ",".join(f"{x:g}" for x in lambdas)


def eval_options(
    *,
    lambdas: str = grid_text(EvalPlan.lambdas),
    lambdas_help: str = "'paper' or comma-separated λ values.",
    batch_size: int = EvalPlan.batch_size,
) -> Callable[..., Any]:
    """The options every command that runs a child on task items shares (evaluate, tune, ablate):
    the child, the data, the prompt, the λ grid and the batch. One definition, so they cannot drift; the
    defaults are :class:`EvalPlan`'s, the same as ``xs.evaluate``'s and the grid's."""
    options = [
        click.option(
            "--child",
            "child_spec",
            required=True,
            help="Child model spec: zoo name, .gguf path, local HF dir or hub id.",
        ),
        click.option(
            "--dataset", required=True, help="Task: gsm8k, math, math500, arc_challenge or synthetic."
        ),
        click.option(
            "--data-dir",
            type=click.Path(file_okay=False),
            default=None,
            help="Local JSON Lines data (default: $XSTEER_DATA_DIR, else the hub).",
        ),
        click.option(
            "--mode",
            type=click.Choice(get_args(Mode)),
            default=EvalPlan.mode,
            show_default=True,
            help="Score by generation, or by choice log-likelihood (multiple-choice tasks).",
        ),
        click.option("--lambdas", default=lambdas, show_default=True, help=lambdas_help),
        click.option(
            "--positions",
            type=click.Choice(get_args(Positions)),
            default=EvalPlan.positions,
            show_default=True,
            help="Steer the prompt and generated tokens (all), or only the generated ones (faster: the "
            "prompt is prefilled once for the whole λ grid).",
        ),
        click.option("--shots", type=NonNegative, default=EvalPlan.shots, show_default=True),
        click.option("--max-new-tokens", type=Positive, default=EvalPlan.max_new_tokens, show_default=True),
        click.option("--batch-size", type=Positive, default=batch_size, show_default=True),
        click.option("--seed", type=NonNegative, default=EvalPlan.seed, show_default=True),
        click.option("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available)."),
    ]

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(options):  # so --help lists them in the order above
            fn = option(fn)
        return fn

    return decorate


def _eval_plan(
    dataset: str,
    *,
    mode: str,
    lambdas: str,
    positions: str,
    shots: int,
    max_new_tokens: int,
    seed: int,
    batch_size: int,
    preset: str | None = None,
    **items: Any,
) -> EvalPlan:
    """The options as a plan, checked with the task (a mode the task lacks fails here, before any load).
    With a ``preset``, the preset's plan, where only options given on the command line override it."""
    from xsteer.evaluation.plan import check_mode, check_positions

    given = dict(
        mode=check_mode(mode),
        shots=shots,
        lambdas=parse_lambdas(lambdas),
        positions=check_positions(positions),
        max_new_tokens=max_new_tokens,
        seed=seed,
        batch_size=batch_size,
        **items,
    )
    plan = EvalPlan(**given) if preset is None else PRESETS[preset].plan_with(given, _typed(given))
    plan.config(dataset)
    return plan


def _typed(names: Iterable[str]) -> set[str]:
    """Which of these settings the user gave on the command line (a preset supplies the others)."""
    ctx = click.get_current_context()
    option = {"random": "random_control"}
    return {n for n in names if ctx.get_parameter_source(option.get(n, n)) != ParameterSource.DEFAULT}


preset_option = click.option(
    "--preset",
    type=click.Choice(sorted(PRESETS)),
    default=None,
    help="Start from a named set of settings; options given explicitly override it. "
    + "; ".join(f"{p.name}: {p.summary}" for p in PRESETS.values())
    + " (docs/paper-literal.md).",
)


def _named_vectors(specs: Sequence[str], option: str = "--vectors") -> dict[str, Any]:
    """NAME=PATH pairs -> {name: SteeringVectors}; names are unique and not one of the reserved controls."""
    from xsteer.core.vectors import SteeringVectors
    from xsteer.evaluation.evaluate import RESERVED

    out: dict[str, Any] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise click.BadParameter(f"expected NAME=PATH, got {spec!r}", param_hint=option)
        if name in out:
            raise click.BadParameter(f"the name {name!r} is given twice", param_hint=option)
        if name in RESERVED:
            raise click.BadParameter(
                f"{name!r} is reserved for a control ({', '.join(RESERVED)}); choose another name",
                param_hint=option,
            )
        out[name] = SteeringVectors.load(path)
    return out


@main.command("evaluate")
@eval_options()
@preset_option
@click.option(
    "--vectors",
    "vector_specs",
    multiple=True,
    help="NAME=PATH of child-space vectors (repeatable), e.g. parent=g2s.safetensors.",
)
@click.option(
    "--norm",
    type=click.Choice(["keep", "unit", "resid_mean"]),
    default="keep",
    show_default=True,
    help="Bring every vector to one norm convention first (resid_mean: the child's mean residual norm per layer, "
    "from --map or measured on --fit-text). 'keep' refuses vectors of different conventions.",
)
@click.option(
    "--map",
    "map_path",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="A transfer map into this child: its residual norms serve --norm resid_mean.",
)
@click.option(
    "--fit-text",
    default=None,
    help="TASK:SPLIT:N texts the child's residual norms are measured on "
    f"(default {DEFAULT_NORM_TEXT.format(dataset='TASK')}).",
)
@click.option(
    "--random-control/--no-random-control",
    default=EvalPlan.random,
    show_default=True,
    help="Add a random direction of equal norm per layer for the first vectors.",
)
@click.option(
    "--self-consistency/--no-self-consistency", default=EvalPlan.self_consistency, show_default=True
)
@click.option(
    "--val-items",
    type=NonNegative,
    default=EvalPlan.val_items,
    show_default=True,
    help="Validation items for λ search (0: skip, λ* unknown).",
)
@click.option(
    "--test-items",
    type=Positive,
    default=EvalPlan.test_items,
    help="Test items (default: the whole test split).",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False),
    help="Run folder: records.jsonl, summary.json, summary.md.",
)
@friendly_errors
def evaluate_cmd(
    child_spec: str,
    vector_specs: Sequence[str],
    norm: str,
    map_path: str | None,
    fit_text: str | None,
    random_control: bool,
    self_consistency: bool,
    dataset: str,
    data_dir: str | None,
    mode: str,
    val_items: int,
    test_items: int | None,
    lambdas: str,
    positions: str,
    shots: int,
    max_new_tokens: int,
    batch_size: int,
    seed: int,
    device: str | None,
    out: str,
    preset: str | None,
) -> None:
    """Algorithms 2 + 3: tune λ on validation, evaluate on test with ITS and controls; resumable.

    \b
    Examples:
      xsteer evaluate --child smollm2-135m --vectors parent=g2s.safetensors --vectors native=smol.safetensors \\
          --norm resid_mean --map g2s.map.safetensors --dataset gsm8k --data-dir ../shared/data \\
          --val-items 16 --test-items 100 --out runs/g2s-gsm8k
      xsteer evaluate --child smollm2-135m --vectors parent=g2s.safetensors --dataset arc_challenge \\
          --mode loglik --data-dir ../shared/data --out runs/g2s-arc
    """
    from xsteer.app import steps
    from xsteer.core.models import load_model, parse_spec, resolve_device
    from xsteer.transfer.maps import TransferMap

    plan = _eval_plan(
        dataset,
        mode=mode,
        lambdas=lambdas,
        positions=positions,
        shots=shots,
        max_new_tokens=max_new_tokens,
        seed=seed,
        batch_size=batch_size,
        val_items=val_items,
        test_items=test_items,
        random=random_control,
        self_consistency=self_consistency,
        preset=preset,
    )
    if preset is not None and not _typed(["norm"]):
        norm = PRESETS[preset].norm
    out_path = check_output(out, folder=True)
    vectors = _named_vectors(vector_specs)
    check_spec(child_spec)
    resolve_device(device)
    child_id = parse_spec(child_spec).model_id
    tmap = TransferMap.load(map_path) if map_path else None
    if tmap is not None:
        steps.check_map(tmap, child_id=child_id)
    val, test = steps.load_splits(dataset, plan, data_dir=data_dir)
    text_spec = fit_text or DEFAULT_NORM_TEXT.format(dataset=dataset)
    if norm == "resid_mean" and tmap is None:
        steps.shared_texts(text_spec, data_dir=data_dir, seed=seed)
    if norm == "keep":  # refuse a mix now, not after the model has loaded
        steps.build_conditions(vectors, random=False)
    model = load_model(child_spec, device=device)
    norms = None
    if norm == "resid_mean":
        norms = (
            tmap.child_resid_norm
            if tmap is not None
            else steps.resid_norms(
                model, steps.shared_texts(text_spec, data_dir=data_dir, seed=seed), batch_size=batch_size
            )
        )
    summary = steps.run_evaluation(
        model,
        vectors,
        plan,
        task=dataset,
        data_dir=data_dir,
        out=out_path,
        norm=None if norm == "keep" else norm,
        norms=norms,
        splits=(val, test),
        extra={"child": child_spec},
    )
    click.echo(f"λ* on {len(val)} validation items: {summary.lambda_star}")
    click.echo((out_path / "summary.md").read_text())


@main.command("tune")
@eval_options()
@preset_option
@click.option(
    "--vectors",
    "vector_spec",
    required=True,
    help="Child-space vector file, PATH or NAME=PATH (NAME labels the condition; default 'steered').",
)
@click.option(
    "--val-items",
    type=Positive,
    default=EvalPlan.val_items,
    show_default=True,
    help="Validation items the λ search runs on (the first N).",
)
@click.option(
    "--baseline/--no-baseline",
    default=True,
    show_default=True,
    help="Also score the unsteered child on the same items.",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False),
    help="Run folder: records.jsonl (resumable) and tune.json.",
)
@friendly_errors
def tune_cmd(
    child_spec: str,
    vector_spec: str,
    val_items: int,
    baseline: bool,
    dataset: str,
    data_dir: str | None,
    mode: str,
    lambdas: str,
    positions: str,
    shots: int,
    max_new_tokens: int,
    batch_size: int,
    seed: int,
    device: str | None,
    out: str,
    preset: str | None,
) -> None:
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
    from xsteer.app import steps
    from xsteer.core.models import load_model, resolve_device
    from xsteer.evaluation.summary import tune_markdown

    # No random control here: the λ search is for the given vectors only.
    plan = _eval_plan(
        dataset,
        mode=mode,
        lambdas=lambdas,
        positions=positions,
        shots=shots,
        max_new_tokens=max_new_tokens,
        seed=seed,
        batch_size=batch_size,
        val_items=val_items,
        random=False,
        preset=preset,
    )
    out_path = check_output(out, folder=True)
    if "=" not in vector_spec or Path(vector_spec).is_file():
        vector_spec = f"steered={vector_spec}"
    vectors = _named_vectors([vector_spec])
    check_spec(child_spec)
    resolve_device(device)
    val, _ = steps.load_splits(dataset, plan, data_dir=data_dir, test=False)
    if not val:
        raise click.UsageError(f"{dataset} has no validation items")
    with removed_on_failure(out_path, keep=lambda: (out_path / "records.jsonl").exists()):
        model = load_model(child_spec, device=device)
        [name] = vectors
        click.echo(f"λ search: {len(plan.lambdas)} λ x {len(val)} validation items ({mode}) -> {out_path}")
        doc = steps.run_tune(
            model,
            vectors,
            plan,
            task=dataset,
            data_dir=data_dir,
            out=out_path,
            validation=val,
            baseline=baseline,
            extra={"child": child_spec, "vectors": vector_spec.partition("=")[2]},
        )
    click.echo(tune_markdown(doc))
    click.echo(f"λ* ({name}): {doc['lambda_star'][name]:g}")
    click.echo(f"wrote {out_path / 'tune.json'} and {out_path / 'records.jsonl'}")


@main.command("ablate")
@eval_options(
    lambdas="0.1",
    batch_size=16,
    lambdas_help="λ every profile is scored at (single, leave_one_out), or the per-layer λ grid of the "
    "coordinate search (0 is always in it).",
)
@click.option(
    "--vectors",
    "vectors_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="Child-space vector file.",
)
@click.option(
    "--study",
    type=click.Choice(["single", "leave_one_out", "coordinate"]),
    default="single",
    show_default=True,
    help="Steer one layer at a time, all but one, or search a per-layer λ by coordinate ascent.",
)
@click.option(
    "--split",
    type=click.Choice(["train", "validation", "test"]),
    default="validation",
    show_default=True,
    help="Split the items come from.",
)
@click.option(
    "--items",
    "n_items",
    type=Positive,
    default=16,
    show_default=True,
    help="Items scored (the first N of the split).",
)
@click.option(
    "--sweeps", type=Positive, default=2, show_default=True, help="Coordinate search: sweeps over the layers."
)
@click.option(
    "--accuracy/--no-accuracy",
    default=False,
    show_default=True,
    help="Also measure task accuracy of every profile through the evaluator (records in OUT/records.jsonl; "
    "cheap in loglik mode, slow with generation).",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False),
    help="Folder: ablate_STUDY.json, ablate_STUDY.csv, figures/.",
)
@friendly_errors
def ablate_cmd(
    child_spec: str,
    vectors_path: str,
    study: str,
    split: str,
    n_items: int,
    sweeps: int,
    accuracy: bool,
    dataset: str,
    data_dir: str | None,
    mode: str,
    lambdas: str,
    positions: str,
    shots: int,
    max_new_tokens: int,
    batch_size: int,
    seed: int,
    device: str | None,
    out: str,
) -> None:
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
    from xsteer.core.models import load_model, resolve_device
    from xsteer.core.vectors import SteeringVectors
    from xsteer.evaluation.ablate import ablation_study, ablation_table
    from xsteer.tasks import get_task

    cfg = _eval_plan(
        dataset,
        mode=mode,
        lambdas=lambdas,
        positions=positions,
        shots=shots,
        max_new_tokens=max_new_tokens,
        seed=seed,
        batch_size=batch_size,
    ).config(dataset)
    out_path = check_output(out, folder=True)
    vectors = SteeringVectors.load(vectors_path)
    if study == "leave_one_out" and len(vectors.layers) < 2:
        raise click.BadParameter(
            f"leave_one_out needs at least 2 steered layers; {vectors_path} steers {list(vectors.layers)}",
            param_hint="--study",
        )
    check_spec(child_spec)
    resolve_device(device)
    items = get_task(dataset).load(split, data_dir=data_dir, limit=n_items, seed=seed)
    if not items:
        raise click.UsageError(f"{dataset}:{split} has no items")
    model = load_model(child_spec, device=device)
    click.echo(
        f"{study} study: {len(vectors.layers)} steered layers, λ {list(cfg.lambdas)}, {len(items)} {split} items"
    )
    doc = ablation_study(
        model,
        vectors,
        items,
        cfg,
        study,
        sweeps=sweeps,
        batch_size=batch_size,
        split=split,
        records=out_path / "records.jsonl" if accuracy else None,
        data_dir=data_dir,
    )
    doc.update(child=child_spec, vectors_file=str(vectors_path), dataset=dataset, mode=mode)
    files = [
        write_json_atomic(out_path / f"ablate_{study}.json", doc),
        write_csv_atomic(out_path / f"ablate_{study}.csv", doc["rows"]),
        *ablation_figures(doc, out_path),
    ]
    click.echo(ablation_table(doc))
    click.echo("wrote " + ", ".join(str(f) for f in files) + " (figures also as .svg)")


# ---------------------------------------------------------------------------------------------- analysis
@main.command("similarity")
@click.option(
    "--vectors",
    "vector_paths",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="Vector file compared with --reference, layer by layer (repeatable), e.g. a parent's mapped vectors.",
)
@click.option(
    "--reference",
    "reference_path",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="The vectors every --vectors file is compared with, in the same space (e.g. the child-native ones).",
)
@click.option(
    "--map",
    "map_paths",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="Transfer map that produced the --vectors file in the same position (repeatable): adds the mapped-random null.",
)
@click.option(
    "--acts",
    "acts_paths",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="Paired activations (parent, child) saved by --models or analysis/transfer_fit.py (repeatable): a CKA heatmap.",
)
@click.option(
    "--models",
    "model_specs",
    nargs=2,
    default=None,
    metavar="PARENT CHILD",
    help="Run two models on the --text texts and compare their layers by linear CKA.",
)
@click.option(
    "--text",
    "text_spec",
    default=DEFAULT_FIT_TEXT,
    show_default=True,
    help="TASK:SPLIT:N shared texts for --models.",
)
@click.option("--data-dir", type=click.Path(file_okay=False), default=None)
@click.option(
    "--quantile",
    type=float,
    default=0.95,
    show_default=True,
    help="Quantile of |cos| under the random nulls.",
)
@click.option("--batch-size", type=Positive, default=16, show_default=True)
@click.option("--seed", type=NonNegative, default=0, show_default=True)
@click.option("--device", default=None)
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False),
    help="Folder: similarity.json, similarity.csv, cka.csv, figures/ (PNG + SVG), report.html.",
)
@friendly_errors
def similarity_cmd(
    vector_paths: Sequence[str],
    reference_path: str | None,
    map_paths: Sequence[str],
    acts_paths: Sequence[str],
    model_specs: Sequence[str] | None,
    text_spec: str,
    data_dir: str | None,
    quantile: float,
    batch_size: int,
    seed: int,
    device: str | None,
    out: str,
) -> None:
    """Compare concepts across models: vectors in one space (cosine per layer against a random null) and
    two models' layers on shared text (linear CKA), with figures and a table.

    \b
    Examples:
      xsteer similarity --vectors g2s.safetensors --map g2s.map.safetensors \\
          --reference smol-native.safetensors --out runs/similarity
      xsteer similarity --models gemma3-270m smollm2-135m --text gsm8k:train:512 \\
          --data-dir ../shared/data --out runs/similarity        # also saves the activations for --acts
      xsteer similarity --acts runs/similarity/acts/gemma3-270m_to_smollm2-135m.acts.pt --out runs/similarity
    """
    import re

    from xsteer.app import steps
    from xsteer.app.report import similarity_report, similarity_table, vector_labels
    from xsteer.core.io import load_torch, save_torch
    from xsteer.core.models import load_model, parse_spec
    from xsteer.core.vectors import SteeringVectors
    from xsteer.errors import InputError
    from xsteer.transfer.maps import TransferMap, paired_activations

    if not (vector_paths or acts_paths or model_specs):
        raise click.UsageError(
            "nothing to compare: give --vectors with --reference, --acts, or --models PARENT CHILD"
        )
    if vector_paths and reference_path is None:
        raise click.UsageError("--vectors are compared with a --reference vector file")
    if len(map_paths) > len(vector_paths):
        raise click.UsageError(f"{len(map_paths)} --map files for {len(vector_paths)} --vectors files")
    if not 0.0 < quantile < 1.0:
        raise click.BadParameter(
            f"must lie strictly between 0 and 1, got {quantile}", param_hint="--quantile"
        )
    out_path = check_output(out, folder=True)
    reference = None
    if reference_path:
        ref = SteeringVectors.load(reference_path)
        reference = (vector_labels([(Path(reference_path).stem, ref)])[0], ref)
    items = [(Path(p).stem, SteeringVectors.load(p)) for p in vector_paths]
    maps = [TransferMap.load(p) for p in map_paths] + [None] * (len(items) - len(map_paths))
    vectors = [(name, sv, m) for name, (_, sv), m in zip(vector_labels(items), items, maps, strict=True)]
    acts = []
    for p in acts_paths:
        try:
            pair = load_torch(p, what="a (parent, child) pair of activation tensors")
        except InputError as e:  # a pickle, a truncated file, ...: one line, not a traceback
            why = str(e).removeprefix(f"{p} is not a readable torch file")
            raise InputError(f"{p} is not a readable activation file{why}") from None
        if not (
            isinstance(pair, (tuple, list))
            and len(pair) == 2
            and all(getattr(t, "ndim", 0) == 3 for t in pair)
        ):
            raise InputError(f"{p} does not hold a (parent, child) pair of [layer, n, d] activation tensors")
        acts.append((Path(p).name.removesuffix(".acts.pt"), *pair))
    if model_specs:
        names = [parse_spec(spec).model_id for spec in model_specs]
        texts = steps.shared_texts(text_spec, data_dir=data_dir, seed=seed)
        parent, child = (load_model(spec, device=device) for spec in model_specs)
        click.echo(f"activations: {len(texts)} texts of {text_spec} through {names[0]} and {names[1]}")
        xp, yc = paired_activations(parent, child, texts, batch_size=batch_size, progress=True)
        tag = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{names[0]}_to_{names[1]}")
        save_torch((xp.cpu(), yc.cpu()), out_path / "acts" / f"{tag}.acts.pt")
        click.echo(f"saved {out_path / 'acts' / f'{tag}.acts.pt'} (reuse with --acts)")
        acts.append((tag, xp, yc))
    doc = similarity_report(out_path, reference=reference, vectors=vectors, activations=acts, q=quantile)
    click.echo(similarity_table(doc))
    tables = [f for f in doc["files"] if not f.endswith((".png", ".svg"))]
    n_figs = sum(f.endswith(".png") for f in doc["files"])
    click.echo(f"wrote {', '.join(tables)} and {n_figs} figures (PNG + SVG) in {out_path / 'figures'}")


def _float_list(text: str, option: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise click.BadParameter(
            f"expected comma-separated numbers, got {text!r}", param_hint=option
        ) from None


@main.command("fidelity")
@click.option("--parent", "parents", multiple=True, required=True, help="Parent model spec (repeatable).")
@click.option("--child", "children", multiple=True, required=True, help="Child model spec (repeatable).")
@click.option(
    "--concept",
    "concepts",
    multiple=True,
    help="Built-in concept (sentiment, topic, formality, certainty), 'corrupted_answer' (GSM8K; needs data), "
    "or a concept .jsonl file (repeatable; default: the four built-ins).",
)
@click.option(
    "--layer-map", "layer_maps", multiple=True, help="Layer map(s) to compare (default: proportional)."
)
@click.option(
    "--width-map",
    "width_maps",
    multiple=True,
    help="Width map(s) to compare (default: ridge and the truncate_pad control).",
)
@click.option(
    "--lambdas",
    default=",".join(f"{x:g}" for x in FIDELITY_DEFAULTS.lambdas),
    show_default=True,
    help="Dose-response λ grid (non-zero, both signs), relative to the child's residual norm.",
)
@click.option(
    "--layers",
    default=FIDELITY_DEFAULTS.layers,
    show_default=True,
    help="Steered child layers: all, middle (central third) or a-b.",
)
@click.option(
    "--placebos",
    type=click.IntRange(min=1),
    default=FIDELITY_DEFAULTS.placebos,
    show_default=True,
    help="Placebo parent vectors per map (half neutral pairings, half balanced label flips; at least 10).",
)
@click.option(
    "--replicates",
    type=click.IntRange(min=1),
    default=FIDELITY_DEFAULTS.replicates,
    show_default=True,
    help="Whole-pipeline bootstrap replicates (pairs and fit texts resampled; at least 2).",
)
@click.option(
    "--random-draws",
    type=click.IntRange(min=1),
    default=FIDELITY_DEFAULTS.random_draws,
    show_default=True,
    help="Random parent directions through each map, and covariance-shaped child directions (known nulls).",
)
@click.option(
    "--judge",
    default=None,
    help="A model that is neither parent nor child: it reads the steered continuations (second readout, fluency).",
)
@click.option(
    "--judge-placebos",
    type=click.IntRange(min=1),
    default=FIDELITY_DEFAULTS.judge_placebos,
    show_default=True,
    help="Placebos per candidate map the judge reads too (its own null; at least 10).",
)
@click.option("--n-boot", type=click.IntRange(min=100), default=FIDELITY_DEFAULTS.n_boot, show_default=True)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Benchmark data (for corrupted_answer).",
)
@click.option("--batch-size", type=Positive, default=FIDELITY_DEFAULTS.batch_size, show_default=True)
@click.option("--seed", type=NonNegative, default=0, show_default=True)
@click.option("--device", default=None)
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False),
    help="Folder: results/*.json (readouts and verdicts) and fidelity.md.",
)
@friendly_errors
def fidelity_cmd(
    parents: Sequence[str],
    children: Sequence[str],
    concepts: Sequence[str],
    layer_maps: Sequence[str],
    width_maps: Sequence[str],
    lambdas: str,
    layers: str,
    placebos: int,
    replicates: int,
    random_draws: int,
    judge: str | None,
    judge_placebos: int,
    n_boot: int,
    data_dir: str | None,
    batch_size: int,
    seed: int,
    device: str | None,
    out: str,
) -> None:
    """Transfer fidelity: does a concept cross from parent to child, or does the map only push the readout?

    For every parent, child and concept: both models' own vectors from the concept's pairs, maps fitted on
    texts without that concept, and a dose-response on the concept's held-out probes. Fidelity = mapped effect
    / native effect, with a whole-pipeline bootstrap interval (pairs and fit texts resampled). A map crosses
    when that interval clears the 95th percentile of placebo vectors (no concept) through the same map;
    specificity reads the mapped vector on the other concepts' readouts. Resumable.

    \b
    Examples:
      xsteer fidelity --parent gemma3-270m --child smollm2-135m --concept sentiment --out runs/fid
      xsteer fidelity --parent qwen2.5-coder-1.5b --child qwen2.5-coder-0.5b --concept formality \\
          --width-map ridge --width-map anchor --width-map truncate_pad --out runs/fid-qwen
    """
    from xsteer.app.fidelity import FidelitySpec, load_results, run_study
    from xsteer.app.fidelity_tables import cell_table, is_instrument_result, study_markdown
    from xsteer.core.io import write_text_atomic
    from xsteer.core.models import resolve_device
    from xsteer.errors import InputError
    from xsteer.tasks.concepts import BUILTIN

    out_path = check_output(out, folder=True)
    for spec in (*parents, *children, *([judge] if judge else [])):
        check_spec(spec)
    resolve_device(device)
    fspec = FidelitySpec(
        parents=tuple(parents),
        children=tuple(children),
        concepts=tuple(concepts) or BUILTIN,
        layer_maps=tuple(layer_maps) or FIDELITY_DEFAULTS.layer_maps,
        width_maps=tuple(width_maps) or FIDELITY_DEFAULTS.width_maps,
        lambdas=_float_list(lambdas, "--lambdas"),
        layers=layers,
        placebos=placebos,
        replicates=replicates,
        random_draws=random_draws,
        judge=judge,
        judge_placebos=judge_placebos,
        n_boot=n_boot,
        batch_size=batch_size,
        seed=seed,
        data_dir=data_dir,
        device=device,
    )
    from xsteer.app.fidelity import steered_layers
    from xsteer.interop.hf import model_shape

    for child in children:  # the zoo or the model's config says its depth: no weights are read
        n = model_shape(child).n_layers
        if n is not None:
            try:
                steered_layers(layers, n)
            except InputError as e:
                raise click.BadParameter(
                    f"{e} for child {child} ({n} layers)", param_hint="--layers"
                ) from None
    with removed_on_failure(out_path, keep=lambda: any(out_path.glob("results/*.json")), files=["spec.json"]):
        ran = run_study(fspec, out_path, log=click.echo)
    click.echo(cell_table([json.loads(p.read_text()) for p in ran]))  # this run's cells; fidelity.md: all
    results = [r for r in load_results(out_path) if is_instrument_result(r)]
    write_text_atomic(out_path / "fidelity.md", study_markdown(results) + "\n")
    click.echo(f"wrote {out_path / 'fidelity.md'}")


# ---------------------------------------------------------------------------------------------- runs
@main.command("demo")
@click.option(
    "--out",
    default="runs/demo",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Run folder (reused on rerun).",
)
@click.option(
    "--benchmark",
    is_flag=True,
    help="Run the benchmark pipeline (Algorithms 1-3 with ITS and controls) instead.",
)
@click.option("--device", default=None)
@friendly_errors
def demo_cmd(out: str, benchmark: bool, device: str | None) -> None:
    """The whole pipeline offline on the embedded default, then a report.

    \b
    Examples:
      xsteer demo --out runs/demo                # then open the report.html it prints
      xsteer demo --benchmark --out runs/demo-b  # Gemma-3-270M -> SmolLM2-135M on built-in problems
    """
    from xsteer.app.demo import run_demo

    check_output(out, folder=True)
    run_demo(out, device=device, benchmark=benchmark)


@main.command("report")
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.option("--title", default=None)
@friendly_errors
def report_cmd(folder: str, title: str | None) -> None:
    """(Re)build FOLDER/report.html and its figures from the records and summary in FOLDER.

    \b
    Example:
      xsteer report runs/g2s-gsm8k
    """
    from xsteer.app.report import write_report

    check_output(folder, folder=True, option="FOLDER")
    click.echo(f"wrote {write_report(folder, title=title or f'xsteer report: {folder}')}")


@main.command("grid")
@click.argument("config_path", metavar="CONFIG", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--out",
    default=None,
    type=click.Path(file_okay=False),
    help="Output folder (default: runs/<config name>).",
)
@click.option(
    "--ray",
    "ray_address",
    is_flag=False,
    flag_value="local",
    default=None,
    help="Run each job as a Ray task; optional ADDRESS of a cluster.",
)
@click.option("--check", is_flag=True, help="Only validate the config (no model loads).")
@friendly_errors
def grid_cmd(config_path: str, out: str | None, ray_address: str | None, check: bool) -> None:
    """Run every (parent, child, task) job of an experiment config; finished work is skipped.

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
    check_output(out, folder=True)
    status = load_plan_status(cfg, out)
    click.echo(f"{cfg.name}: {status['jobs']} jobs ({status['done']} done) -> {out}")
    if check:
        click.echo("config is valid")
        return
    use_ray = ray_address is not None
    run_grid(
        cfg,
        out,
        use_ray=use_ray,
        ray_address=None if ray_address in (None, "local") else ray_address,
        on_done=lambda p: click.echo(f"done: {p}"),
    )


for _command in (export_cmd, export_model_cmd, import_cmd, check_model_cmd):
    main.add_command(_command)

if __name__ == "__main__":
    main()
