"""A deterministic simulated trading system, with a Knight Capital style runaway.

Normal flow: a few accounts and strategies work parent orders on many symbols by
sending child orders that fill, partially fill or get cancelled, while marks
random-walk and the order router heartbeats. At ``runaway_at_ns`` the ``smars``
strategy starts behaving like Knight's router on 1 August 2012: it stops
counting child fills against its parents and keeps sending child orders, so
filled quantity runs far past each parent's quantity.

The router may consult a gate (``allows``) before every order; when the gate
refuses, the order is not sent. The same generator produces the bundled example
session (no gate) and drives the live demo (with the real gate).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from riskguard import events as wire

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

Gate = Callable[[str, str, str, str, bool], bool]


@dataclass
class _Parent:
    pid: str
    strategy: str
    symbol: str
    side: Literal["buy", "sell"]
    qty: float
    filled: float = 0.0  # as the strategy *believes*; the runaway stops updating it


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
    """Produces the trading system's events, one step (``step_ms``) at a time."""

    seed: int = 7
    runaway_at_ns: int | None = None
    start_ns: int = 1_700_000_000_000_000_000
    step_ms: int = 10
    gate: Gate | None = None
    activity: float = 0.35  # chance per step that a parent sends its next child
    exec_delay_ms: int = 1  # event-time gap between an order and its fill or cancel
    stats: Stats = field(default_factory=Stats)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._prices = {s: round(self._rng.uniform(20, 400), 2) for s in SYMBOLS}
        self._parents: list[_Parent] = []
        self._seq = 0
        self._now = self.start_ns
        self._last_hb = -(10**18)
        self._last_mark = -(10**18)

    def _id(self, prefix: str) -> str:
        self._seq += 1
        return f"{prefix}{self._seq}"

    @property
    def runaway(self) -> bool:
        """True once the runaway has started."""
        return self.runaway_at_ns is not None and self._now >= self.runaway_at_ns

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
            for s in self._rng.sample(SYMBOLS, 6):
                self._prices[s] = round(self._prices[s] * self._rng.uniform(0.998, 1.002), 2)
                out.append(wire.Mark(ts=now, symbol=s, price=self._prices[s]))
        for strategy, (account, pqty, _, concurrent) in STRATEGIES.items():
            live = [p for p in self._parents if p.strategy == strategy]
            if len(live) < concurrent and self._rng.random() < 0.2:
                side: Literal["buy", "sell"] = "buy" if self._rng.random() < 0.5 else "sell"
                p = _Parent(self._id("P"), strategy, self._rng.choice(SYMBOLS), side, float(pqty))
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

    def _work(self, p: _Parent, now: int) -> list[wire.Event]:
        account, _, child, _ = STRATEGIES[p.strategy]
        rogue = p.strategy == "smars" and self.runaway
        if not rogue and (p.filled >= p.qty or self._rng.random() > self.activity):
            if p.filled >= p.qty:
                self._parents.remove(p)
            return []
        qty = float(min(child, p.qty - p.filled)) if not rogue else float(child)
        keys: dict[str, Any] = {"account": account, "strategy": p.strategy, "symbol": p.symbol}
        px = self._prices[p.symbol]
        limit = round(px * (1.001 if p.side == "buy" else 0.999), 2)
        if self.gate is not None and not self.gate(account, p.strategy, p.symbol, p.side, False):
            self.stats.refused += 1
            if self.stats.first_refusal_ns is None:
                self.stats.first_refusal_ns = now
            return []
        self.stats.sent += 1
        if self.stats.first_refusal_ns is not None:
            self.stats.sent_after_first_refusal += 1
        if rogue:
            self.stats.runaway_orders += 1
        oid = self._id("O")
        out: list[wire.Event] = [
            wire.NewOrder(
                ts=now, order_id=oid, side=p.side, qty=qty, price=limit, parent_id=p.pid, **keys
            )
        ]
        if self._rng.random() < 0.15 and not rogue:
            out.append(wire.CancelOrder(ts=now + self.exec_delay_ms * MS, order_id=oid, **keys))
            return out
        out.append(
            wire.Fill(
                ts=now + MS,
                order_id=oid,
                exec_id=self._id("E"),
                side=p.side,
                qty=qty,
                price=px,
                parent_id=p.pid,
                **keys,
            )
        )
        if not rogue:  # Knight's bug: the runaway never counts its fills
            p.filled += qty
        return out

    def restart_runaway(self, at_ns: int) -> None:
        """Forget the runaway strategy's parents and let it run away again at ``at_ns``."""
        self._parents = [p for p in self._parents if p.strategy != "smars"]
        self.runaway_at_ns = at_ns

    def run(self, duration_ms: int) -> list[wire.Event]:
        """All events of the next ``duration_ms`` milliseconds."""
        out: list[wire.Event] = []
        for _ in range(duration_ms // self.step_ms):
            out += self.step()
        return out
