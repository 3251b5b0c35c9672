"""What the engine recognised in the live flow: redeliveries, clock skew, late events.

:class:`FlowReport` turns each applied batch's :class:`~riskguard.engine.Result`
into counts (metrics and ``/v1/status``) and into clock-skew system alerts:

- ``duplicates``: redeliveries recognised and not applied again (Kafka delivers at
  least once, so these are expected and harmless);
- ``skewed``: events stamped more than ``engine.max_clock_skew_ms`` ahead of the
  wall clock, applied at the wall clock. Each batch raises at most one
  ``clock-skew`` alert per key (``source:<name>`` for a heartbeat source, else the
  account or symbol scope), and :class:`AlertLimiter` lets at most one through per
  key per minute, so a producer whose clock stays an hour fast pages once a minute,
  not once an event;
- ``late``: events beyond ``engine.max_lateness_ms``, counted in windows as now.

Nothing here awaits: the consume loop sends the alerts through the outbox, where
alerts skip the control topic and the journal (queues only).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import msgspec

from riskguard.engine import Result, Skewed
from riskguard.ingest.ports import ScopeStates
from riskguard.metrics import Metrics
from riskguard.vocabulary import Transition, system_alert, transition_id

ALERT_INTERVAL_S: Final = 60.0
"""At most one clock-skew alert per key in this many seconds."""
LATEST_KEYS: Final = 20
"""How many keys ``/v1/status`` lists under ``latest_skew`` (the most recent)."""


class AlertLimiter:
    """At most one alert per key per ``interval_s`` (monotonic seconds).

    Remembers, per key, when its last alert went out and how many were held back
    since. Keys whose interval has passed are forgotten once more than
    ``max_keys`` are held, so memory is bounded by the keys alerting within one
    interval (themselves bounded by the engine's key space).
    """

    def __init__(
        self,
        interval_s: float = ALERT_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 4096,
    ) -> None:
        self.interval_s = interval_s
        self.clock = clock
        self.max_keys = max_keys
        self._sent: dict[str, float] = {}  # key -> monotonic time of its last alert
        self._held: dict[str, int] = {}  # key -> alerts held back since then

    def allow(self, key: str) -> bool:
        """True when an alert for ``key`` may go out now (and records that it did);
        False (counted as held back) within ``interval_s`` of the last one."""
        now = self.clock()
        last = self._sent.get(key)
        if last is not None and now - last < self.interval_s:
            self._held[key] = self._held.get(key, 0) + 1
            return False
        if len(self._sent) >= self.max_keys:
            self._forget(now)
        self._sent[key] = now
        return True

    def held(self, key: str) -> int:
        """Alerts for ``key`` held back since its last one went out; resets the count."""
        return self._held.pop(key, 0)

    def _forget(self, now: float) -> None:
        for key in [k for k, t in self._sent.items() if now - t >= self.interval_s]:
            del self._sent[key]
            self._held.pop(key, None)

    def __len__(self) -> int:
        return len(self._sent)


@dataclass(frozen=True, slots=True)
class SkewSeen:
    """The latest skewed event of one key."""

    skew_ms: float
    """How far ahead of the wall clock it was stamped, in milliseconds."""
    ts: int
    """Its own (uncorrected) event time, ns since the epoch."""
    origin: str
    """Its Kafka coordinate, ``topic/partition@offset``."""
    seen_ns: int
    """Wall-clock time it was applied, ns since the epoch."""


def describe(key: str) -> str:
    """Whose clock ``key`` is, in words: ``source:r1`` -> ``heartbeat source r1``."""
    level, _, name = key.partition(":")
    if level == "source":
        return f"heartbeat source {name}"
    if level == "account":
        return f"account {name}"
    if level == "symbol":
        return f"the market data of symbol {name}"
    return key


class FlowReport:
    """Counts of duplicates, skewed and late events, and the clock-skew alerts.

    ``states`` gives the firm's trading state (a system alert carries it as both
    ``from`` and ``to``); ``max_clock_skew_ms`` is the engine's bound (the alert's
    limit); ``limiter`` rate-limits alerts per key (default: one per key per minute).
    """

    def __init__(
        self,
        metrics: Metrics,
        states: ScopeStates,
        max_clock_skew_ms: int,
        limiter: AlertLimiter | None = None,
    ) -> None:
        self.metrics = metrics
        self.states = states
        self.max_clock_skew_ms = max_clock_skew_ms
        self.limiter = limiter if limiter is not None else AlertLimiter()
        self.duplicates = 0
        self.skewed = 0
        self.late = 0
        self.skew_alerts = 0
        self.latest: OrderedDict[str, SkewSeen] = OrderedDict()
        """The latest skew of the :data:`LATEST_KEYS` keys skewed most recently."""

    def record(self, result: Result, now_ns: int | None = None) -> list[Transition]:
        """Count one applied batch; return the clock-skew alerts to send (maybe none).

        ``now_ns`` is the wall clock in ns since the epoch (default: now).
        """
        if result.duplicates:
            self.duplicates += result.duplicates
            self.metrics.duplicate_events.inc(result.duplicates)
        if result.late:
            self.late += result.late
            self.metrics.late_events.inc(result.late)
        if not result.skewed:
            return []
        now = time.time_ns() if now_ns is None else now_ns
        self.skewed += len(result.skewed)
        self.metrics.skewed_events.inc(len(result.skewed))
        by_key: dict[str, list[Skewed]] = {}
        for s in result.skewed:
            by_key.setdefault(s.key, []).append(s)
        alerts = []
        firm_state = self.states.state("firm")
        for key, events in by_key.items():
            worst = max(events, key=lambda s: s.skew_ns)
            self.metrics.clock_skew.observe(worst.skew_ns / 1e9)
            last = events[-1]
            self.latest[key] = SkewSeen(last.skew_ns / 1e6, last.ts, last.origin, now)
            self.latest.move_to_end(key)
            if len(self.latest) > LATEST_KEYS:
                self.latest.popitem(last=False)
            if self.limiter.allow(key):
                alerts.append(self._alert(key, worst, events, firm_state, now))
        self.skew_alerts += len(alerts)
        return alerts

    def _alert(
        self, key: str, worst: Skewed, events: Sequence[Skewed], firm_state: str, now_ns: int
    ) -> Transition:
        skew_ms = worst.skew_ns / 1e6
        reason = (
            f"{describe(key)} ({key}) stamped its events {skew_ms:,.0f} ms ahead of the wall "
            f"clock; applied at the wall clock. {len(events)} such event(s) in this batch, the "
            f"furthest ahead at {worst.origin}"
        )
        held = self.limiter.held(key)
        if held:
            reason += f"; {held} more batch(es) since the last alert for this key"
        alert = system_alert(
            "clock-skew",
            "clock_skew_ms",
            firm_state,
            value=round(skew_ms, 3),
            limit=float(self.max_clock_skew_ms),
            reason=reason,
            now_ns=now_ns,
        )
        # One id per key: alerts for two keys in one batch must not merge in a pager.
        return msgspec.structs.replace(
            alert, id=transition_id("firm", now_ns, f"ALERT:clock-skew:{key}")
        )

    def status(self) -> dict[str, Any]:
        """For ``/v1/status``: counts since start, and the latest skew per key (newest
        first, at most :data:`LATEST_KEYS`)."""
        return {
            "duplicates": self.duplicates,
            "skewed": self.skewed,
            "late": self.late,
            "clock_skew_alerts": self.skew_alerts,
            "max_clock_skew_ms": self.max_clock_skew_ms,
            "latest_skew": [
                {
                    "key": key,
                    "skew_ms": round(seen.skew_ms, 3),
                    "ts": seen.ts,
                    "origin": seen.origin,
                    "seen_ns": seen.seen_ns,
                }
                for key, seen in reversed(self.latest.items())
            ],
        }
