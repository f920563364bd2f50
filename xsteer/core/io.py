"""Files in and out: atomic writes (a crash mid-write leaves the old file or none, never half a file) with
ordinary permissions, and JSON Lines reading whose every error names the file and line."""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, overload

from torch import Tensor

from xsteer.errors import DataNotFoundError, InputError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside ``path``; on a clean exit it is renamed onto ``path``, else deleted."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        # mkstemp makes files 0600; results are shared with colleagues, so give them the usual mode.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | Path, text: str) -> Path:
    """``Path.write_text`` (UTF-8) through a temp file and an atomic rename."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json_atomic(path: str | Path, doc: Any) -> Path:
    """Pretty JSON, atomically; NaN/inf become ``null`` (strict JSON), other objects ``str``."""
    return write_text_atomic(path, json.dumps(_finite(doc), indent=2, ensure_ascii=False, default=str) + "\n")


def write_csv_atomic(
    path: str | Path, rows: Sequence[Mapping[str, Any]], fieldnames: Sequence[str] | None = None
) -> Path:
    """Rows of dicts as a CSV with a header (the union of keys, first-seen order), atomically."""
    if fieldnames is None:
        fieldnames = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(fieldnames), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return write_text_atomic(path, buf.getvalue())


def _finite(o: Any) -> Any:
    if isinstance(o, float):
        return o if o == o and o not in (float("inf"), float("-inf")) else None
    if isinstance(o, Mapping):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    return o


def save_safetensors(tensors: dict[str, Tensor], path: str | Path, metadata: dict[str, str]) -> Path:
    """``safetensors.torch.save_file`` through a temp file in the same folder and an atomic rename."""
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file(tensors, tmp, metadata=metadata)
    return Path(path)


@overload
def read_jsonl(path: str | Path, *, with_lines: Literal[False] = False) -> list[dict[str, Any]]: ...
@overload
def read_jsonl(path: str | Path, *, with_lines: Literal[True]) -> list[tuple[int, dict[str, Any]]]: ...
def read_jsonl(path: str | Path, *, with_lines: bool = False) -> list[Any]:
    """The objects of a JSON Lines file (with their 1-based line numbers if ``with_lines``).

    Blank lines are skipped. Invalid JSON, a line that is not an object, or a file that is not UTF-8 is an
    :class:`~xsteer.errors.InputError` naming the file and line, so hand-written files can be fixed.
    """
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"no file at {path}")
    rows: list[Any] = []
    lineno = 0
    try:
        # utf-8-sig: tolerate a byte-order mark written by some editors.
        with path.open(encoding="utf-8-sig") as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise InputError(
                        f"{path}:{lineno}: invalid JSON: {exc.msg} (column {exc.colno})"
                    ) from None
                if not isinstance(obj, dict):
                    raise InputError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
                rows.append((lineno, obj) if with_lines else obj)
    except UnicodeDecodeError:
        raise InputError(f"{path}:{lineno + 1}: the file is not UTF-8 text; save it as UTF-8") from None
    return rows
