"""A REDUCE_ONLY scope's position grown or flipped by an order opened after its decision.

The gate refuses, in a REDUCE_ONLY scope, new orders that would increase its position or
flip it. An order stamped after the decision that fills so that the scope's position then
stands on the order's side (it grew, opened from flat, or flipped through zero) was sent
by a router not asking the gate (or faster than riskguard published): the kill switch is
being bypassed while the position moves the wrong way, and riskguard raises a paging
system alert :data:`BREACH` naming the scope, the symbol, the position before and after
and the order. Cancel-incomplete alone misses it: a rogue order that fills within the
cancel deadline is never overdue.

Judged per applied batch, for each such order that filled in it (fills of kind
``trade``): ``after`` is the scope's position in the symbol after the batch (a symbol's
or venue's: the firm's, as the reduce-only selection judges), ``before`` = ``after``
minus the order's own fills in the batch (exact when no later event of the batch moved
that position). It breaches when ``after`` != 0 and has the sign of the order's side.
Orders working at the decision are not judged here (their fills within the deadline are
the expected cancel race; past it, ``cancel-incomplete`` names them), nor busts,
corrections or position observations. One alert per order and scope. A group-mode member
judges account scopes only (it holds part of any other scope's position).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

import msgspec
import numpy as np

from riskguard.events import CancelOrder, Event, Fill, NewOrder, RejectOrder
from riskguard.evidence import number
from riskguard.ingest.ports import OrderBook
from riskguard.state.codes import O_OPEN
from riskguard.vocabulary import Transition, order_scopes, system_alert, transition_id

BREACH: Final = "reduce-only-breach"
"""The system alert's rule."""
METRIC: Final = "position"
"""Its metric: ``value`` is the position after, ``limit`` the position before."""

OrderKey = tuple[str, str]
"""(account, ClOrdID)."""


def _sign(side: str) -> int:
    return 1 if side == "buy" else -1


@dataclass(eq=False)
class ReduceOnlyBreaches:
    """Watches the orders opened after a reduce-only's decision; owned by the cancel
    tracker (:class:`riskguard.ingest.cancels.CancelTracker`), which sends its alerts."""

    opened: dict[OrderKey, tuple[int, str, tuple[str, ...]]] = field(default_factory=dict)
    """Working orders opened late -> (side +1/-1, strategy, the reduce-only scopes)."""
    alerted: set[tuple[str, OrderKey]] = field(default_factory=set)
    """(scope, order) already alerted."""

    def observe(
        self, book: OrderBook, events: Sequence[Event], member: str | None, now_ns: int
    ) -> list[Transition]:
        """The breaches of the batch ``events`` just applied to ``book`` (maybe none);
        ``member``: a group-mode member (None: single mode); ``now_ns``: wall clock."""
        reducing = {
            s: tr
            for s, tr in book.killswitch.standing().items()
            if tr.to == "REDUCE_ONLY" and (member is None or s.startswith("account:"))
        }
        if not reducing:
            self.opened.clear()
            self.alerted.clear()
            return []
        moved: dict[tuple[str, OrderKey], list[float | str | int]] = {}
        touched: set[OrderKey] = set()
        for ev in events:
            if isinstance(ev, NewOrder):
                key = (ev.account, ev.order_id)
                scopes = order_scopes(ev.account, ev.strategy, ev.symbol, ev.venue)
                under = tuple(s for s in scopes if s in reducing and ev.ts > reducing[s].decided_ns)
                if under:
                    self.opened[key] = (_sign(ev.side), ev.strategy, under)
                else:  # not late, or a ClOrdID used again
                    self.opened.pop(key, None)
            elif isinstance(ev, CancelOrder | RejectOrder):
                touched.add((ev.account, ev.order_id))
            elif isinstance(ev, Fill) and ev.exec_type == "trade" and ev.side and ev.qty:
                key = (ev.account, ev.order_id)
                touched.add(key)
                known = self.opened.get(key)
                if known is None:
                    continue
                for s in known[2]:
                    if s in reducing and ev.ts > reducing[s].decided_ns:
                        entry = moved.setdefault((s, key), [ev.symbol, 0.0, ev.ts])
                        entry[1] = float(entry[1]) + _sign(ev.side) * ev.qty
                        entry[2] = ev.ts
        alerts = [
            alert
            for (scope, key), (symbol, qty, ts) in moved.items()
            if (alert := self._judge(book, scope, key, str(symbol), float(qty), int(ts), now_ns))
        ]
        self._forget(book, touched)
        return alerts

    def _judge(
        self,
        book: OrderBook,
        scope: str,
        key: OrderKey,
        symbol: str,
        qty: float,
        ts: int,
        now_ns: int,
    ) -> Transition | None:
        """The alert if order ``key``'s fills (``qty`` signed, the last at ``ts``) left
        ``scope``'s position in ``symbol`` on the order's side; None otherwise."""
        if (scope, key) in self.alerted:
            return None
        side, strategy, _ = self.opened[key]
        owner = scope if scope.partition(":")[0] in ("firm", "account", "strategy") else "firm"
        after = book.position(owner, symbol)
        if after == 0.0 or np.sign(after) != side:
            return None
        self.alerted.add((scope, key))
        before = after - qty
        how = (
            "flipped"
            if before != 0.0 and np.sign(before) != side
            else "opened"
            if before == 0
            else "grew"
        )
        reason = (
            f"{scope} is REDUCE_ONLY and its position in {symbol} {how}: "
            f"{number(before)} -> {number(after)}, by order {key[1]} "
            f"({key[0]}/{strategy} {symbol} {'buy' if side > 0 else 'sell'}, filled "
            f"{number(abs(qty))}) opened after the reduce-only was decided (a router not "
            f"asking the gate, or sent before the gate held it)"
        )
        firm = book.killswitch.state("firm")
        alert = system_alert(
            BREACH, METRIC, firm, value=after, limit=before, reason=reason, now_ns=now_ns
        )
        tid = transition_id("firm", ts, f"ALERT:{BREACH}:{scope}:{key[0]}/{key[1]}")
        return msgspec.structs.replace(alert, id=tid)

    def _forget(self, book: OrderBook, keys: set[OrderKey]) -> None:
        """Stop watching the orders of ``keys`` that no longer work (the memory stays
        bounded by the late orders working)."""
        for key in keys:
            if key not in self.opened:
                continue
            oid = book.find_order(key[1], key[0])
            if oid is not None:
                status, _ = book.order_lives(np.array([oid], dtype=np.int64))
                if int(status[0]) == O_OPEN:
                    continue
            del self.opened[key]
            self.alerted = {a for a in self.alerted if a[1] != key}
