"""``xsteer transfer``: parent vectors mapped into a child's residual space through a fitted (or reused) map."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from xsteer.app.cli_common import (
    check_output,
    choices,
    data_dir_option,
    friendly_errors,
    out_option,
    run_options,
)
from xsteer.transfer.maps import DEFAULT_FIT_TEXT

if TYPE_CHECKING:
    from xsteer.app.config import TransferSpec
    from xsteer.core.vectors import SteeringVectors
    from xsteer.transfer.maps import TransferMap


def _layer_maps() -> click.Choice:
    from xsteer.transfer.layermap import LAYER_MAPS

    return choices([k for k in LAYER_MAPS if k != "cka_diff"])  # cka_diff needs a concept's pairs: `fidelity`


def _width_maps() -> click.Choice:
    from xsteer.transfer.widthmap import WIDTH_MAPS

    return choices(WIDTH_MAPS)


@click.command("transfer")
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
@data_dir_option(help=None)
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
@run_options(batch_size=16, device_help=None)
@out_option("Child-space vector file; the map goes to OUT's stem + '.map.safetensors'.", folder=False)
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
    from xsteer.core.models import parse_spec, resolve_device
    from xsteer.core.vectors import SteeringVectors

    out_path = check_output(out, inputs=[vectors_path, map_path])
    map_out = out_path.with_name(out_path.stem + ".map.safetensors")
    if map_path is None:
        check_output(map_out, inputs=[vectors_path], option="--out (its .map.safetensors)")
    vectors = SteeringVectors.load(vectors_path)
    child_id = parse_spec(child_spec).model_id
    if map_path is not None:
        tmap = _reused_map(map_path, vectors, child_spec, child_id)
    else:
        spec = _transfer_spec(layer_map, width_map, fit_text, norm, mapping)
        resolve_device(device)
        tmap = _fitted_map(
            vectors,
            parent_spec or vectors.model_id,
            child_spec,
            spec,
            data_dir=data_dir,
            seed=seed,
            batch_size=batch_size,
            heldout=heldout,
            device=device,
            out=map_out,
        )
    mapped = tmap.apply(vectors, norm=norm)
    mapped.save(out_path)
    click.echo(f"steered child layers: {list(mapped.layers)}")
    click.echo(f"wrote {out_path}" + ("" if map_path else f" and {map_out}"))


def _transfer_spec(
    layer_map: str, width_map: str, fit_text: str, norm: str, mapping: str | None
) -> TransferSpec:
    """The map to fit, as the options name it (checked: an explicit layer map needs its mapping)."""
    from xsteer.app.config import TextSpec, TransferSpec

    if layer_map == "explicit" and not mapping:
        raise click.UsageError("--layer-map explicit needs --mapping 'child:parent,...'")
    spec = TransferSpec(
        layer_map=layer_map, width_map=width_map, fit_text=fit_text, norm=norm, mapping=mapping
    )
    TextSpec.parse(fit_text)
    return spec


def _reused_map(path: str, vectors: SteeringVectors, child_spec: str, child_id: str) -> TransferMap:
    """A saved map, refused unless it was fitted for these vectors' parent and for this child."""
    from xsteer.app import steps
    from xsteer.core.models import ZOO
    from xsteer.transfer.maps import TransferMap

    tmap = TransferMap.load(path)
    # A zoo child's shape is known without loading it; another child is checked by id only.
    shape = (ZOO[child_spec].n_layers, ZOO[child_spec].d_model) if child_spec in ZOO else None
    steps.check_map(tmap, vectors=vectors, child_id=child_id, child_shape=shape)
    return tmap


def _fitted_map(
    vectors: SteeringVectors,
    parent_spec: str,
    child_spec: str,
    spec: TransferSpec,
    *,
    data_dir: str | None,
    seed: int,
    batch_size: int,
    heldout: float,
    device: str | None,
    out: Path,
) -> TransferMap:
    """Fit the map ``spec`` names from the vectors' parent to the child, save it to ``out`` and print its fit."""
    from xsteer.app import steps
    from xsteer.core.models import load_model
    from xsteer.transfer.maps import report_table

    steps.shared_texts(spec.fit_text, data_dir=data_dir, seed=seed)  # the data exists before any model loads
    parent = load_model(parent_spec, device=device)
    vectors.check_compatible(parent.cfg.n_layers, parent.cfg.d_model, parent.cfg.model_name)
    child = load_model(child_spec, device=device)
    click.echo(
        f"fitting {spec.layer_map}/{spec.width_map}: {parent.cfg.model_name} -> {child.cfg.model_name} "
        f"on {spec.fit_text}"
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
    tmap.save(out)
    click.echo(report_table(tmap))
    return tmap
