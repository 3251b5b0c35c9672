"""The order half of the reference model: lifecycle, executions, windows, rule values.

A mix-in of :class:`riskguard.state.reference.ReferenceModel` (the mirror of
:mod:`riskguard.state.lifecycle`, :mod:`riskguard.state.counters` and the kernel's
rule values), written the obvious way.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from riskguard import events as wire
from riskguard.limits.model import Rule
from riskguard.state.reference_defs import (
    BUCKETS,
    COUNTED,
    FAMILY_NAMES,
    Book,
    Execution,
    Order,
    Window,
    near,
    snap,
)

OrderEvent = wire.NewOrder | wire.ReplaceOrder | wire.CancelOrder | wire.RejectOrder


def _same_price(a: float | None, b: float | None) -> bool:
    return a == b


class ReferenceOrders:
    """Orders, executions and windows of the reference model."""

    rules: tuple[Rule, ...]
    orders: dict[str, Order]
    serial: int
    execs: dict[tuple[str, str], Execution]
    parents: dict[str, list[float | None]]
    windows: dict[tuple[str, str, int, str], Window]
    counters: list[tuple[str, str, int]]
    dup: dict[tuple[tuple[str, str], int, str, str, str, float, float], int]
    dup_purge_at: int
    last_any: int
    duplicates: int
    bad: list[str]
    ref: dict[str, float]
    price_src: dict[str, int]
    lots: dict[tuple[str, str], Any]

    if TYPE_CHECKING:  # provided by ReferenceModel

        def book(self, scope: str) -> Book: ...

        def _trade(self, x: Execution, d: float, price: float, fee: float) -> None: ...

        def _check(
            self,
            index: int,
            rule: Rule,
            scope: str,
            value: float,
            ts: int,
            source: str | None = None,
        ) -> None: ...

        def _matches(self, rule: Rule, scope: str) -> bool: ...

        def _stateful(self, metric: str, scope: str) -> float: ...

    # orders -------------------------------------------------------------------------
    def _bind(self, ev: Any) -> Order:
        self.serial += 1
        side = 0 if getattr(ev, "side", None) is None else 1 if ev.side == "buy" else -1
        order = Order("free", ev.account, ev.strategy, ev.symbol, side, self.serial)
        self.orders[ev.order_id] = order
        return order

    def _scopes_of(self, o: Order) -> tuple[str, ...]:
        return ("firm", f"account:{o.account}", f"strategy:{o.strategy}", f"symbol:{o.symbol}")

    def _open(self, o: Order) -> None:
        o.status = "open"
        for s in self._scopes_of(o):
            self.book(s).open_orders += 1

    def _close(self, o: Order) -> None:
        if o.status == "open":
            for s in self._scopes_of(o):
                self.book(s).open_orders -= 1
        o.status = "closed"

    def _filled(self, o: Order) -> bool:
        if o.cum >= o.qty or near(o.cum, o.qty):
            o.cum = max(o.cum, o.qty)
            return True
        return False

    def _credit(self, parent: str, qty: float) -> None:
        p = self.parents.setdefault(parent, [None, 0.0])
        p[1] = snap(p[1] + qty)  # type: ignore[operator]
        if p[0] is not None and near(p[1], p[0]):  # type: ignore[arg-type]
            p[1] = p[0]

    def _order_event(self, ev: OrderEvent, now: int) -> tuple[bool, str | None]:
        """A new, replace, cancel or reject: (applied, parent for its rules)."""
        o = self.orders.get(ev.order_id)
        if isinstance(ev, wire.NewOrder):
            if ev.parent_id is not None:
                self.parents.setdefault(ev.parent_id, [None, 0.0])
            side = 1 if ev.side == "buy" else -1
            if o is not None and (o.status == "open" or (o.status == "closed" and o.has_new)):
                same = (o.account, o.strategy, o.symbol, o.side, o.parent, o.new_qty) == (
                    ev.account,
                    ev.strategy,
                    ev.symbol,
                    side,
                    ev.parent_id,
                    ev.qty,
                ) and _same_price(o.new_price, ev.price)
                if same:
                    self.duplicates += 1
                    return False, None
                if o.status == "open":
                    self.bad.append("order_id_reused")
                    return False, None
                o = None  # a closed order's id reused for a new order
            if o is None:
                o = self._bind(ev)
            o.has_new = True
            o.parent = ev.parent_id
            o.new_qty, o.new_price = ev.qty, ev.price
            if not o.replaced:
                o.qty = ev.qty
            if o.unattributed > 0.0 and ev.parent_id is not None:
                self._credit(ev.parent_id, o.unattributed)
                o.unattributed = 0.0
            if o.cancelled or o.rejected:
                if o.status != "closed":
                    self._close(o)
            elif self._filled(o):
                self._close(o)
            else:
                self._open(o)
            return True, ev.parent_id
        if isinstance(ev, wire.ReplaceOrder):
            if o is not None and o.replaced:
                stale = now < o.replace_ns
                same = now == o.replace_ns and o.replace_qty == ev.qty
                if stale or (same and _same_price(o.replace_price, ev.price)):
                    self.duplicates += 1
                    return False, None
            if o is None:
                o = self._bind(ev)
                o.status = "pending"
            o.replaced = True
            o.replace_ns, o.replace_qty, o.replace_price = now, ev.qty, ev.price
            o.qty = ev.qty
            if o.status == "open" and self._filled(o):
                self._close(o)
            return True, None
        cancel = isinstance(ev, wire.CancelOrder)
        if o is not None and (o.cancelled if cancel else o.rejected):
            self.duplicates += 1
            return False, None
        if o is None:
            o = self._bind(ev)
        if cancel:
            o.cancelled = True
        else:
            o.rejected = True
        if o.status != "closed":
            self._close(o)
        return True, None

    # executions ---------------------------------------------------------------------
    def _on_trade(self, ev: wire.Fill, at: int) -> str | None:
        assert ev.qty is not None and ev.price is not None
        o = self.orders.get(ev.order_id)
        if o is None:
            o = self._bind(ev)
            o.status = "pending"
        parent = ev.parent_id
        if parent is None and o.has_new:
            parent = o.parent
        o.cum = snap(o.cum + ev.qty)
        if parent is not None:
            self._credit(parent, ev.qty)
        else:
            o.unattributed = snap(o.unattributed + ev.qty)
        if o.status == "open" and self._filled(o):
            self._close(o)
        side = 1 if ev.side == "buy" else -1
        x = Execution(
            ev.order_id,
            o.serial,
            parent,
            ev.account,
            ev.strategy,
            ev.symbol,
            side,
            ev.qty,
            ev.price,
            0.0 if ev.fee is None else ev.fee,
            at,
        )
        self.execs[(ev.account, ev.exec_id)] = x
        self._trade(x, ev.qty * side, ev.price, x.fee)
        return parent

    def _refill(self, x: Execution, sign: float) -> None:
        """Add or take back ``x``'s notional in the buckets still holding its time."""
        scopes = {
            "firm": "firm",
            "account": f"account:{x.account}",
            "strategy": f"strategy:{x.strategy}",
            "symbol": f"symbol:{x.symbol}",
        }
        for kind, level, window in self.counters:
            if kind != "filln":
                continue
            w = self.windows.get((kind, level, window, scopes[level]))
            if w is not None:
                w.take_back(x.count_ns // -(-window // BUCKETS), -sign * x.qty * abs(x.price))

    def _unfill(self, x: Execution) -> None:
        if x.parent is not None:
            p = self.parents[x.parent]
            p[1] = snap(p[1] - x.qty)  # type: ignore[operator]
        o = self.orders.get(x.order)
        if o is not None and o.serial == x.serial:
            o.cum = max(0.0, snap(o.cum - x.qty))
            if x.parent is None:
                o.unattributed = max(0.0, snap(o.unattributed - x.qty))

    def _on_amend(self, ev: wire.Fill) -> tuple[bool, str | None]:
        assert ev.ref_exec_id is not None
        x = self.execs[(ev.account, ev.ref_exec_id)]
        if x.busted:
            self.bad.append("exec_busted")
            return False, None
        self._trade(x, -x.qty * x.side, x.price, -x.fee)
        self._refill(x, -1.0)
        self._unfill(x)
        if ev.exec_type == "bust":
            x.busted = True
            return True, x.parent
        assert ev.qty is not None and ev.price is not None
        x.qty, x.price = ev.qty, ev.price
        if ev.fee is not None:
            x.fee = ev.fee
        self._trade(x, x.qty * x.side, x.price, x.fee)
        self._refill(x, 1.0)
        if x.parent is not None:
            self._credit(x.parent, x.qty)
        o = self.orders.get(x.order)
        if o is not None and o.serial == x.serial:
            o.cum = snap(o.cum + x.qty)
            if x.parent is None:
                o.unattributed = snap(o.unattributed + x.qty)
        return True, x.parent

    # windows --------------------------------------------------------------------------
    def _count(self, ev: wire.Event, scopes: dict[str, str], now: int, at: int) -> None:
        for kind, level, window in self.counters:
            scope = scopes[level]
            bucket = at // -(-window // BUCKETS)
            w = self.windows.setdefault((kind, level, window, scope), Window())
            w.advance(bucket)
            v = 0.0
            if kind == "new":
                v = 1.0 if isinstance(ev, wire.NewOrder) else 0.0
            elif kind == "msg":
                messages = wire.NewOrder | wire.ReplaceOrder | wire.CancelOrder
                v = 1.0 if isinstance(ev, messages) else 0.0
            elif kind == "rej":
                v = 1.0 if isinstance(ev, wire.RejectOrder) else 0.0
            elif kind == "cxl":
                v = 1.0 if isinstance(ev, wire.CancelOrder) else 0.0
            elif kind == "filln" and isinstance(ev, wire.Fill):
                assert ev.qty is not None and ev.price is not None
                v = ev.qty * abs(ev.price)
            elif kind == "dup" and isinstance(ev, wire.NewOrder):
                v = self._dup(ev, level, window, scope, now)
            w.add(bucket, v)

    def _dup(self, ev: wire.NewOrder, level: str, window: int, scope: str, now: int) -> float:
        px = -1.0 if ev.price is None else ev.price
        key = (("dup", level), window, scope, ev.symbol, ev.side, ev.qty, px)
        prev = self.dup.get(key, -1)
        if now > prev:
            self.dup[key] = now
            if len(self.dup) > self.dup_purge_at:
                self.dup = {k: t for k, t in self.dup.items() if not t < self.last_any - k[1]}
                self.dup_purge_at = max(4096, 2 * len(self.dup))
        return 1.0 if prev >= 0 and abs(now - prev) < window else 0.0

    def _window(self, kind: str, rule: Rule, scope: str) -> float:
        key = (kind, rule.scope, (rule.window_ms or 0) * 1_000_000, scope)
        w = self.windows.get(key)
        return w.total if w else 0.0

    # rule values ----------------------------------------------------------------------
    def _evaluate(
        self, ev: wire.Event, scopes: dict[str, str], parent: str | None, now: int
    ) -> None:
        family = FAMILY_NAMES[ev.__struct_config__.tag]  # type: ignore[index]
        sym = scopes["symbol"]
        for i, rule in enumerate(self.rules):
            if rule.metric not in family:
                continue
            scope = scopes[rule.scope]
            if self._matches(rule, scope):
                self._check(i, rule, scope, self._value(rule, ev, scope, sym, parent), now)

    def _value(self, rule: Rule, ev: wire.Event, scope: str, sym: str, parent: str | None) -> float:
        m = rule.metric
        qty = getattr(ev, "qty", None)
        price = getattr(ev, "price", None)
        ref = self.ref.get(sym) if self.price_src.get(sym, 0) > 0 else None
        if m in COUNTED and m != "cancel_ratio":
            return self._window(COUNTED[m][0], rule, scope)
        if m == "cancel_ratio":
            news = self._window("new", rule, scope)
            cxl = self._window("cxl", rule, scope)
            return cxl / news if news >= rule.min_orders else math.nan
        if m == "order_qty":
            return float(qty)  # type: ignore[arg-type]
        if m == "order_notional":
            px = price if price is not None else ref
            return float(qty * abs(px)) if px is not None else math.nan
        if m == "price_deviation":
            if price is None or ref is None or ref == 0.0:
                return math.nan
            return float(abs(price - ref) / abs(ref))
        if m == "position_qty":
            owner = "firm" if rule.scope in ("firm", "symbol") else scope
            lot = self.lots.get((owner, sym))
            return abs(lot.qty) if lot is not None else 0.0
        if m == "parent_overfill_ratio":
            p = self.parents.get(parent) if parent is not None else None
            if p is None or p[0] is None:
                return math.nan
            declared, filled = p[0], p[1]
            if near(filled, declared):  # type: ignore[arg-type]
                return 1.0
            return filled / declared  # type: ignore[operator]
        return self._stateful(m, scope)
