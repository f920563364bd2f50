"""Where benchmark rows come from: offline JSON Lines files or the Hugging Face hub.

``data_dir=None`` means :func:`default_data_dir` (the ``XSTEER_DATA_DIR`` environment variable); if that is
unset too, the hub is used through ``datasets.load_dataset``. Rows from either source are mapped to
:class:`~xsteer.tasks.base.Example` by the same per-task functions, and every row error names its file and
line. Benchmark data is read in place and never copied into this repository.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from xsteer.core.io import read_jsonl
from xsteer.errors import DataNotFoundError, InputError
from xsteer.tasks.base import ENV_DATA_DIR, SPLITS, Example, default_data_dir


def data_file(data_dir: Path, rel: str, task: str, split: str) -> Path:
    """``data_dir/rel``, or an error naming the task, the split and where the file was looked for."""
    if not data_dir.is_dir():
        raise DataNotFoundError(f"data directory {data_dir} does not exist (task {task!r}, split {split!r})")
    path = data_dir / rel
    if not path.is_file():
        raise DataNotFoundError(
            f"{path} not found (task {task!r}, split {split!r}; the splits are {', '.join(SPLITS)})"
        )
    return path


def map_rows(path: Path, to_example: Callable[[dict[str, Any], int], Example]) -> list[Example]:
    """Every row of a JSON Lines file through ``to_example(row, index)``; a bad row names file and line."""
    out = []
    for i, (lineno, row) in enumerate(read_jsonl(path, with_lines=True)):
        try:
            out.append(to_example(row, i))
        except KeyError as e:
            raise InputError(f"{path}:{lineno}: the row has no {e.args[0]!r} field") from None
        except (TypeError, ValueError) as e:
            raise InputError(f"{path}:{lineno}: {e}") from None
    return out


def hub_rows(repo: str, config: str | None, split: str, task: str) -> list[dict[str, Any]]:
    """Rows of one hub split; unreachable hubs and missing splits are one clear error."""
    import datasets

    try:
        dsd = datasets.load_dataset(repo, config) if config else datasets.load_dataset(repo)
    except Exception as exc:  # offline, gated, renamed: datasets raises many types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataNotFoundError(
            f"could not load {repo!r} (config {config!r}) for task {task!r} from the hub ({first}); "
            f"offline, pass --data-dir (data_dir=) or set ${ENV_DATA_DIR}"
        ) from None
    if split not in dsd:
        raise DataNotFoundError(
            f"hub dataset {repo!r} (config {config!r}) has no split {split!r} for task {task!r}; "
            f"available splits: {', '.join(dsd.keys())}"
        )
    return [dict(r) for r in dsd[split]]


def exclude_examples(examples: Iterable[Example], drop: Iterable[Example | str]) -> list[Example]:
    """``examples`` without the items in ``drop`` (Examples or ids), order kept."""
    drop_ids = {d if isinstance(d, str) else d.id for d in drop}
    return [e for e in examples if e.id not in drop_ids]


def load_examples(
    name: str, split: str, *, data_dir: str | Path | None = None, limit: int | None = None, seed: int = 0
) -> list[Example]:
    """``split`` of task ``name`` (see :meth:`xsteer.tasks.base.Task.load`)."""
    from xsteer.tasks import get_task

    return get_task(name).load(split, data_dir=data_dir, limit=limit, seed=seed)


__all__ = [
    "ENV_DATA_DIR",
    "Example",
    "data_file",
    "default_data_dir",
    "exclude_examples",
    "hub_rows",
    "load_examples",
    "map_rows",
    "read_jsonl",
]
