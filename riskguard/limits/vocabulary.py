"""Metric vocabulary v1: the one metric spec. Names, kernel codes, and their rules of use.

Each :class:`MetricSpec` says what a limits file may say about a metric and when
riskguard evaluates it: the event types that move it, whether a price move revalues
it (exposure), which counters a windowed metric reads, whether it is checked before
every event. The rulebook, the reference model and the "evaluated on" column of
``docs/limits.md`` (checked by ``tests/limits/test_metric_spec.py``) all follow from here;
:func:`metrics_moved_by`, :data:`EXPOSURE_METRICS`, :data:`EVERY_EVENT_METRICS` and
:data:`COUNTER_CODES` are the derived tables.

The codes are part of the compiled form only; the limits file speaks in names.
Definitions live in ``docs/limits.md``; ``describe()`` renders them for the CLI.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from riskguard.vocabulary import EVENT_TYPES, LEVEL_CODE, LEVELS, TYPE_CODE

SCOPES: Final = LEVELS
LEVEL: Final = LEVEL_CODE

# Metric codes. The numba kernel dispatches on these; keep them dense and stable.
M_ORDER_RATE: Final = 0
M_MESSAGE_RATE: Final = 1
M_REJECT_RATE: Final = 2
M_CANCEL_RATIO: Final = 3
M_FILL_NOTIONAL_RATE: Final = 4
M_ORDER_QTY: Final = 5
M_ORDER_NOTIONAL: Final = 6
M_PRICE_DEVIATION: Final = 7
M_POSITION_QTY: Final = 8
M_GROSS_NOTIONAL: Final = 9
M_NET_NOTIONAL: Final = 10
M_PNL: Final = 11
M_DRAWDOWN: Final = 12
M_OPEN_ORDERS: Final = 13
M_PARENT_OVERFILL: Final = 14
M_DUPLICATE_ORDERS: Final = 15
M_FEED_SILENCE: Final = 16
M_CONSUMER_LAG: Final = 17
M_OPEN_ORDER_NOTIONAL: Final = 18
M_POTENTIAL_GROSS: Final = 19
M_POSITION_BREAK: Final = 20
M_FILL_COUNT: Final = 21
M_RESTRICTED: Final = 22

#: Counter kinds a windowed metric counts in its window; a kind's code is its index
#: (the kernel's ``C_*``). new orders; messages (new + replace + cancel); rejects;
#: cancels; fill notional; duplicate new orders; executions.
COUNTER_KINDS: Final = ("new", "msg", "rej", "cxl", "filln", "dup", "fills")
COUNTER_CODE: Final[dict[str, int]] = {kind: code for code, kind in enumerate(COUNTER_KINDS)}


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One metric of the vocabulary: what a limits file may say about it, and when it moves.

    ``evaluated_on``: the event types (names from :data:`riskguard.vocabulary.EVENT_TYPES`,
    in that order) after which the metric is evaluated on the event's own scopes.
    ``exposure``: a price move (a mark, or a fill at a new price) revalues it for every
    scope holding the symbol. ``counters``: for a windowed metric, its (numerator,
    denominator or None) counter kinds from :data:`COUNTER_KINDS`; None otherwise.
    ``every_event``: evaluated before every event of any type, before that event
    counts (the feed rows); ``on_tick`` also on the clock tick; ``live_only``
    never in a replay. ``by_event``: measured per order or fill, so a rule may select
    events by ``match.side`` and ``match.venue``. ``per_position``: the value is that of
    one position (one symbol), and alert edges are kept per position. ``listed``: it comes
    from its own section of the limits file (``[[restricted]]``), not from a ``[[rule]]``,
    and the kernel judges it apart, only in the symbols listed. ``signed``: the value can
    be below 0 (P&L, net notional, consumer lag); every other metric is a count, size,
    ratio or time that never is, so a bound below 0 on it is refused. Raises
    ``ValueError`` when these disagree with each other.
    """

    name: str
    code: int
    windowed: bool
    scopes: tuple[str, ...]
    unit: str
    definition: str
    evaluated_on: tuple[str, ...] = ()
    exposure: bool = False
    counters: tuple[str, str | None] | None = None
    every_event: bool = False
    on_tick: bool = False
    live_only: bool = False
    by_event: bool = False
    per_position: bool = False
    listed: bool = False
    signed: bool = False

    def __post_init__(self) -> None:
        if list(self.evaluated_on) != sorted(set(self.evaluated_on), key=_type_order):
            raise ValueError(
                f"{self.name}: evaluated_on must be distinct event types in the order "
                f"of EVENT_TYPES {EVENT_TYPES}, got {self.evaluated_on}"
            )
        if self.windowed != (self.counters is not None):
            raise ValueError(f"{self.name}: a metric has counters exactly when it is windowed")
        if self.counters is not None and any(
            kind not in COUNTER_CODE for kind in self.counters if kind is not None
        ):
            raise ValueError(f"{self.name}: counter kinds must come from {COUNTER_KINDS}")
        if (self.on_tick or self.live_only) and not self.every_event:
            raise ValueError(f"{self.name}: on_tick and live_only apply to every_event metrics")
        if self.windowed and not self.by_event:
            raise ValueError(f"{self.name}: windowed metrics count events (by_event)")
        if "venue" in self.scopes and not (self.by_event or self.name == "open_orders"):
            raise ValueError(f"{self.name}: only order and fill counts exist per venue")


def _type_order(event_type: str) -> int:
    if event_type not in TYPE_CODE:
        raise ValueError(f"unknown event type {event_type!r}; expected one of {EVENT_TYPES}")
    return TYPE_CODE[event_type]


#: Positions are not kept per venue (a buy on one venue and a sell on another net out),
#: so position and money metrics exist at every level but venue.
_ALL: Final = ("firm", "account", "strategy", "symbol")
_ORDERS: Final = SCOPES
_ORDER_EVENTS: Final = ("new", "replace", "cancel", "reject", "fill")

METRICS: Final[dict[str, MetricSpec]] = {
    m.name: m
    for m in (
        MetricSpec(
            "order_rate",
            M_ORDER_RATE,
            True,
            _ORDERS,
            "orders",
            "new orders in the window",
            evaluated_on=("new",),
            counters=("new", None),
            by_event=True,
        ),
        MetricSpec(
            "message_rate",
            M_MESSAGE_RATE,
            True,
            _ORDERS,
            "messages",
            "new + replace + cancel messages in the window",
            evaluated_on=("new", "replace", "cancel"),
            counters=("msg", None),
            by_event=True,
        ),
        MetricSpec(
            "reject_rate",
            M_REJECT_RATE,
            True,
            _ORDERS,
            "rejects",
            "rejects in the window",
            evaluated_on=("new", "reject"),
            counters=("rej", None),
            by_event=True,
        ),
        MetricSpec(
            "cancel_ratio",
            M_CANCEL_RATIO,
            True,
            _ORDERS,
            "ratio",
            "cancels / new orders in the window, once new orders >= min_orders",
            evaluated_on=("new", "cancel"),
            counters=("cxl", "new"),
            by_event=True,
        ),
        MetricSpec(
            "fill_notional_rate",
            M_FILL_NOTIONAL_RATE,
            True,
            _ORDERS,
            "currency",
            "sum of fill qty x |fill price| x multiplier x FX rate in the window",
            evaluated_on=("new", "fill"),
            counters=("filln", None),
            by_event=True,
        ),
        MetricSpec(
            "order_qty",
            M_ORDER_QTY,
            False,
            _ORDERS,
            "quantity",
            "quantity of each new or replaced order (fat finger)",
            evaluated_on=("new", "replace"),
            by_event=True,
        ),
        MetricSpec(
            "order_notional",
            M_ORDER_NOTIONAL,
            False,
            _ORDERS,
            "currency",
            "qty x |price| x multiplier x FX rate (reference price for market orders) "
            "of each new/replace",
            evaluated_on=("new", "replace"),
            by_event=True,
        ),
        MetricSpec(
            "price_deviation",
            M_PRICE_DEVIATION,
            False,
            _ORDERS,
            "ratio",
            "|limit price - reference price| / |reference price| of each new/replace "
            "(not evaluated at a zero reference)",
            evaluated_on=("new", "replace"),
            by_event=True,
        ),
        MetricSpec(
            "position_qty",
            M_POSITION_QTY,
            False,
            _ALL,
            "quantity",
            "largest |net position| in one symbol",
            evaluated_on=("fill", "position"),
            per_position=True,
        ),
        MetricSpec(
            "gross_notional",
            M_GROSS_NOTIONAL,
            False,
            _ALL,
            "currency",
            "sum over symbols of |position x valuation price x multiplier x FX rate|",
            evaluated_on=("fill", "position"),
            exposure=True,
        ),
        MetricSpec(
            "net_notional",
            M_NET_NOTIONAL,
            False,
            _ALL,
            "currency",
            "sum over symbols of signed position x valuation price x multiplier x FX rate",
            evaluated_on=("fill", "position"),
            exposure=True,
            signed=True,
        ),
        MetricSpec(
            "pnl",
            M_PNL,
            False,
            _ALL,
            "currency",
            "realised (average cost) + unrealised P&L - fees since session start",
            evaluated_on=("fill", "position"),
            exposure=True,
            signed=True,
        ),
        MetricSpec(
            "drawdown",
            M_DRAWDOWN,
            False,
            _ALL,
            "currency",
            "session high of net P&L - current net P&L (the high starts at 0; never below 0)",
            evaluated_on=("fill", "position"),
            exposure=True,
        ),
        MetricSpec(
            "open_orders",
            M_OPEN_ORDERS,
            False,
            _ORDERS,
            "orders",
            "orders sent and not yet filled, cancelled or rejected",
            evaluated_on=_ORDER_EVENTS,
        ),
        MetricSpec(
            "parent_overfill_ratio",
            M_PARENT_OVERFILL,
            False,
            _ALL,
            "ratio",
            "largest filled child qty / parent qty over the scope's parents",
            evaluated_on=("parent", "new", "fill"),
        ),
        MetricSpec(
            "duplicate_orders",
            M_DUPLICATE_ORDERS,
            True,
            _ORDERS,
            "orders",
            "new orders identical (symbol, side, qty, price) to an earlier new "
            "order of the same scope key within the window",
            evaluated_on=("new",),
            counters=("dup", None),
            by_event=True,
        ),
        MetricSpec(
            "open_order_notional",
            M_OPEN_ORDER_NOTIONAL,
            False,
            _ALL,
            "currency",
            "sum over working orders of remaining qty x |limit price| x multiplier x FX rate "
            "(market orders at the valuation price)",
            evaluated_on=_ORDER_EVENTS,
            exposure=True,
        ),
        MetricSpec(
            "potential_gross_notional",
            M_POTENTIAL_GROSS,
            False,
            _ALL,
            "currency",
            "gross notional if every working order filled, worst side per symbol: "
            "max(|position + working buys|, |position - working sells|) x price",
            evaluated_on=(*_ORDER_EVENTS, "position"),
            exposure=True,
        ),
        MetricSpec(
            "position_break_qty",
            M_POSITION_BREAK,
            False,
            ("account", "strategy"),
            "quantity",
            "largest |riskguard position - broker position| in one symbol, when the broker "
            "reports it",
            evaluated_on=("position",),
            per_position=True,
        ),
        MetricSpec(
            "fill_count",
            M_FILL_COUNT,
            True,
            _ORDERS,
            "executions",
            "executions in the window (RTS 6 Art. 15(3) repeated executions)",
            evaluated_on=("new", "fill"),
            counters=("fills", None),
            by_event=True,
        ),
        MetricSpec(
            "restricted",
            M_RESTRICTED,
            False,
            ("firm", "account", "strategy"),
            "orders",
            "1 for a new, replace or trade in a symbol on the restricted list "
            "([[restricted]] entries, not [[rule]]s)",
            evaluated_on=("new", "replace", "fill"),
            listed=True,
        ),
        MetricSpec(
            "feed_silence_ms",
            M_FEED_SILENCE,
            False,
            ("firm",),
            "milliseconds",
            "time since the last event (or, with match.source, the last heartbeat of that source)",
            every_event=True,
            on_tick=True,
        ),
        MetricSpec(
            "consumer_lag_ms",
            M_CONSUMER_LAG,
            False,
            ("firm",),
            "milliseconds",
            "wall time minus the event time of each event as it is applied (live runs only; "
            "never evaluated in replay)",
            every_event=True,
            live_only=True,
            signed=True,
        ),
    )
}

BY_CODE: Final = {m.code: m for m in METRICS.values()}

#: Metrics whose value is never below 0: a bound below 0 on them is refused.
NONNEGATIVE_METRICS: Final = frozenset(m.name for m in METRICS.values() if not m.signed)
#: Metrics a price move revalues for every scope holding the symbol.
EXPOSURE_METRICS: Final = frozenset(m.name for m in METRICS.values() if m.exposure)
#: Metrics evaluated before every event, whatever its type (the feed rows).
EVERY_EVENT_METRICS: Final = frozenset(m.name for m in METRICS.values() if m.every_event)
#: Per windowed metric: its (numerator, denominator or None) counter-kind codes.
COUNTER_CODES: Final[dict[str, tuple[int, int | None]]] = {
    m.name: (
        COUNTER_CODE[m.counters[0]],
        None if m.counters[1] is None else COUNTER_CODE[m.counters[1]],
    )
    for m in METRICS.values()
    if m.counters is not None
}


def metrics_moved_by(event_type: str) -> frozenset[str]:
    """Names of the metrics evaluated on an event of ``event_type`` (its own scopes),
    listed metrics (judged apart) left out.

    Empty for ``mark`` and ``heartbeat``: a mark moves exposure metrics through
    revaluation (:data:`EXPOSURE_METRICS`), and the feed rows
    (:data:`EVERY_EVENT_METRICS`) are checked before every event. Raises
    ``ValueError`` for a type not in :data:`riskguard.vocabulary.EVENT_TYPES`.
    """
    _type_order(event_type)
    return _MOVED_BY[event_type]


def codes(names: Iterable[str]) -> frozenset[int]:
    """The metric codes (``M_*``) of metric ``names``; ``KeyError`` for an unknown name."""
    return frozenset(METRICS[name].code for name in names)


_MOVED_BY: Final = {
    t: frozenset(m.name for m in METRICS.values() if t in m.evaluated_on and not m.listed)
    for t in EVENT_TYPES
}

#: Which match fields a rule at each scope may use. A strategy belongs to one
#: account, so a strategy-scope rule may select strategies by account.
MATCH_FIELDS: Final = {
    "firm": (),
    "account": ("account",),
    "strategy": ("strategy", "account"),
    "symbol": ("symbol",),
    "venue": ("venue",),
}
#: Match fields selecting events rather than scopes: allowed for ``by_event`` metrics at
#: any scope (a venue-scope rule names its venues with ``match.venue`` as its own key).
EVENT_MATCH_FIELDS: Final = ("side", "venue")
#: Metrics that come from their own section of the limits file, never from a [[rule]].
LISTED_METRICS: Final = frozenset(m.name for m in METRICS.values() if m.listed)


def describe() -> str:
    """A plain-text table of the vocabulary, for ``riskguard validate --metrics``."""
    rows = [f"{'metric':24} {'window':7} {'unit':12} definition"]
    for m in METRICS.values():
        rows.append(f"{m.name:24} {'yes' if m.windowed else 'no':7} {m.unit:12} {m.definition}")
    return "\n".join(rows)
