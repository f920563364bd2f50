"""Progress that reads well in a terminal and in a log file.

On a terminal a tqdm bar; anywhere else (a log file, CI, ``nohup``) one plain line per ``every`` seconds and
one at the end, with counts, rate and time left — a bar's carriage returns make a log unreadable, and a
long phase that prints nothing looks hung.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO


def _fmt(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s" if m else f"{s}s"


class Progress:
    """``with Progress(total, "evaluate test/parent", unit="rows") as p: ... p.update(n)``."""

    def __init__(
        self,
        total: int,
        desc: str,
        *,
        unit: str = "it",
        enabled: bool = True,
        every: float = 30.0,
        stream: TextIO | None = None,
    ):
        self.total, self.desc, self.unit, self.every = total, desc, unit, every
        self.stream = stream or sys.stderr
        self.enabled = enabled and total > 0
        self.n = 0
        self.start = self.last = time.monotonic()
        self._bar: Any = None
        if self.enabled and getattr(self.stream, "isatty", lambda: False)():
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit, file=self.stream, leave=False)

    def update(self, n: int = 1) -> None:
        self.n += n
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(n)
            return
        now = time.monotonic()
        if now - self.last >= self.every or self.n >= self.total:
            self.last = now
            self._line(now)

    def _line(self, now: float) -> None:
        elapsed = now - self.start
        rate = self.n / elapsed if elapsed > 0 else 0.0
        left = (self.total - self.n) / rate if rate > 0 else 0.0
        pct = 100 * self.n / self.total if self.total else 100.0
        print(
            f"[{time.strftime('%H:%M:%S')}] {self.desc}: {self.n}/{self.total} {self.unit} ({pct:.0f}%), "
            f"{rate:.2f} {self.unit}/s, {_fmt(elapsed)} elapsed, ~{_fmt(left)} left",
            file=self.stream,
            flush=True,
        )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self.enabled and self.n < self.total:
            self._line(time.monotonic())

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
