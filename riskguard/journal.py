"""A local, fsynced journal of every scope's latest state: halts survive broker data loss.

The control topic is the trading system's view of standing halts, but a broker can
lose its data (the bundled one keeps memory only). Every state change is therefore
also appended to this file and fsynced. On start, riskguard re-asserts what the
journal holds **before** the first batch is consumed, and re-publishes any state the
control topic does not have (or has older), so gates learn it again.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import msgspec

from riskguard import durable
from riskguard.vocabulary import Transition

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Transition)


class HaltJournal:
    """Append-only JSONL of transitions; the last line per scope is its state."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.unreadable = 0

    def load(self) -> dict[str, Transition]:
        """The latest transition per scope (unreadable lines are counted and skipped)."""
        latest: dict[str, Transition] = {}
        self.unreadable = 0
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return latest
        for line in data.splitlines():
            if not line.strip():
                continue
            try:
                tr = _decoder.decode(line)
            except (msgspec.DecodeError, UnicodeDecodeError):
                self.unreadable += 1  # e.g. a torn last line after a power cut
                continue
            current = latest.get(tr.scope)
            if current is None or tr.decided_ns >= current.decided_ns:
                latest[tr.scope] = tr
        return latest

    def append(self, transitions: Iterable[Transition]) -> None:
        """Append state changes (alerts are not states) and fsync before returning."""
        data = b"".join(_encoder.encode(tr) + b"\n" for tr in transitions if not tr.is_alert)
        if data:
            durable.append(self.path, data)

    def compact(self, latest: dict[str, Transition]) -> None:
        """Rewrite the journal with one line per scope: temp file, fsync, rename."""
        ordered = sorted(latest.values(), key=lambda t: t.decided_ns)
        durable.replace(self.path, b"".join(_encoder.encode(tr) + b"\n" for tr in ordered))
