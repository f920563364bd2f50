"""Records: every output of an evaluation, one JSON line each, appended as soon as its batch is done.

A record is one (split, item, condition, λ, sample) with what the model produced and how it scored, stamped
with the hash of the configuration that made it. A rerun skips what is on disk, so a killed run resumes; a
kill loses at most the batch in flight, and a torn last line is dropped on the next open.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypedDict, cast

from xsteer.core.io import cannot_write, read_jsonl
from xsteer.errors import WriteError


class _RecordKey(TypedDict):
    split: str
    item: str
    condition: str
    lam: float
    sample: int


class Record(_RecordKey, total=False):
    """One output. Generation fills ``completion`` … ``finish``; log-likelihood fills ``answer_norm`` …
    ``logprobs``; both fill ``answer``, ``correct``, ``gold`` and ``config``."""

    config: str
    completion: str
    answer: str | None
    correct: bool
    strict_answer: str | None
    strict_correct: bool | None
    gold: str
    n_tokens: int
    finish: str
    answer_norm: str
    correct_norm: bool
    logprobs: list[float]


class RecordStore:
    """Append-only JSON Lines records; safe against kill -9 (at most the batch in flight is lost)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._repair()

    def _repair(self) -> None:
        """Drop a torn last line left by a kill mid-write; anything else malformed is an error."""
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if not data or data.endswith(b"\n"):
            return
        cut = data.rfind(b"\n") + 1
        with open(self.path, "r+b") as f:
            f.truncate(cut)

    def load(self, config_hash: str | Mapping[str, str] | None = None) -> list[Record]:
        """All records, or those written under a configuration: one hash (stores written before xsteer
        hashed per condition), or condition -> hash, keeping only the conditions it names."""
        if not self.path.exists():
            return []
        rows = read_jsonl(self.path)
        if config_hash is None:
            return [cast(Record, r) for r in rows]
        if isinstance(config_hash, str):
            return [cast(Record, r) for r in rows if r.get("config") == config_hash]
        return [cast(Record, r) for r in rows if r.get("config") == config_hash.get(r.get("condition", ""))]

    def append(self, records: Iterable[Mapping[str, Any]]) -> None:
        # One write per batch, then fsync: a kill leaves whole earlier lines and at most one torn line.
        blob = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        if not blob:
            return
        size = self.path.stat().st_size if self.path.exists() else 0
        try:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(blob)
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            # A full disk may have taken part of the batch: cut back to the whole lines already there.
            with contextlib.suppress(OSError):
                os.truncate(self.path, size)
            raise WriteError(cannot_write(self.path, e)) from e


def of_items(records: Iterable[Record], items: Mapping[str, Iterable[str]]) -> list[Record]:
    """The records of these item ids, per split: a store reused with fewer items holds rows of the others."""
    ids = {split: set(item_ids) for split, item_ids in items.items()}
    return [r for r in records if r["item"] in ids.get(r["split"], ())]


def record_key(r: Mapping[str, Any]) -> tuple:
    return (r["split"], r["item"], r["condition"], float(r["lam"]), int(r["sample"]))
