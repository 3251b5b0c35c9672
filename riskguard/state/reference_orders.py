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
from riskguard.limits.vocabulary import METRICS
from riskguard.state.reference_defs import (
    COUNTED,
    FAMILY_NAMES,
    Book,
    Execution,
    Order,
    Window,
    near,
    snap,
)
from riskguard.state.reference_windows import Counter, ReferenceWindows
from riskguard.vocabulary import STATES, money, nanos, price_deviation

OrderEvent = wire.NewOrder | wire.ReplaceOrder | wire.CancelOrder | wire.RejectOrder


def _same_price(a: float | None, b: float | None) -> bool:
    return a == b


class ReferenceOrders(ReferenceWindows):
    """Orders, executions and windows of the reference model."""

    rules: tuple[Rule, ...]
    orders: dict[str, Order]
    serial: int
    execs: dict[tuple[str, str], Execution]
    parents: dict[str, list[float | None]]
    windows: dict[tuple[Counter, str], Window]
    counters: list[Counter]
    dup: dict[tuple[Counter, str, str, str, float, float | None], int]
    broker: dict[tuple[str, str], float]
    rates: dict[str, float]
    multiplier: dict[str, float]
    currency: dict[str, str]
    base: str
    dup_purge_at: int
    last_any: int
    duplicates: int
    bad: list[str]
    ref: dict[str, float]
    price_src: dict[str, int]
    ref_exec: dict[str, Any]
    lots: dict[tuple[str, str], Any]

    if TYPE_CHECKING:  # provided by ReferenceModel

        def book(self, scope: str) -> Book: ...

        def _book_trade(
            self,
            account: str,
            strategy: str | None,
            symbol: str,
            d: float,
            price: float,
            fee: float,
            own: bool = False,
            hold: bool = False,
        ) -> None: ...

        def _moves_reference(self, sym: str, price: float) -> bool: ...

        def _fee_back(self, x: Execution, before: bool, ok: bool = False) -> None: ...

        def _settle_peaks(self) -> None: ...

        def _consistent(self) -> bool: ...

        def _rate(self, symbol: str) -> float: ...

        def _work(
            self,
            account: str,
            strategy: str,
            symbol: str,
            side: int,
            dq: float,
            px: float | None,
            hold: bool = False,
        ) -> None: ...

        def _check(
            self,
            index: int,
            rule: Rule,
            scope: str,
            value: float,
            ts: int,
            source: Any = None,
            pair: tuple[str, str] | None = None,
        ) -> None: ...

        def _rate(self, symbol: str) -> float: ...

        def _mult(self, symbol: str) -> float: ...

        def _amend_reference(
            self, sym: str, key: Any, bust: bool, price: float, now: int
        ) -> None: ...

        def _matches(self, rule: Rule, scope: str) -> bool: ...

        def _stateful(self, metric: str, scope: str) -> float: ...

    # orders -------------------------------------------------------------------------
    def _bind(self, ev: Any) -> Order:
        self.serial += 1
        side = 0 if getattr(ev, "side", None) is None else 1 if ev.side == "buy" else -1
        order = Order("free", ev.account, ev.strategy, ev.symbol, side, self.serial)
        order.venue = getattr(ev, "venue", None)
        order.pairs = (ev.account, ev.strategy, ev.symbol)
        self.orders[ev.order_id] = order
        return order

    def _scopes_of(self, o: Order) -> tuple[str, ...]:
        scopes = ("firm", f"account:{o.account}", f"strategy:{o.strategy}", f"symbol:{o.symbol}")
        return scopes if o.venue is None else (*scopes, f"venue:{o.venue}")

    def _rework(self, o: Order, hold: bool = False) -> None:
        """Count the order's remainder at its limit in its lots while it works, else
        nothing; ``hold``: the session highs wait (an amendment booked in steps)."""
        target = max(0.0, snap(o.qty - o.cum)) if o.status == "open" else 0.0
        if target == o.working and o.price == o.work_px:
            return
        account, strategy, symbol = o.pairs
        if o.working > 0.0:
            self._work(account, strategy, symbol, o.side, -o.working, o.work_px, hold)
        if target > 0.0:
            self._work(account, strategy, symbol, o.side, target, o.price, hold)
        o.working, o.work_px = target, o.price

    def _fill_money(self, symbol: str, qty: float, price: float) -> float:
        """qty x |price| x multiplier x rate; 0 while the currency has no rate."""
        sym = f"symbol:{symbol}"
        rate = self._rate(sym)
        return 0.0 if math.isnan(rate) else qty * abs(price) * self._mult(sym) * rate

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
            o.side = side  # a cancel or reject that came first did not say
            o.parent = ev.parent_id
            o.venue = ev.venue
            o.pairs = (ev.account, ev.strategy, ev.symbol)
            o.new_qty, o.new_price = ev.qty, ev.price
            if not o.replaced:
                o.qty = ev.qty
                o.price = ev.price
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
            self._rework(o)
            return True, ev.parent_id
        if isinstance(ev, wire.ReplaceOrder):
            side = 1 if ev.side == "buy" else -1
            keys = (ev.account, ev.strategy, ev.symbol)
            other = o is not None and (
                (o.account, o.strategy, o.symbol) != keys or o.side not in (0, side)
            )
            if o is not None and o.status in ("open", "closed") and other:
                self.bad.append("order_id_reused")  # a replace never changes these
                return False, None
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
            o.price = ev.price
            raced = o.status == "closed" and o.has_new and not (o.cancelled or o.rejected)
            if o.status == "open" and self._filled(o):
                self._close(o)
            elif raced and not self._filled(o):  # closed by fills it raced: working again
                self._open(o)
            self._rework(o)
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
        self._rework(o)
        return True, None

    # executions ---------------------------------------------------------------------
    def _on_trade(self, ev: wire.Fill, venue: str | None, at: int) -> str | None:
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
            venue=venue,
            counted=self._fill_money(ev.symbol, ev.qty, ev.price),
            fee_rate=self._rate(f"symbol:{ev.symbol}"),
        )
        self.execs[(ev.account, ev.exec_id)] = x
        if not o.has_new and venue is None:  # its venue is its order's: known from the new
            o.early_execs.append((ev.account, ev.exec_id))
        # the order's working quantity first: with the book as it was, never with the fill
        # booked and its price still to move the symbol (a moment no scope had)
        self._rework(o)
        own = self._moves_reference(f"symbol:{ev.symbol}", ev.price)
        self._book_trade(x.account, x.strategy, x.symbol, ev.qty * side, ev.price, x.fee, own)
        return parent

    def _unfill(self, x: Execution) -> None:
        if x.parent is not None:
            p = self.parents[x.parent]
            p[1] = snap(p[1] - x.qty)  # type: ignore[operator]
        o = self.orders.get(x.order)
        if o is not None and o.serial == x.serial:
            o.cum = max(0.0, snap(o.cum - x.qty))
            if x.parent is None:
                o.unattributed = max(0.0, snap(o.unattributed - x.qty))

    def _on_amend(self, ev: wire.Fill, now: int) -> tuple[bool, str | None]:
        assert ev.ref_exec_id is not None
        x = self.execs[(ev.account, ev.ref_exec_id)]
        if x.busted:
            self.bad.append("exec_busted")
            return False, None
        o = self.orders.get(x.order)
        if x.parent is None and o is not None and o.serial == x.serial and o.has_new:
            x.parent = o.parent  # a trade before its new: the new credited it to its parent
        sym = f"symbol:{x.symbol}"
        bust = ev.exec_type == "bust"
        key = (ev.account, ev.ref_exec_id)
        moves = not bust and self.price_src.get(sym, 0) == 1 and self.ref_exec.get(sym) == key
        moves = moves and self.ref[sym] != ev.price
        # reversed, rebooked, then the reference follows: nothing judged or raised between
        self._fee_back(x, True)
        self._book_trade(
            x.account, x.strategy, x.symbol, -x.qty * x.side, x.price, -x.fee, hold=True
        )
        self._fee_back(x, False)
        self._refill(x, -1.0)
        self._unfill(x)
        if bust:
            x.busted = True
        else:
            assert ev.qty is not None and ev.price is not None
            x.qty, x.price = ev.qty, ev.price
            if ev.fee is not None:
                x.fee = ev.fee
            x.fee_rate = self._rate(sym)
            x.counted = self._fill_money(x.symbol, x.qty, x.price)
            self._book_trade(
                x.account, x.strategy, x.symbol, x.qty * x.side, x.price, x.fee, moves, True
            )
            self._refill(x, 1.0)
            if x.parent is not None:
                self._credit(x.parent, x.qty)
            o = self.orders.get(x.order)
            if o is not None and o.serial == x.serial:
                o.cum = snap(o.cum + x.qty)
                if x.parent is None:
                    o.unattributed = snap(o.unattributed + x.qty)
                if o.status == "open" and self._filled(o):  # corrected up to its quantity
                    self._close(o)
        o = self.orders.get(x.order)
        if o is not None and o.serial == x.serial:  # still that order
            self._rework(o, hold=True)
        self._amend_reference(sym, key, bust, x.price, now)
        if self._consistent():
            self._settle_peaks()
        return True, x.parent

    # rule values ----------------------------------------------------------------------
    def _evaluate(
        self,
        ev: wire.Event,
        scopes: dict[str, str | None],
        side: int,
        venue: str | None,
        parent: str | None,
        now: int,
    ) -> None:
        family = FAMILY_NAMES[ev.__struct_config__.tag]  # type: ignore[index]
        sym = scopes["symbol"]
        assert sym is not None
        for i, rule in enumerate(self.rules):
            if rule.metric not in family:
                continue
            sides = rule.event_filter("side")
            if len(sides) == 1 and side != (1 if sides[0] == "buy" else -1):
                continue
            venues = rule.event_filter("venue")
            if venues and venue not in venues:
                continue
            scope = scopes[rule.scope]
            if scope is None or not self._matches(rule, scope):
                continue
            pair = None
            if METRICS[rule.metric].per_position:
                owner = scope if rule.scope in ("account", "strategy") else "firm"
                pair = (owner, sym)
            v = self._value(rule, ev, scope, sym, parent, pair, venue if venues else None)
            self._check(i, rule, scope, v, now, venue if venues else None, pair)
        trade = isinstance(ev, wire.Fill) and ev.exec_type == "trade"
        if not (trade or isinstance(ev, wire.NewOrder | wire.ReplaceOrder)):
            return
        order: Any = ev
        for i, rule in enumerate(self.rules):
            if rule.metric != "restricted":
                continue
            strategies = rule.match.get("strategy")
            if strategies and order.strategy not in strategies:
                continue
            scope = scopes["strategy"]
            assert scope is not None
            for listed in rule.match["symbol"]:
                for account in rule.match.get("account") or (None,):
                    source = (f"symbol:{listed}", account)
                    if listed == order.symbol and account in (None, order.account):
                        self._check(i, rule, scope, 1.0, now, source)
                    elif (i, scope, source, None) in self.edges:  # re-arms at a clean order
                        current = STATES[self.state.get(scope, 0)]
                        where = (source, None)
                        self._edges(i, rule, scope, 0.0, now, False, where, current, listed)

    def _value(
        self,
        rule: Rule,
        ev: wire.Event,
        scope: str,
        sym: str,
        parent: str | None,
        pair: tuple[str, str] | None,
        venue: str | None,
    ) -> float:
        m = rule.metric
        qty = getattr(ev, "qty", None)
        price = getattr(ev, "price", None)
        ref = self.ref.get(sym) if self.price_src.get(sym, 0) > 0 else None
        if m == "fill_notional_rate":
            return money(self._window("filln", rule, scope, venue))
        if m in COUNTED and m != "cancel_ratio":
            return self._window(COUNTED[m][0], rule, scope, venue)
        if m == "cancel_ratio":
            news = self._window("new", rule, scope, venue)
            cxl = self._window("cxl", rule, scope, venue)
            if cxl == 0.0:
                return 0.0
            return cxl / news if news >= rule.min_orders else math.nan
        if m == "order_qty":
            return float(qty)  # type: ignore[arg-type]
        if m == "order_notional":
            rate = self._rate(sym)
            if math.isnan(rate):
                return math.nan
            size = qty * self._mult(sym) * rate  # type: ignore[operator]
            px = price if price is not None else ref
            return money(float(size * abs(px))) if px is not None else math.nan
        if m == "price_deviation":
            if price is None or ref is None or ref == 0.0:
                return math.nan
            return price_deviation(price, ref)
        if m == "position_qty":
            assert pair is not None
            lot = self.lots.get(pair)
            return abs(lot.qty) if lot is not None else 0.0
        if m == "position_break_qty":
            assert pair is not None
            if pair not in self.broker:
                return math.nan
            lot = self.lots.get(pair)
            return abs(snap((lot.qty if lot else 0.0) - self.broker[pair]))
        if m == "parent_overfill_ratio":
            p = self.parents.get(parent) if parent is not None else None
            if p is None or p[0] is None:
                return math.nan
            declared, filled = p[0], p[1]
            if near(filled, declared):  # type: ignore[arg-type]
                return 1.0
            f, q = nanos(filled), nanos(declared)  # type: ignore[arg-type]
            if math.isnan(f) or math.isnan(q):
                return filled / declared  # type: ignore[operator]
            return f / q
        return self._stateful(m, scope)
