"""Metric vocabulary v1: names, integer codes used by the kernels, and their rules of use.

The codes are part of the compiled form only; the limits file speaks in names.
Definitions live in ``docs/limits.md``; ``describe()`` renders them for the CLI.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from riskguard.vocabulary import LEVEL_CODE, LEVELS

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


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One metric of the vocabulary: what a limits file may say about it."""

    name: str
    code: int
    windowed: bool
    scopes: tuple[str, ...]
    unit: str
    definition: str


_ALL: Final = SCOPES

METRICS: Final[dict[str, MetricSpec]] = {
    m.name: m
    for m in (
        MetricSpec("order_rate", M_ORDER_RATE, True, _ALL, "orders", "new orders in the window"),
        MetricSpec(
            "message_rate",
            M_MESSAGE_RATE,
            True,
            _ALL,
            "messages",
            "new + replace + cancel messages in the window",
        ),
        MetricSpec("reject_rate", M_REJECT_RATE, True, _ALL, "rejects", "rejects in the window"),
        MetricSpec(
            "cancel_ratio",
            M_CANCEL_RATIO,
            True,
            _ALL,
            "ratio",
            "cancels / new orders in the window, once new orders >= min_orders",
        ),
        MetricSpec(
            "fill_notional_rate",
            M_FILL_NOTIONAL_RATE,
            True,
            _ALL,
            "currency",
            "sum of fill qty x fill price in the window",
        ),
        MetricSpec(
            "order_qty",
            M_ORDER_QTY,
            False,
            _ALL,
            "quantity",
            "quantity of each new or replaced order (fat finger)",
        ),
        MetricSpec(
            "order_notional",
            M_ORDER_NOTIONAL,
            False,
            _ALL,
            "currency",
            "qty x price (reference price for market orders) of each new/replace",
        ),
        MetricSpec(
            "price_deviation",
            M_PRICE_DEVIATION,
            False,
            _ALL,
            "ratio",
            "|limit price - reference price| / reference price of each new/replace",
        ),
        MetricSpec(
            "position_qty",
            M_POSITION_QTY,
            False,
            _ALL,
            "quantity",
            "largest |net position| in one symbol",
        ),
        MetricSpec(
            "gross_notional",
            M_GROSS_NOTIONAL,
            False,
            _ALL,
            "currency",
            "sum over symbols of |position| x reference price",
        ),
        MetricSpec(
            "net_notional",
            M_NET_NOTIONAL,
            False,
            _ALL,
            "currency",
            "sum over symbols of signed position x reference price",
        ),
        MetricSpec(
            "pnl",
            M_PNL,
            False,
            _ALL,
            "currency",
            "realised (average cost) + unrealised P&L since session start",
        ),
        MetricSpec(
            "drawdown",
            M_DRAWDOWN,
            False,
            _ALL,
            "currency",
            "session peak P&L - current P&L (peak starts at 0)",
        ),
        MetricSpec(
            "open_orders",
            M_OPEN_ORDERS,
            False,
            _ALL,
            "orders",
            "orders sent and not yet filled, cancelled or rejected",
        ),
        MetricSpec(
            "parent_overfill_ratio",
            M_PARENT_OVERFILL,
            False,
            _ALL,
            "ratio",
            "largest filled child qty / parent qty over the scope's parents",
        ),
        MetricSpec(
            "duplicate_orders",
            M_DUPLICATE_ORDERS,
            True,
            _ALL,
            "orders",
            "new orders identical (symbol, side, qty, price) to an earlier new "
            "order of the same scope key within the window",
        ),
        MetricSpec(
            "feed_silence_ms",
            M_FEED_SILENCE,
            False,
            ("firm",),
            "milliseconds",
            "time since the last event (or, with match.source, the last heartbeat of that source)",
        ),
        MetricSpec(
            "consumer_lag_ms",
            M_CONSUMER_LAG,
            False,
            ("firm",),
            "milliseconds",
            "wall time minus the event time of each event as it is applied (live runs only; "
            "never evaluated in replay)",
        ),
    )
}

BY_CODE: Final = {m.code: m for m in METRICS.values()}

#: Which match fields a rule at each scope may use. A strategy belongs to one
#: account, so a strategy-scope rule may select strategies by account.
MATCH_FIELDS: Final = {
    "firm": (),
    "account": ("account",),
    "strategy": ("strategy", "account"),
    "symbol": ("symbol",),
}


def describe() -> str:
    """A plain-text table of the vocabulary, for ``riskguard validate --metrics``."""
    rows = [f"{'metric':24} {'window':7} {'unit':12} definition"]
    for m in METRICS.values():
        rows.append(f"{m.name:24} {'yes' if m.windowed else 'no':7} {m.unit:12} {m.definition}")
    return "\n".join(rows)
