"""Reading the engine's state: positions, a scope's values, and what each rule has seen.

A mix-in of :class:`riskguard.engine.Engine` (its ``keys``, ``store``, ``rulebook`` and
``rule_peaks``), kept apart from the code that applies events.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import numpy as np

from riskguard.limits.model import Rule
from riskguard.state.keys import pair_key
from riskguard.state.reference_defs import money

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
        ``unvalued`` counts the scope's positions and working orders in a currency with
        no exchange rate yet: while it is above 0 every money value is NaN (unknown,
        never a partial sum). Raises :class:`riskguard.vocabulary.ScopeError` for a
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
        (position, cost basis, realised P&L), money in the symbol's currency x multiplier."""
        self.store.reserve(self.keys)  # pairs interned by a batch not yet applied
        names = self.keys.scope_names
        pos = self.store.state.positions[: self.keys.n_pairs]
        return {
            (names[owner], names[symbol]): (qty, cost, realised)
            for qty, cost, realised, owner, symbol, linked in pos[
                ["qty", "cost", "realised", "owner", "symbol", "linked"]
            ].tolist()
            if linked
        }

    def book(self, owner: str, symbol: str) -> dict[str, float] | None:
        """One position pair in full (None: never held nor worked): ``qty``, ``cost``,
        ``realised``, ``value``, ``gross``, ``fees``, ``potential``, ``open`` (money in the
        symbol's currency x multiplier), ``buy_work``, ``sell_work`` (quantities) and
        ``broker`` (NaN until the broker reported it)."""
        o = self.keys.find_scope(owner)
        y = self.keys.find_scope(f"symbol:{symbol}")
        p = None if o is None or y is None else self.keys.pairs.get(pair_key(o, y))
        if p is None:
            return None
        self.store.reserve(self.keys)
        rec = self.store.state.positions[p]
        fields = ("qty", "cost", "realised", "value", "gross", "fees", "potential", "open")
        out = {f: float(rec[f]) for f in (*fields, "buy_work", "sell_work")}
        out["broker"] = float(rec["broker"]) if rec["has_broker"] else math.nan
        return out
