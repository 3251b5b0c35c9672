"""The simulated venue's side of the demo: working orders, their lives, and the broker's book.

:class:`Book` is what the venues and the broker know of the simulated trading system:

* every order sent, with when it was sent and when (and how) it closed (:class:`Life`),
  so that the demo can count, after the fact and without racing the clock, how many
  orders of a scope were working at any instant;
* the orders resting at a venue (:class:`Resting`): a passive child waits there until it
  fills, the strategy cancels it, or the router cancels it on riskguard's request;
* positions per (account, strategy, symbol), from opening positions and every fill, from
  which the broker's snapshots (``position`` events of kind ``broker``) are written.

Reference data of the demo's universe is here too: each symbol's venue (ISO 10383 MIC),
the futures contract the demo trades among its equities, the FX rate of its currency,
and the opening book the session starts from. No I/O, no clock, no randomness.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from riskguard import events as wire
from riskguard.vocabulary import order_scopes

#: symbol -> the venue (ISO 10383 MIC) its orders go to
VENUES: dict[str, str] = {
    **dict.fromkeys(
        ("AAPL", "MSFT", "AMZN", "GOOG", "META", "NVDA", "TSLA", "NFLX", "INTC", "AMD", "CSCO"),
        "XNAS",
    ),
    **dict.fromkeys(
        ("JPM", "BAC", "WFC", "XOM", "CVX", "KO", "PEP", "WMT", "HD", "DIS", "ORCL", "IBM"),
        "XNYS",
    ),
    "RSHYY": "ARCX",
    "FESX": "XEUR",
}


@dataclass(frozen=True)
class Future:
    """A futures contract: ``multiplier`` currency units per index point, priced in ``currency``."""

    symbol: str
    multiplier: float
    currency: str
    tick_size: float
    price: float
    venue: str


#: Euro Stoxx 50 index futures on Eurex: EUR 10 per index point
FESX = Future("FESX", 10.0, "EUR", 1.0, 4_950.0, "XEUR")
#: the base currency's rate of the futures' currency at the start, and where it moves to
FX_OPEN = 1.0825
FX_MOVED = 1.0951
#: (account, strategy, symbol, qty) of the book carried from yesterday; priced at a
#: fraction of the symbol's opening price (its average cost, below)
OPENING_BOOK: tuple[tuple[str, str, str, float], ...] = (
    ("ACC-EQ1", "vwap", "AAPL", 3_000.0),
    ("ACC-EQ1", "vwap", "JPM", -1_200.0),
    ("ACC-EQ1", "twap", "XOM", 2_500.0),
    ("ACC-MM", "mm-core", "KO", 800.0),
    ("ACC-MM", "mm-core", "MSFT", -400.0),
    ("ACC-FUT", "sx5e-hedge", "FESX", -6.0),
)
OPENING_COST = 0.985  # average cost as a fraction of the opening price


@dataclass(slots=True)
class Life:
    """One order as the venue saw it: sent at ``sent_ns``, closed at ``closed_ns`` (None:
    still working) by ``how`` (``fill``, ``cancel`` by its strategy or at once,
    ``router-cancel`` on riskguard's request)."""

    order: wire.NewOrder
    sent_ns: int
    closed_ns: int | None = None
    how: str = ""

    def in_scope(self, scope: str) -> bool:
        """Whether the order belongs to ``scope`` (``firm``, ``account:A``, ``venue:XNAS`` …)."""
        o = self.order
        return scope in order_scopes(o.account, o.strategy, o.symbol, o.venue)

    def working_at(self, ns: int) -> bool:
        """Sent at or before ``ns`` and not closed by then."""
        return self.sent_ns <= ns and (self.closed_ns is None or self.closed_ns > ns)


@dataclass(slots=True)
class Resting:
    """A passive order resting at its venue until ``expires_ns``; then it fills
    (``fills``) or its strategy cancels it. ``parent`` is the strategy's parent object."""

    order: wire.NewOrder
    parent: Any
    expires_ns: int
    fills: bool


@dataclass
class Book:
    """Orders, resting orders and positions, as the venues and the broker know them."""

    lives: dict[str, Life] = field(default_factory=dict)
    resting: dict[str, Resting] = field(default_factory=dict)
    positions: dict[tuple[str, str, str], float] = field(default_factory=dict)

    def sent(self, order: wire.NewOrder) -> None:
        """An order reached its venue (at ``order.ts``)."""
        self.lives[order.order_id] = Life(order, order.ts)

    def closed(self, order_id: str, ns: int, how: str) -> None:
        """An order closed at ``ns``; no effect on one already closed or never sent."""
        life = self.lives.get(order_id)
        if life is not None and life.closed_ns is None:
            life.closed_ns, life.how = ns, how
        self.resting.pop(order_id, None)

    def filled(self, fill: wire.Fill) -> None:
        """A trade: moves the position of its (account, strategy, symbol)."""
        assert fill.qty is not None and fill.side is not None  # trades carry both
        key = (fill.account, fill.strategy, fill.symbol)
        signed = fill.qty if fill.side == "buy" else -fill.qty
        self.positions[key] = self.positions.get(key, 0.0) + signed

    def opened(self, position: wire.Position) -> None:
        """An opening position (kind ``open``, naming its strategy)."""
        assert position.strategy is not None
        key = (position.account, position.strategy, position.symbol)
        self.positions[key] = self.positions.get(key, 0.0) + position.qty

    def working(self, scope: str) -> Iterator[Life]:
        """Orders of ``scope`` working now."""
        return (
            life for life in self.lives.values() if life.closed_ns is None and life.in_scope(scope)
        )

    def working_at(self, scope: str, ns: int, sent_before_ns: int | None = None) -> list[Life]:
        """Orders of ``scope`` working at ``ns`` (of those sent before ``sent_before_ns``)."""
        cut = ns if sent_before_ns is None else min(ns, sent_before_ns)
        return [
            life
            for life in self.lives.values()
            if life.sent_ns <= cut and life.working_at(ns) and life.in_scope(scope)
        ]

    def last_close(self, order_ids: list[str]) -> int | None:
        """When the last of these orders closed (None: one is still working or unknown)."""
        closes = [self.lives[o].closed_ns if o in self.lives else None for o in order_ids]
        if not closes or any(c is None for c in closes):
            return None
        return max(c for c in closes if c is not None)

    def broker_position(self, account: str, symbol: str, ts: int) -> wire.Position:
        """The broker's view of one account's position in one symbol (a drop copy)."""
        qty = sum(q for (a, _, y), q in self.positions.items() if a == account and y == symbol)
        return wire.Position(
            ts=ts, account=account, symbol=symbol, qty=round(qty, 9), kind="broker"
        )

    def broker_snapshot(self, ts: int) -> list[wire.Position]:
        """The broker's view: one ``position`` of kind ``broker`` per account and symbol
        ever held or traded (flat ones included, as 0), summed over strategies."""
        by_account: dict[tuple[str, str], float] = {}
        for (account, _, symbol), qty in self.positions.items():
            by_account[account, symbol] = by_account.get((account, symbol), 0.0) + qty
        return [
            wire.Position(ts=ts, account=account, symbol=symbol, qty=round(qty, 9), kind="broker")
            for (account, symbol), qty in sorted(by_account.items())
        ]


def reference_data(ts: int, symbols: tuple[str, ...]) -> list[wire.Event]:
    """Start of day: each symbol's ``instrument`` (equities in USD, the future in EUR with
    its contract size) and the rate of EUR."""
    out: list[wire.Event] = []
    for symbol in symbols:
        if symbol == FESX.symbol:
            out.append(
                wire.Instrument(
                    ts=ts,
                    symbol=symbol,
                    multiplier=FESX.multiplier,
                    currency=FESX.currency,
                    tick_size=FESX.tick_size,
                    venue=FESX.venue,
                )
            )
        else:
            out.append(
                wire.Instrument(
                    ts=ts, symbol=symbol, currency="USD", tick_size=0.01, venue=VENUES[symbol]
                )
            )
    out.append(wire.Fx(ts=ts, currency=FESX.currency, rate=FX_OPEN))
    return out


def opening_book(ts: int, prices: dict[str, float]) -> list[wire.Position]:
    """The carried book as ``position`` events of kind ``open``, at their average cost."""
    return [
        wire.Position(
            ts=ts,
            account=account,
            strategy=strategy,
            symbol=symbol,
            qty=qty,
            kind="open",
            price=round(prices[symbol] * OPENING_COST, 2),
        )
        for account, strategy, symbol, qty in OPENING_BOOK
    ]
