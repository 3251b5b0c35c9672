"""Detect an unreachable broker from riskguard's own writes.

aiokafka's ``getmany`` just returns empty batches while the broker is down, which
looks exactly like a quiet market. The heartbeat, published every 250 ms with a
bounded timeout, is the probe: when no publish has succeeded for ``budget_ms``,
the broker counts as unreachable. riskguard then reports not-ready and alerts;
gates fail closed on their own because heartbeats stop arriving. Recovery is
automatic once a publish succeeds again.
"""

from __future__ import annotations

import time
from typing import Literal

from riskguard.vocabulary import Transition, system_alert

Edge = Literal["lost", "recovered"]


class BrokerWatch:
    """Turns publish successes and failures into lost/recovered edges."""

    def __init__(self, budget_ms: int) -> None:
        self.budget_ms = budget_ms
        self.last_ok_mono = time.monotonic()
        self.reachable = True

    def observe(self, ok: bool, now_mono: float | None = None) -> Edge | None:
        """Record one publish result; returns ``recovered`` when the broker is back."""
        if not ok:
            return self.check(now_mono)
        self.last_ok_mono = time.monotonic() if now_mono is None else now_mono
        if not self.reachable:
            self.reachable = True
            return "recovered"
        return None

    def check(self, now_mono: float | None = None) -> Edge | None:
        """Called on a timer: ``lost`` once nothing succeeded for the budget.

        Independent of any publish in flight, so a publish blocked on its own
        timeout cannot delay detection.
        """
        if self.reachable and self.silent_ms(now_mono) > self.budget_ms:
            self.reachable = False
            return "lost"
        return None

    def silent_ms(self, now_mono: float | None = None) -> float:
        """Milliseconds since the last successful publish."""
        now = time.monotonic() if now_mono is None else now_mono
        return (now - self.last_ok_mono) * 1000

    def alert(self, edge: Edge, firm_state: str) -> Transition:
        """The alert for an edge (no state change: ``from`` equals ``to``)."""
        rule = "broker-unreachable" if edge == "lost" else "broker-recovered"
        return system_alert(
            rule,
            "broker_silence_ms",
            firm_state,
            value=round(self.silent_ms(), 1),
            limit=float(self.budget_ms),
        )
