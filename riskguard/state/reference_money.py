"""The money half of the reference model: lots, currencies, working orders, revaluation.

A mix-in of :class:`riskguard.state.reference.ReferenceModel`, the mirror of
:mod:`riskguard.state.valuation` and :mod:`riskguard.state.revaluation`, written the
obvious way: a lot keeps its money in its symbol's currency times its multiplier; a
scope's book is in the base currency, each change converted at the current rate; a
currency with no rate yet leaves the lots holding money in it (a position, working
orders, realised P&L or fees) unvalued (counted in ``Book.unknown``).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from riskguard.limits.model import Rule
from riskguard.state.reference_defs import EXPOSURE_NAMES, Book, Execution, Lot, near, snap
from riskguard.vocabulary import money

Delta = tuple[float, float, float, float, float, float, float]
"""(net, gross, realised, cost, fees, potential, open)"""
ZERO: Delta = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)


class ReferenceMoney:
    """Lots, books and revaluation of the reference model."""

    rules: tuple[Rule, ...]
    revalue_ns: int
    lots: dict[tuple[str, str], Lot]
    holders: dict[str, list[str]]
    ref: dict[str, float]
    val: dict[str, float]
    val_epoch: dict[str, int]
    pending: list[str]
    dirty: list[str]
    epoch: int
    rates: dict[str, float]
    first_rate: dict[str, float]
    price_src: dict[str, int]
    ref_exec: dict[str, Any]
    prev_ref: dict[str, float | None]
    multiplier: dict[str, float]
    currency: dict[str, str]
    in_currency: dict[str, list[str]]
    noted: set[str]
    base: str

    if TYPE_CHECKING:  # provided by ReferenceModel

        def book(self, scope: str) -> Book: ...

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

        def _matches(self, rule: Rule, scope: str) -> bool: ...

    # currencies -----------------------------------------------------------------------
    def _rate(self, symbol: str) -> float:
        """Base units per unit of the symbol's currency; NaN while unknown."""
        return self.rates.get(self.currency.get(symbol, self.base), math.nan)

    def _mult(self, symbol: str) -> float:
        return self.multiplier.get(symbol, 1.0)

    def _u(self, symbol: str) -> float:
        """Valuation price x multiplier."""
        return self.val.get(symbol, 0.0) * self._mult(symbol)

    # books ------------------------------------------------------------------------------
    def _consistent(self) -> bool:
        return self.revalue_ns <= 0 or not self.pending

    def _raise(self, scope: str, consistent: bool) -> None:
        b = self.book(scope)
        if consistent:
            if b.unknown == 0:
                b.peak = max(b.peak, b.pnl)
        elif scope not in self.dirty:
            self.dirty.append(scope)

    def _settle_peaks(self) -> None:
        for scope in self.dirty:
            b = self.book(scope)
            if b.unknown == 0:
                b.peak = max(b.peak, b.pnl)
        self.dirty = []

    def _scope_delta(self, scope: str, d: Delta, lots: int, unknown: int, ok: bool) -> None:
        b = self.book(scope)
        b.lots += lots
        b.unknown += unknown
        b.real += d[2]
        b.fees += d[4]
        if b.lots == 0:  # no position, no exposure: exactly zero, not a residue
            b.net = b.gross = b.cost = 0.0
        else:
            b.net += d[0]
            b.gross += d[1]
            b.cost += d[3]
        if b.open_orders == 0:
            b.open_notional = 0.0
            b.potential = 0.0 if b.lots == 0 else b.potential + d[5]
        else:
            b.potential += d[5]
            b.open_notional += d[6]
        self._raise(scope, ok)

    def _delta(
        self, owner: str, symbol: str, d: Delta, lots: int = 0, ok: bool | None = None
    ) -> None:
        """A change of lot (owner, symbol), in its currency, reaches the books in base money."""
        ok = self._consistent() if ok is None else ok
        lot = self.lots[(owner, symbol)]
        rate = self._rate(symbol)
        unknown = 0
        if math.isnan(rate):
            # a flat lot's realised P&L and fees are money in the currency too
            want = (
                lot.qty != 0.0
                or lot.buys > 0.0
                or lot.sells > 0.0
                or money(lot.real) != 0.0
                or money(lot.fees) != 0.0
            )
            unknown = int(want) - int(lot.unknown)
            lot.unknown = want
            if want:
                self.noted.add(self.currency.get(symbol, self.base))
            base = ZERO
        else:
            base = tuple(x * rate for x in d)  # type: ignore[assignment]
        for scope in (owner, symbol) if owner == "firm" else (owner,):
            self._scope_delta(scope, base, lots, unknown, ok)

    def _lot(self, owner: str, symbol: str) -> Lot:
        """The lot, created (and listed as a holder of the symbol) on first use."""
        if (owner, symbol) not in self.lots:
            self.lots[(owner, symbol)] = Lot()
            self.holders.setdefault(symbol, []).append(owner)
        return self.lots[(owner, symbol)]

    def _priced(self, sym: str) -> bool:
        """Whether the symbol has a price yet (a mark, or a fill's)."""
        return self.price_src.get(sym, 0) > 0

    @staticmethod
    def _potential(lot: Lot, u: float, priced: bool) -> float:
        """Gross if the worst side filled whole: the growth of |qty| at ``u``; with no
        price yet, each side's growth at that side's limit money per working unit."""
        q = lot.qty
        if priced:
            grow = max(abs(q + lot.buys), abs(q - lot.sells)) - abs(q)
            return lot.gross + max(0.0, grow) * abs(u)
        up = abs(q + lot.buys) - abs(q)
        down = abs(q - lot.sells) - abs(q)
        sides = [0.0]
        if up > 0.0:
            sides.append(lot.buy_money * (up / lot.buys))
        if down > 0.0:
            sides.append(lot.sell_money * (down / lot.sells))
        return lot.gross + max(sides)

    @staticmethod
    def _open_money(lot: Lot, u: float) -> float:
        return lot.buy_money + lot.sell_money + lot.market * abs(u)

    def _fee_back(self, x: Execution, before: bool, ok: bool = False) -> None:
        """Reversing ``x`` takes its fee back at the rate it was booked at (booked
        unvalued: the currency's first rate), not today's: the reversal books it at
        today's, and the gap goes to the fees of its scopes, before the reversal when it
        raises them (``before``), after it when it lowers them. ``ok``: the session highs
        may be raised now (not while the amendment is booked in steps)."""
        sym = f"symbol:{x.symbol}"
        now = self._rate(sym)
        if math.isnan(now) or x.fee == 0.0:
            return
        then = x.fee_rate
        if math.isnan(then):
            then = self.first_rate[self.currency.get(sym, self.base)]
        gap = x.fee * (now - then)
        if gap == 0.0 or (gap > 0.0) != before:
            return
        d = (0.0, 0.0, 0.0, 0.0, gap, 0.0, 0.0)
        strategy = [f"strategy:{x.strategy}"] if x.strategy else []
        for owner in ["firm", f"account:{x.account}", *strategy]:
            for scope in (owner, sym) if owner == "firm" else (owner,):
                self._scope_delta(scope, d, 0, 0, ok)

    # trades and working orders -------------------------------------------------------
    def _trade_lot(
        self, owner: str, sym: str, d: float, x: float, w: float, fee: float, ok: bool
    ) -> None:
        """Book signed qty ``d`` at money price ``x``, the lot valued at money price ``w``;
        ``ok``: the session highs may be raised now."""
        lot = self._lot(owner, sym)
        q, c, v0, g0, p0 = lot.qty, lot.cost, lot.value, lot.gross, lot.potential
        real = 0.0
        if q == 0.0 or (q > 0.0) == (d > 0.0):
            nq, nc, v1, g1 = snap(q + d), c + d * x, v0 + d * w, g0 + abs(d * w)
        elif near(abs(d), abs(q)):
            avg = c / q
            real = abs(q) * (x - avg) if q > 0.0 else abs(q) * (avg - x)
            nq = nc = v1 = g1 = 0.0
        else:
            avg = c / q
            k = min(abs(d), abs(q))
            real = k * (x - avg) if q > 0.0 else k * (avg - x)
            nq = snap(q + d)
            if abs(d) < abs(q):
                nc, v1, g1 = avg * nq, v0 * (nq / q), g0 * (nq / q)
            else:
                nc, v1, g1 = x * nq, nq * w, abs(nq * w)
        lot.qty, lot.cost, lot.real, lot.value, lot.gross = nq, nc, lot.real + real, v1, g1
        lot.fees += fee
        p1 = self._potential(lot, self._u(sym), self._priced(sym))
        lot.potential = p1
        lots = int(q == 0.0 and nq != 0.0) - int(q != 0.0 and nq == 0.0)
        self._delta(owner, sym, (v1 - v0, g1 - g0, real, nc - c, fee, p1 - p0, 0.0), lots, ok)

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
    ) -> None:
        """Book signed qty ``d`` at ``price`` on the firm's, account's and strategy's lots.

        ``own``: the reference price moves to ``price`` right after (a trade before any
        mark): the trade is valued at its own price and the session highs wait for the move.
        ``hold``: one step of a booking in several (reversal, rebooking): the highs wait.
        """
        sym = f"symbol:{symbol}"
        w = self.val.get(sym, 0.0)
        if own:
            w = price
        elif self.revalue_ns > 0 and w != price:
            w = price  # the lot is valued at its own price until the next epoch
            self._queue(sym)
        ok = self._consistent() and not own and not hold
        m = self._mult(sym)
        owners = ["firm", f"account:{account}"] + ([f"strategy:{strategy}"] if strategy else [])
        for owner in owners:
            self._trade_lot(owner, sym, d, price * m, w * m, fee, ok)

    def _moves_reference(self, sym: str, price: float) -> bool:
        """Whether a trade at ``price`` moves the reference price (before any mark)."""
        src = self.price_src.get(sym, 0)
        return src < 2 and (src == 0 or self.ref[sym] != price)

    def _work_lot(
        self,
        owner: str,
        sym: str,
        side: int,
        dq: float,
        market: bool,
        money: float,
        hold: bool = False,
    ) -> None:
        lot = self._lot(owner, sym)
        money = 0.0 if market else money
        if side > 0:
            lot.buys = max(0.0, snap(lot.buys + dq))
            lot.buy_money = 0.0 if lot.buys == 0.0 else lot.buy_money + money
        else:
            lot.sells = max(0.0, snap(lot.sells + dq))
            lot.sell_money = 0.0 if lot.sells == 0.0 else lot.sell_money + money
        if market:
            lot.market = max(0.0, snap(lot.market + dq))
        if lot.buys == 0.0 and lot.sells == 0.0:
            lot.market = 0.0
        u = self._u(sym)
        p1 = self._potential(lot, u, self._priced(sym))
        o1 = self._open_money(lot, u)
        d = (0.0, 0.0, 0.0, 0.0, 0.0, p1 - lot.potential, o1 - lot.open)
        lot.potential, lot.open = p1, o1
        self._delta(owner, sym, d, ok=False if hold else None)

    def _work(
        self,
        account: str,
        strategy: str,
        symbol: str,
        side: int,
        dq: float,
        px: float | None,
        hold: bool = False,
    ) -> None:
        """``dq`` more working quantity of an order at limit ``px`` (None: market);
        ``hold``: the session highs wait."""
        sym = f"symbol:{symbol}"
        money = 0.0 if px is None else dq * abs(px) * self._mult(sym)
        for owner in ("firm", f"account:{account}", f"strategy:{strategy}"):
            self._work_lot(owner, sym, side, dq, px is None, money, hold)

    # revaluation ----------------------------------------------------------------------
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
        self._move(symbol, self._consistent())
        self._revalued([symbol], ts)

    def _move(self, symbol: str, ok: bool) -> None:
        self.val[symbol] = self.ref[symbol]
        u = self._u(symbol)
        for owner in self.holders.get(symbol, []):
            lot = self.lots[(owner, symbol)]
            active = lot.qty != 0.0 or lot.buys > 0.0 or lot.sells > 0.0
            if lot.qty == 0.0 and lot.value == 0.0 and not active and lot.open == 0.0:
                continue
            v1 = lot.qty * u
            v0, g0 = lot.value, lot.gross
            lot.value, lot.gross = v1, abs(v1)
            p1 = self._potential(lot, u, self._priced(symbol))
            o1 = self._open_money(lot, u)
            d = (v1 - v0, abs(v1) - g0, 0.0, 0.0, 0.0, p1 - lot.potential, o1 - lot.open)
            lot.potential, lot.open = p1, o1
            self._delta(owner, symbol, d, ok=ok)

    def _revalued(self, symbols: list[str], ts: int, booked: bool = False) -> None:
        """Exposure rules on every scope holding or working one of ``symbols``, once each;
        ``booked`` (a currency's first rate): also on each scope whose lot is flat but
        holds realised P&L or fees, booked just now."""
        if not any(r.metric in EXPOSURE_NAMES for r in self.rules):
            return
        seen: set[str] = set()
        for symbol in symbols:
            for owner in self.holders.get(symbol, []):
                lot = self.lots[(owner, symbol)]
                flat = lot.qty == 0.0 and lot.buys <= 0.0 and lot.sells <= 0.0
                realised = money(lot.real) != 0.0 or money(lot.fees) != 0.0
                if flat and not (booked and realised):
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
            self._move(symbol, False)
        self._settle_peaks()
        self._revalued(queued, now)
        self.pending = []
        self.epoch = epoch

    def _trade_reference(self, sym: str, key: Any, price: float, now: int) -> None:
        """Before any mark, a trade (or opening position) sets the reference price."""
        src = self.price_src.get(sym, 0)
        if src >= 2:
            return
        self.prev_ref[sym] = self.ref[sym] if src == 1 else None
        self.ref_exec[sym] = key
        if src == 0 or self.ref[sym] != price:
            self.price_src[sym] = 1
            self._price(sym, price, now)

    def _amend_reference(self, sym: str, key: Any, bust: bool, price: float, now: int) -> None:
        """A correction or bust of the trade that set the reference price moves it: to the
        corrected price, or back to the price before that trade."""
        if self.price_src.get(sym, 0) != 1 or self.ref_exec.get(sym) != key:
            return
        if bust:
            self.ref_exec[sym] = None
            before = self.prev_ref.get(sym)
            if before is None:
                return
            price = before
            self.prev_ref[sym] = None
        if self.ref[sym] != price:
            self._price(sym, price, now)

    def _fx(self, code: str, rate: float, ts: int) -> None:
        """A new exchange rate: convert the lots of every symbol priced in ``code``."""
        old = self.rates.get(code, math.nan)
        if old == rate:
            return
        self.rates[code] = rate
        self.first_rate.setdefault(code, rate)
        ok = self._consistent()
        symbols = self.in_currency.get(code, [])
        for symbol in symbols:
            for owner in self.holders.get(symbol, []):
                lot = self.lots[(owner, symbol)]
                if math.isnan(old):
                    d: Delta = (
                        lot.value * rate,
                        lot.gross * rate,
                        lot.real * rate,
                        lot.cost * rate,
                        lot.fees * rate,
                        lot.potential * rate,
                        lot.open * rate,
                    )
                    unknown = -int(lot.unknown)
                    lot.unknown = False
                else:
                    k = rate - old
                    d = (
                        lot.value * k,
                        lot.gross * k,
                        0.0,
                        lot.cost * k,
                        0.0,
                        lot.potential * k,
                        lot.open * k,
                    )
                    unknown = 0
                for scope in (owner, symbol) if owner == "firm" else (owner,):
                    self._scope_delta(scope, d, 0, unknown, ok)
        self._revalued(symbols, ts, booked=math.isnan(old))

    # values -----------------------------------------------------------------------------
    def _stateful(self, metric: str, scope: str) -> float:
        b = self.book(scope)
        if metric == "open_orders":
            return float(b.open_orders)
        if b.unknown > 0:
            return math.nan
        if metric == "drawdown":
            return max(0.0, money(b.peak - b.pnl))
        return money(
            {
                "gross_notional": b.gross,
                "net_notional": b.net,
                "pnl": b.pnl,
                "potential_gross_notional": b.potential,
                "open_order_notional": b.open_notional,
            }.get(metric, math.nan)
        )
