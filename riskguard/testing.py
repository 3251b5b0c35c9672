"""Helpers for testing code that embeds or drives riskguard (the way structlog ships
``structlog.testing``): a controllable clock, a transition recorder, and a way to
start ``riskguard run`` as a real process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from riskguard.engine import Engine
from riskguard.vocabulary import Transition


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


def spawn_run(
    config: str | Path,
    http_port: int,
    bootstrap_servers: str,
    *,
    env: Mapping[str, str] | None = None,
    stdout: int | IO[Any] | None = subprocess.DEVNULL,
    stderr: int | IO[Any] | None = subprocess.DEVNULL,
) -> subprocess.Popen[bytes]:
    """Start ``riskguard run --config CONFIG`` as a real process (for integration tests).

    Uses this interpreter, so it runs the riskguard you have installed; extra
    environment variables in ``env`` are added to the current environment.
    """
    full_env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap_servers, **(env or {})}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "riskguard",
            "run",
            "--config",
            str(config),
            "--http-port",
            str(http_port),
        ],
        env=full_env,
        stdout=stdout,
        stderr=stderr,
    )
