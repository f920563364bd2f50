"""Interop commands: ``export`` (vectors -> llama.cpp GGUF or lm-eval .pt), ``export-model`` (any model spec ->
a local Hugging Face directory) and ``import`` (a GGUF or lm-eval file -> an xsteer vector file).

These are plain ``click`` commands; :mod:`xsteer.app.cli` registers them on the ``xsteer`` group.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import click

from xsteer.app.cli_common import check_output, friendly_errors, out_option, parse_layers

if TYPE_CHECKING:
    from xsteer.core.vectors import SteeringVectors

FORMATS = ("gguf", "lm-eval")
format_option = click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    required=True,
    help="gguf: llama.cpp / repeng control vector; lm-eval: lm-evaluation-harness `steered` file (.pt).",
)


def _layer_span(layers: list[int] | tuple[int, ...]) -> str:
    return f"layer {layers[0]}" if len(layers) == 1 else f"layers {layers[0]}..{layers[-1]}"


@click.command("export")
@click.argument("vectors_path", metavar="VECTORS", type=click.Path(exists=True, dir_okay=False))
@format_option
@click.option(
    "--lam",
    type=float,
    default=None,
    help="λ, written as lm-eval's steering_coefficient (lm-eval only; required there).",
)
@click.option(
    "--layers",
    default=None,
    help="Layers to export, e.g. '10-20' or '3,5,7' (default: every steered layer; for gguf every one but 0).",
)
@click.option(
    "--model-hint",
    default=None,
    help="gguf: llama.cpp architecture of the target model (default: inferred from the vectors' model id).",
)
@click.option(
    "--scale",
    type=float,
    default=None,
    help="gguf: bake a strength into the file (llama.cpp's own λ still multiplies it).",
)
@out_option("Output file (.gguf, or .pt for lm-eval).", folder=False)
@friendly_errors
def export_cmd(
    vectors_path: str,
    fmt: str,
    lam: float | None,
    layers: str | None,
    model_hint: str | None,
    scale: float | None,
    out: str,
) -> None:
    """Write VECTORS for another tool: a llama.cpp control vector or an lm-eval steering file.

    xsteer layer L is added to block L's output; it becomes llama.cpp's ``direction.L`` and lm-eval's hook
    point ``layers.L`` (both add there too). llama.cpp cannot steer block 0's output, so gguf leaves layer 0
    out; llama.cpp takes λ at run time, lm-eval reads it from the file (``--lam``).

    \b
    Examples:
      xsteer export runs/g2s.safetensors --format gguf --out g2s.gguf
      llama-cli -m SmolLM2-135M-Instruct.gguf --control-vector-scaled g2s.gguf 0.01 -p "..."
      xsteer export runs/g2s.safetensors --format lm-eval --lam 8 --layers 15 --out g2s.pt
      lm_eval --model steered --model_args pretrained=DIR,steer_path=g2s.pt,dtype=float32,add_bos_token=True ...
    """
    from xsteer.core.inject import resolve_layers
    from xsteer.core.vectors import SteeringVectors

    check_output(out, inputs=[vectors_path])
    if fmt == "gguf":
        _check_gguf_options(lam, model_hint, scale)
    else:
        _check_lmeval_options(lam, model_hint, scale)
    sv = SteeringVectors.load(vectors_path)
    chosen = resolve_layers(sv, parse_layers(layers, sv.n_layers)) if layers else list(sv.layers)
    if fmt == "lm-eval":
        assert lam is not None  # checked above
        _export_lmeval(sv, out, lam=lam, layers=chosen)
    else:
        _export_gguf(sv, out, layers=chosen, chosen=bool(layers), model_hint=model_hint, scale=scale)


def _check_gguf_options(lam: float | None, model_hint: str | None, scale: float | None) -> None:
    from xsteer.errors import InputError
    from xsteer.interop.gguf import check_export_options

    for name, kw in (
        ("--scale", {"scale": 1.0 if scale is None else scale, "model_hint": None}),
        ("--model-hint", {"scale": 1.0, "model_hint": model_hint}),
    ):
        try:
            check_export_options(**kw)
        except InputError as e:
            raise click.BadParameter(
                str(e).replace("scale must", "must").replace("model_hint must", "must"), param_hint=name
            ) from None
    if lam is not None:
        raise click.BadParameter(
            "llama.cpp takes λ at run time (--control-vector-scaled FILE λ); "
            "use --scale to bake a strength into the file",
            param_hint="--lam",
        )


def _check_lmeval_options(lam: float | None, model_hint: str | None, scale: float | None) -> None:
    from xsteer.core.vectors import VectorFileError
    from xsteer.interop.lmeval import check_lam

    if lam is None:
        raise click.BadParameter("lm-eval reads λ from the file: give --lam", param_hint="--lam")
    try:
        check_lam(lam)
    except VectorFileError as e:
        raise click.BadParameter(str(e).replace("lam must", "must"), param_hint="--lam") from None
    for name, value in (("--model-hint", model_hint), ("--scale", scale)):
        if value is not None:
            raise click.BadParameter(
                "is for --format gguf only (lm-eval files carry no model hint; their strength is --lam)",
                param_hint=name,
            )


def _export_lmeval(sv: SteeringVectors, out: str, *, lam: float, layers: list[int]) -> None:
    from xsteer.interop.lmeval import export_lmeval

    path = export_lmeval(sv, out, lam=lam, layers=layers)
    click.echo(
        f"wrote {path}: {len(layers)} vectors ({_layer_span(layers)} as lm-eval hook points layers.N), "
        f"d_model {sv.d_model}, norm {sv.norm}, steering_coefficient λ={lam:g}; use with lm_eval --model "
        f"steered --model_args pretrained=DIR,steer_path={path} (DIR from `xsteer export-model`)"
    )


def _export_gguf(
    sv: SteeringVectors,
    out: str,
    *,
    layers: list[int],
    chosen: bool,
    model_hint: str | None,
    scale: float | None,
) -> None:
    """``chosen``: the user named the layers; otherwise layer 0, which llama.cpp cannot steer, is left out."""
    from xsteer.interop.gguf import export_gguf

    if not chosen:
        layers = [layer for layer in layers if layer != 0]
        if not layers:
            raise click.BadParameter(
                "no layer left to export (layer 0 cannot be exported)", param_hint="--layers"
            )
        if 0 in sv.layers:
            click.echo(
                "note: layer 0 left out (llama.cpp cannot add a control vector to the first block's output)"
            )
    path = export_gguf(
        sv.replace(layers=tuple(layers)), out, model_hint=model_hint, scale=1.0 if scale is None else scale
    )
    click.echo(
        f"wrote {path}: {len(layers)} directions ({_layer_span(layers)}), d_model {sv.d_model}, "
        f"norm {sv.norm}; use with llama.cpp --control-vector-scaled {path} <λ>"
    )


@click.command("export-model")
@click.argument("spec")
@out_option("Output folder (must be new or empty).", folder=True)
@click.option("--overwrite", is_flag=True, help="Replace a non-empty --out folder.")
@friendly_errors
def export_model_cmd(spec: str, out: str, overwrite: bool) -> None:
    """Write model SPEC (zoo name, .gguf path, HF folder, hub id) as a local Hugging Face folder.

    The folder (config.json, float32 safetensors, tokenizer, chat template) loads offline in transformers
    and lm-eval, with the very weights xsteer runs. xsteer prepends BOS to every text; the printed lm-eval
    model_args make lm-eval do the same.
    """
    from xsteer.core.models import parse_spec
    from xsteer.interop.hf import PROVENANCE, export_model

    check_output(out, folder=True)
    parse_spec(spec)  # a bad spec fails before anything is read
    path = export_model(spec, out, overwrite=overwrite)
    info = json.loads((path / PROVENANCE).read_text(encoding="utf-8"))
    files = sorted(p.name for p in path.iterdir())
    click.echo(
        f"wrote {path}: {info['architecture']}, {info['n_layers']} layers x d_model {info['d_model']}, float32 "
        f"({', '.join(files)})"
    )
    click.echo(f"lm-eval: --model steered --model_args {info['lm_eval_model_args']},steer_path=FILE.pt")


@click.command("import")
@click.argument("file_path", metavar="FILE", type=click.Path(exists=True, dir_okay=False))
@format_option
@click.option(
    "--model",
    "model",
    default=None,
    help="Target model: zoo name, .gguf path or HF folder (read without loading weights), or just an id. "
    "Sizes the vectors to its depth and checks width, depth and architecture.",
)
@out_option("Output xsteer vector file (.safetensors).", folder=False)
@friendly_errors
def import_cmd(file_path: str, fmt: str, model: str | None, out: str) -> None:
    """Convert a control vector or lm-eval steering FILE from another tool into an xsteer vector file.

    llama.cpp/repeng ``direction.L`` and lm-eval ``layers.L`` become xsteer layer L (all add to block L's
    output). lm-eval's coefficient is kept as the λ to steer with (recorded in the file's extra) unless it
    differs by layer, in which case it is folded into the vectors (λ = 1).

    \b
    Examples:
      xsteer import happy.gguf --format gguf --model smollm2-135m --out happy.safetensors
      xsteer import steer.pt --format lm-eval --model ./smollm2-hf --out steer.safetensors
    """

    check_output(out, inputs=[file_path])
    if fmt == "gguf":
        from xsteer.interop.gguf import load_gguf

        sv = load_gguf(file_path, model=model)
    else:
        from xsteer.interop.lmeval import load_lmeval

        sv = load_lmeval(file_path, model=model)
    path = sv.save(out)
    layers = list(sv.layers)
    click.echo(
        f"wrote {path}: {len(layers)} vectors ({_layer_span(layers)}) for {sv.model_id!r}, "
        f"[{sv.n_layers} layers x d_model {sv.d_model}]"
    )
    if fmt == "lm-eval":
        how = "folded into the vectors (coefficients differ by layer)" if sv.extra.get("folded") else "kept"
        click.echo(f"λ that reproduces the file: {sv.extra['lam']:g} (coefficient {how})")
    if model is None:
        click.echo(
            "note: no --model given, so the depth is a guess (the file's own record, else one past the last "
            "layer) and nothing was checked against a model"
        )
    for note in sv.extra.get("notes", []):
        click.echo(f"note: {note}")


__all__ = ["export_cmd", "export_model_cmd", "import_cmd"]
