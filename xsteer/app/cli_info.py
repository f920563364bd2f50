"""``xsteer models`` (the offline zoo) and ``xsteer info`` (what a file xsteer writes holds)."""

from __future__ import annotations

from collections.abc import Sequence

import click

from xsteer.app.cli_common import friendly_errors, layer_table


@click.command("models")
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


@click.command("info")
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
    click.echo(f"{'model_id':>16}: {sv.model_id} [{sv.n_layers} layers x d_model {sv.d_model}]")
    click.echo(f"{'layers':>16}: {list(sv.layers)}")
    # Provenance, by name: what a colleague needs to reuse the file, and what it does not say.
    mapped_only = {"parent", "parent_weights", "map", "fit_texts", "fit_texts_hash", "heldout_r2"}
    transferred = sv.method.startswith("transfer:")
    for k, v in sv.provenance().items():
        if k != "model_id" and (transferred or k not in mapped_only):
            click.echo(f"{k:>16}: {'not recorded' if v is None else v}")
    rest = sv.provenance_rest()
    if rest:
        click.echo(f"{'extra':>16}: {rest}")
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
    from xsteer.transfer.acts_file import is_paired

    obj = load_torch(path, what="an lm-eval steering file or an activation file")
    if is_paired(obj):
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
