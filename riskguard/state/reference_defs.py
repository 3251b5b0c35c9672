"""Definitions the plain-Python reference model is written with (see :mod:`.reference`).

Spelled out by name, on purpose, rather than imported from the kernel's tables.
"""

from __future__ import annotations

from dataclasses import dataclass, field

BUCKETS = 10
RING = BUCKETS + 1
#: Metrics each event type can move (spelled out again here, on purpose, by name).
FAMILY_NAMES: dict[str, frozenset[str]] = {
    "parent": frozenset({"parent_overfill_ratio"}),
    "new": frozenset(
        {
            "order_rate",
            "message_rate",
            "cancel_ratio",
            "duplicate_orders",
            "order_qty",
            "order_notional",
            "price_deviation",
            "open_orders",
        }
    ),
    "replace": frozenset(
        {"message_rate", "order_qty", "order_notional", "price_deviation", "open_orders"}
    ),
    "cancel": frozenset({"message_rate", "cancel_ratio", "open_orders"}),
    "reject": frozenset({"reject_rate", "open_orders"}),
    "fill": frozenset(
        {
            "fill_notional_rate",
            "position_qty",
            "gross_notional",
            "net_notional",
            "pnl",
            "drawdown",
            "open_orders",
            "parent_overfill_ratio",
        }
    ),
}
EXPOSURE_NAMES = frozenset({"gross_notional", "net_notional", "pnl", "drawdown"})
COUNTED = {  # windowed metric -> (numerator kind, denominator kind)
    "order_rate": ("new", None),
    "message_rate": ("msg", None),
    "reject_rate": ("rej", None),
    "cancel_ratio": ("cxl", "new"),
    "fill_notional_rate": ("filln", None),
    "duplicate_orders": ("dup", None),
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
