"""``xsteer evaluate`` (Algorithms 2 + 3) and ``xsteer tune`` (Algorithm 2 alone), and the options every
command that runs a child on task items shares (:func:`eval_options`; ``xsteer ablate`` takes them too)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, get_args

import click
from click.core import ParameterSource

from xsteer.app.cli_common import (
    Decorator,
    NonNegative,
    Positive,
    check_model_option,
    check_output,
    check_spec,
    data_dir_option,
    friendly_errors,
    load_checked,
    options,
    out_option,
    parse_lambdas,
    removed_on_failure,
    run_options,
)
from xsteer.evaluation.plan import DEFAULT_NORM_TEXT, PAPER_GRID, PRESETS, EvalPlan, Mode, Positions


def grid_text(lambdas: Sequence[float]) -> str:
    """A λ grid as ``--lambdas`` reads it ('paper' for the paper's grid)."""
    return "paper" if tuple(lambdas) == PAPER_GRID else ",".join(f"{x:g}" for x in lambdas)


def eval_options(
    *,
    lambdas: str = grid_text(EvalPlan.lambdas),
    lambdas_help: str = "'paper' or comma-separated λ values.",
    batch_size: int = EvalPlan.batch_size,
) -> Decorator:
    """The options every command that runs a child on task items shares (evaluate, tune, ablate):
    the child, the data, the prompt, the λ grid and the batch. One definition, so they cannot drift; the
    defaults are :class:`EvalPlan`'s, the same as ``xs.evaluate``'s and the grid's. The command hands the
    plan's options on to :func:`eval_plan`."""
    return options(
        click.option(
            "--child",
            "child_spec",
            required=True,
            help="Child model spec: zoo name, .gguf path, local HF dir or hub id.",
        ),
        click.option(
            "--dataset", required=True, help="Task: gsm8k, math, math500, arc_challenge or synthetic."
        ),
        data_dir_option(),
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
        run_options(batch_size=batch_size, seed=EvalPlan.seed),
    )


def eval_plan(
    dataset: str,
    *,
    mode: str,
    lambdas: str,
    positions: str,
    shots: int,
    max_new_tokens: int,
    seed: int,
    batch_size: int,
    val_items: int = EvalPlan.val_items,
    test_items: int | None = EvalPlan.test_items,
    random_control: bool = EvalPlan.random,
    self_consistency: bool = EvalPlan.self_consistency,
    preset: str | None = None,
) -> EvalPlan:
    """The options as a plan, checked with the task (a mode the task lacks fails here, before any load).
    With a ``preset``, the preset's plan, where only the options given on the command line override it."""
    from xsteer.evaluation.plan import check_mode, check_positions

    given = dict(
        mode=check_mode(mode),
        shots=shots,
        lambdas=parse_lambdas(lambdas),
        positions=check_positions(positions),
        max_new_tokens=max_new_tokens,
        seed=seed,
        batch_size=batch_size,
        val_items=val_items,
        test_items=test_items,
        random=random_control,
        self_consistency=self_consistency,
    )
    plan = EvalPlan(**given) if preset is None else PRESETS[preset].plan_with(given, typed(given))  # type: ignore[arg-type]
    plan.config(dataset)
    return plan


def typed(names: Iterable[str]) -> set[str]:
    """Which of these settings the user gave on the command line (a preset supplies the others)."""
    ctx = click.get_current_context()
    option = {"random": "random_control"}
    given = (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT, ParameterSource.PROMPT)
    return {n for n in names if ctx.get_parameter_source(option.get(n, n)) in given}


preset_option = click.option(
    "--preset",
    type=click.Choice(sorted(PRESETS)),
    default=None,
    help="Start from a named set of settings; options given explicitly override it. "
    + "; ".join(f"{p.name}: {p.summary}" for p in PRESETS.values())
    + " (docs/paper-literal.md).",
)


def named_vectors(specs: Sequence[str], option: str = "--vectors") -> dict[str, Any]:
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


@click.command("evaluate")
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
@check_model_option()
@out_option("Run folder: records.jsonl, summary.json, summary.md.", folder=True)
@friendly_errors
def evaluate_cmd(
    child_spec: str,
    vector_specs: Sequence[str],
    norm: str,
    map_path: str | None,
    fit_text: str | None,
    dataset: str,
    data_dir: str | None,
    device: str | None,
    check_model: bool,
    out: str,
    **plan_options: Any,
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
    from xsteer.core.models import parse_spec, resolve_device
    from xsteer.transfer.maps import TransferMap

    plan = eval_plan(dataset, **plan_options)
    if plan_options.get("preset") is not None and not typed(["norm"]):
        norm = PRESETS[plan_options["preset"]].norm
    out_path = check_output(out, folder=True)
    vectors = named_vectors(vector_specs)
    check_spec(child_spec)
    resolve_device(device)
    child_id = parse_spec(child_spec).model_id
    tmap = TransferMap.load(map_path) if map_path else None
    if tmap is not None:
        steps.check_map(tmap, child_id=child_id)
    val, test = steps.load_splits(dataset, plan, data_dir=data_dir)
    source = steps.NormSource.choose(
        norm, task=dataset, tmap=tmap, text_spec=fit_text, data_dir=data_dir, seed=plan.seed
    )
    if norm == "keep":  # refuse a mix now, not after the model has loaded
        steps.build_conditions(vectors, random=False)
    model = load_checked(child_spec, device=device, check=check_model)
    summary = steps.run_evaluation(
        model,
        vectors,
        plan,
        task=dataset,
        data_dir=data_dir,
        out=out_path,
        norm=None if norm == "keep" else norm,
        norms=source.norms(model, batch_size=plan.batch_size),
        splits=(val, test),
        extra={"child": child_spec},
    )
    click.echo(f"λ* on {len(val)} validation items: {summary.lambda_star}")
    click.echo((out_path / "summary.md").read_text())


@click.command("tune")
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
@check_model_option()
@out_option("Run folder: records.jsonl (resumable) and tune.json.", folder=True)
@friendly_errors
def tune_cmd(
    child_spec: str,
    vector_spec: str,
    baseline: bool,
    dataset: str,
    data_dir: str | None,
    device: str | None,
    check_model: bool,
    out: str,
    **plan_options: Any,
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
    from xsteer.core.models import resolve_device
    from xsteer.evaluation.summary import tune_markdown

    # No random control here: the λ search is for the given vectors only.
    plan = eval_plan(dataset, random_control=False, **plan_options)
    out_path = check_output(out, folder=True)
    if "=" not in vector_spec or Path(vector_spec).is_file():
        vector_spec = f"steered={vector_spec}"
    vectors = named_vectors([vector_spec])
    check_spec(child_spec)
    resolve_device(device)
    val, _ = steps.load_splits(dataset, plan, data_dir=data_dir, test=False)
    if not val:
        raise click.UsageError(f"{dataset} has no validation items")
    with removed_on_failure(out_path, keep=lambda: (out_path / "records.jsonl").exists()):
        model = load_checked(child_spec, device=device, check=check_model)
        [name] = vectors
        click.echo(
            f"λ search: {len(plan.lambdas)} λ x {len(val)} validation items ({plan.mode}) -> {out_path}"
        )
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
