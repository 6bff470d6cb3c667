"""Progress display for `hf-bridge export`, and a throttle for progress events.

On a terminal the bar is redrawn in place a few times a second::

    export  12,345 / 100,000 rows  12.3%  |  3.2 MB  2 files  |  10,234 rows/s  ETA 0:00:08

When stderr is not a terminal (logs, CI) a plain line is printed every few
seconds instead.
"""

from __future__ import annotations

import sys
import time
from typing import Callable, TextIO

from py_worker.export.engine import Progress


def human_bytes(n: float) -> str:
    """`n` bytes in B, kB, MB, GB or TB (powers of 1000, one decimal)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover


def human_duration(seconds: float) -> str:
    """`seconds` as H:MM:SS."""
    s = max(0, int(round(seconds)))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def format_progress(p: Progress, rate: float | None = None) -> str:
    """One line describing `p`: rows (of total), bytes, files, rate and ETA when the total is known.

    `rate` (rows/s) defaults to the average since the start.
    """
    if rate is None:
        rate = p.rows / p.elapsed_seconds if p.elapsed_seconds > 0 else 0.0
    if p.total_rows:
        pct = min(100.0, 100.0 * p.rows / p.total_rows)
        rows = f"{p.rows:,} / {p.total_rows:,} rows  {pct:5.1f}%"
    else:
        rows = f"{p.rows:,} rows"
    line = f"export  {rows}  |  {human_bytes(p.bytes)}  {p.files} file{'s' if p.files != 1 else ''}  |  {rate:,.0f} rows/s"
    if p.total_rows and rate > 0 and p.rows < p.total_rows:
        line += f"  ETA {human_duration((p.total_rows - p.rows) / rate)}"
    return line


class Throttle:
    """Pass at most one update per `interval` seconds (the first always passes)."""

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.clock = clock
        self._last: float | None = None

    def ready(self) -> bool:
        """True when an update may go out now (and records that it did)."""
        now = self.clock()
        if self._last is None or now - self._last >= self.interval:
            self._last = now
            return True
        return False


class ProgressPrinter:
    """Draw export progress on a stream: an in-place bar on a TTY, periodic lines otherwise."""

    def __init__(self, stream: TextIO | None = None, tty: bool | None = None, line_interval: float = 5.0) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self._throttle = Throttle(0.2 if self.tty else line_interval)
        self._width = 0
        self._origin: Progress | None = None

    def __call__(self, p: Progress) -> None:
        """Show `p` if enough time has passed since the last update."""
        if self._origin is None or p.rows == self._origin.rows:
            # The rate counts from the first rows seen here (not from opening the dataset,
            # nor rows a resumed export had written before).
            self._origin = p
        if not self._throttle.ready():
            return
        span = p.elapsed_seconds - self._origin.elapsed_seconds
        rate = (p.rows - self._origin.rows) / span if span > 0 else 0.0
        line = format_progress(p, rate)
        if self.tty:
            pad = max(0, self._width - len(line))
            self.stream.write("\r" + line + " " * pad)
            self._width = len(line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def finish(self, summary: str) -> None:
        """End the bar and print `summary` on its own line."""
        if self.tty and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
        self.stream.write(summary + "\n")
        self.stream.flush()
