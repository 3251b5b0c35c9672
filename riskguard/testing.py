"""Helpers for testing code that embeds or drives riskguard (the way structlog ships
``structlog.testing``): a controllable clock and a transition recorder.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from riskguard.engine import Engine
from riskguard.killswitch import Transition


class FakeClock:
    """A clock in integer nanoseconds that moves only when told to.

    Pass it where riskguard takes a clock: ``Engine(limits, clock=FakeClock())``.
    """

    def __init__(self, start_ns: int = 1_700_000_000_000_000_000) -> None:
        self.now_ns = start_ns

    def __call__(self) -> int:
        return self.now_ns

    def advance(self, *, ns: int = 0, ms: float = 0, s: float = 0) -> int:
        """Move forward and return the new time."""
        self.now_ns += ns + int(ms * 1_000_000) + int(s * 1_000_000_000)
        return self.now_ns


@contextmanager
def capture_transitions(engine: Engine) -> Iterator[list[Transition]]:
    """Collect every transition (automatic, manual and alerts) made inside the block."""
    seen: list[Transition] = []
    unsubscribe = engine.killswitch.subscribe(seen.append)
    try:
        yield seen
    finally:
        unsubscribe()
