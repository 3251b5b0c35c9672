"""Reading the engine's state: positions, a scope's values, working orders, and what each
rule has seen.

A mix-in of :class:`riskguard.engine.Engine` (its ``keys``, ``store``, ``rulebook`` and
``rule_peaks``), kept apart from the code that applies events.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from riskguard.limits.model import Rule
from riskguard.state.codes import FIRM, O_OPEN
from riskguard.state.keys import pair_key
from riskguard.vocabulary import (
    L_ACCOUNT,
    L_FIRM,
    L_STRATEGY,
    L_SYMBOL,
    L_VENUE,
    money,
    parse_scope,
)

if TYPE_CHECKING:
    from riskguard.state.keys import KeySpace
    from riskguard.state.rulebook import Rulebook
    from riskguard.state.store import StateStore

SCOPE_VALUES: Final = (
    "open_orders",
    "gross_notional",
    "net_notional",
    "pnl",
    "drawdown",
    "realised_pnl",
    "fees",
    "potential_gross_notional",
    "open_order_notional",
    "unvalued",
)
"""The keys of :meth:`Inspection.scope_values`."""

_ORDER_FIELD: Final = {
    L_ACCOUNT: "account",
    L_STRATEGY: "strategy",
    L_SYMBOL: "symbol",
    L_VENUE: "venue",
}
"""The ORDER field naming an order's scope at each level below the firm."""


@dataclass(frozen=True, slots=True)
class WorkingOrder:
    """One working order as riskguard knows it from the event stream.

    ``account``, ``strategy`` and ``symbol`` are keys (``"A1"``, not ``"account:A1"``);
    ``side`` is ``"buy"`` or ``"sell"``; ``open_qty`` is the quantity not yet filled
    (``qty - cum_qty``, instrument units, > 0).
    """

    order_id: str
    account: str
    strategy: str
    symbol: str
    side: str
    open_qty: float


@dataclass(frozen=True, slots=True)
class RulePeak:
    """Highest and lowest value a rule saw, the scopes that reached them, and how close
    the worse of the two came to the limit (``utilisation``: 1.0 is at the limit)."""

    rule: Rule
    evaluations: int
    high: float | None
    low: float | None
    utilisation: float | None
    high_scope: str | None = None
    low_scope: str | None = None

    @property
    def worst(self) -> tuple[float | None, str | None]:
        """(value, scope) of the side that came closer to its limit: for a two-sided band,
        the peak and its utilisation come from the same side."""
        if self.high is None or self.low is None:
            return None, None
        up, down = self.rule.utilisation(self.high), self.rule.utilisation(self.low)
        return (self.low, self.low_scope) if down > up else (self.high, self.high_scope)


class Inspection:
    """Read-only views of an engine's state (see :class:`riskguard.engine.Engine`)."""

    keys: KeySpace
    store: StateStore
    rulebook: Rulebook
    rule_peaks: np.ndarray

    def peaks(self) -> list[RulePeak]:
        """Per rule (file order): extremes seen, where, and peak utilisation of the limit."""
        out = []
        p = self.rule_peaks
        names = self.keys.scope_names
        rule_of_row = self.rulebook.rules.rows["rule"]
        for index, rule in enumerate(self.rulebook.limits.rules):
            rows = p[rule_of_row == index]
            n = int(rows["evaluations"].sum())
            if n == 0:
                out.append(RulePeak(rule, 0, None, None, None))
                continue
            hi_row, lo_row = rows[int(np.argmax(rows["high"]))], rows[int(np.argmin(rows["low"]))]
            hi, lo = float(hi_row["high"]), float(lo_row["low"])
            util = max(rule.utilisation(hi), rule.utilisation(lo))
            hs, ls = int(hi_row["high_scope"]), int(lo_row["low_scope"])
            out.append(
                RulePeak(
                    rule,
                    n,
                    hi,
                    lo,
                    None if util == -math.inf else util,
                    names[hs] if hs >= 0 else None,
                    names[ls] if ls >= 0 else None,
                )
            )
        return out

    def scope_values(self, scope: str) -> dict[str, float]:
        """Current stateful metrics of one scope (zeros for a scope never seen).

        Keys: :data:`SCOPE_VALUES`; money in the limits' base currency, rounded as it is
        judged (:func:`riskguard.state.reference_defs.money`); ``pnl`` is
        realised + unrealised - fees, ``drawdown`` the session high of pnl minus pnl.
        ``unvalued`` counts the scope's positions in a currency with no exchange rate yet
        that hold money in it (a position, working orders, or realised P&L or fees, flat
        or not): while it is above 0 every money value is NaN (unknown, never a partial
        sum). Raises :class:`riskguard.vocabulary.ScopeError` for a
        malformed scope string.
        """
        sid = self.keys.find_scope(scope)
        if sid is None:
            return dict.fromkeys(SCOPE_VALUES, 0.0)
        sc = self.store.state.scopes[sid]
        pnl = float(sc["realised_pnl"] + sc["net_notional"] - sc["cost_basis"] - sc["fees"])
        unvalued = int(sc["n_unknown"])
        amounts = {
            "gross_notional": float(sc["gross_notional"]),
            "net_notional": float(sc["net_notional"]),
            "pnl": pnl,
            "drawdown": max(0.0, float(sc["peak_pnl"]) - pnl),
            "realised_pnl": float(sc["realised_pnl"]),
            "fees": float(sc["fees"]),
            "potential_gross_notional": float(sc["potential"]),
            "open_order_notional": float(sc["open_notional"]),
        }
        amounts = {k: math.nan if unvalued else money(v) for k, v in amounts.items()}
        return {"open_orders": float(sc["open_orders"]), **amounts, "unvalued": float(unvalued)}

    def position(self, owner: str, symbol: str) -> float:
        """Net position of scope ``owner`` (``firm``, ``account:X``, ``strategy:X``) in a symbol.

        Raises :class:`riskguard.vocabulary.ScopeError` for a malformed ``owner``.
        """
        o = self.keys.find_scope(owner)
        y = self.keys.find_scope(f"symbol:{symbol}")
        if o is None or y is None:
            return 0.0
        p = self.keys.pairs.get(pair_key(o, y))
        return 0.0 if p is None else float(self.store.state.positions["qty"][p])

    def positions(self) -> dict[tuple[str, str], tuple[float, float, float]]:
        """Every (owner scope, symbol scope) that held a position or worked an order ->
        (position, cost basis, realised P&L), money in the symbol's currency x multiplier,
        rounded as it is judged (:func:`~riskguard.vocabulary.money`: 1005.0, never
        1005.0000000000001)."""
        self.store.reserve(self.keys)  # pairs interned by a batch not yet applied
        names = self.keys.scope_names
        pos = self.store.state.positions[: self.keys.n_pairs]
        return {
            (names[owner], names[symbol]): (qty, money(cost), money(realised))
            for qty, cost, realised, owner, symbol, linked in pos[
                ["qty", "cost", "realised", "owner", "symbol", "linked"]
            ].tolist()
            if linked
        }

    def book(self, owner: str, symbol: str) -> dict[str, float] | None:
        """One position pair in full (None: never held nor worked): ``qty``, ``cost``,
        ``realised``, ``value``, ``gross``, ``fees``, ``potential``, ``open`` (money in the
        symbol's currency x multiplier, rounded as it is judged), ``buy_work``,
        ``sell_work`` (quantities) and ``broker`` (NaN until the broker reported it)."""
        o = self.keys.find_scope(owner)
        y = self.keys.find_scope(f"symbol:{symbol}")
        p = None if o is None or y is None else self.keys.pairs.get(pair_key(o, y))
        if p is None:
            return None
        self.store.reserve(self.keys)
        rec = self.store.state.positions[p]
        fields = ("qty", "cost", "realised", "value", "gross", "fees", "potential", "open")
        out = {f: money(float(rec[f])) for f in fields}
        out |= {f: float(rec[f]) for f in ("buy_work", "sell_work")}
        out["broker"] = float(rec["broker"]) if rec["has_broker"] else math.nan
        return out

    def mark_coverage(self, names: int = 10) -> dict[str, Any]:
        """Whether the symbols in play are valued at a mark (for ``/v1/status``; in group
        mode, reference data that does not reach this instance shows here).

        A symbol is in play while some position in it is non-zero or it has working
        orders. Returns ``symbols`` (how many are in play), ``unmarked`` (how many of
        them no mark has reached: valued at their last fill price, or not at all),
        ``unmarked_symbols`` (the first ``names`` of those, sorted) and ``oldest_mark``
        (``{"symbol", "ts"}``, the event time in ns of the oldest latest mark among the
        marked ones; None when none is marked).
        """
        live, unmarked, oldest = self.coverage()
        return {
            "symbols": len(live),
            "unmarked": len(unmarked),
            "unmarked_symbols": unmarked[:names],
            "oldest_mark": oldest,
        }

    def coverage(self) -> tuple[list[str], list[str], dict[str, Any] | None]:
        """:meth:`mark_coverage` whole: the symbols in play, those of them unmarked (both
        sorted), and the oldest latest mark among the marked ones (None: none)."""
        self.store.reserve(self.keys)
        table = self.keys.level_table(L_SYMBOL)
        if not table:
            return [], [], None
        ids = np.fromiter(table.values(), dtype=np.int64, count=len(table))
        scopes, symbols = self.store.state.scopes[ids], self.store.state.symbols[ids]
        live = (scopes["n_lots"] > 0) | (scopes["open_orders"] > 0)
        marked = symbols["price_source"] == 2
        names_of = np.array(list(table), dtype=object)
        unmarked = sorted(names_of[live & ~marked].tolist())
        oldest = None
        held = live & marked
        if held.any():
            at = int(np.argmin(np.where(held, symbols["mark_ns"], np.iinfo(np.int64).max)))
            oldest = {"symbol": str(names_of[at]), "ts": int(symbols["mark_ns"][at])}
        return sorted(names_of[live].tolist()), unmarked, oldest

    # working orders ---------------------------------------------------------------
    def working_order_ids(self, scope: str, *, increasing_only: bool = False) -> np.ndarray:
        """Order ids (int64, ascending) of the orders working in ``scope``.

        ``firm``: every working order; ``account:A``: those of account A;
        ``strategy:S``: those of strategy S in every account; ``symbol:Y``: those in Y
        across the firm; ``venue:V``: those sent to venue V. A scope never seen has none.
        With ``increasing_only`` only the orders that would increase the scope's
        position in their own symbol are kept (the reduce-only selection): the scope's
        own net position (for a symbol or venue scope, the firm's: positions are not kept
        per venue) is 0, or has the sign of the order's side. An order larger than the
        position it reduces (a flip) is not kept: it reduces first.

        Vectorised over the ORDER records. Raises
        :class:`riskguard.vocabulary.ScopeError` for a malformed scope string.
        """
        level, _ = parse_scope(scope)
        orders = self.store.state.orders[: self.keys.n_orders]
        mask = orders["status"] == O_OPEN
        sid = FIRM
        if level != L_FIRM:
            found = self.keys.find_scope(scope)
            if found is None:
                return np.zeros(0, dtype=np.int64)
            sid = found
            mask &= orders[_ORDER_FIELD[level]] == sid
        oids = np.flatnonzero(mask).astype(np.int64)
        if not increasing_only or oids.size == 0:
            return oids
        owner = FIRM if level in (L_SYMBOL, L_VENUE) else sid
        increasing: np.ndarray = oids[self._increasing_in(owner, oids)]
        return increasing

    def increasing(self, scope: str, oids: np.ndarray) -> np.ndarray:
        """bool per order of ``oids`` (int64 ids): would it increase ``scope``'s position
        in its symbol, judged as :meth:`working_order_ids` with ``increasing_only`` judges
        (the scope's own net position, a symbol's or venue's the firm's, is 0 or has the
        sign of the order's side)? Whether the order is in ``scope`` is not checked.

        Raises :class:`riskguard.vocabulary.ScopeError` for a malformed scope string.
        """
        level, _ = parse_scope(scope)
        oids = np.asarray(oids, dtype=np.int64)
        owner = FIRM
        if level not in (L_FIRM, L_SYMBOL, L_VENUE):
            found = self.keys.find_scope(scope)
            if found is None:  # no position ever: any order increases it
                return np.ones(oids.size, dtype=bool)
            owner = found
        return self._increasing_in(owner, oids)

    def _increasing_in(self, owner: int, oids: np.ndarray) -> np.ndarray:
        """bool per order of ``oids``: the position of scope id ``owner`` in the order's
        symbol is 0 or has the sign of the order's side."""
        orders = self.store.state.orders
        position = self._positions_in(owner, orders["symbol"][oids])
        keep: np.ndarray = (position == 0.0) | (np.sign(position) == orders["side"][oids])
        return keep

    def working_orders(self, scope: str, *, increasing_only: bool = False) -> list[WorkingOrder]:
        """The orders of :meth:`working_order_ids`, named (same order, same arguments)."""
        return self.describe_orders(self.working_order_ids(scope, increasing_only=increasing_only))

    def describe_orders(self, oids: np.ndarray) -> list[WorkingOrder]:
        """Order ids (from :meth:`working_order_ids`) as :class:`WorkingOrder` records.

        Raises ``IndexError`` for an id beyond the orders ever interned.
        """
        if oids.size == 0:
            return []
        rec = self.store.state.orders[oids]
        names = self.keys.scope_names
        order_names = self.keys.order_names
        key = {sid: names[sid].partition(":")[2] for sid in set(rec["account"].tolist())}
        key |= {sid: names[sid].partition(":")[2] for sid in set(rec["strategy"].tolist())}
        key |= {sid: names[sid].partition(":")[2] for sid in set(rec["symbol"].tolist())}
        open_qty = np.maximum(rec["qty"] - rec["cum_qty"], 0.0)
        return [
            WorkingOrder(
                str(order_names[oid]),
                key[account],
                key[strategy],
                key[symbol],
                "buy" if side > 0 else "sell",
                qty,
            )
            for oid, account, strategy, symbol, side, qty in zip(
                oids.tolist(),
                rec["account"].tolist(),
                rec["strategy"].tolist(),
                rec["symbol"].tolist(),
                rec["side"].tolist(),
                open_qty.tolist(),
                strict=True,
            )
        ]

    def order_lives(self, oids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(status, serial) of order ids (int64 arrays, as ``oids``): ``status ==
        O_OPEN`` while working; a serial that moved is another order on a recycled id."""
        orders = self.store.state.orders
        return orders["status"][oids].astype(np.int64), orders["serial"][oids].astype(np.int64)

    def find_order(self, order_id: str, account: str | None = None) -> int | None:
        """The order id interned for ClOrdID ``order_id``, None when none is; with
        ``account``, None unless that order is the account's (its latest life)."""
        oid = self.keys.orders.get(order_id)
        if oid is None or account is None:
            return oid
        sid = self.keys.find_scope(f"account:{account}")
        self.store.reserve(self.keys)  # an order interned by a batch not yet applied
        mine = sid is not None and int(self.store.state.orders["account"][oid]) == sid
        return oid if mine else None

    def _positions_in(self, owner: int, symbols: np.ndarray) -> np.ndarray:
        """Net position (float64) of scope id ``owner`` in each symbol scope id of ``symbols``."""
        unique, inverse = np.unique(symbols, return_inverse=True)
        self.store.reserve(self.keys)  # pairs interned by a batch not yet applied
        qty = self.store.state.positions["qty"]
        pairs = self.keys.pairs
        held = np.array(
            [
                0.0 if (p := pairs.get(pair_key(owner, int(y)))) is None else float(qty[p])
                for y in unique.tolist()
            ],
            dtype=np.float64,
        )
        out: np.ndarray = held[inverse.reshape(-1)]
        return out
