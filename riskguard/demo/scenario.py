"""A deterministic simulated trading system, with a Knight Capital style runaway.

Normal flow: a few accounts and strategies work parent orders on many symbols by
sending child orders that fill, partially fill or get cancelled, while marks
random-walk and the order router heartbeats. At ``runaway_at_ns`` the ``smars``
strategy starts behaving like Knight's router on 1 August 2012: it stops
counting child fills against its parents and keeps sending child orders, so
filled quantity runs far past each parent's quantity.

The router may consult a gate before every order (``gate``: a function of a
:class:`Ticket`, the order as ``Gate.check`` sees it); when the gate refuses, the
order is not sent. The same generator produces the bundled example session (no gate,
defaults) and drives the live demo (with the real gate), which turns on what the
session does not use: a futures contract among the equities, venues on orders,
children that rest at the venue (``resting``), a book of positions for the broker
(:class:`~riskguard.demo.book.Book`), and the router's cancels (:meth:`TradingSim.cancel`).
With the defaults the events are exactly those of the bundled session.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from riskguard import events as wire
from riskguard.demo.book import FESX, VENUES, Book, Resting, opening_book

SYMBOLS = (
    "AAPL",
    "MSFT",
    "AMZN",
    "GOOG",
    "META",
    "NVDA",
    "TSLA",
    "JPM",
    "BAC",
    "WFC",
    "XOM",
    "CVX",
    "KO",
    "PEP",
    "WMT",
    "HD",
    "DIS",
    "NFLX",
    "INTC",
    "AMD",
    "CSCO",
    "ORCL",
    "IBM",
    "RSHYY",
)
#: strategy -> (account, parent quantity, child quantity, parents at once)
STRATEGIES = {
    "vwap": ("ACC-EQ1", 2000, 100, 3),
    "twap": ("ACC-EQ1", 1500, 100, 2),
    "smars": ("ACC-EQ2", 1000, 100, 4),
    "mm-core": ("ACC-MM", 400, 50, 2),
}
ROUTER = "router-1"
MS = 1_000_000
#: the live demo's universe: the equities and one futures contract (another currency,
#: a contract size of 10), traded by a hedging strategy in an account of its own
LIVE_SYMBOLS = (*SYMBOLS, FESX.symbol)
LIVE_STRATEGIES = {**STRATEGIES, "sx5e-hedge": ("ACC-FUT", 20, 2, 1)}
#: strategy -> the symbols it trades (the others trade the equities)
LIVE_UNIVERSES = {
    **dict.fromkeys(STRATEGIES, SYMBOLS),
    "sx5e-hedge": (FESX.symbol,),
}
Side = Literal["buy", "sell"]


@dataclass(frozen=True, slots=True)
class Ticket:
    """An order the router is about to send, as the gate's ``check`` judges it: keys,
    side, quantity (units or contracts), limit price, venue (MIC, or None)."""

    account: str
    strategy: str
    symbol: str
    side: Side
    qty: float
    price: float | None
    venue: str | None


#: the router's pre-trade question: True sends the order, False drops it
Gate = Callable[[Ticket], bool]


@dataclass
class _Parent:
    pid: str
    strategy: str
    symbol: str
    side: Side
    qty: float
    filled: float = 0.0  # as the strategy *believes*; the runaway stops updating it
    working: float = 0.0  # children resting at the venue


@dataclass
class Stats:
    """What the simulated router did (read by the demo timeline)."""

    sent: int = 0
    refused: int = 0
    sent_after_first_refusal: int = 0
    first_refusal_ns: int | None = None
    runaway_orders: int = 0


@dataclass
class TradingSim:
    """Produces the trading system's events, one step (``step_ms``) at a time.

    ``symbols`` and ``strategies`` (strategy -> (account, parent qty, child qty, parents
    at once)) set the universe, ``universes`` the symbols each strategy trades (default:
    all); ``prices`` overrides starting prices (a future's level) and ``whole_points``
    lists symbols priced in whole points. ``resting`` is the chance that a child is
    passive and rests at its venue for ``rest_ms`` (a range, ms) before it fills (70%)
    or its strategy cancels it; ``venues`` (symbol -> MIC) puts the venue on orders and
    fills. ``book`` records what the venues and the broker know; the broker reports
    (``position`` events of kind ``broker``) the account's position after each fill
    with ``drop_copy``, and every position of every account each ``snapshot_ms``. With
    ``mean_revert`` strategies lean against their positions (new parents' sides).
    """

    seed: int = 7
    runaway_at_ns: int | None = None
    start_ns: int = 1_700_000_000_000_000_000
    step_ms: int = 10
    gate: Gate | None = None
    activity: float = 0.35  # chance per step that a parent sends its next child
    exec_delay_ms: int = 1  # event-time gap between an order and its fill or cancel
    stats: Stats = field(default_factory=Stats)
    symbols: tuple[str, ...] = SYMBOLS
    strategies: dict[str, tuple[str, int, int, int]] = field(
        default_factory=lambda: dict(STRATEGIES)
    )
    universes: dict[str, tuple[str, ...]] = field(default_factory=dict)
    prices: dict[str, float] = field(default_factory=dict)
    whole_points: frozenset[str] = frozenset()
    resting: float = 0.0
    rest_ms: tuple[int, int] = (300, 2000)
    venues: dict[str, str] | None = None
    drop_copy: bool = False
    mean_revert: bool = False
    snapshot_ms: int | None = None
    book: Book = field(default_factory=Book)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._prices = {s: round(self._rng.uniform(20, 400), 2) for s in self.symbols}
        self._prices.update(self.prices)
        self._parents: list[_Parent] = []
        self._seq = 0
        self._now = self.start_ns
        self._last_hb = -(10**18)
        self._last_mark = -(10**18)
        self._last_snapshot = self.start_ns

    @classmethod
    def live(cls, seed: int, start_ns: int, gate: Gate | None = None) -> TradingSim:
        """The live demo's trading system: equities and FESX, venues, resting children."""
        return cls(
            seed=seed,
            start_ns=start_ns,
            gate=gate,
            exec_delay_ms=0,
            symbols=LIVE_SYMBOLS,
            strategies=dict(LIVE_STRATEGIES),
            universes=dict(LIVE_UNIVERSES),
            prices={FESX.symbol: FESX.price},
            whole_points=frozenset({FESX.symbol}),
            resting=0.3,
            venues=VENUES,
            drop_copy=True,
            mean_revert=True,
            snapshot_ms=5_000,
        )

    def _id(self, prefix: str) -> str:
        self._seq += 1
        return f"{prefix}{self._seq}"

    def _round(self, symbol: str, price: float) -> float:
        return round(price, 0 if symbol in self.whole_points else 2)

    def price(self, symbol: str) -> float:
        """The symbol's current price in the simulation."""
        return self._prices[symbol]

    @property
    def runaway(self) -> bool:
        """True once the runaway has started."""
        return self.runaway_at_ns is not None and self._now >= self.runaway_at_ns

    def opening_marks(self, ts: int) -> list[wire.Mark]:
        """A mark of every symbol at its opening price (the reference before trading)."""
        return [wire.Mark(ts=ts, symbol=s, price=self._prices[s]) for s in self.symbols]

    def open_book(self, ts: int) -> list[wire.Position]:
        """The carried book (``position`` events of kind ``open``), booked in :attr:`book`."""
        positions = opening_book(ts, self._prices)
        for position in positions:
            self.book.opened(position)
        return positions

    def step(self, now_ns: int | None = None) -> list[wire.Event]:
        """Advance one step (to ``now_ns`` when live) and return its events, in order."""
        self._now = now_ns if now_ns is not None else self._now + self.step_ms * MS
        now = self._now
        out: list[wire.Event] = []
        if now - self._last_hb >= 250 * MS:
            self._last_hb = now
            out.append(wire.Heartbeat(ts=now, source=ROUTER))
        if now - self._last_mark >= 100 * MS:
            self._last_mark = now
            for s in self._rng.sample(self.symbols, 6):
                self._prices[s] = self._round(s, self._prices[s] * self._rng.uniform(0.998, 1.002))
                out.append(wire.Mark(ts=now, symbol=s, price=self._prices[s]))
        out += self._expire(now)
        if self.snapshot_ms is not None and now - self._last_snapshot >= self.snapshot_ms * MS:
            self._last_snapshot = now
            out += self.book.broker_snapshot(now)
        for strategy, (account, pqty, _, concurrent) in self.strategies.items():
            live = [p for p in self._parents if p.strategy == strategy]
            if len(live) < concurrent and self._rng.random() < 0.2:
                side, symbol = self._pick(account, strategy)
                p = _Parent(self._id("P"), strategy, symbol, side, float(pqty))
                self._parents.append(p)
                out.append(
                    wire.ParentOrder(
                        ts=now,
                        parent_id=p.pid,
                        account=account,
                        strategy=strategy,
                        symbol=p.symbol,
                        side=p.side,
                        qty=p.qty,
                    )
                )
        for p in list(self._parents):
            out += self._work(p, now)
        return out

    def _pick(self, account: str, strategy: str) -> tuple[Side, str]:
        """A new parent's side and symbol. With ``mean_revert`` the strategy leans against
        its position in the symbol, as a desk managing its inventory does: 70% of parents
        reduce it, all of them once it is a parent's quantity or more. Otherwise either
        side, evenly."""
        universe = self.universes.get(strategy, self.symbols)
        if not self.mean_revert:
            side: Side = "buy" if self._rng.random() < 0.5 else "sell"
            return side, self._rng.choice(universe)
        symbol = self._rng.choice(universe)
        held = self.book.positions.get((account, strategy, symbol), 0.0)
        lean = 0.5 if abs(held) >= self.strategies[strategy][1] else 0.2
        buy = 0.5 if held == 0 else (0.5 - lean if held > 0 else 0.5 + lean)
        return ("buy" if self._rng.random() < buy else "sell"), symbol

    def _work(self, p: _Parent, now: int) -> list[wire.Event]:
        account, _, child, _ = self.strategies[p.strategy]
        rogue = p.strategy == "smars" and self.runaway
        if not rogue and (
            p.filled >= p.qty or p.filled + p.working >= p.qty or self._rng.random() > self.activity
        ):
            if p.filled >= p.qty:
                self._parents.remove(p)
            return []
        qty = float(min(child, p.qty - p.filled - p.working)) if not rogue else float(child)
        rest = self.resting > 0 and self._rng.random() < self.resting
        px = self._prices[p.symbol]
        up = (p.side == "buy") != rest  # marketable: through the price; passive: behind it
        limit = self._round(p.symbol, px * (1.001 if up else 0.999))
        order = self._order(account, p.strategy, p.symbol, p.side, qty, limit, now, p.pid)
        if order is None:
            return []
        if rogue:
            self.stats.runaway_orders += 1
        out: list[wire.Event] = [order]
        keys: dict[str, Any] = {"account": account, "strategy": p.strategy, "symbol": p.symbol}
        if rest:
            lifetime_ms = self._rng.uniform(*self.rest_ms)
            fills = self._rng.random() < 0.7
            self.book.resting[order.order_id] = Resting(
                order, p, now + int(lifetime_ms * MS), fills
            )
            p.working += qty
            return out
        if self._rng.random() < 0.15 and not rogue:
            ts = now + self.exec_delay_ms * MS
            out.append(wire.CancelOrder(ts=ts, order_id=order.order_id, **keys))
            self.book.closed(order.order_id, ts, "cancel")
            return out
        fill = wire.Fill(
            ts=now + MS,
            order_id=order.order_id,
            exec_id=self._id("E"),
            side=p.side,
            qty=qty,
            price=px,
            parent_id=p.pid,
            venue=order.venue,
            **keys,
        )
        out += self._trade(fill)
        if not rogue:  # Knight's bug: the runaway never counts its fills
            p.filled += qty
        return out

    def _order(
        self,
        account: str,
        strategy: str,
        symbol: str,
        side: Side,
        qty: float,
        price: float,
        now: int,
        parent_id: str | None,
    ) -> wire.NewOrder | None:
        """Ask the gate, then send (None when refused)."""
        venue = self.venues.get(symbol) if self.venues else None
        ticket = Ticket(account, strategy, symbol, side, qty, price, venue)
        if self.gate is not None and not self.gate(ticket):
            self.stats.refused += 1
            if self.stats.first_refusal_ns is None:
                self.stats.first_refusal_ns = now
            return None
        self.stats.sent += 1
        if self.stats.first_refusal_ns is not None:
            self.stats.sent_after_first_refusal += 1
        order = wire.NewOrder(
            ts=now,
            order_id=self._id("O"),
            account=account,
            strategy=strategy,
            symbol=symbol,
            side=side,
            qty=qty,
            price=price,
            parent_id=parent_id,
            venue=venue,
        )
        self.book.sent(order)
        return order

    def _trade(self, fill: wire.Fill) -> list[wire.Event]:
        """A fill booked at the venue and the broker; with ``drop_copy``, followed by the
        broker's new position of the account in the symbol."""
        self.book.filled(fill)
        self.book.closed(fill.order_id, fill.ts, "fill")
        if not self.drop_copy:
            return [fill]
        return [fill, self.book.broker_position(fill.account, fill.symbol, fill.ts)]

    def _expire(self, now: int) -> list[wire.Event]:
        """Resting orders whose time came: filled at their limit, or cancelled."""
        out: list[wire.Event] = []
        for oid, r in list(self.book.resting.items()):
            if r.expires_ns > now:
                continue
            o = r.order
            r.parent.working -= o.qty
            keys: dict[str, Any] = {
                "account": o.account,
                "strategy": o.strategy,
                "symbol": o.symbol,
            }
            if not r.fills:
                out.append(wire.CancelOrder(ts=now, order_id=oid, **keys))
                self.book.closed(oid, now, "cancel")
                continue
            fill = wire.Fill(
                ts=now,
                order_id=oid,
                exec_id=self._id("E"),
                side=o.side,
                qty=o.qty,
                price=o.price,
                parent_id=o.parent_id,
                venue=o.venue,
                **keys,
            )
            out += self._trade(fill)
            if not (o.strategy == "smars" and self.runaway):
                r.parent.filled += o.qty
        return out

    def cancel(
        self, order_ids: Iterable[str], now: int
    ) -> tuple[list[wire.CancelOrder], list[str]]:
        """The router cancels these orders; the venue confirms at once.

        Returns the confirmed cancels (``cancel`` events at ``now``) and the ids that
        were too late to cancel (already filled or cancelled, or never sent).
        """
        confirmed: list[wire.CancelOrder] = []
        too_late: list[str] = []
        for oid in order_ids:
            life = self.book.lives.get(oid)
            if life is None or life.closed_ns is not None:
                too_late.append(oid)
                continue
            resting = self.book.resting.get(oid)
            if resting is not None:
                resting.parent.working -= resting.order.qty
            o = life.order
            confirmed.append(
                wire.CancelOrder(
                    ts=now, order_id=oid, account=o.account, strategy=o.strategy, symbol=o.symbol
                )
            )
            self.book.closed(oid, now, "router-cancel")
        return confirmed, too_late

    def manual(
        self, account: str, strategy: str, symbol: str, side: Side, qty: float, now: int
    ) -> list[wire.Event]:
        """A trader's marketable order through the same router (and gate); it fills at
        once when sent. Returns its events (none when the gate refused it)."""
        px = self._prices[symbol]
        limit = self._round(symbol, px * (1.001 if side == "buy" else 0.999))
        order = self._order(account, strategy, symbol, side, qty, limit, now, None)
        if order is None:
            return []
        fill = wire.Fill(
            ts=now + MS,
            order_id=order.order_id,
            exec_id=self._id("E"),
            account=account,
            strategy=strategy,
            symbol=symbol,
            side=side,
            qty=qty,
            price=px,
            venue=order.venue,
        )
        return [order, *self._trade(fill)]

    def restart_runaway(self, at_ns: int) -> None:
        """Forget the runaway strategy's parents and let it run away again at ``at_ns``.

        Its orders still resting stay at the venue (the live demo has had them cancelled)."""
        self._parents = [p for p in self._parents if p.strategy != "smars"]
        self.runaway_at_ns = at_ns

    def run(self, duration_ms: int) -> list[wire.Event]:
        """All events of the next ``duration_ms`` milliseconds."""
        out: list[wire.Event] = []
        for _ in range(duration_ms // self.step_ms):
            out += self.step()
        return out
