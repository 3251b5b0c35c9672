"""Plain-Python reference model of the kernel: dicts and objects, one event at a time.

It shares no code with the numba path beyond the limits model, the metric spec and the
engine settings, and spells every rule out the obvious way (docs/events.md and
docs/limits.md). The property tests drive both with random streams and require equal
positions, exposures, P&L, open orders, rule peaks and transitions. It is also the
baseline of the kernel benchmark. It is slow by design; never use it on the hot path.
"""

from __future__ import annotations

import math
from typing import Any

import msgspec

from riskguard import events as wire
from riskguard.limits.model import Limits, Rule
from riskguard.settings import EngineSettings
from riskguard.state.reference_defs import (
    COUNTED,
    JUMP_CONFIRM,
    LEVEL_RTOL,
    MARK_RING,
    Book,
    Execution,
    Lot,
    Order,
    RefTransition,
    Window,
    snap,
)
from riskguard.state.reference_money import ReferenceMoney
from riskguard.state.reference_orders import ReferenceOrders
from riskguard.state.reference_windows import Counter
from riskguard.vocabulary import ACTION_CODE, STATES

EdgeKey = tuple[int, str, Any, Any]
"""(rule index, scope, source or venue filter or restricted symbol, position or None)"""


def utilisation(rule: Rule, v: float) -> float:
    """How far ``v`` has come towards the limit (1.0 at it), as warning levels count it."""
    u = -math.inf
    if rule.upper > 0.0 and not math.isinf(rule.upper):
        u = v / rule.upper
    if rule.lower < 0.0 and not math.isinf(rule.lower):
        u = max(u, v / rule.lower)
    return u


class ReferenceModel(ReferenceOrders, ReferenceMoney):
    """The semantics of :mod:`riskguard.state.kernel`, written for reading, not speed."""

    def __init__(self, limits: Limits, settings: EngineSettings | None = None) -> None:
        cfg = settings or EngineSettings()
        self.rules = limits.all_rules
        self.base = limits.base_currency
        self.rates: dict[str, float] = {self.base: 1.0}  # known rates, base units per unit
        self.first_rate: dict[str, float] = {self.base: 1.0}  # each currency's first rate
        self.multiplier: dict[str, float] = {}  # symbol scope -> contract size
        self.currency: dict[str, str] = {}  # symbol scope -> currency of its prices
        self.in_currency: dict[str, list[str]] = {}  # currency -> symbols, newest first
        self.noted: set[str] = set()  # currencies met without a rate
        self.broker: dict[tuple[str, str], float] = {}  # (owner, symbol scope) -> broker qty
        self.openings: dict[tuple[str, str | None, str], Execution] = {}
        self.skew_ns, self.lateness_ns = cfg.skew_ns, cfg.lateness_ns
        self.revalue_ns = limits.revalue_ms * 1_000_000
        self.state: dict[str, int] = {}
        self.home: dict[str, str] = {}  # strategy -> the account it first traded in
        self.lots: dict[tuple[str, str], Lot] = {}  # (owner scope, symbol scope)
        self.holders: dict[str, list[str]] = {}  # symbol -> owners, in order of first fill
        self.books: dict[str, Book] = {}
        self.ref: dict[str, float] = {}  # symbol -> latest reference price
        self.val: dict[str, float] = {}  # symbol -> its valuation price
        self.val_epoch: dict[str, int] = {}
        self.pending: list[str] = []  # symbols waiting for the next epoch, in queue order
        self.dirty: list[str] = []  # scopes whose session high waits for consistency
        self.epoch = -1
        self.price_src: dict[str, int] = {}
        self.mark_ns: dict[str, int] = {}
        self.mark_prices: dict[str, list[float]] = {}
        #: "fx:<currency>" or "instrument:<symbol>" -> (time, values applied at it)
        self.refdata_at: dict[str, tuple[int, list[Any]]] = {}
        self.orders: dict[str, Order] = {}
        self.serial = 0
        self.seen_execs: set[tuple[str, str]] = set()
        self.execs: dict[tuple[str, str], Execution] = {}
        self.parents: dict[str, list[float | None]] = {}  # id -> [declared qty, filled]
        self.windows: dict[tuple[Counter, str], Window] = {}
        self.counters: list[Counter] = []
        self.dup: dict[tuple[Counter, str, str, str, float, float | None], int] = {}
        self.dup_purge_at = 4096
        self.edges: dict[EdgeKey, int] = {}  # raised warning levels (bits) and alert (16)
        self.start = self.last_any = self.feed_ns = -1
        self.ahead_run = 0
        self.ahead_items: list[Any] = []  # replay: events counted while ahead of the clock
        self.ref_exec: dict[str, Any] = {}  # symbol -> the trade that set its fill price
        self.prev_ref: dict[str, float | None] = {}  # symbol -> the fill price before it
        self.heard: dict[str, int] = {}
        self.transitions: list[RefTransition] = []
        self.peaks: dict[str, list[float]] = {r.name: [0, -math.inf, math.inf] for r in self.rules}
        self.bad: list[str] = []  # reasons
        self.duplicates = self.skewed = self.late = self.jumps = 0
        self.judged: dict[str, int] = {}  # scope -> resumed at (event time)
        for rule in self.rules:
            sides = rule.event_filter("side")
            side = 0 if len(sides) != 1 else 1 if sides[0] == "buy" else -1
            for venue in rule.event_filter("venue") or (None,):
                for kind in COUNTED.get(rule.metric, ()):
                    if kind is None:
                        continue
                    key = (kind, rule.scope, (rule.window_ms or 0) * 1_000_000, side, venue)
                    if key not in self.counters:
                        self.counters.append(key)

    # inspection -----------------------------------------------------------------------
    def resume(self, scope: str) -> None:
        """An operator lowers ``scope`` to ACTIVE at the latest event time (no-op if ACTIVE)."""
        if self.state.pop(scope, 0):
            self.judged[scope] = max(self.judged.get(scope, -1), self.last_any)

    def book(self, scope: str) -> Book:
        """The aggregates of ``scope`` (created empty)."""
        return self.books.setdefault(scope, Book())

    def position(self, owner: str, symbol: str) -> float:
        """Net position of ``owner`` in ``symbol``."""
        lot = self.lots.get((owner, f"symbol:{symbol}"))
        return lot.qty if lot else 0.0

    # judging --------------------------------------------------------------------------
    def _matches(self, rule: Rule, scope: str) -> bool:
        key = scope.partition(":")[2]
        own = rule.match.get(rule.scope)
        if own and key not in own:
            return False
        accounts = rule.match.get("account") if rule.scope == "strategy" else None
        return not (accounts and self.home.get(key) not in accounts)

    def _check(
        self,
        index: int,
        rule: Rule,
        scope: str,
        value: float,
        ts: int,
        source: Any = None,
        pair: tuple[str, str] | None = None,
    ) -> None:
        """Judge ``value``: peaks, warning levels and alert edges, then escalation.

        ``source`` tells apart the rows of one rule that judge the same scope (a heartbeat
        source, a venue filter, a restricted symbol); ``pair`` is the position a
        per-position metric measured (its edges are kept per position).
        """
        if math.isnan(value):
            return
        peak = self.peaks[rule.name]
        peak[0] += 1
        peak[1] = max(peak[1], value)
        peak[2] = min(peak[2], value)
        live = ts > self.judged.get(scope, -1)  # else an operator resumed after this evidence
        current = STATES[self.state.get(scope, 0)]
        symbol = pair[1].partition(":")[2] if pair else None
        if rule.metric == "restricted":
            symbol = str(source[0]).partition(":")[2]
        if rule.warn_at or rule.action == "alert":
            self._edges(index, rule, scope, value, ts, live, (source, pair), current, symbol)
        if rule.action == "alert":
            return
        target = ACTION_CODE[rule.action]
        breach = value > rule.upper or value < rule.lower
        if breach and live and self.state.get(scope, 0) < target:
            self.state[scope] = target
            self.transitions.append(
                RefTransition(
                    scope, rule.name, current, STATES[target], "auto", ts, value, None, symbol
                )
            )

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
    ) -> None:
        key = (index, scope, *where)
        bits = self.edges.get(key, 0)
        u = utilisation(rule, v)
        emitted: list[tuple[str, float | None]] = []
        for k, f in enumerate(rule.warn_at):
            bit = 1 << k
            if bits & bit:
                if u < f - rule.warn_rearm - LEVEL_RTOL * f:
                    bits &= ~bit
                    emitted.append(("resolve", f))
            elif live and u >= f - LEVEL_RTOL * f:
                bits |= bit
                emitted.append(("alert", f))
        if rule.action == "alert":
            breach = v > rule.upper or v < rule.lower
            if bits & 16:
                if not breach and (
                    rule.alert_rearm <= 0.0 or u < 1.0 - rule.alert_rearm - LEVEL_RTOL
                ):
                    bits &= ~16
                    emitted.append(("resolve", None))
            elif breach and live:
                bits |= 16
                emitted.append(("alert", None))
        for kind, level in emitted:
            self.transitions.append(
                RefTransition(scope, rule.name, state, state, kind, ts, v, level, symbol)
            )
        if bits:
            self.edges[key] = bits
        else:
            self.edges.pop(key, None)

    # the event loop -------------------------------------------------------------------
    def apply(self, events: list[wire.Event], wall: int = -1) -> None:
        """Apply events in order (``wall``: the wall clock of a live run, -1 in replay)."""
        for ev in events:
            self.apply_one(ev, wall)

    def _corrected(self, raw: int, wall: int) -> tuple[int, str]:
        """(corrected time, verdict): on time, skewed (live), ahead or jump (replay)."""
        clock = self.last_any
        if wall >= 0:
            return (max(clock, wall), "skewed") if raw > wall + self.skew_ns else (raw, "")
        if clock < 0 or raw <= clock + self.skew_ns:
            return raw, ""
        if self.ahead_run + 1 < JUMP_CONFIRM:
            return clock, "ahead"
        return raw, "jump"

    def apply_one(self, ev: wire.Event, wall: int = -1) -> None:
        """Apply one event."""
        qty = getattr(ev, "qty", None)
        if qty is not None:
            ev = msgspec.structs.replace(ev, qty=snap(qty))  # quantities carry 9 decimals
        strategy = getattr(ev, "strategy", None)
        if strategy is not None:
            self.home.setdefault(strategy, getattr(ev, "account", ""))
        if isinstance(ev, wire.Fx) and ev.currency == self.base and ev.rate != 1.0:
            self.bad.append("fx_base_currency")
            return
        if isinstance(ev, wire.Fill):
            key = (ev.account, ev.exec_id)
            if key in self.seen_execs:
                self.duplicates += 1
                return
            if ev.exec_type != "trade":
                x = self.execs.get((ev.account, ev.ref_exec_id or ""))
                if x is None or (x.strategy, x.symbol) != (ev.strategy, ev.symbol):
                    self.bad.append("unknown_exec_ref")
                    return
            self.seen_execs.add(key)
        now, verdict = self._corrected(ev.ts, wall)
        self._flush(now)
        if verdict == "skewed":
            self.skewed += 1
        jumped: list[Any] = []
        if verdict == "ahead":
            self.ahead_run += 1
            self.ahead_items = [*self.ahead_items[: self.ahead_run - 1], None]
        elif verdict == "jump":
            jumped = self.ahead_items[: self.ahead_run]
            self.ahead_run = 0  # the events ahead were a gap, not skew
            self.jumps += 1
        else:
            self.skewed += self.ahead_run  # ahead, then back on time: they were skewed
            self.ahead_run = 0
        if self.start < 0:
            self.start = now
        clock = self.last_any
        self._feed(now, wall, True)
        self.last_any = max(clock, now)
        if jumped:
            self._recount(jumped, now)
            self._restamp(jumped, clock, now)
        if isinstance(ev, wire.Heartbeat):
            self.heard[ev.source] = max(self.heard.get(ev.source, -1), now)
            return
        if isinstance(ev, wire.Mark):
            self._mark(ev, now)
            if verdict == "ahead":
                self.ahead_items[-1] = ("mark", f"symbol:{ev.symbol}", ev.ts, ev.price)
            return
        if isinstance(ev, wire.Instrument):
            values = (ev.multiplier, ev.currency or self.base)
            if self._fresh(f"instrument:{ev.symbol}", values, now) and self._instrument(ev):
                self._applied(f"instrument:{ev.symbol}", values, now)
                if verdict == "ahead":
                    self.ahead_items[-1] = ("refdata", f"instrument:{ev.symbol}", ev.ts, values)
            return
        if isinstance(ev, wire.Fx):
            if self._fresh(f"fx:{ev.currency}", ev.rate, now):
                self._fx(ev.currency, ev.rate, now)
                if verdict == "ahead":
                    self.ahead_items[-1] = ("refdata", f"fx:{ev.currency}", ev.ts, ev.rate)
                self._applied(f"fx:{ev.currency}", ev.rate, now)
            return
        at = now if clock - now <= self.lateness_ns else clock
        venue, side = self._venue_side(ev)
        scopes: dict[str, str | None] = {
            "firm": "firm",
            "account": f"account:{ev.account}",
            "strategy": None if ev.strategy is None else f"strategy:{ev.strategy}",
            "symbol": f"symbol:{ev.symbol}",
            "venue": None if venue is None else f"venue:{venue}",
        }
        if isinstance(ev, wire.Position):
            if not self._position(ev, now):
                return
            parent: str | None = None
        elif isinstance(ev, wire.ParentOrder):
            declared = self.parents.setdefault(ev.parent_id, [None, 0.0])
            if declared[0] == ev.qty:
                self.duplicates += 1  # a redelivered parent changes nothing
                return
            declared[0] = ev.qty
            parent = ev.parent_id
        elif isinstance(ev, wire.Fill):
            if ev.exec_type == "trade":
                self._count(ev, scopes, side, venue, now, at)
                if verdict == "ahead":
                    self.ahead_items[-1] = (ev, dict(scopes), side, venue, at, [])
                parent = self._on_trade(ev, venue, at)
                assert ev.price is not None  # booked first, then its price moves the symbol
                self._trade_reference(
                    f"symbol:{ev.symbol}", (ev.account, ev.exec_id), ev.price, now
                )
                if self._consistent():
                    self._settle_peaks()
            else:
                applied, parent = self._on_amend(ev, now)
                if not applied:
                    return
        else:
            applied, parent = self._order_event(ev, now)
            if not applied:
                return
            venue, side = self._venue_side(ev)
            scopes["venue"] = None if venue is None else f"venue:{venue}"
            dups = self._count(ev, scopes, side, venue, now, at)
            if isinstance(ev, wire.NewOrder):
                self._count_early(ev, scopes, side, venue, at)
            else:
                self._note_early(ev, side, venue)
            if verdict == "ahead":
                self.ahead_items[-1] = (ev, dict(scopes), side, venue, at, dups)
        if clock - now > self.lateness_ns:
            self.late += 1
        self._evaluate(ev, scopes, side, venue, parent, now)

    def _venue_side(self, ev: Any) -> tuple[str | None, int]:
        """An event's venue and side (+1 buy, -1 sell, 0 none); a cancel's, reject's,
        replace's or fill's missing ones are its order's."""
        side = {"buy": 1, "sell": -1}.get(getattr(ev, "side", None) or "", 0)
        if isinstance(ev, wire.Position):
            side = 1 if ev.qty > 0 else -1 if ev.qty < 0 else 0
        venue = getattr(ev, "venue", None)
        if isinstance(ev, wire.CancelOrder | wire.RejectOrder | wire.ReplaceOrder | wire.Fill):
            o = self.orders.get(ev.order_id)
            if o is not None and (side == 0 or venue is None):
                side = side or o.side
                venue = venue if venue is not None else o.venue
        return venue, side

    def _fresh(self, key: str, values: Any, now: int) -> bool:
        """Reference data ``key`` with ``values`` at ``now`` is to be applied: not older
        than the latest applied, nor applied already at that time (a duplicate)."""
        at, seen = self.refdata_at.get(key, (-1, []))
        if now < at:
            return False
        if now == at and values in seen[-MARK_RING:]:
            self.duplicates += 1
            return False
        return True

    def _applied(self, key: str, values: Any, now: int) -> None:
        at, seen = self.refdata_at.get(key, (-1, []))
        self.refdata_at[key] = (now, [*seen, values] if now == at else [values])

    def _instrument(self, ev: wire.Instrument) -> bool:
        """Whether the instrument is applied (unchanged values are)."""
        sym = f"symbol:{ev.symbol}"
        code = ev.currency or self.base
        old = self.currency.get(sym, self.base)
        if self._mult(sym) == ev.multiplier and old == code:
            return True
        if self.holders.get(sym) or self.book(sym).open_orders > 0:
            self.bad.append("refdata_changed")
            return False
        if old != code and sym in self.in_currency.get(old, []):
            self.in_currency[old].remove(sym)
        if code != self.base and sym not in self.in_currency.get(code, []):
            self.in_currency.setdefault(code, []).insert(0, sym)
        self.currency[sym] = code
        self.multiplier[sym] = ev.multiplier
        return True

    def _position(self, ev: wire.Position, now: int) -> bool:
        """An opening or broker position; whether it is applied."""
        sym = f"symbol:{ev.symbol}"
        if ev.kind == "broker":
            owner = f"strategy:{ev.strategy}" if ev.strategy else f"account:{ev.account}"
            self.broker[(owner, sym)] = ev.qty
            return True
        price = ev.price
        if price is None:
            if self.price_src.get(sym, 0) == 0:
                self.bad.append("no_price")
                return False
            price = self.ref[sym]
        key = (ev.account, ev.strategy, ev.symbol)
        x = self.openings.get(key)
        if x is not None:
            if x.qty * x.side == ev.qty and x.stated == ev.price:
                self.duplicates += 1
                return False
            self._book_trade(
                x.account, x.strategy or None, x.symbol, -x.qty * x.side, x.price, 0.0, hold=True
            )
        side = 1 if ev.qty >= 0.0 else -1
        self.openings[key] = Execution(
            "",
            0,
            None,
            ev.account,
            ev.strategy or "",
            ev.symbol,
            side,
            abs(ev.qty),
            price,
            0.0,
            now,
            stated=ev.price,
        )
        # booked whole, then its price moves the symbol: nothing judged or raised between
        own = self._moves_reference(sym, price)
        self._book_trade(ev.account, ev.strategy, ev.symbol, ev.qty, price, 0.0, own, True)
        self._trade_reference(sym, ("open", *key), price, now)
        if self._consistent():
            self._settle_peaks()
        return True

    def _feed(self, now: int, wall: int, event: bool) -> None:
        forward = now > self.feed_ns
        for i, rule in enumerate(self.rules):
            if rule.metric == "consumer_lag_ms":
                if event and wall >= 0:
                    self._check(i, rule, "firm", (wall - now) / 1e6, now)
                continue
            if rule.metric != "feed_silence_ms" or not forward:
                continue
            for source in rule.match.get("source") or (None,):
                last = self.heard.get(source, -1) if source is not None else self.last_any
                if last < 0:
                    last = self.start
                self._check(i, rule, "firm", (now - last) / 1e6, now, source)
        if forward:
            self.feed_ns = now

    def _restamp(self, items: list[Any], clock: int, now: int) -> None:
        """The feed jumped: marks, rates and instruments applied ahead of the clock (at the
        old ``clock``) take their own time, at most ``now``."""
        for item in items:
            if item is None or item[0] not in ("mark", "refdata"):
                continue
            kind, key, raw, values = item
            at = min(raw, now)
            if kind == "mark":
                if self.mark_ns.get(key, -1) >= clock:
                    self.mark_ns[key] = max(self.mark_ns[key], at)
                    self.mark_prices[key] = [values]
            elif self.refdata_at.get(key, (-1, []))[0] >= clock:
                self.refdata_at[key] = (max(self.refdata_at[key][0], at), [values])

    def _mark(self, ev: wire.Mark, now: int) -> None:
        sym = f"symbol:{ev.symbol}"
        last = self.mark_ns.get(sym, -1)
        if now < last:
            return
        seen = self.mark_prices.setdefault(sym, [])
        if now == last:
            if ev.price in seen[-MARK_RING:]:
                self.duplicates += 1
                return
            seen.append(ev.price)
        else:
            seen[:] = [ev.price]
        self.mark_ns[sym] = now
        self.price_src[sym] = 2
        self._price(sym, ev.price, now)

    def tick(self, now: int) -> None:
        """Advance to ``now`` without an event: queued revaluations, feed silence, then
        the windowed alerts and warnings whose window has emptied re-arm."""
        self._flush(now)
        if self.start < 0:
            self.start = now
        self._feed(now, -1, False)
        self._rearm_windows(now)

    def settle(self) -> None:
        """End of the stream: apply what waits for the next revaluation epoch."""
        if self.revalue_ns > 0 and self.pending:
            self._flush(max(self.last_any, (self.epoch + 1) * self.revalue_ns))
