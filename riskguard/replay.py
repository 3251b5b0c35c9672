"""Offline replay: run a recorded JSONL session (optionally gzipped) through the engine.

Events are applied in file order with event time as the clock, so a replay is
deterministic: the same file and limits give the same transitions, whatever the
batch size. Bad lines are counted and reported with their line numbers; they
never stop the run.
"""

from __future__ import annotations

import gzip
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, cast

from riskguard.engine import Engine, Result, Skewed
from riskguard.events import BadEvent, Event, decode
from riskguard.inspection import RulePeak
from riskguard.limits.model import Limits
from riskguard.progress import Progress
from riskguard.settings import EngineSettings
from riskguard.vocabulary import Transition

MAX_BAD_SAMPLES = 20


class ReplayError(Exception):
    """The input could not be read (missing, unreadable, corrupt compression)."""


@dataclass
class ReplayReport:
    """Everything a replay found."""

    source: str
    lines: int = 0
    applied: int = 0
    bad: int = 0
    bad_by_reason: Counter[str] = field(default_factory=Counter)
    bad_samples: list[BadEvent] = field(default_factory=list)
    transitions: list[Transition] = field(default_factory=list)
    peaks: list[RulePeak] = field(default_factory=list)
    duplicates: int = 0
    """Redeliveries recognised and not applied again (docs/events.md, Redelivery)."""
    skewed: int = 0
    """Events stamped too far ahead of the clock, applied at the corrected time."""
    skew_by_key: dict[str, int] = field(default_factory=dict)
    """The largest skew (ns) seen per key (``source:<name>``, an account or a symbol)."""
    skew_samples: list[Skewed] = field(default_factory=list)
    late: int = 0
    """Events beyond the lateness bound, counted in windows as now."""
    jumps: int = 0
    """Gaps in event time the clock followed (three events in a row far ahead)."""
    elapsed_s: float = 0.0

    @property
    def events_per_s(self) -> float:
        """Lines processed per second of wall time."""
        return self.lines / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def add_bad(self, bad: BadEvent) -> None:
        """Count one bad event, keeping the first few as samples."""
        self.bad += 1
        self.bad_by_reason[bad.reason] += 1
        if len(self.bad_samples) < MAX_BAD_SAMPLES:
            self.bad_samples.append(bad)

    def add(self, result: Result) -> None:
        """Fold one batch's result into the report."""
        self.applied += result.applied
        self.transitions += result.transitions
        for bad in result.bad:
            self.add_bad(bad)
        self.duplicates += result.duplicates
        self.late += result.late
        self.jumps += result.jumps
        self.add_skewed(result.skewed)

    def add_skewed(self, skewed: list[Skewed]) -> None:
        """Count skewed events, keeping the worst skew per key and the first few."""
        for skew in skewed:
            self.skewed += 1
            self.skew_by_key[skew.key] = max(self.skew_by_key.get(skew.key, 0), skew.skew_ns)
            if len(self.skew_samples) < MAX_BAD_SAMPLES:
                self.skew_samples.append(skew)


def _open(path: Path) -> tuple[IO[bytes], int | None]:
    try:
        raw = path.open("rb")
    except OSError as exc:
        raise ReplayError(f"cannot read {path}: {exc.strerror or exc}") from exc
    size = path.stat().st_size
    if raw.read(2) == b"\x1f\x8b":
        raw.seek(0)
        return cast(IO[bytes], gzip.GzipFile(fileobj=raw, mode="rb")), None
    raw.seek(0)
    return raw, size


def _lines(stream: IO[bytes]) -> Iterator[bytes]:
    try:
        yield from stream
    except (OSError, EOFError, zlib.error) as exc:
        raise ReplayError(f"input is corrupt or truncated: {exc}") from exc


def replay(
    path: str | Path,
    limits: Limits,
    *,
    batch_size: int = 8192,
    on_transition: Callable[[Transition], object] | None = None,
    progress: bool | None = None,
    settings: EngineSettings | None = None,
) -> ReplayReport:
    """Replay the file at ``path`` under ``limits``; raises :class:`ReplayError` if unreadable.

    ``settings`` bound clock skew, lateness and the redelivery memory (defaults as a
    live run's ``[engine]`` section).
    """
    p = Path(path)
    report = ReplayReport(source=str(p))
    engine = Engine(limits, event_time=True, settings=settings)
    stream, size = _open(p)
    meter = Progress(f"replay {p.name}", size, enabled=progress)
    if on_transition is not None:
        shown = on_transition

        def show(tr: Transition) -> None:
            meter.clear()  # a transition line never lands on the end of the progress line
            shown(tr)

        engine.killswitch.subscribe(show)
    started = time.perf_counter()
    done_bytes = 0
    events: list[Event] = []
    positions: list[str] = []

    def flush() -> None:
        report.add(engine.apply(events, positions))
        events.clear()
        positions.clear()

    with stream:
        for number, line in enumerate(_lines(stream), 1):
            report.lines = number
            done_bytes += len(line)
            if not line.strip():
                continue
            item = decode(line, f"line {number}")
            if isinstance(item, BadEvent):
                report.add_bad(item)
                continue
            events.append(item)
            positions.append(f"line {number}")
            if len(events) >= batch_size:
                flush()
                meter.update(done_bytes, number)
        flush()
    report.transitions += engine.settle()
    report.add_skewed(engine.unsettled_skew())
    meter.done(done_bytes, report.lines)
    report.elapsed_s = time.perf_counter() - started
    report.peaks = engine.peaks()
    return report
