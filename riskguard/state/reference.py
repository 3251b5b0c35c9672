"""Plain-Python reference model of the kernel: dicts and objects, one event at a time.

It shares no code with the numba path beyond the limits model, the metric spec and the
engine settings, and spells every rule out the obvious way (docs/events.md and
docs/limits.md). The property tests drive both with random streams and require equal
positions, exposures, P&L, open orders, rule peaks and transitions. It is also the
baseline of the kernel benchmark. It is slow by design; never use it on the hot path.
"""

from __future__ import annotations

import math

import msgspec

from riskguard import events as wire
from riskguard.limits.model import Limits, Rule
from riskguard.settings import EngineSettings
from riskguard.state.reference_defs import (
    COUNTED,
    EXPOSURE_NAMES,
    JUMP_CONFIRM,
    MARK_RING,
    Book,
    Execution,
    Lot,
    Order,
    RefTransition,
    Window,
    near,
    snap,
)
from riskguard.state.reference_orders import ReferenceOrders
from riskguard.vocabulary import ACTION_CODE, STATES


class ReferenceModel(ReferenceOrders):
    """The semantics of :mod:`riskguard.state.kernel`, written for reading, not speed."""

    def __init__(self, limits: Limits, settings: EngineSettings | None = None) -> None:
        cfg = settings or EngineSettings()
        self.rules = limits.rules
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
        self.orders: dict[str, Order] = {}
        self.serial = 0
        self.seen_execs: set[tuple[str, str]] = set()
        self.execs: dict[tuple[str, str], Execution] = {}
        self.parents: dict[str, list[float | None]] = {}  # id -> [declared qty, filled]
        self.windows: dict[tuple[str, str, int, str], Window] = {}
        self.counters: list[tuple[str, str, int]] = []
        self.dup: dict[tuple[tuple[str, str], int, str, str, str, float, float], int] = {}
        self.dup_purge_at = 4096
        self.alerting: set[tuple[int, str, str | None]] = set()
        self.start = self.last_any = self.feed_ns = -1
        self.ahead_run = 0
        self.heard: dict[str, int] = {}
        self.transitions: list[RefTransition] = []
        self.peaks: dict[str, list[float]] = {r.name: [0, -math.inf, math.inf] for r in self.rules}
        self.bad: list[str] = []  # reasons
        self.duplicates = self.skewed = self.late = self.jumps = 0
        self.judged: dict[str, int] = {}  # scope -> resumed at (event time)
        for rule in self.rules:
            for kind in COUNTED.get(rule.metric, ()):
                if kind is None:
                    continue
                key = (kind, rule.scope, (rule.window_ms or 0) * 1_000_000)
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

    def _stateful(self, metric: str, scope: str) -> float:
        b = self.book(scope)
        return {
            "gross_notional": b.gross,
            "net_notional": b.net,
            "pnl": b.pnl,
            "drawdown": max(0.0, b.peak - b.pnl),
            "open_orders": float(b.open_orders),
        }.get(metric, math.nan)

    # valuation ------------------------------------------------------------------------
    def _consistent(self) -> bool:
        return self.revalue_ns <= 0 or not self.pending

    def _delta(self, owner: str, symbol: str, d: tuple[float, ...], lots: int = 0) -> None:
        consistent = self._consistent()
        for scope in (owner, symbol) if owner == "firm" else (owner,):
            b = self.book(scope)
            b.lots += lots
            b.real += d[2]
            b.fees += d[4]
            if b.lots == 0:  # no position, no exposure: exactly zero, not a residue
                b.net = b.gross = b.cost = 0.0
            else:
                b.net += d[0]
                b.gross += d[1]
                b.cost += d[3]
            if consistent:
                b.peak = max(b.peak, b.pnl)
            elif scope not in self.dirty:
                self.dirty.append(scope)

    def _settle_peaks(self) -> None:
        for scope in self.dirty:
            b = self.book(scope)
            b.peak = max(b.peak, b.pnl)
        self.dirty = []

    def _queue(self, symbol: str) -> None:
        if symbol not in self.pending:
            self.pending.append(symbol)

    def _price(self, symbol: str, price: float, ts: int) -> None:
        """A new reference price: revalue holders now, or queue it for the next epoch."""
        self.ref[symbol] = price
        if self.revalue_ns > 0 and (
            self.val_epoch.get(symbol, -1) >= self.epoch or symbol in self.pending
        ):
            self._queue(symbol)
            return
        self.val_epoch[symbol] = self.epoch
        self._move(symbol)
        self._revalued([symbol], ts)

    def _move(self, symbol: str) -> None:
        m = self.ref[symbol]
        self.val[symbol] = m
        for owner in self.holders.get(symbol, []):
            lot = self.lots[(owner, symbol)]
            if lot.qty != 0.0 or lot.value != 0.0:
                v1 = lot.qty * m
                d = (v1 - lot.value, abs(v1) - lot.gross, 0.0, 0.0, 0.0)
                lot.value, lot.gross = v1, abs(v1)
                self._delta(owner, symbol, d)

    def _revalued(self, symbols: list[str], ts: int) -> None:
        """Exposure rules on every scope holding one of ``symbols``, once each."""
        seen: set[str] = set()
        for symbol in symbols:
            for owner in self.holders.get(symbol, []):
                if self.lots[(owner, symbol)].qty == 0.0:
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
        """Entering a new revaluation epoch applies every queued move, then judges."""
        if self.revalue_ns <= 0 or now // self.revalue_ns <= self.epoch:
            return
        epoch = now // self.revalue_ns
        queued = self.pending
        for symbol in queued:
            self.val_epoch[symbol] = epoch
            self._move(symbol)
        self._settle_peaks()
        self._revalued(queued, now)
        self.pending = []
        self.epoch = epoch

    def _trade(self, x: Execution, d: float, price: float, fee: float) -> None:
        """Book signed qty ``d`` at ``price`` on the execution's firm, account, strategy lots."""
        sym = f"symbol:{x.symbol}"
        w = self.val.get(sym, 0.0)
        if self.revalue_ns > 0 and w != price:
            w = price  # the lot is valued at its own price until the next epoch
            self._queue(sym)
        for owner in ("firm", f"account:{x.account}", f"strategy:{x.strategy}"):
            if (owner, sym) not in self.lots:
                self.lots[(owner, sym)] = Lot()
                self.holders.setdefault(sym, []).append(owner)
        for owner in ("firm", f"account:{x.account}", f"strategy:{x.strategy}"):
            lot = self.lots[(owner, sym)]
            q, c, v0, g0 = lot.qty, lot.cost, lot.value, lot.gross
            real = 0.0
            if q == 0.0 or (q > 0.0) == (d > 0.0):
                nq, nc, v1, g1 = snap(q + d), c + d * price, v0 + d * w, g0 + abs(d * w)
            elif near(abs(d), abs(q)):
                avg = c / q
                real = abs(q) * (price - avg) * (1.0 if q > 0.0 else -1.0)
                nq = nc = v1 = g1 = 0.0
            else:
                avg = c / q
                real = min(abs(d), abs(q)) * (price - avg) * (1.0 if q > 0.0 else -1.0)
                nq = snap(q + d)
                if abs(d) < abs(q):
                    nc, v1, g1 = avg * nq, v0 * (nq / q), g0 * (nq / q)
                else:
                    nc, v1, g1 = price * nq, nq * w, abs(nq * w)
            lot.qty, lot.cost, lot.real, lot.value, lot.gross = nq, nc, lot.real + real, v1, g1
            lots = (q == 0.0 and nq != 0.0) - (q != 0.0 and nq == 0.0)
            self._delta(owner, sym, (v1 - v0, g1 - g0, real, nc - c, fee), lots)

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
        if not isinstance(ev, wire.Mark | wire.Heartbeat):
            self.home.setdefault(ev.strategy, ev.account)
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
        elif verdict == "ahead":
            self.ahead_run += 1
        elif verdict == "jump":
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
        if isinstance(ev, wire.Heartbeat):
            self.heard[ev.source] = max(self.heard.get(ev.source, -1), now)
            return
        if isinstance(ev, wire.Mark):
            self._mark(ev, now)
            return
        at = now if clock - now <= self.lateness_ns else clock
        if isinstance(ev, wire.Fill) and ev.exec_type == "trade":
            assert ev.price is not None
            sym = f"symbol:{ev.symbol}"
            src = self.price_src.get(sym, 0)
            if src < 2 and (src == 0 or self.ref[sym] != ev.price):
                self.price_src[sym] = 1
                self._price(sym, ev.price, now)
        scopes = {
            "firm": "firm",
            "account": f"account:{ev.account}",
            "strategy": f"strategy:{ev.strategy}",
            "symbol": f"symbol:{ev.symbol}",
        }
        if isinstance(ev, wire.ParentOrder):
            declared = self.parents.setdefault(ev.parent_id, [None, 0.0])
            if declared[0] == ev.qty:
                self.duplicates += 1  # a redelivered parent changes nothing
                return
            declared[0] = ev.qty
            parent: str | None = ev.parent_id
        elif isinstance(ev, wire.Fill):
            if ev.exec_type == "trade":
                self._count(ev, scopes, now, at)
                parent = self._on_trade(ev, at)
            else:
                applied, parent = self._on_amend(ev)
                if not applied:
                    return
        else:
            applied, parent = self._order_event(ev, now)
            if not applied:
                return
            self._count(ev, scopes, now, at)
        if clock - now > self.lateness_ns:
            self.late += 1
        self._evaluate(ev, scopes, parent, now)

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
        """Advance to ``now`` without an event: queued revaluations, then feed silence."""
        self._flush(now)
        if self.start < 0:
            self.start = now
        self._feed(now, -1, False)

    def settle(self) -> None:
        """End of the stream: apply what waits for the next revaluation epoch."""
        if self.revalue_ns > 0 and self.pending:
            self._flush(max(self.last_any, (self.epoch + 1) * self.revalue_ns))
