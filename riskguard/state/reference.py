"""Plain-Python reference model of the kernel: dicts and objects, one event at a time.

It shares no code with the numba path beyond the limits model and the metric
vocabulary, and spells every definition out the obvious way. The property tests
drive both with random streams and require equal positions, exposures, P&L,
open orders, rule peaks and transitions. It is also the baseline of the kernel
benchmark. It is slow by design; never use it on the hot path.
"""

from __future__ import annotations

import math

from riskguard import events as wire
from riskguard.limits.model import Limits, Rule
from riskguard.state.reference_defs import (
    BUCKETS,
    COUNTED,
    EXPOSURE_NAMES,
    FAMILY_NAMES,
    Book,
    Order,
    RefTransition,
    Window,
)
from riskguard.vocabulary import ACTION_CODE, STATES


class ReferenceModel:
    """The semantics of :mod:`riskguard.state.kernel`, written for reading, not speed."""

    def __init__(self, limits: Limits) -> None:
        self.rules = limits.rules
        self.state: dict[str, int] = {}
        self.strategy_account: dict[str, str] = {}
        self.pos: dict[tuple[str, str], list[float]] = {}  # (owner, symbol) -> pos, cost, real
        self.holders: dict[str, list[str]] = {}  # symbol -> owners, in order of first fill
        self.books: dict[str, Book] = {}
        self.ref: dict[str, float] = {}  # symbol -> latest reference price
        self.val: dict[str, float] = {}  # symbol -> price positions are valued at
        self.val_epoch: dict[str, int] = {}  # symbol -> epoch its valuation last moved in
        self.pending: list[str] = []  # symbols with a price move queued, in queue order
        self.epoch = -1
        self.revalue_ns = limits.revalue_ms * 1_000_000
        self.price_src: dict[str, int] = {}
        self.mark_ts: dict[str, int] = {}
        self.orders: dict[str, Order] = {}
        self.parents: dict[str, list[float | None]] = {}  # id -> [declared qty, filled]
        self.windows: dict[tuple[str, str, int, str], Window] = {}
        self.counters: list[tuple[str, str, int]] = []
        self.dup: dict[tuple[tuple[str, str], int, str, str, str, float, float], int] = {}
        self.dup_purge_at = 4096
        self.alerting: set[tuple[int, str, str | None]] = set()
        self.start = -1
        self.last_any = -1
        self.heard: dict[str, int] = {}
        self.transitions: list[RefTransition] = []
        self.peaks: dict[str, list[float]] = {r.name: [0, -math.inf, math.inf] for r in self.rules}
        self.bad = 0
        self.judged: dict[str, int] = {}  # scope -> resumed at (event time)
        for rule in self.rules:
            kinds = COUNTED.get(rule.metric)
            if kinds:
                for kind in kinds:
                    if kind is None:
                        continue
                    key = (kind, rule.scope, (rule.window_ms or 0) * 1_000_000)
                    if key not in self.counters:
                        self.counters.append(key)

    # helpers ------------------------------------------------------------------
    def resume(self, scope: str) -> None:
        """An operator lowers ``scope`` to ACTIVE at the latest event time (no-op if ACTIVE)."""
        if not self.state.pop(scope, 0):
            return
        self.judged[scope] = max(self.judged.get(scope, -1), self.last_any)

    def book(self, scope: str) -> Book:
        """The aggregates of ``scope`` (created empty)."""
        return self.books.setdefault(scope, Book())

    def position(self, owner: str, symbol: str) -> float:
        """Net position of ``owner`` in ``symbol``."""
        return self.pos.get((owner, f"symbol:{symbol}"), [0.0])[0]

    def _scopes(self, ev: wire.Event) -> dict[str, str]:
        if isinstance(ev, wire.Mark | wire.Heartbeat):
            return {"firm": "firm"}
        return {
            "firm": "firm",
            "account": f"account:{ev.account}",
            "strategy": f"strategy:{ev.strategy}",
            "symbol": f"symbol:{ev.symbol}",
        }

    def _matches(self, rule: Rule, scope: str) -> bool:
        key = scope.partition(":")[2]
        own = rule.match.get(rule.scope)
        if own and key not in own:
            return False
        accounts = rule.match.get("account") if rule.scope == "strategy" else None
        return not (accounts and self.strategy_account.get(key) not in accounts)

    def _check(
        self, index: int, rule: Rule, scope: str, value: float, ts: int, source: str | None = None
    ) -> None:
        if math.isnan(value):
            return
        peak = self.peaks[rule.name]
        peak[0] += 1
        peak[1] = max(peak[1], value)
        peak[2] = min(peak[2], value)
        breach = value > rule.upper or value < rule.lower
        if ts <= self.judged.get(scope, -1):
            breach = False  # an operator resumed after this evidence: already judged
        current = self.state.get(scope, 0)
        if rule.action == "alert":
            key = (index, scope, source)
            if breach and key not in self.alerting:
                self.alerting.add(key)
                self.transitions.append(
                    RefTransition(
                        scope, rule.name, STATES[current], STATES[current], "alert", ts, value
                    )
                )
            elif not breach:
                self.alerting.discard(key)
            return
        target = ACTION_CODE[rule.action]
        if breach and current < target:
            self.state[scope] = target
            self.transitions.append(
                RefTransition(scope, rule.name, STATES[current], STATES[target], "auto", ts, value)
            )

    def _delta(
        self, owner: str, symbol: str, net: float, gross: float, real: float, cost: float
    ) -> None:
        for scope in (owner, symbol) if owner == "firm" else (owner,):
            b = self.book(scope)
            b.net += net
            b.gross += gross
            b.real += real
            b.cost += cost
            b.peak = max(b.peak, b.pnl)

    def _price(self, symbol: str, price: float, ts: int) -> None:
        """A new reference price: revalue holders now, or queue it for the next epoch."""
        self.ref[symbol] = price
        if self.revalue_ns > 0 and self.val_epoch.get(symbol, -1) >= self.epoch:
            if symbol not in self.pending:
                self.pending.append(symbol)
            return
        self.val_epoch[symbol] = self.epoch
        self._move(symbol)
        self._revalued([symbol], ts)

    def _move(self, symbol: str) -> None:
        move = self.ref[symbol] - self.val.get(symbol, 0.0)
        self.val[symbol] = self.ref[symbol]
        for owner in self.holders.get(symbol, []):
            q = self.pos[(owner, symbol)][0]
            if q != 0.0:
                self._delta(owner, symbol, q * move, abs(q) * move, 0.0, 0.0)

    def _revalued(self, symbols: list[str], ts: int) -> None:
        """Exposure rules on every scope holding one of ``symbols``, once each."""
        seen: set[str] = set()
        for symbol in symbols:
            for owner in self.holders.get(symbol, []):
                if self.pos[(owner, symbol)][0] == 0.0:
                    continue
                for scope in (owner, symbol) if owner == "firm" else (owner,):
                    if scope in seen:
                        continue
                    seen.add(scope)
                    level = scope.partition(":")[0]
                    for i, rule in enumerate(self.rules):
                        if (
                            rule.metric in EXPOSURE_NAMES
                            and rule.scope == level
                            and self._matches(rule, scope)
                        ):
                            self._check(i, rule, scope, self._stateful(rule.metric, scope), ts)

    def _flush(self, now: int) -> None:
        """Entering a new revaluation epoch applies every queued move, then evaluates."""
        if self.revalue_ns <= 0 or now // self.revalue_ns <= self.epoch:
            return
        epoch = now // self.revalue_ns
        for symbol in self.pending:
            self.val_epoch[symbol] = epoch
            self._move(symbol)
        self._revalued(self.pending, now)
        self.pending = []
        self.epoch = epoch

    def _stateful(self, metric: str, scope: str) -> float:
        b = self.book(scope)
        return {
            "gross_notional": b.gross,
            "net_notional": b.net,
            "pnl": b.pnl,
            "drawdown": b.peak - b.pnl,
            "open_orders": float(b.open_orders),
        }.get(metric, math.nan)

    def _open(self, oid: str, order: Order) -> None:
        self.orders[oid] = order
        for s in (
            "firm",
            f"account:{order.account}",
            f"strategy:{order.strategy}",
            f"symbol:{order.symbol}",
        ):
            self.book(s).open_orders += 1

    def _close(self, oid: str) -> None:
        order = self.orders.pop(oid)
        for s in (
            "firm",
            f"account:{order.account}",
            f"strategy:{order.strategy}",
            f"symbol:{order.symbol}",
        ):
            self.book(s).open_orders -= 1

    # the event loop -------------------------------------------------------------
    def apply(self, events: list[wire.Event]) -> None:
        """Apply events in order."""
        for ev in events:
            self.apply_one(ev)

    def apply_one(self, ev: wire.Event) -> None:
        """Apply one event."""
        if not isinstance(ev, wire.Mark | wire.Heartbeat):
            owner = self.strategy_account.setdefault(ev.strategy, ev.account)
            if owner != ev.account:
                self.bad += 1
                return
        now = ev.ts
        if self.start < 0:
            self.start = now
        self.tick(now)
        self.last_any = max(self.last_any, now)
        if isinstance(ev, wire.Heartbeat):
            self.heard[ev.source] = max(self.heard.get(ev.source, -1), now)
            return
        if isinstance(ev, wire.Mark):
            sym = f"symbol:{ev.symbol}"
            if now >= self.mark_ts.get(sym, -1):
                self.mark_ts[sym] = now
                self.price_src[sym] = 2
                self._price(sym, ev.price, now)
            return
        scopes = self._scopes(ev)
        sym = scopes["symbol"]
        if not isinstance(ev, wire.ParentOrder):
            self._count(ev, scopes)
        parent = getattr(ev, "parent_id", None)
        if isinstance(ev, wire.ParentOrder):
            self.parents.setdefault(ev.parent_id, [None, 0.0])[0] = ev.qty
        elif isinstance(ev, wire.NewOrder):
            if ev.parent_id is not None:
                self.parents.setdefault(ev.parent_id, [None, 0.0])
            if ev.order_id in self.orders:
                self._close(ev.order_id)
            self._open(ev.order_id, Order(ev.account, ev.strategy, ev.symbol, ev.parent_id, ev.qty))
        elif isinstance(ev, wire.ReplaceOrder):
            order = self.orders.get(ev.order_id)
            if order is not None:
                order.qty = ev.qty
                if order.cum >= ev.qty:
                    self._close(ev.order_id)
        elif isinstance(ev, wire.CancelOrder | wire.RejectOrder):
            if ev.order_id in self.orders:
                self._close(ev.order_id)
        elif isinstance(ev, wire.Fill):
            self._fill(ev, sym)
            order = self.orders.get(ev.order_id)
            if parent is None and order is not None:
                parent = order.parent
            if parent is not None:
                self.parents.setdefault(parent, [None, 0.0])[1] += ev.qty  # type: ignore[operator]
            if order is not None:
                order.cum += ev.qty
                if order.cum >= order.qty:
                    self._close(ev.order_id)
        self._evaluate(ev, scopes, parent)

    def _fill(self, ev: wire.Fill, sym: str) -> None:
        src = self.price_src.get(sym, 0)
        if src < 2 and (src == 0 or self.ref[sym] != ev.price):
            self.price_src[sym] = 1
            self._price(sym, ev.price, ev.ts)
        m = self.val[sym]
        d = ev.qty if ev.side == "buy" else -ev.qty
        for owner in ("firm", f"account:{ev.account}", f"strategy:{ev.strategy}"):
            if (owner, sym) not in self.pos:
                self.pos[(owner, sym)] = [0.0, 0.0, 0.0]
                self.holders.setdefault(sym, []).append(owner)
            p = self.pos[(owner, sym)]
            q, c = p[0], p[1]
            realised = 0.0
            if q == 0.0 or (q > 0.0) == (d > 0.0):
                nq, nc = q + d, c + d * ev.price
            else:
                avg = c / q
                closing = min(abs(d), abs(q))
                realised = closing * (ev.price - avg) * (1.0 if q > 0.0 else -1.0)
                if abs(d) < abs(q):
                    nq = q + d
                    nc = avg * nq
                elif abs(d) == abs(q):
                    nq = nc = 0.0
                else:
                    nq = q + d
                    nc = ev.price * nq
            p[0], p[1], p[2] = nq, nc, p[2] + realised
            self._delta(owner, sym, (nq - q) * m, (abs(nq) - abs(q)) * m, realised, nc - c)

    def _count(self, ev: wire.Event, scopes: dict[str, str]) -> None:
        for kind, level, window in self.counters:
            scope = scopes[level]
            width = -(-window // BUCKETS)
            bucket = ev.ts // width
            w = self.windows.setdefault((kind, level, window, scope), Window())
            w.advance(bucket)
            v = 0.0
            if kind == "new":
                v = 1.0 if isinstance(ev, wire.NewOrder) else 0.0
            elif kind == "msg":
                v = (
                    1.0
                    if isinstance(ev, wire.NewOrder | wire.ReplaceOrder | wire.CancelOrder)
                    else 0.0
                )
            elif kind == "rej":
                v = 1.0 if isinstance(ev, wire.RejectOrder) else 0.0
            elif kind == "cxl":
                v = 1.0 if isinstance(ev, wire.CancelOrder) else 0.0
            elif kind == "filln":
                v = ev.qty * ev.price if isinstance(ev, wire.Fill) else 0.0
            elif kind == "dup" and isinstance(ev, wire.NewOrder):
                key = (
                    (kind, level),
                    window,
                    scope,
                    ev.symbol,
                    ev.side,
                    ev.qty,
                    -1.0 if ev.price is None else ev.price,
                )
                prev = self.dup.get(key, -1)
                if prev >= 0 and abs(ev.ts - prev) < window:
                    v = 1.0
                if ev.ts > prev:
                    self.dup[key] = ev.ts
                    if len(self.dup) > self.dup_purge_at:
                        self.dup = {
                            k: t for k, t in self.dup.items() if not t < self.last_any - k[1]
                        }
                        self.dup_purge_at = max(4096, 2 * len(self.dup))
            if v != 0.0:
                w.add(bucket, v)

    def _window(self, kind: str, rule: Rule, scope: str) -> float:
        key = (kind, rule.scope, (rule.window_ms or 0) * 1_000_000, scope)
        w = self.windows.get(key)
        return w.total if w else 0.0

    def _evaluate(self, ev: wire.Event, scopes: dict[str, str], parent: str | None) -> None:
        family = FAMILY_NAMES[ev.__struct_config__.tag]  # type: ignore[index]
        sym = scopes["symbol"]
        for i, rule in enumerate(self.rules):
            if rule.metric not in family:
                continue
            scope = scopes[rule.scope]
            if not self._matches(rule, scope):
                continue
            m = rule.metric
            qty = getattr(ev, "qty", 0.0)
            price = getattr(ev, "price", None)
            ref = self.ref.get(sym) if self.price_src.get(sym, 0) > 0 else None
            if m in COUNTED and m != "cancel_ratio":
                v = self._window(COUNTED[m][0], rule, scope)
            elif m == "cancel_ratio":
                news = self._window("new", rule, scope)
                cxl = self._window("cxl", rule, scope)
                v = cxl / news if news >= rule.min_orders else math.nan
            elif m == "order_qty":
                v = qty
            elif m == "order_notional":
                px = price if price is not None else ref
                v = qty * px if px is not None else math.nan
            elif m == "price_deviation":
                v = abs(price - ref) / ref if price is not None and ref is not None else math.nan
            elif m == "position_qty":
                owner = "firm" if rule.scope in ("firm", "symbol") else scope
                v = abs(self.pos[(owner, sym)][0])
            elif m == "parent_overfill_ratio":
                p = self.parents.get(parent) if parent is not None else None
                v = p[1] / p[0] if p is not None and p[0] is not None else math.nan  # type: ignore[operator]
            else:
                v = self._stateful(m, scope)
            self._check(i, rule, scope, v, ev.ts)

    def tick(self, now: int) -> None:
        """Advance to ``now``: queued revaluations, then feed-silence rules."""
        self._flush(now)
        if self.start < 0:
            self.start = now
        for i, rule in enumerate(self.rules):
            if rule.metric != "feed_silence_ms":
                continue
            for source in rule.match.get("source") or (None,):
                last = self.heard.get(source, -1) if source is not None else self.last_any
                if last < 0:
                    last = self.start
                self._check(i, rule, "firm", (now - last) / 1e6, now, source)
