"""What every ``xsteer`` command shares: one-line errors, safe output paths, and the layer and λ parsers."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from xsteer.errors import XsteerError

Positive = click.IntRange(min=1)
# Writing a result here fails half-way at best, and as root can replace a device node with a plain file.
SYSTEM_DIRS = (Path("/proc"), Path("/sys"), Path("/dev"))
NonNegative = click.IntRange(min=0)


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
