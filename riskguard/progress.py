"""Progress lines for long commands, on stderr, throttled so they cost nothing."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Prints ``label: 42% 1,234,567 events 456,789 ev/s`` at most every ``every_s``.

    On a terminal the line redraws in place (the first at once); elsewhere (CI logs)
    it prints a new line every ``every_s * 10`` seconds so logs stay short. Whoever
    prints to the same terminal meanwhile calls :meth:`clear` first, so their line
    never lands on the end of the progress line.
    """

    def __init__(
        self,
        label: str,
        total_bytes: int | None,
        *,
        enabled: bool | None = None,
        stream: TextIO | None = None,
        every_s: float = 0.5,
    ) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.enabled = self.tty if enabled is None else enabled
        self.label = label
        self.total = total_bytes
        self.every = every_s if self.tty else every_s * 10
        self.start = time.perf_counter()
        self._last = self.start - self.every if self.tty else self.start
        self._drawn = False

    def update(self, done_bytes: int, events: int, *, force: bool = False) -> None:
        """Report progress; cheap to call often."""
        if not self.enabled:
            return
        now = time.perf_counter()
        if now - self._last < self.every and not force:
            return
        self._last = now
        rate = events / max(now - self.start, 1e-9)
        pct = f"{100 * done_bytes / self.total:3.0f}% " if self.total else ""
        line = f"{self.label}: {pct}{events:,} events {rate:,.0f} ev/s"
        if self.tty:
            self.stream.write("\r" + line.ljust(70))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
        self._drawn = True

    def clear(self) -> None:
        """Erase the progress line on a terminal (it is drawn again on the next update)."""
        if self._drawn and self.tty:
            self.stream.write("\r" + " " * 70 + "\r")
            self.stream.flush()
            self._drawn = False
            self._last = time.perf_counter() - self.every

    def done(self, done_bytes: int, events: int) -> None:
        """Clear the line on a terminal; elsewhere print a final line for the log."""
        if self.enabled and not self.tty:
            self.update(done_bytes, events, force=True)
        elif self._drawn:
            self.stream.write("\r" + " " * 70 + "\r")
            self.stream.flush()
