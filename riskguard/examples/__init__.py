"""Bundled examples: a limits file and a recorded session with a Knight-style runaway.

``limits.toml`` is a copy of ``rules/example.toml`` (a test keeps them equal).
``knight-session.jsonl.gz`` is produced by :func:`write_session` from the
deterministic simulator in :mod:`riskguard.demo.scenario` (a test regenerates it).
"""

from __future__ import annotations

import gzip
from pathlib import Path

from riskguard.demo.scenario import TradingSim
from riskguard.events import encode

HERE = Path(__file__).parent
LIMITS = HERE / "limits.toml"
SESSION = HERE / "knight-session.jsonl.gz"
SESSION_MS = 20_000
RUNAWAY_AFTER_MS = 12_000


def session_bytes() -> bytes:
    """The example session as JSONL: 20 s of flow, the runaway starting at 12 s."""
    sim = TradingSim(seed=7, activity=0.1)
    sim.runaway_at_ns = sim.start_ns + RUNAWAY_AFTER_MS * 1_000_000
    return b"".join(encode(e) + b"\n" for e in sim.run(SESSION_MS))


def write_session(path: Path = SESSION) -> None:
    """(Re)write the bundled session file; mtime 0 keeps the gzip bytes reproducible."""
    with path.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
        gz.write(session_bytes())
