"""Definitions the plain-Python reference model is written with (see :mod:`.reference`).

Which events move which metric, the exposure metrics and the counter kinds are taken
by name from the one metric spec (:mod:`riskguard.limits.vocabulary`), never from the
kernel's compiled tables: the property tests then compare two implementations of one
spec, and ``tests/limits/test_metric_spec.py`` checks that spec against the docs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from riskguard.limits.vocabulary import EXPOSURE_METRICS, METRICS, metrics_moved_by
from riskguard.vocabulary import EVENT_TYPES

BUCKETS = 10
RING = BUCKETS + 1
#: Metrics each event type moves, for the types that move any (by name).
FAMILY_NAMES: dict[str, frozenset[str]] = {
    t: metrics_moved_by(t) for t in EVENT_TYPES if metrics_moved_by(t)
}
EXPOSURE_NAMES = EXPOSURE_METRICS
#: windowed metric -> (numerator kind, denominator kind or None)
COUNTED: dict[str, tuple[str, str | None]] = {
    m.name: m.counters for m in METRICS.values() if m.counters is not None
}


@dataclass
class Book:
    """Aggregates of one scope."""

    net: float = 0.0
    gross: float = 0.0
    real: float = 0.0
    cost: float = 0.0
    peak: float = 0.0
    open_orders: int = 0

    @property
    def pnl(self) -> float:
        """Realised + unrealised."""
        return self.real + self.net - self.cost


@dataclass
class Order:
    """An open order."""

    account: str
    strategy: str
    symbol: str
    parent: str | None
    qty: float
    cum: float = 0.0


@dataclass
class Window:
    """A ring of time buckets for one counter at one scope."""

    last: int = -1
    slots: list[float] = field(default_factory=lambda: [0.0] * RING)
    total: float = 0.0

    def advance(self, bucket: int) -> None:
        """Move to ``bucket``, zeroing buckets that fell out."""
        if bucket <= self.last:
            return
        for b in range(max(self.last + 1, bucket - RING + 1), bucket + 1):
            self.slots[b % RING] = 0.0
        self.last = bucket
        total = 0.0
        for v in self.slots:
            total += v
        self.total = total

    def add(self, bucket: int, v: float) -> None:
        """Count ``v`` in ``bucket`` if that bucket is still in the ring."""
        if bucket > self.last - RING:
            self.slots[bucket % RING] += v
            self.total += v


@dataclass(frozen=True)
class RefTransition:
    """What the reference decided (the fields the property tests compare)."""

    scope: str
    rule: str
    from_: str
    to: str
    kind: str
    ts: int
    value: float
