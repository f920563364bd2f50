"""``xsteer similarity`` (concepts compared across models, computed by :func:`xsteer.transfer.similarity.compare_all`)
and ``xsteer report`` (a run folder's report rebuilt from its files)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import click

from xsteer.app.cli_common import check_output, data_dir_option, friendly_errors, out_option, run_options
from xsteer.transfer.maps import DEFAULT_FIT_TEXT

if TYPE_CHECKING:
    from torch import Tensor

    from xsteer.core.vectors import SteeringVectors
    from xsteer.transfer.maps import TransferMap


@click.command("similarity")
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
@data_dir_option(help=None)
@click.option(
    "--quantile",
    type=float,
    default=0.95,
    show_default=True,
    help="Quantile of |cos| under the random nulls.",
)
@run_options(batch_size=16, device_help=None)
@out_option(
    "Folder: similarity.json, similarity.csv, cka.csv, figures/ (PNG + SVG), report.html.", folder=True
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
    from xsteer.app.report import similarity_report, similarity_table
    from xsteer.transfer.acts_file import load_paired, paired_name
    from xsteer.transfer.similarity import compare_all

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
    reference, vectors = _vector_sets(reference_path, vector_paths, map_paths)
    acts = [(paired_name(p), *load_paired(p)) for p in acts_paths]
    if model_specs:
        parent_spec, child_spec = model_specs
        acts.append(
            _model_acts(parent_spec, child_spec, text_spec, out_path, data_dir, seed, batch_size, device)
        )
    result = compare_all(reference=reference, vectors=vectors, activations=acts, q=quantile)
    doc = similarity_report(out_path, result)
    click.echo(similarity_table(doc))
    tables = [f for f in doc["files"] if not f.endswith((".png", ".svg"))]
    n_figs = sum(f.endswith(".png") for f in doc["files"])
    click.echo(f"wrote {', '.join(tables)} and {n_figs} figures (PNG + SVG) in {out_path / 'figures'}")


def _vector_sets(
    reference_path: str | None, vector_paths: Sequence[str], map_paths: Sequence[str]
) -> tuple[tuple[str, SteeringVectors] | None, list[tuple[str, SteeringVectors, TransferMap | None]]]:
    """The reference and the compared vector files, named for tables and figures, each with the map that
    made it (the first ``--vectors`` files take the ``--map`` files in order)."""
    from xsteer.app.report import vector_labels
    from xsteer.core.vectors import SteeringVectors
    from xsteer.transfer.maps import TransferMap

    reference = None
    if reference_path:
        ref = SteeringVectors.load(reference_path)
        reference = (vector_labels([(Path(reference_path).stem, ref)])[0], ref)
    items = [(Path(p).stem, SteeringVectors.load(p)) for p in vector_paths]
    maps: list[TransferMap | None] = [TransferMap.load(p) for p in map_paths]
    maps += [None] * (len(items) - len(map_paths))
    vectors = [(name, sv, m) for name, (_, sv), m in zip(vector_labels(items), items, maps, strict=True)]
    return reference, vectors


def _model_acts(
    parent_spec: str,
    child_spec: str,
    text_spec: str,
    out: Path,
    data_dir: str | None,
    seed: int,
    batch_size: int,
    device: str | None,
) -> tuple[str, Tensor, Tensor]:
    """Both models' activations on the shared texts, saved under ``out/acts`` for ``--acts``; (name, parent,
    child)."""
    from xsteer.app import steps
    from xsteer.core.models import load_model, parse_spec
    from xsteer.transfer.acts_file import paired_file, paired_name, save_paired
    from xsteer.transfer.maps import paired_activations

    names = [parse_spec(spec).model_id for spec in (parent_spec, child_spec)]
    texts = steps.shared_texts(text_spec, data_dir=data_dir, seed=seed)
    parent, child = (load_model(spec, device=device) for spec in (parent_spec, child_spec))
    click.echo(f"activations: {len(texts)} texts of {text_spec} through {names[0]} and {names[1]}")
    xp, yc = paired_activations(parent, child, texts, batch_size=batch_size, progress=True)
    path = save_paired(xp, yc, paired_file(out / "acts", *names))
    click.echo(f"saved {path} (reuse with --acts)")
    return paired_name(path), xp, yc


@click.command("report")
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
