"""What every ``xsteer`` command shares: the options several commands take (each written once here), one-line
errors, safe output paths, the layer and λ parsers, and the per-layer table of a vector file."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from xsteer.errors import XsteerError

Positive = click.IntRange(min=1)
# Writing a result here fails half-way at best, and as root can replace a device node with a plain file.
SYSTEM_DIRS = (Path("/proc"), Path("/sys"), Path("/dev"))
NonNegative = click.IntRange(min=0)

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]

DEVICE_HELP = "cpu, cuda or cuda:N (default: cuda when available)."
DATA_DIR_HELP = "Local JSON Lines data (default: $XSTEER_DATA_DIR, else the hub)."


# ---------------------------------------------------------------------------------------------- shared options
# Some commands show --device or --data-dir without a help line (help=None); their --help reads as it always did.
def options(*decorators: Decorator) -> Decorator:
    """Several click options as one decorator; ``--help`` lists them in the order given."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(decorators):
            fn = option(fn)
        return fn

    return decorate


def device_option(help: str | None = DEVICE_HELP) -> Decorator:
    return click.option("--device", default=None, help=help)


def data_dir_option(help: str | None = DATA_DIR_HELP) -> Decorator:
    return click.option("--data-dir", type=click.Path(file_okay=False), default=None, help=help)


def run_options(*, batch_size: int, seed: int = 0, device_help: str | None = DEVICE_HELP) -> Decorator:
    """``--batch-size``, ``--seed`` and ``--device``: how a command that runs a model runs it."""
    return options(
        click.option("--batch-size", type=Positive, default=batch_size, show_default=True),
        click.option("--seed", type=NonNegative, default=seed, show_default=True),
        device_option(device_help),
    )


def check_model_option() -> Decorator:
    """``--check-model/--no-check-model``: check new weights once before they are used."""
    return click.option(
        "--check-model/--no-check-model",
        default=True,
        show_default=True,
        help="The first time these weights are seen, check that they are read and steered right "
        "(xsteer check-model; the pass is remembered by the weights' fingerprint).",
    )


def load_checked(spec: str, *, device: str | None, check: bool) -> Any:
    """Load a model; with ``check``, run the model checks if these weights have not passed them before."""
    from xsteer.core.models import load_model

    model = load_model(spec, device=device)
    if check:
        from xsteer.core.models.check import ensure_checked

        ensure_checked(spec, model, log=click.echo)
    return model


def out_option(help: str, *, folder: bool) -> Decorator:
    """The required ``--out``: a file, or a run folder (``folder``)."""
    kind = click.Path(file_okay=False) if folder else click.Path(dir_okay=False)
    return click.option("--out", required=True, type=kind, help=help)


def choices(registry: Iterable[str]) -> click.Choice:
    """A registry's names as the choices of an option."""
    return click.Choice(list(registry))


# ---------------------------------------------------------------------------------------------- errors, paths


def friendly_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """xsteer's own errors become one clear line and exit code 1; anything else is a bug and keeps its traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except XsteerError as e:
            raise click.ClickException(str(e)) from e

    return wrapper


def check_output(
    path: str | Path, *, inputs: Sequence[str | Path | None] = (), option: str = "--out", folder: bool = False
) -> Path:
    """An output path that can be created and overwrites no input (resolved, symlinks included)."""
    out = Path(path)
    target = out.resolve()
    for src in inputs:
        if src is not None and Path(src).exists() and Path(src).resolve() == target:
            raise click.BadParameter(
                f"{path} is also an input of this command; writing it would destroy the input",
                param_hint=option,
            )
    shm = Path("/dev/shm")  # a RAM disk for ordinary files
    for system in SYSTEM_DIRS:
        if (target == system or system in target.parents) and not (target == shm or shm in target.parents):
            raise click.BadParameter(
                f"{path} is under {system}, the kernel's own files, not a place for results; "
                "choose a folder on disk",
                param_hint=option,
            )
    parent = target if folder else target.parent
    for p in [parent, *parent.parents]:
        if p.exists():
            if not p.is_dir():
                raise click.BadParameter(
                    f"{p} is a file, so {path} cannot be created under it", param_hint=option
                )
            # The nearest folder that exists is where the output (or its new folders) would be made.
            if not os.access(p, os.W_OK | os.X_OK):
                raise click.BadParameter(
                    f"{p} is not writable, so {path} cannot be written; choose a folder you can write to",
                    param_hint=option,
                )
            break
    if folder and target.exists() and not target.is_dir():
        raise click.BadParameter(f"{path} is a file, not a folder", param_hint=option)
    if not folder and target.is_dir():
        raise click.BadParameter(f"{path} is a folder, not a file", param_hint=option)
    return out


@contextmanager
def removed_on_failure(
    folder: Path, *, keep: Callable[[], bool], files: Sequence[str] = ()
) -> Iterator[None]:
    """On a failure before ``keep()`` holds (no result worth resuming from yet), delete ``files`` this run
    made in ``folder``, and ``folder`` itself if this run made it and it is left empty: a failed command
    leaves no run folder that looks started."""
    existed = folder.exists()
    fresh = [folder / f for f in files if not (folder / f).exists()]
    try:
        yield
    except BaseException:
        if not keep():
            for f in fresh:
                f.unlink(missing_ok=True)
            if not existed and folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        raise


# ---------------------------------------------------------------------------------------------- parsers, tables
def parse_layers(spec: str, n_layers: int, option: str = "--layers") -> list[int]:
    """'3,5,10-12' -> [3, 5, 10, 11, 12]; a negative number counts from the end ('-1' is the last layer)."""
    out: set[int] = set()
    for part in (p.strip() for p in spec.split(",")):
        neg = part.startswith("-")
        lo, sep, hi = part[1:].partition("-") if neg else part.partition("-")
        try:
            a = -int(lo) if neg else int(lo)
            b = int(hi) if sep else a
        except ValueError:
            raise click.BadParameter(
                f"cannot read layers {spec!r}; e.g. '10-20', '3,5,7' or '-1'", param_hint=option
            ) from None
        if sep and b < a:
            raise click.BadParameter(
                f"range {part!r} runs backwards; write it low-high, e.g. '{b}-{a}'", param_hint=option
            )
        for i in range(a, b + 1):
            if not -n_layers <= i < n_layers:
                raise click.BadParameter(
                    f"layer {i} is outside 0..{n_layers - 1} (or -{n_layers}..-1)", param_hint=option
                )
            out.add(i % n_layers)
    return sorted(out)


def parse_lambdas(text: str) -> tuple[float, ...]:
    """'paper' (the paper's 19 values), or comma-separated numbers."""
    from xsteer.evaluation.plan import PAPER_GRID, check_lambdas

    if text == "paper":
        return PAPER_GRID
    try:
        grid = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise click.BadParameter(
            f"expected 'paper' or comma-separated numbers, got {text!r}", param_hint="--lambdas"
        ) from None
    try:
        return check_lambdas(grid)
    except XsteerError as e:
        raise click.BadParameter(str(e), param_hint="--lambdas") from None


def check_spec(spec: str) -> str:
    """A model spec checked without loading anything (a bad one fails before any data is read)."""
    from xsteer.core.models import parse_spec

    parse_spec(spec)
    return spec


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
