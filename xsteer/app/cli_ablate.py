"""``xsteer ablate``: per-layer λ ablations on the gold-answer log-probability, with the evaluation options
of :mod:`xsteer.app.cli_evaluate`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from xsteer.app.cli_common import Positive, check_output, check_spec, friendly_errors, out_option
from xsteer.app.cli_evaluate import eval_options, eval_plan

if TYPE_CHECKING:
    from xsteer.core.vectors import SteeringVectors


@click.command("ablate")
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
@out_option("Folder: ablate_STUDY.json, ablate_STUDY.csv, figures/.", folder=True)
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
    device: str | None,
    out: str,
    **plan_options: Any,
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
    from xsteer.app.report import write_ablation
    from xsteer.core.models import load_model, resolve_device
    from xsteer.evaluation.ablate import ablation_study, ablation_table
    from xsteer.tasks import get_task

    plan = eval_plan(dataset, **plan_options)
    out_path = check_output(out, folder=True)
    vectors = _study_vectors(vectors_path, study)
    check_spec(child_spec)
    resolve_device(device)
    items = get_task(dataset).load(split, data_dir=data_dir, limit=n_items, seed=plan.seed)
    if not items:
        raise click.UsageError(f"{dataset}:{split} has no items")
    model = load_model(child_spec, device=device)
    click.echo(
        f"{study} study: {len(vectors.layers)} steered layers, λ {list(plan.lambdas)}, {len(items)} {split} items"
    )
    doc = ablation_study(
        model,
        vectors,
        items,
        plan.config(dataset),
        study,
        sweeps=sweeps,
        batch_size=plan.batch_size,
        split=split,
        records=out_path / "records.jsonl" if accuracy else None,
        data_dir=data_dir,
    )
    doc.update(child=child_spec, vectors_file=str(vectors_path), dataset=dataset, mode=plan.mode)
    files = write_ablation(doc, out_path)
    click.echo(ablation_table(doc))
    click.echo("wrote " + ", ".join(str(f) for f in files) + " (figures also as .svg)")


def _study_vectors(path: str, study: str) -> SteeringVectors:
    """The vector file, refused when the study has nothing to ablate in it."""
    from xsteer.core.vectors import SteeringVectors

    vectors = SteeringVectors.load(path)
    if study == "leave_one_out" and len(vectors.layers) < 2:
        raise click.BadParameter(
            f"leave_one_out needs at least 2 steered layers; {path} steers {list(vectors.layers)}",
            param_hint="--study",
        )
    return vectors
