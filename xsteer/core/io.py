"""Files in and out: atomic writes (a crash mid-write leaves the old file or none, never half a file) with
ordinary permissions, JSON Lines reading whose every error names the file and line, and the one way a name
becomes part of a file name (:func:`slug`)."""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, overload

from torch import Tensor

from xsteer.errors import DataNotFoundError, InputError, WriteError, XsteerError


def slug(name: str) -> str:
    """``name`` as one part of a file name: every run of characters outside ``A-Za-z0-9._-`` becomes ``_``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def spec_slug(spec: str) -> str:
    """A model spec as one part of a file name: a local path by its last part, so that file names say which
    model and not where it lives."""
    return slug(Path(spec).name if "/" in spec and Path(spec).exists() else spec)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | Path, *, verify: Callable[[Path], None] | None = None) -> Iterator[Path]:
    """Yield a temp path beside ``path``; on a clean exit it is synced, checked by ``verify`` (which raises
    if the temp file does not hold what was meant) and renamed onto ``path``; else it is deleted and
    ``path`` keeps its old content. A failed write (a full disk, a read-only folder) is a
    :class:`~xsteer.errors.WriteError` naming ``path``."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise WriteError(cannot_write(path, e)) from e
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        # Some writers (numpy's tofile, a close in a finally) lose a full disk's error, and delayed
        # allocation reports it only at fsync: sync, then check the bytes, before the old file is replaced.
        _fsync(tmp)
        if verify is not None:
            verify(tmp)
        # mkstemp makes files 0600; results are shared with colleagues, so give them the usual mode.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and not isinstance(e, XsteerError):
            raise WriteError(cannot_write(path, e)) from e
        raise


def cannot_write(path: str | Path, e: OSError) -> str:
    """One line for a write that failed: the path, the system's reason, and what to do."""
    path = Path(path)
    what = {
        errno.ENOSPC: "free some space or write elsewhere",
        errno.EDQUOT: "free some space or write elsewhere",
        errno.EROFS: "the file system is read-only; choose a writable folder",
        errno.EACCES: "choose a folder you can write to",
        errno.EPERM: "choose a folder you can write to",
    }.get(e.errno or 0, "check that the disk has space and the folder is writable")
    kept = "; the old file is kept" if path.is_file() else ""
    return f"cannot write {path}: {e.strerror or e}; {what}{kept}"


def _fsync(path: Path) -> None:
    if not path.is_file():
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class WrittenWrongError(OSError):
    """The bytes on disk are not what was written (a full disk some writer did not report)."""

    def __init__(self, path: Path, detail: str):
        super().__init__(errno.EIO, f"the file on disk is not what was written ({detail})", str(path))


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """``Path.write_bytes`` through a temp file and an atomic rename, read back before the rename."""

    def same(tmp: Path) -> None:
        if tmp.read_bytes() != data:
            raise WrittenWrongError(tmp, f"{tmp.stat().st_size} of {len(data)} bytes")

    with atomic_path(path, verify=same) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """``Path.write_text`` (UTF-8) through a temp file and an atomic rename."""
    return write_bytes_atomic(path, text.encode("utf-8"))


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
    """``safetensors.torch.save_file`` through a temp file in the same folder and an atomic rename; the
    temp file is read back (header and tensors) before it replaces ``path``."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    def same(tmp: Path) -> None:
        try:
            with safe_open(str(tmp), framework="pt") as f:
                ok = (f.metadata() or {}) == metadata and set(f.keys()) == set(tensors)
                # Opening checks the data's length against the header, so shapes are enough.
                ok = ok and all(list(f.get_slice(k).get_shape()) == list(t.shape) for k, t in tensors.items())
        except Exception as e:  # a truncated file fails inside the reader
            raise WrittenWrongError(tmp, f"unreadable: {e}") from e
        if not ok:
            raise WrittenWrongError(tmp, "its header or tensors differ")

    with atomic_path(path, verify=same) as tmp:
        save_file(tensors, tmp, metadata=metadata)
    return Path(path)


def save_torch(obj: Any, path: str | Path) -> Path:
    """``torch.save`` through a temp file and an atomic rename; the temp file is loaded back first."""
    import torch

    def loads(tmp: Path) -> None:
        try:
            torch.load(tmp, map_location="cpu", weights_only=True, mmap=True)
        except Exception as e:  # a truncated zip archive fails here
            raise WrittenWrongError(tmp, f"unreadable: {_first_line(e)}") from e

    with atomic_path(path, verify=loads) as tmp:
        torch.save(obj, tmp)
    return Path(path)


def load_torch(
    path: str | Path, *, what: str = "a file of tensors", error: type[InputError] = InputError
) -> Any:
    """``torch.load`` with ``weights_only=True``: nothing in a file xsteer reads may run code. A file that
    holds other objects, or is not a torch file, is one line naming it (``error``); ``what`` says what
    was expected."""
    import pickle

    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # torch's own message is a page of advice about allow-lists; the user needs the file and the rule.
        raise error(
            f"{path} is not a readable torch file: it holds Python objects beyond tensors, numbers and "
            f"strings, which xsteer never unpickles (weights_only=True); expected {what}"
        ) from None
    except Exception as e:
        raise error(f"{path} is not a readable torch file ({_first_line(e)}); expected {what}") from None


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


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
