"""The windows of the reference model: counters by kind, level, side and venue.

A mix-in of :class:`riskguard.state.reference_orders.ReferenceOrders` (the mirror of the
windowed counters in :mod:`riskguard.state.counters`), written the obvious way.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from riskguard import events as wire
from riskguard.limits.model import Rule
from riskguard.limits.vocabulary import METRICS
from riskguard.state.codes import OWN_TIME_NS
from riskguard.state.reference_defs import BUCKETS, COUNTED, Execution, Order, Window
from riskguard.vocabulary import STATES, money

Counter = tuple[str, str, int, int, str | None]
"""(kind, level, window ns, side filter 0/+1/-1, venue filter or None)"""


class ReferenceWindows:
    """Windowed counts of the reference model."""

    windows: dict[tuple[Counter, str], Window]
    counters: list[Counter]
    dup: dict[tuple[Counter, str, str, str, float, float | None], int]
    dup_purge_at: int
    last_any: int
    lateness_ns: int
    execs: dict[tuple[str, str], Execution]
    orders: dict[str, Order]

    rules: tuple[Rule, ...]
    edges: dict[tuple[int, str, Any, Any], int]
    state: dict[str, int]

    if TYPE_CHECKING:  # provided by ReferenceOrders and ReferenceModel

        def _fill_money(self, symbol: str, qty: float, price: float) -> float: ...

        def _edges(
            self,
            index: int,
            rule: Rule,
            scope: str,
            v: float,
            ts: int,
            live: bool,
            where: tuple[Any, Any],
            state: str,
            symbol: str | None,
        ) -> None: ...

    def _refill(self, x: Execution, sign: float) -> None:
        """Add or take back ``x`` (its notional, or one execution) in the buckets still
        holding its time."""
        scopes = {
            "firm": "firm",
            "account": f"account:{x.account}",
            "strategy": f"strategy:{x.strategy}",
            "symbol": f"symbol:{x.symbol}",
            "venue": None if x.venue is None else f"venue:{x.venue}",
        }
        for counter in self.counters:
            kind, level, window, side, venue = counter
            if kind not in ("filln", "fills") or not _wanted(side, venue, x.side, x.venue):
                continue
            scope = scopes[level]
            w = self.windows.get((counter, scope)) if scope is not None else None
            if w is not None:
                v = x.counted if kind == "filln" else 1.0
                w.take_back(x.count_ns // -(-window // BUCKETS), -sign * v)

    def _recount(self, items: list[Any], now: int) -> None:
        """The feed jumped: move what the events ahead of the clock counted (at the old
        clock) to the bucket of ``now``; their new orders are now at ``now`` in the
        duplicate-order memory."""
        for item in items:
            if item is None or len(item) != 6:  # none counted, or reference data
                continue
            ev, scopes, side, venue, at, dups = item
            if isinstance(ev, wire.NewOrder):
                self._redate_dups(ev, scopes, side, venue, at, dups, now)
            fill = isinstance(ev, wire.Fill)
            x = self.execs.get((ev.account, ev.exec_id)) if fill else None
            if fill and (x is None or x.busted or x.count_ns != at):
                continue
            for counter in self.counters:
                kind, level, window, side_f, venue_f = counter
                scope = scopes[level]
                if kind == "dup" or scope is None or not _wanted(side_f, venue_f, side, venue):
                    continue
                v = x.counted if kind == "filln" and x is not None else _one(kind, ev)
                if v == 0.0:
                    continue
                width = -(-window // BUCKETS)
                w = self.windows.setdefault((counter, scope), Window())
                w.take_back(at // width, v)
                w.advance(now // width)
                w.add(now // width, v)
            if x is not None:
                x.count_ns = now

    # windows --------------------------------------------------------------------------
    def _count(
        self,
        ev: wire.Event,
        scopes: dict[str, str | None],
        side: int,
        venue: str | None,
        now: int,
        at: int,
    ) -> list[Counter]:
        """Count ``ev`` at ``at``; returns the duplicate-order counters that counted it
        a duplicate."""
        dups: list[Counter] = []
        for counter in self.counters:
            kind, level, window, side_f, venue_f = counter
            scope = scopes[level]
            if scope is None:
                continue
            wanted = _wanted(side_f, venue_f, side, venue)
            if kind == "dup" and (not isinstance(ev, wire.NewOrder) or not wanted):
                continue
            bucket = at // -(-window // BUCKETS)
            w = self.windows.setdefault((counter, scope), Window())
            w.advance(bucket)
            if not wanted:
                continue
            v = _one(kind, ev)
            if kind == "filln" and isinstance(ev, wire.Fill):
                assert ev.qty is not None and ev.price is not None
                v = self._fill_money(ev.symbol, ev.qty, ev.price)
            elif kind == "dup" and isinstance(ev, wire.NewOrder):
                v = self._dup(ev, counter, scope, now)
                if v:
                    dups.append(counter)
            w.add(bucket, v, self.lateness_ns >= OWN_TIME_NS)
        return dups

    def _redate_dups(
        self,
        ev: wire.NewOrder,
        scopes: dict[str, str | None],
        side: int,
        venue: str | None,
        at: int,
        dups: list[Counter],
        now: int,
    ) -> None:
        """New order ``ev``, counted at ``at`` ahead of the clock, is taken at ``now``:
        the duplicates it counted move there, and its entries are stamped ``now``."""
        for counter in self.counters:
            kind, level, window, side_f, venue_f = counter
            scope = scopes[level]
            if kind != "dup" or scope is None or not _wanted(side_f, venue_f, side, venue):
                continue
            if counter in dups:
                width = -(-window // BUCKETS)
                w = self.windows.setdefault((counter, scope), Window())
                w.take_back(at // width, 1.0)
                w.advance(now // width)
                w.add(now // width, 1.0)
            key = (counter, scope, ev.symbol, ev.side, ev.qty, ev.price)
            if key in self.dup:
                self.dup[key] = max(self.dup[key], now)

    def _note_early(self, ev: wire.Event, side: int, venue: str | None) -> None:
        """A cancel, reject or replace (with no venue) counted with ``side`` and
        ``venue`` before its order's new."""
        if isinstance(ev, wire.ReplaceOrder | wire.CancelOrder) and ev.unsolicited:
            return  # the venue's own doing: counted in no window
        if isinstance(ev, wire.ReplaceOrder):
            o = self.orders[ev.order_id]
            if not o.has_new and venue is None:
                o.early_replaces += 1
        elif isinstance(ev, wire.CancelOrder | wire.RejectOrder):
            o = self.orders[ev.order_id]
            if not o.has_new:
                o.early["cxl" if isinstance(ev, wire.CancelOrder) else "rej"] = (side, venue)

    def _early_trades(self, o: Order, ev: wire.NewOrder, venue: str | None, at: int) -> None:
        """A late new to ``venue``: the order's earlier trades with no venue take it, and
        count in its fill windows in the buckets they were counted in, while held."""
        keys, o.early_execs = o.early_execs, []
        for key in keys if venue is not None else []:
            x = self.execs.get(key)
            if x is None or x.busted or x.venue is not None:
                continue
            if (x.order, x.serial) != (ev.order_id, o.serial):
                continue
            x.venue = venue
            for counter in self.counters:
                kind, level, window, side_f, venue_f = counter
                if kind not in ("filln", "fills") or not _wanted(side_f, venue_f, x.side, venue):
                    continue
                if level != "venue" and _wanted(side_f, venue_f, x.side, None):
                    continue  # counted then
                scope = {
                    "firm": "firm",
                    "account": f"account:{x.account}",
                    "strategy": f"strategy:{x.strategy}",
                    "symbol": f"symbol:{x.symbol}",
                    "venue": f"venue:{venue}",
                }[level]
                width = -(-window // BUCKETS)
                w = self.windows.setdefault((counter, scope), Window())
                w.advance(at // width)
                w.take_back(x.count_ns // width, -(x.counted if kind == "filln" else 1.0))

    def _count_early(
        self,
        ev: wire.NewOrder,
        scopes: dict[str, str | None],
        side: int,
        venue: str | None,
        at: int,
    ) -> None:
        """A late new: count its order's earlier cancel and reject, at ``at``, in the
        windows the new's side and venue select that they were not counted in."""
        o = self.orders[ev.order_id]
        self._early_trades(o, ev, venue, at)
        early = [(which, then, 1.0) for which, then in o.early.items()]
        if o.early_replaces:
            early.append(("rpl", (side, None), float(o.early_replaces)))
        o.early_replaces = 0
        for which, (side_then, venue_then), n in early:
            kinds = {"cxl": ("msg", "cxl"), "rej": ("rej",), "rpl": ("msg",)}[which]
            for counter in self.counters:
                kind, level, window, side_f, venue_f = counter
                scope = scopes[level]
                if kind not in kinds or scope is None or not _wanted(side_f, venue_f, side, venue):
                    continue
                then: str | None = scope
                if level == "venue":
                    then = None if venue_then is None else f"venue:{venue_then}"
                if then == scope and _wanted(side_f, venue_f, side_then, venue_then):
                    continue  # counted then
                bucket = at // -(-window // BUCKETS)
                w = self.windows.setdefault((counter, scope), Window())
                w.advance(bucket)
                w.add(bucket, n, self.lateness_ns >= OWN_TIME_NS)
        o.early = {}

    def _dup(self, ev: wire.NewOrder, counter: Counter, scope: str, now: int) -> float:
        key = (counter, scope, ev.symbol, ev.side, ev.qty, ev.price)
        prev = self.dup.get(key, -1)
        if now > prev:
            self.dup[key] = now
            if len(self.dup) > self.dup_purge_at:
                self.dup = {k: t for k, t in self.dup.items() if not t < self.last_any - k[0][2]}
                self.dup_purge_at = max(4096, 2 * len(self.dup))
        return 1.0 if prev >= 0 and abs(now - prev) < counter[2] else 0.0

    def _window(
        self, kind: str, rule: Rule, scope: str, venue: str | None, now: int | None = None
    ) -> float:
        """The window's total; at ``now`` (a tick): as moved to ``now``'s bucket."""
        sides = rule.event_filter("side")
        side = 0 if len(sides) != 1 else 1 if sides[0] == "buy" else -1
        window = (rule.window_ms or 0) * 1_000_000
        w = self.windows.get(((kind, rule.scope, window, side, venue), scope))
        if w is None:
            return 0.0
        return w.total if now is None else w.peek(now // -(-window // BUCKETS))

    def _rearm_windows(self, now: int) -> None:
        """Clock tick at ``now``: each raised alert or warning of a windowed rule is judged
        on its value at ``now``, as an event of its scope counting nothing would read it,
        raising nothing: what is back below its re-arm point resolves. In rule order, then
        scope name, then the rule's venue order."""

        def order(key: tuple[int, str, Any, Any]) -> tuple[int, str, int]:
            index, scope, venue, _pair = key
            venues = self.rules[index].event_filter("venue")
            return index, scope, venues.index(venue) if venue is not None else 0

        raised = [k for k in self.edges if METRICS[self.rules[k[0]].metric].windowed]
        for key in sorted(raised, key=order):
            index, scope, venue, pair = key
            rule = self.rules[index]
            kinds = COUNTED[rule.metric]
            v = self._window(kinds[0], rule, scope, venue, now)
            if rule.metric == "fill_notional_rate":
                v = money(v)
            elif rule.metric == "cancel_ratio":
                news = self._window("new", rule, scope, venue, now)
                v = 0.0 if v == 0.0 else v / news if news >= rule.min_orders else math.nan
            if not math.isnan(v):
                current = STATES[self.state.get(scope, 0)]
                self._edges(index, rule, scope, v, now, False, (venue, pair), current, None)


def _wanted(side_f: int, venue_f: str | None, side: int, venue: str | None) -> bool:
    """Whether a counter limited to side ``side_f`` / venue ``venue_f`` counts an event."""
    return side_f in (0, side) and (venue_f is None or venue_f == venue)


#: the event types each counted kind counts one for (``filln`` counts money, ``dup`` apart)
_COUNTS: dict[str, Any] = {
    "new": wire.NewOrder,
    "msg": wire.NewOrder | wire.ReplaceOrder | wire.CancelOrder,
    "rej": wire.RejectOrder,
    "cxl": wire.CancelOrder,
    "fills": wire.Fill,
}


def _one(kind: str, ev: wire.Event) -> float:
    """1 when an event of ``ev``'s type counts in a window of ``kind``, else 0."""
    counted = _COUNTS.get(kind)
    if isinstance(ev, wire.ReplaceOrder | wire.CancelOrder) and ev.unsolicited:
        return 0.0  # the venue's own doing (an IOC remainder, an expiry): not the firm's
    return 1.0 if counted is not None and isinstance(ev, counted) else 0.0
