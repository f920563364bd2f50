"""``xsteer extract``: Algorithm 1, one steering vector per layer from contrastive pairs."""

from __future__ import annotations

import click

from xsteer.app.cli_common import (
    NonNegative,
    Positive,
    check_model_option,
    check_output,
    check_spec,
    choices,
    data_dir_option,
    friendly_errors,
    layer_table,
    load_checked,
    out_option,
    run_options,
)
from xsteer.evaluation.plan import EvalPlan


def _methods() -> click.Choice:
    from xsteer.extraction.methods import METHODS

    return choices(METHODS)


def _builders() -> click.Choice:
    from xsteer.extraction.pairs import BUILDERS

    return choices(BUILDERS)


@click.command("extract")
@click.option(
    "--parent", "model_spec", required=True, help="Model spec: zoo name, .gguf path, local HF dir or hub id."
)
@click.option(
    "--dataset",
    default=None,
    help="Build pairs from this task (gsm8k, math500, arc_challenge, synthetic ...).",
)
@click.option("--split", default="train", show_default=True, help="Task split the pairs come from.")
@data_dir_option()
@click.option(
    "--pairs",
    "pairs_file",
    type=click.Path(dir_okay=False),
    default=None,
    help='User pairs: JSON Lines of {"positive", "negative"}; or a concept spec (sentiment, ab:refusal).',
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
@run_options(batch_size=16)
@check_model_option()
@out_option("Output vector file (.safetensors).", folder=False)
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
    check_model: bool,
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
    from xsteer.core.models import resolve_device

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
    model = load_checked(model_spec, device=device, check=check_model)
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
