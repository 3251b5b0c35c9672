"""Definitions the plain-Python reference model is written with (see :mod:`.reference`).

Which events move which metric, the exposure metrics and the counter kinds are taken
by name from the one metric spec (:mod:`riskguard.limits.vocabulary`), never from the
kernel's compiled tables: the property tests then compare two implementations of one
spec, and ``tests/limits/test_metric_spec.py`` checks that spec against the docs.
Everything else here is spelled out the obvious way, sharing no code with the kernel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from riskguard.limits.vocabulary import EXPOSURE_METRICS, METRICS, metrics_moved_by
from riskguard.vocabulary import EVENT_TYPES

BUCKETS = 10
RING = BUCKETS + 1
JUMP_CONFIRM = 3  # replay: this many events in a row stamped too far ahead follow a jump
MARK_RING = 4  # distinct prices remembered at a symbol's latest mark time
QTY_RTOL = 1e-9  # quantities this close (relative) are equal
LEVEL_RTOL = 1e-15  # utilisations this close (x the level) to a level or re-arm point: at it
#: Metrics each event type moves, for the types that move any (by name).
FAMILY_NAMES: dict[str, frozenset[str]] = {
    t: metrics_moved_by(t) for t in EVENT_TYPES if metrics_moved_by(t)
}
EXPOSURE_NAMES = EXPOSURE_METRICS
#: windowed metric -> (numerator kind, denominator kind or None)
COUNTED: dict[str, tuple[str, str | None]] = {
    m.name: m.counters for m in METRICS.values() if m.counters is not None
}


def snap(x: float) -> float:
    """A quantity sum rounded to 9 decimals below a million units (decimal fills add up)."""
    return x if abs(x) >= 1e6 else math.floor(x * 1e9 + 0.5) / 1e9


def near(a: float, b: float) -> bool:
    """Quantities equal: exactly below a million units, within QTY_RTOL of the larger above."""
    big = max(abs(a), abs(b))
    return a == b if big < 1e6 else abs(a - b) <= QTY_RTOL * big


@dataclass
class Book:
    """Aggregates of one scope, in the base currency."""

    net: float = 0.0
    gross: float = 0.0
    real: float = 0.0
    cost: float = 0.0
    fees: float = 0.0
    peak: float = 0.0
    potential: float = 0.0
    open_notional: float = 0.0
    open_orders: int = 0
    lots: int = 0  # positions held: at 0 the exposure is exactly 0
    unknown: int = 0  # lots or working orders in a currency with no rate: money unknown

    @property
    def pnl(self) -> float:
        """Realised + unrealised, net of fees."""
        return self.real + self.net - self.cost - self.fees


@dataclass
class Lot:
    """One owner's position in one symbol, with its valuation (money in the symbol's
    currency, x its multiplier) and the working orders of the owner in it."""

    qty: float = 0.0
    cost: float = 0.0
    real: float = 0.0
    value: float = 0.0  # signed qty x valuation price, per lot
    gross: float = 0.0  # |qty x price| per lot
    fees: float = 0.0
    buys: float = 0.0  # working buy quantity
    sells: float = 0.0  # working sell quantity
    market: float = 0.0  # of which market orders
    buy_money: float = 0.0  # working qty x |limit| x multiplier of its limit buys
    sell_money: float = 0.0  # likewise, of its limit sells
    potential: float = 0.0
    open: float = 0.0
    broker: float | None = None  # the broker's position, once reported
    unknown: bool = False  # counted in its scopes' unknown


@dataclass
class Order:
    """What is known of one order id (working, closed, or seen before its new)."""

    status: str  # "open", "closed", "pending"
    account: str
    strategy: str
    symbol: str
    side: int
    serial: int
    parent: str | None = None
    has_new: bool = False
    cancelled: bool = False
    rejected: bool = False
    replaced: bool = False
    qty: float = 0.0
    cum: float = 0.0
    new_qty: float = 0.0
    new_price: float | None = None
    replace_ns: int = -1
    replace_qty: float = 0.0
    replace_price: float | None = None
    unattributed: float = 0.0
    venue: str | None = None
    pairs: tuple[str, str, str] = ("", "", "")  # its new's account, strategy, symbol
    price: float | None = None  # working limit price (None: market)
    working: float = 0.0  # remaining qty counted in its lots' working quantities
    work_px: float | None = None  # the limit it is counted at there
    #: a cancel ("cxl") or reject ("rej") seen before its new: the side and venue it
    #: was counted with
    early: dict[str, tuple[int, str | None]] = field(default_factory=dict)
    #: its trades before its new with no venue: (account, exec_id)
    early_execs: list[tuple[str, str]] = field(default_factory=list)
    early_replaces: int = 0  # replaces with no venue counted before its new


@dataclass
class Execution:
    """An applied execution: what a correction or bust reverses."""

    order: str
    serial: int
    parent: str | None
    account: str
    strategy: str
    symbol: str
    side: int
    qty: float
    price: float
    fee: float
    count_ns: int
    busted: bool = False
    venue: str | None = None
    counted: float = 0.0  # fill notional counted in windows (base money)
    stated: float | None = None  # opening positions: the price as stated
    fee_rate: float = math.nan  # the rate its fee was booked at (NaN: unvalued then)


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

    def add(self, bucket: int, v: float, history: bool = False) -> None:
        """Count ``v`` in ``bucket``, or in the oldest bucket still in the ring if older;
        reading a backlog (``history``), not at all if older."""
        if v != 0.0:
            if bucket < self.last - RING + 1:
                if history:
                    return
                bucket = self.last - RING + 1
            self.slots[bucket % RING] += v
            self.total += v

    def peek(self, bucket: int) -> float:
        """The total once moved to ``bucket``, without moving (a clock tick's reading)."""
        if bucket <= self.last:
            return self.total
        total = 0.0
        for j, v in enumerate(self.slots):
            held = self.last - (self.last - j) % RING  # the bucket slot j holds
            total += v if held > bucket - RING else 0.0
        return total

    def take_back(self, bucket: int, v: float) -> None:
        """Remove ``v`` from ``bucket`` if the ring still holds it."""
        if bucket > self.last - RING:
            self.slots[bucket % RING] -= v
            self.total -= v


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
    level: float | None = None
    symbol: str | None = None
