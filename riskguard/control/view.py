"""The control topic as a reader sees it: the latest record per scope, and riskguard's pulse.

No I/O and no clock of its own: the caller says when each batch was read (an
:class:`Instant`), which lets the gate's decision (:mod:`riskguard.control.decision`)
be run against recorded inputs, such as ``docs/control-topic-vectors.json``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from riskguard.control.records import HeartbeatRecord, StateRecord, decode_record


@dataclass(frozen=True, slots=True)
class Instant:
    """One reading of both local clocks, in ns.

    ``wall_ns`` is ``time.time_ns()`` (comparable with riskguard's timestamps);
    ``mono_ns`` is ``time.monotonic_ns()`` (for elapsed time, immune to clock steps).
    """

    wall_ns: int
    mono_ns: int

    @classmethod
    def now(cls) -> Instant:
        """The current wall and monotonic time."""
        return cls(time.time_ns(), time.monotonic_ns())


@dataclass
class ControlView:
    """Latest state per scope plus the latest heartbeat, as read from the topic.

    ``heartbeat_read`` is when the latest heartbeat was read (local clocks);
    ``records`` counts readable records, ``unreadable`` the non-null values that could
    not be decoded (tombstones, null values, are neither).
    """

    states: dict[str, StateRecord] = field(default_factory=dict)
    heartbeat: HeartbeatRecord | None = None
    heartbeat_read: Instant | None = None
    records: int = 0
    unreadable: int = 0

    def apply(self, values: Iterable[bytes | None], at: Instant | None = None) -> list[StateRecord]:
        """Fold message values in offset order, read at ``at`` (default: now).

        Returns the state records among them. Tombstones (``None``) and values that
        do not decode change nothing; the latest readable record of a
        scope (by the scope in its value) replaces the previous one, and the latest
        heartbeat replaces the previous heartbeat. Never raises on bad values.
        """
        read_at = at or Instant.now()
        changed = []
        for value in values:
            record = decode_record(value)
            if record is None:
                self.unreadable += value is not None
                continue
            self.records += 1
            if isinstance(record, HeartbeatRecord):
                # read time first: a thread reading between these two lines judges the
                # old heartbeat by its true age, never a new one as already old
                self.heartbeat_read = read_at
                self.heartbeat = record
            elif isinstance(record, StateRecord):
                self.states[record.scope] = record
                changed.append(record)
        return changed

    def standing(self) -> dict[str, StateRecord]:
        """Scopes whose latest state is not ACTIVE."""
        return {s: r for s, r in self.states.items() if r.state != "ACTIVE"}
