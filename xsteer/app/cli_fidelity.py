"""``xsteer fidelity``: does a concept cross from parent to child? The study is :mod:`xsteer.app.fidelity`'s;
this module turns the options into its :class:`~xsteer.app.fidelity.FidelitySpec`, whose defaults they show."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import MISSING, fields
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import click

from xsteer.app.cli_common import (
    Decorator,
    check_output,
    check_spec,
    data_dir_option,
    friendly_errors,
    out_option,
    removed_on_failure,
    run_options,
)
from xsteer.evaluation.instrument import NORMS as INSTRUMENT_NORMS

if TYPE_CHECKING:
    from xsteer.app.fidelity import FidelitySpec


def _spec_defaults() -> Any:
    """FidelitySpec's field defaults as attributes, so the click defaults are read from the one place that
    holds them."""
    from xsteer.app.fidelity import FidelitySpec

    return SimpleNamespace(**{f.name: f.default for f in fields(FidelitySpec) if f.default is not MISSING})


FIDELITY_DEFAULTS = _spec_defaults()


def _count_option(name: str, help: str, minimum: int = 1) -> Decorator:
    """A count whose default is the FidelitySpec field of the same name."""
    default = getattr(FIDELITY_DEFAULTS, name.removeprefix("--").replace("-", "_"))
    return click.option(name, type=click.IntRange(min=minimum), default=default, show_default=True, help=help)


@click.command("fidelity")
@click.option("--parent", "parents", multiple=True, required=True, help="Parent model spec (repeatable).")
@click.option("--child", "children", multiple=True, required=True, help="Child model spec (repeatable).")
@click.option(
    "--concept",
    "concepts",
    multiple=True,
    help="Built-in concept (sentiment, topic, formality, certainty), 'corrupted_answer' (GSM8K; needs data), "
    "ab:NAME (in-house A/B sets: sycophancy, refusal, corrigibility), ab:FILE (model-written evals / CAA), "
    "caa:BEHAVIOUR (downloads CAA), or a concept .jsonl file (repeatable; default: the four built-ins).",
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
@_count_option(
    "--placebos",
    "Placebo parent vectors per map (half neutral pairings, half balanced label flips; at least 10).",
)
@_count_option(
    "--replicates", "Whole-pipeline bootstrap replicates (pairs and fit texts resampled; at least 2)."
)
@_count_option(
    "--pipeline-placebos",
    "Placebos of each kind that get the pipeline replicates too (candidate maps; calibrates the candidates' rule).",
    minimum=0,
)
@_count_option(
    "--random-draws",
    "Random parent directions through each map, and covariance-shaped child directions (known nulls).",
)
@click.option(
    "--norm",
    type=click.Choice(INSTRUMENT_NORMS),
    default=FIDELITY_DEFAULTS.norm,
    show_default=True,
    help="What λ is a share of: resid_mean (the child's mean ‖h_l‖) or whitened (its spread per coordinate, "
    "so a massive-activation coordinate does not make 'equal norm' unequal).",
)
@click.option(
    "--judge",
    default=None,
    help="A model that is neither parent nor child: it reads the steered continuations (second readout, fluency).",
)
@_count_option(
    "--judge-placebos", "Placebos per candidate map the judge reads too (its own null; at least 10)."
)
@click.option("--n-boot", type=click.IntRange(min=100), default=FIDELITY_DEFAULTS.n_boot, show_default=True)
@data_dir_option(help="Benchmark data (for corrupted_answer).")
@run_options(batch_size=FIDELITY_DEFAULTS.batch_size, device_help=None)
@out_option("Folder: results/*.json (readouts and verdicts) and fidelity.md.", folder=True)
@friendly_errors
def fidelity_cmd(out: str, **study_options: Any) -> None:
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
    from xsteer.app.fidelity import load_results, run_study
    from xsteer.app.fidelity_tables import cell_table, is_instrument_result, study_markdown
    from xsteer.core.io import write_text_atomic

    out_path = check_output(out, folder=True)
    fspec = fidelity_spec(**study_options)
    with removed_on_failure(out_path, keep=lambda: any(out_path.glob("results/*.json")), files=["spec.json"]):
        ran = run_study(fspec, out_path, log=click.echo)
    click.echo(cell_table([json.loads(p.read_text()) for p in ran]))  # this run's cells; fidelity.md: all
    results = [r for r in load_results(out_path) if is_instrument_result(r)]
    write_text_atomic(out_path / "fidelity.md", study_markdown(results) + "\n")
    click.echo(f"wrote {out_path / 'fidelity.md'}")


def fidelity_spec(
    *,
    parents: Sequence[str],
    children: Sequence[str],
    concepts: Sequence[str],
    layer_maps: Sequence[str],
    width_maps: Sequence[str],
    lambdas: str,
    layers: str,
    placebos: int,
    replicates: int,
    pipeline_placebos: int,
    random_draws: int,
    norm: str,
    judge: str | None,
    judge_placebos: int,
    n_boot: int,
    data_dir: str | None,
    batch_size: int,
    seed: int,
    device: str | None,
) -> FidelitySpec:
    """The options as a study spec, checked as far as they can be before a model loads: the model specs, the
    device, the spec's own rules, and ``--layers`` against each child's depth."""
    from xsteer.app.fidelity import FidelitySpec, steered_layers
    from xsteer.core.models import resolve_device
    from xsteer.errors import InputError
    from xsteer.interop.shapes import model_shape
    from xsteer.tasks.concepts import BUILTIN

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
        pipeline_placebos=pipeline_placebos,
        random_draws=random_draws,
        norm=norm,
        judge=judge,
        judge_placebos=judge_placebos,
        n_boot=n_boot,
        batch_size=batch_size,
        seed=seed,
        data_dir=data_dir,
        device=device,
    )
    for child in children:  # the zoo or the model's config says its depth: no weights are read
        n = model_shape(child).n_layers
        if n is not None:
            try:
                steered_layers(layers, n)
            except InputError as e:
                raise click.BadParameter(
                    f"{e} for child {child} ({n} layers)", param_hint="--layers"
                ) from None
    return fspec


def _float_list(text: str, option: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise click.BadParameter(
            f"expected comma-separated numbers, got {text!r}", param_hint=option
        ) from None
